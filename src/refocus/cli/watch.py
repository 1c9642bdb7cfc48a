"""``refocus watch``: refocus images as the microscope writes them."""

from __future__ import annotations

from pathlib import Path

import typer

from refocus.cli.app import app, console, err_console
from refocus.cli.predict import MODEL_HELP


@app.command("watch")
def watch_cmd(
    in_dir: Path = typer.Argument(..., help="Folder the acquisition software writes into."),
    out: Path = typer.Option(..., "--out", help="Folder for the refocused images (each keeps "
                                                "its input's name and format)."),
    model: str | None = typer.Option(None, "--model", metavar="NAME|FILE", help=MODEL_HELP),
    settle: float = typer.Option(
        0.5, help="Seconds a file's size must stay unchanged before it counts as written."),
    poll: float = typer.Option(0.1, help="Seconds between looks at the folder."),
    unreadable_after: float = typer.Option(
        30.0, help="Seconds a complete-looking file may stay unreadable before it is "
                   "reported (once) and left alone."),
    tile: int | None = typer.Option(
        None, help="Tile size in pixels, at least 64 (default: the largest that fits)."),
    overlap: int | None = typer.Option(
        None, help="Tile overlap in pixels (default: 3x the model's receptive radius)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: best)."),
    idle_timeout: float | None = typer.Option(
        None, help="Stop after this many seconds without a new image (default: run until Ctrl-C)."),
    overwrite: bool = typer.Option(False, help="Replace outputs that exist already."),
    trust: bool = typer.Option(
        False, "--trust", help="Also write each frame's trust map (<name>.trust.tif) and "
                               "record its trust score in the ledger and the frame's line."),
    trust_flips: int = typer.Option(
        2, help="Predictions per frame for --trust's model agreement: 8, 4, 2 (about 2x "
                "the latency) or 1 (physical consistency only)."),
) -> None:
    """Refocus each image as it lands in IN_DIR; restart to catch up; Ctrl-C to stop.

    A frame that fails is reported (one line, as it happens) and skipped; a file rewritten
    under a finished name is refocused again. Exit code: 0 stopped by --idle-timeout with
    every frame refocused, 1 some frame failed, 2 bad model, folder or option (before any
    work), 130 stopped by Ctrl-C (after the summary).
    """
    from refocus.inference.watch import FrameResult, watch

    def log_frame(frame: FrameResult) -> None:
        score = "" if frame.trust is None else f", trust {frame.trust:.3f}"
        console.print(f"{frame.name} -> {frame.output.name}  latency"
                      f" {frame.latency_s * 1000:.0f} ms (refocus {frame.process_s * 1000:.0f} ms"
                      f"{score})", highlight=False, soft_wrap=True)

    def log_failure(name: str, problem: str) -> None:
        err_console.print(f"[red]failed[/] {name}: {problem}", highlight=False, soft_wrap=True)

    console.print(f"watching {in_dir} (Ctrl-C to stop)", highlight=False)
    report = watch(in_dir, model, out, settle=settle, poll=poll, give_up=unreadable_after,
                   tile=tile, overlap=overlap, device=device, overwrite=overwrite,
                   idle_timeout=idle_timeout, on_frame=log_frame, on_failure=log_failure,
                   trust=trust_flips if trust else 0)
    console.print(("stopped: " if report.interrupted else "") + report.summary(), highlight=False)
    if report.interrupted:
        raise typer.Exit(130)
    if report.failed:
        raise SystemExit(1)
