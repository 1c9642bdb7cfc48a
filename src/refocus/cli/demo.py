"""``refocus demo``: simulate, train, evaluate and refocus real fields, on shipped data."""

from __future__ import annotations

from pathlib import Path

import typer

from refocus.cli.app import app, console


@app.command()
def demo(
    out: Path = typer.Option(Path("refocus-demo"), "--out", help="Folder for every result."),
    quick: bool = typer.Option(False, help="Same steps, smaller: under 2 minutes on 2 cores."),
    seed: int = typer.Option(0, help="Seed for simulation noise, split and training."),
    device: str | None = typer.Option(None, help="cpu, cuda, mps (default: best available)."),
    overwrite: bool = typer.Option(False, help="Replace the contents of a non-empty --out."),
) -> None:
    """Run the whole method on the real BBBC006 sample shipped with refocus (no network)."""
    from refocus.demo import run_demo

    run_demo(out, quick=quick, overwrite=overwrite, seed=seed, device=device, console=console)
