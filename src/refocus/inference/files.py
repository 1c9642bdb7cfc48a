"""Many inputs, one output folder: expand files/folders/globs, refocus each, report each.

A plate is hundreds of files; one damaged file must not cost the others. Every input
becomes a :class:`Job` whose output keeps the input's name (suffix and format included, so
``a1.png`` and ``a1.tif`` never share an output) in the output folder; a job that
fails becomes an :class:`Outcome` with its one-line reason, and the batch goes on. With a
dask.distributed scheduler address, each file is one task on the cluster (OME-Zarr inputs
are split into chunk tasks instead, see :mod:`refocus.inference.chunked`).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from refocus.errors import RefocusError
from refocus.images import is_image_path, is_zarr, prepare_destination, read_image, write_like
from refocus.inference.chunked import dask_scheduler, refocus_ome_zarr
from refocus.inference.refocuser import Refocuser


@dataclass(frozen=True)
class Job:
    """One input and the output it becomes."""

    src: Path
    dst: Path


@dataclass(frozen=True)
class Outcome:
    """What happened to one job: ``error`` is its one-line reason when it failed."""

    job: Job
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders as their image files and Zarr images (not recursive);
    anything else as a glob. A pattern that matches nothing is an error, so a typo is
    never mistaken for an empty plate."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file() or is_zarr(path):
            found.append(path)
        elif path.is_dir():
            children = sorted(p for p in path.iterdir() if is_image_path(p))
            if not children:
                raise RefocusError(path, "folder holds no TIFF, PNG or OME-Zarr images")
            found.extend(children)
        else:
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True))
            matches = [p for p in matches if is_image_path(p)]
            if not matches:
                raise RefocusError(path, "no such file or folder, and no image matches it "
                                         "as a pattern")
            found.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def plan_jobs(sources: Sequence[Path], out_dir: str | os.PathLike[str]) -> list[Job]:
    """``out_dir/<input name>`` for each input; refuses name clashes and in-place writes.

    Names differing only in case clash too: on Windows and macOS they are one file, and
    one input's result would silently replace the other's.
    """
    out_dir = Path(out_dir)
    jobs: list[Job] = []
    seen: dict[str, Path] = {}
    for src in sources:
        key = src.name.casefold()
        if key in seen:
            raise RefocusError(src, f"has the same name as {seen[key]}; both would be "
                                    f"written to {out_dir / src.name}")
        seen[key] = src
        dst = out_dir / src.name
        if dst.resolve() == src.resolve():
            raise RefocusError(src, "the output would replace the input; choose another --out")
        jobs.append(Job(src, dst))
    return jobs


def refocus_file(
    refocuser: Refocuser,
    job: Job,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    channel: int | str | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Refocus one TIFF/PNG file or OME-Zarr image into ``job.dst`` (same format)."""
    if is_zarr(job.src):
        return refocus_ome_zarr(refocuser, job.src, job.dst, tile=tile, overlap=overlap,
                                channel=channel, overwrite=overwrite, scheduler=scheduler,
                                progress=progress)
    prepare_destination(job.dst, overwrite)  # say so before spending the compute
    image = read_image(job.src)
    try:
        out = refocuser.predict(image.data, image.axes, tile, overlap, channel=channel,
                                channel_names=image.channel_names, where=job.src)
    except RefocusError as exc:
        if exc.where is None:
            raise RefocusError(job.src, exc.problem) from exc
        raise
    return write_like(image, out, job.dst, overwrite=overwrite)


def _attempt(refocuser: Refocuser, job: Job, **options: object) -> Outcome:
    """Run one job; any failure becomes its one-line reason instead of stopping the batch."""
    start = time.perf_counter()
    try:
        refocus_file(refocuser, job, **options)  # type: ignore[arg-type]
    except RefocusError as exc:
        return Outcome(job, str(exc), time.perf_counter() - start)
    except Exception as exc:  # an unexpected failure on one file must not stop the plate
        reason = f"{job.src}: failed ({type(exc).__name__}: {exc})".splitlines()[0]
        return Outcome(job, reason, time.perf_counter() - start)
    return Outcome(job, None, time.perf_counter() - start)


def run_jobs(
    refocuser: Refocuser,
    jobs: Sequence[Job],
    *,
    tile: int | None = None,
    overlap: int | None = None,
    channel: int | str | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
    on_done: Callable[[Outcome], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Outcome]:
    """Run every job and return their outcomes in job order.

    Locally the files run one after another in this process (the model is loaded once;
    the network already uses every core or the GPU). With ``scheduler`` (an address),
    each TIFF/PNG file is one task on that cluster, and each OME-Zarr is split into chunk
    tasks. ``on_done`` hears each outcome as it arrives; ``progress`` hears the chunk
    progress of local OME-Zarr jobs.
    """
    options = dict(tile=tile, overlap=overlap, channel=channel, overwrite=overwrite)
    outcomes: dict[Job, Outcome] = {}

    def record(outcome: Outcome) -> None:
        outcomes[outcome.job] = outcome
        if on_done is not None:
            on_done(outcome)

    files = [j for j in jobs if not is_zarr(j.src)]
    if scheduler and files:
        from distributed import as_completed

        with dask_scheduler(scheduler) as client:
            model = client.scatter(refocuser, broadcast=True)
            futures = {client.submit(_attempt, model, job, pure=False, **options): job
                       for job in files}
            for future in as_completed(futures, loop=client.loop):
                try:
                    record(future.result())
                except Exception as exc:  # the worker died or could not load the model
                    reason = f"{futures[future].src}: failed on the cluster ({exc})"
                    record(Outcome(futures[future], reason.splitlines()[0], 0.0))
    else:
        for job in files:
            record(_attempt(refocuser, job, **options))
    for job in jobs:
        if job not in outcomes:
            record(_attempt(refocuser, job, scheduler=scheduler, progress=progress, **options))
    return [outcomes[j] for j in jobs]
