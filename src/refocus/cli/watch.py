"""``refocus watch``: refocus images as the microscope writes them."""

from __future__ import annotations

from pathlib import Path

import typer

from refocus.cli.app import app, console


@app.command("watch")
def watch_cmd(
    in_dir: Path = typer.Argument(..., help="Folder the acquisition software writes into."),
    model: Path = typer.Option(..., "--model", help="Trained model file (model.pt)."),
    out: Path = typer.Option(..., "--out", help="Folder for the refocused TIFFs."),
    settle: float = typer.Option(
        0.5, help="Seconds a file's size must stay unchanged before it counts as written."),
    poll: float = typer.Option(0.1, help="Seconds between looks at the folder."),
    tile: int | None = typer.Option(None, help="Tile size in pixels (default: the model's)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: best)."),
    idle_timeout: float | None = typer.Option(
        None, help="Stop after this many seconds without a new image (default: run until Ctrl-C)."),
    overwrite: bool = typer.Option(False, help="Replace outputs that exist already."),
) -> None:
    """Refocus each image as it lands in IN_DIR; restart to catch up; Ctrl-C to stop."""
    from refocus.inference.watch import FrameResult, watch

    def log_frame(frame: FrameResult) -> None:
        console.print(f"{frame.name} -> {frame.output.name}  latency"
                      f" {frame.latency_s * 1000:.0f} ms (refocus {frame.process_s * 1000:.0f} ms)",
                      highlight=False, soft_wrap=True)

    console.print(f"watching {in_dir} (Ctrl-C to stop)", highlight=False)
    report = watch(in_dir, model, out, settle=settle, poll=poll, tile=tile, device=device,
                   overwrite=overwrite, idle_timeout=idle_timeout, on_frame=log_frame)
    for name, problem in report.failed.items():
        console.print(f"[red]failed[/] {name}: {problem}", highlight=False, soft_wrap=True)
    console.print(("stopped: " if report.interrupted else "") + report.summary(), highlight=False)
