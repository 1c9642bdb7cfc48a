"""``refocus predict``: refocus files, folders, globs and OME-Zarr images with a model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from refocus.cli.app import app, console, err_console
from refocus.errors import RefocusError

if TYPE_CHECKING:
    from refocus.inference.files import Job, Outcome
    from refocus.inference.refocuser import Refocuser

MODEL_HELP = ("Model: a pretrained model's name (`refocus models`) or a model file "
              "(model.pt). Default: the default pretrained model.")


@app.command("predict")
def predict_cmd(
    inputs: list[str] = typer.Argument(
        ..., help="Image files, folders of images, globs ('plate/*.tif') or OME-Zarr folders. "
                  "(Deprecated but still accepted: a model file model.pt as the first "
                  "argument; use --model.)"),
    out: Path = typer.Option(..., "--out", help="Output folder; each output keeps its "
                                                "input's name and format."),
    model: str | None = typer.Option(None, "--model", metavar="NAME|FILE", help=MODEL_HELP),
    tile: int | None = typer.Option(
        None, help="Tile size in pixels, at least 64 (default: the largest that fits free "
                   "memory; larger than the image = whole-image prediction)."),
    overlap: int | None = typer.Option(
        None, help="Tile overlap in pixels, 0 or more and less than half the tile "
                   "(default: 3x the model's measured receptive radius)."),
    channel: str | None = typer.Option(
        None, help="Channel to refocus in multi-channel images, by name or index "
                   "(default: the model's channel, or the only one)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: best)."),
    overwrite: bool = typer.Option(False, help="Replace outputs that exist already."),
    scheduler: str | None = typer.Option(
        None, help="Address of a dask.distributed scheduler (tcp://host:8786) to run on "
                   "(default: this machine)."),
    trust: bool = typer.Option(
        False, "--trust", help="Also write each output's trust map (<name>.trust.tif, "
                               "float32 0..1, higher = more trustworthy; OME-Zarr: its "
                               "'trust' array) and its score (summary, trust.csv)."),
    trust_flips: int = typer.Option(
        8, help="Predictions per image for --trust's model agreement: 8 (all rotations "
                "and flips, about 9x the time of plain prediction), 4, 2 (about 2x) or 1 "
                "(physical consistency only, about 1.2x; ranks images less well)."),
) -> None:
    """Refocus every input into OUT; a file that fails is reported and the rest go on.

    NaN/infinite pixels of float images are refocused around and stay NaN (one warning).
    Exit code: 0 all refocused, 1 some input failed, 2 bad model, input, output folder or
    option (before any work), 130 interrupted (finished outputs stay, nothing half written).
    """
    import time

    from refocus.images import ensure_writable_folder
    from refocus.inference.files import expand_inputs, plan_jobs
    from refocus.inference.refocuser import Refocuser, check_tiling
    from refocus.inference.trust import check_flips

    model, inputs = model_and_inputs(model, inputs)
    check_tiling(tile, overlap)
    flips = check_flips(trust_flips) if trust else 0
    jobs = plan_jobs(expand_inputs(inputs), ensure_writable_folder(out), trust=trust)
    refocuser = Refocuser.pretrained(model, device=device)
    start = time.perf_counter()
    outcomes: list[Outcome] = []
    try:
        _run_with_progress(refocuser, jobs, outcomes, dict(
            tile=tile, overlap=overlap, channel=channel, overwrite=overwrite,
            scheduler=scheduler, trust=flips))
    except KeyboardInterrupt:
        _summary(outcomes, len(jobs), out, time.perf_counter() - start, stopped=True)
        raise typer.Exit(130) from None
    _summary(outcomes, len(jobs), out, time.perf_counter() - start)
    if any(not o.ok for o in outcomes):
        raise SystemExit(1)


def model_and_inputs(model: str | None, inputs: list[str]) -> tuple[str | None, list[str]]:
    """The model and the images: ``--model``, or (the older form, kept working) a model
    file given as the first argument; a model file among the images is a mistake."""
    if model is None and inputs and inputs[0].lower().endswith(".pt"):
        if not _is_model_file(inputs[0]):
            raise RefocusError(inputs[0], "model file not found")
        model, inputs = inputs[0], inputs[1:]
    stray = [i for i in inputs if _is_model_file(i)]
    if stray:
        raise RefocusError(stray[0], "is a model file, not an image; give one model, "
                                     "with --model")
    if not inputs:
        raise RefocusError(None, "no input images given")
    return model, inputs


def _is_model_file(argument: str) -> bool:
    path = Path(argument)
    return path.suffix.lower() == ".pt" and path.is_file()


def _run_with_progress(refocuser: Refocuser, jobs: list[Job], outcomes: list[Outcome],
                       options: dict[str, Any]) -> None:
    """Run the jobs under a progress bar, one line per file as it finishes; ``outcomes``
    fills as they arrive, so an interrupted run can still say what was done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from refocus.inference.files import run_jobs

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        files = bar.add_task("refocusing", total=len(jobs))
        chunks = bar.add_task("chunks", total=None, visible=False)

        def chunk_progress(done: int, total: int) -> None:
            bar.update(chunks, completed=done, total=total, visible=True)

        def done(outcome: Outcome) -> None:
            outcomes.append(outcome)
            bar.advance(files)
            bar.update(chunks, visible=False)
            if outcome.ok:
                score = "" if outcome.trust is None else f", trust {outcome.trust:.3f}"
                console.print(f"{outcome.job.src.name} -> {outcome.job.dst}"
                              f"  ({outcome.seconds:.1f} s{score})", highlight=False,
                              soft_wrap=True)
            else:
                err_console.print(f"[red]failed[/] {outcome.error}", highlight=False,
                                  soft_wrap=True)

        run_jobs(refocuser, jobs, on_done=done, progress=chunk_progress, **options)


def _summary(outcomes: list[Outcome], total: int, out: Path, seconds: float,
             stopped: bool = False) -> None:
    failed = sum(not o.ok for o in outcomes)
    console.print(("stopped: " if stopped else "")
                  + f"{len(outcomes) - failed} of {total} refocused into {out} in {seconds:.1f} s"
                  + (f"; {failed} failed (listed above)" if failed else ""),
                  highlight=False, soft_wrap=True)
    scored = sorted((o for o in outcomes if o.ok and o.trust is not None),
                    key=lambda o: o.trust)  # type: ignore[arg-type, return-value]
    if scored:
        from refocus.inference.files import write_trust_csv

        table = write_trust_csv(out, outcomes)
        median = scored[len(scored) // 2].trust
        console.print(f"trust: median {median:.3f}, lowest {scored[0].trust:.3f} "
                      f"({scored[0].job.src.name}); every score in {table}",
                      highlight=False, soft_wrap=True)
