"""``refocus simulate``: defocused BBBC006-layout planes (or z-stacks) from real in-focus
fields."""

from __future__ import annotations

import re
import time
from pathlib import Path

import typer

from refocus.cli.app import app, console, plane_numbers

#: ``A-B`` in a plane list: every plane from A to B.
_RANGE = re.compile(r"^(\d+)-(\d+)$")


def _expand_ranges(values: list[str]) -> list[str]:
    """``--z 0-33`` as the planes 0..33 (``plane_numbers`` takes the single numbers)."""
    tokens = [t for v in values for t in v.replace(",", " ").split()]
    out: list[str] = []
    for token in tokens:
        m = _RANGE.match(token)
        out.extend(map(str, range(int(m[1]), int(m[2]) + 1)) if m else [token])
    return out


@app.command("simulate", context_settings={"allow_extra_args": True})
def simulate_cmd(
    ctx: typer.Context,
    in_focus: Path = typer.Option(
        ..., "--in-focus", help="Best-focus fields: the sample's in-focus/ or a z=16 folder."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder to write the BBBC006 layout (or, with --stack, the stacks) into."
    ),
    z: list[str] = typer.Option(
        ..., "--z", help="Planes to simulate, e.g. --z 1 5 10 32, or a range: --z 0-33."
    ),
    stack: bool = typer.Option(
        False, "--stack", help="Write one 3-D OME-TIFF z-stack per field (Z,Y,X; the planes "
        "evenly spaced, e.g. --z 0-33) instead of the BBBC006 plane folders."
    ),
    channel: str = typer.Option("w1", "--channel", help="Channel of the in-focus fields."),
    seed: int = typer.Option(0, "--seed", help="Seed for noise and file uuids."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace planes in a used --out."),
) -> None:
    """Blur real in-focus fields with the calibrated defocus PSF and camera noise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from refocus.simulate import plan_simulation, simulate_bbbc006, simulate_stacks

    planes = plane_numbers(_expand_ranges(z), _expand_ranges(ctx.args), "--z")
    plan = plan_simulation(in_focus, out, planes, channel=channel, seed=seed, overwrite=overwrite)
    simulate = simulate_stacks if stack else simulate_bbbc006
    start = time.perf_counter()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("simulating planes", total=plan.n_files)
        written = simulate(
            in_focus,
            out,
            planes,
            channel=channel,
            seed=seed,
            overwrite=overwrite,
            on_plane=lambda _done: progress.advance(task),
        )
    what = f"{len(written)} z-stacks of {len(plan.z_values)} planes" if stack else (
        f"{len(written)} planes")
    console.print(
        f"{what} ({len(plan.fields)} fields x z={_shown(plan.z_values)}) "
        f"in {time.perf_counter() - start:.1f} s -> {out}",
        highlight=False,
    )


def _shown(z_values: list[int]) -> str:
    """``0-33`` for a run of consecutive planes, else the list."""
    if len(z_values) > 2 and z_values == list(range(z_values[0], z_values[-1] + 1)):
        return f"{z_values[0]}-{z_values[-1]}"
    return ", ".join(map(str, z_values))
