"""``refocus simulate``: defocused BBBC006-layout planes from real in-focus fields."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from refocus.cli.app import app, console, plane_numbers


@app.command("simulate", context_settings={"allow_extra_args": True})
def simulate_cmd(
    ctx: typer.Context,
    in_focus: Path = typer.Option(
        ..., "--in-focus", help="Best-focus fields: the sample's in-focus/ or a z=16 folder."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write the BBBC006 layout into."),
    z: list[str] = typer.Option(..., "--z", help="Planes to simulate, e.g. --z 1 5 10 32."),
    channel: str = typer.Option("w1", "--channel", help="Channel of the in-focus fields."),
    seed: int = typer.Option(0, "--seed", help="Seed for noise and file uuids."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace planes in a used --out."),
) -> None:
    """Blur real in-focus fields with the calibrated defocus PSF and camera noise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from refocus.simulate import plan_simulation, simulate_bbbc006

    planes = plane_numbers(z, ctx.args, "--z")
    plan = plan_simulation(in_focus, out, planes, channel=channel, seed=seed, overwrite=overwrite)
    start = time.perf_counter()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("simulating planes", total=plan.n_files)
        written = simulate_bbbc006(
            in_focus,
            out,
            planes,
            channel=channel,
            seed=seed,
            overwrite=overwrite,
            on_plane=lambda _path: progress.advance(task),
        )
    console.print(
        f"{len(written)} planes ({len(plan.fields)} fields x z="
        f"{', '.join(map(str, plan.z_values))}) "
        f"in {time.perf_counter() - start:.1f} s -> {out}",
        highlight=False,
    )
