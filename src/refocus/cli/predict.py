"""``refocus predict``: refocus files, folders, globs and OME-Zarr images with a model."""

from __future__ import annotations

from pathlib import Path

import typer

from refocus.cli.app import app, console, err_console


@app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="Trained model file (model.pt)."),
    inputs: list[str] = typer.Argument(
        ..., help="Image files, folders of images, globs ('plate/*.tif') or OME-Zarr folders."),
    out: Path = typer.Option(..., "--out", help="Output folder; outputs keep the input names."),
    tile: int | None = typer.Option(
        None, help="Tile size in pixels (default: the largest that fits free memory; "
                   "larger than the image = whole-image prediction)."),
    overlap: int | None = typer.Option(
        None, help="Tile overlap in pixels (default: 3x the model's measured receptive "
                   "radius)."),
    channel: str | None = typer.Option(
        None, help="Channel to refocus in multi-channel images, by name or index "
                   "(default: the model's channel, or the only one)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: best)."),
    overwrite: bool = typer.Option(False, help="Replace outputs that exist already."),
    scheduler: str | None = typer.Option(
        None, help="Address of a dask.distributed scheduler (tcp://host:8786) to run on "
                   "(default: this machine)."),
) -> None:
    """Refocus every input into OUT; a file that fails is reported and the rest go on.

    Exit code: 0 all refocused, 1 some input failed, 2 bad model, output folder or option.
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from refocus.images import ensure_writable_folder
    from refocus.inference.files import Outcome, expand_inputs, plan_jobs, run_jobs
    from refocus.inference.refocuser import Refocuser

    jobs = plan_jobs(expand_inputs(inputs), ensure_writable_folder(out))
    refocuser = Refocuser.from_file(model, device=device)
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        files = bar.add_task("refocusing", total=len(jobs))
        chunks = bar.add_task("chunks", total=None, visible=False)

        def chunk_progress(done: int, total: int) -> None:
            bar.update(chunks, completed=done, total=total, visible=True)

        def done(outcome: Outcome) -> None:
            bar.advance(files)
            bar.update(chunks, visible=False)
            if outcome.ok:
                console.print(f"{outcome.job.src.name} -> {outcome.job.dst}"
                              f"  ({outcome.seconds:.1f} s)", highlight=False, soft_wrap=True)
            else:
                err_console.print(f"[red]failed[/] {outcome.error}", highlight=False,
                                  soft_wrap=True)

        outcomes = run_jobs(refocuser, jobs, tile=tile, overlap=overlap, channel=channel,
                            overwrite=overwrite, scheduler=scheduler, on_done=done,
                            progress=chunk_progress)
    failed = [o for o in outcomes if not o.ok]
    console.print(f"{len(outcomes) - len(failed)} of {len(outcomes)} refocused into {out} "
                  f"in {time.perf_counter() - start:.1f} s"
                  + (f"; {len(failed)} failed (listed above)" if failed else ""),
                  highlight=False, soft_wrap=True)
    if failed:
        raise SystemExit(1)
