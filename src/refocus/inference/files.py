"""Many inputs, one output folder: expand files/folders/globs, refocus each, report each.

A plate is hundreds of files; one damaged file must not cost the others. Every input
becomes a :class:`Job` whose output keeps the input's name (suffix and format included, so
``a1.png`` and ``a1.tif`` never share an output) in the output folder; a job that fails
becomes an :class:`Outcome` with its one-line reason, and the batch goes on. Locally the
next file is read and the previous one written while one is computed
(:mod:`refocus.inference.pipeline`). With a dask.distributed scheduler address, each file
is one task on the cluster (OME-Zarr inputs are split into chunk tasks instead, see
:mod:`refocus.inference.chunked`). With ``trust``, each output gets its trust map
(:mod:`refocus.inference.trust`) as ``<name>.trust.tif`` beside it (an OME-Zarr output
holds it as its ``trust`` array) and its score goes into ``trust.csv`` in the output
folder.
"""

from __future__ import annotations

import csv
import glob
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refocus.errors import RefocusError
from refocus.images import (
    Image,
    atomic_output,
    is_image_path,
    is_zarr,
    prepare_destination,
    read_image,
    write_like,
)
from refocus.inference.chunked import dask_scheduler, refocus_ome_zarr
from refocus.inference.pipeline import overlapped
from refocus.inference.refocuser import Refocuser
from refocus.inference.trust import trust_path, write_trust_map

TRUST_CSV = "trust.csv"
TRUST_COLUMNS = ("input", "output", "trust_map", "trust_score")


@dataclass(frozen=True)
class Job:
    """One input and the output it becomes."""

    src: Path
    dst: Path


@dataclass(frozen=True)
class Outcome:
    """What happened to one job: ``error`` is its one-line reason when it failed;
    ``trust`` the output's trust score when one was asked for."""

    job: Job
    error: str | None
    seconds: float
    trust: float | None = None

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


def plan_jobs(sources: Sequence[Path], out_dir: str | os.PathLike[str],
              trust: bool = False) -> list[Job]:
    """``out_dir/<input name>`` for each input; refuses name clashes and in-place writes.

    Names differing only in case clash too: on Windows and macOS they are one file, and
    one input's result would silently replace the other's. With ``trust``, an input whose
    output would be another output's trust map (``a1.trust.tif`` beside ``a1.tif``)
    clashes as well.
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
    if trust:
        maps = {trust_path(j.dst).name.casefold(): j for j in jobs if not is_zarr(j.src)}
        for job in jobs:
            if job.dst.name.casefold() in maps:
                raise RefocusError(job.src, f"its output would replace the trust map of "
                                            f"{maps[job.dst.name.casefold()].src}")
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
    trust: int = 0,
) -> tuple[Path, float | None]:
    """Refocus one TIFF/PNG file or OME-Zarr image into ``job.dst`` (same format); returns
    the output and, with ``trust`` (a flip count, 0 = none), its trust score.

    The trust map is float32 with the image's axes in ``<name>.trust.tif``
    (:func:`~refocus.inference.trust.trust_path`), written after the output.
    """
    if is_zarr(job.src):
        dst = refocus_ome_zarr(refocuser, job.src, job.dst, tile=tile, overlap=overlap,
                               channel=channel, overwrite=overwrite, scheduler=scheduler,
                               progress=progress, trust=trust)
        return dst, (_zarr_trust_score(dst) if trust else None)
    image = load_file(job, overwrite, trust)
    result = compute_file(refocuser, job, image, tile, overlap, channel, trust)
    return store_file(job, image, result, overwrite, trust)


def load_file(job: Job, overwrite: bool, trust: int) -> Image:
    """Check the destination (before spending the compute), then read the input."""
    prepare_destination(job.dst, overwrite)
    if trust:
        prepare_destination(trust_path(job.dst), overwrite)
    return read_image(job.src)


def compute_file(refocuser: Refocuser, job: Job, image: Image, tile: int | None,
                 overlap: int | None, channel: int | str | None, trust: int) -> Any:
    """The refocused pixels (and trust map); errors name the input file."""
    try:
        return refocuser.predict(image.data, image.axes, tile, overlap, channel=channel,
                                 channel_names=image.channel_names, where=job.src,
                                 trust=trust)
    except RefocusError as exc:
        if exc.where is None:
            raise RefocusError(job.src, exc.problem) from exc
        raise


def store_file(job: Job, image: Image, result: Any, overwrite: bool, trust: int
               ) -> tuple[Path, float | None]:
    """Write the output like its input (and the trust map beside it): (path, score)."""
    if not trust:
        return write_like(image, result, job.dst, overwrite=overwrite), None
    out, trust_map = result
    written = write_like(image, out, job.dst, overwrite=overwrite)
    resolution = {k: v for k, v in image.tiff_kwargs.items()
                  if k in ("resolution", "resolutionunit")}
    return written, write_trust_map(written, trust_map, image.axes, overwrite, **resolution)


def _zarr_trust_score(path: Path) -> float:
    """The trust score :func:`~refocus.inference.chunked.add_trust` recorded."""
    import zarr

    return float(zarr.open_group(path, mode="r").attrs["refocus"]["trust_score"])


def _outcome(job: Job, result: tuple[Path, float | None] | Exception, seconds: float
             ) -> Outcome:
    """A job's outcome; any failure becomes its one-line reason."""
    if isinstance(result, RefocusError):
        return Outcome(job, str(result), seconds)
    if isinstance(result, Exception):  # an unexpected failure on one file
        reason = f"{job.src}: failed ({type(result).__name__}: {result})".splitlines()[0]
        return Outcome(job, reason, seconds)
    return Outcome(job, None, seconds, result[1])


def _attempt(refocuser: Refocuser, job: Job, **options: object) -> Outcome:
    """Run one job; any failure becomes its one-line reason instead of stopping the batch."""
    start = time.perf_counter()
    try:
        result: tuple[Path, float | None] | Exception = refocus_file(
            refocuser, job, **options)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 (reported as this job's outcome)
        result = exc
    return _outcome(job, result, time.perf_counter() - start)


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
    trust: int = 0,
    overlap_files: bool = True,
) -> list[Outcome]:
    """Run every job and return their outcomes in job order.

    Locally the model is loaded once and TIFF/PNG files are refocused in order, the next
    file read and the previous one written while the current one is computed
    (:func:`~refocus.inference.pipeline.overlapped`; ``overlap_files=False``: one after
    another, as before). With ``scheduler`` (an address), each TIFF/PNG file is one task
    on that cluster, and each OME-Zarr is split into chunk tasks. ``on_done`` hears each
    outcome as it arrives; ``progress`` hears the chunk progress of local OME-Zarr jobs.
    ``trust`` (a flip count, 0 = none) adds each output's trust map and score (module doc).
    """
    options = dict(tile=tile, overlap=overlap, channel=channel, overwrite=overwrite,
                   trust=trust)
    outcomes: dict[Job, Outcome] = {}

    def record(outcome: Outcome) -> None:
        outcomes[outcome.job] = outcome
        if on_done is not None:
            on_done(outcome)

    files = [j for j in jobs if not is_zarr(j.src)]
    if scheduler and files:
        _run_on_cluster(refocuser, files, scheduler, options, record)
    elif overlap_files:
        overlapped(
            files, lambda job: load_file(job, overwrite, trust),
            lambda job, image: (image, compute_file(refocuser, job, image, tile, overlap,
                                                    channel, trust)),
            lambda job, loaded: store_file(job, *loaded, overwrite, trust),
            lambda job, result, seconds: record(_outcome(job, result, seconds)))
    else:
        for job in files:
            record(_attempt(refocuser, job, **options))
    for job in jobs:
        if job not in outcomes:
            record(_attempt(refocuser, job, scheduler=scheduler, progress=progress, **options))
    return [outcomes[j] for j in jobs]


def _run_on_cluster(refocuser: Refocuser, files: Sequence[Job], scheduler: str,
                    options: dict[str, Any], record: Callable[[Outcome], None]) -> None:
    """Each file one task on a dask.distributed cluster; outcomes as they complete."""
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


def write_trust_csv(out_dir: str | os.PathLike[str], outcomes: Sequence[Outcome]) -> Path:
    """``trust.csv`` in ``out_dir``: one row per output with a trust score, merged with the
    rows an earlier run left there (a re-refocused output replaces its row), atomically."""
    path = Path(out_dir) / TRUST_CSV
    rows: dict[str, dict[str, str]] = {}
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as fh:
            rows = {r["output"]: r for r in csv.DictReader(fh) if r.get("output")}
    for o in outcomes:
        if o.ok and o.trust is not None:
            trust_file = (f"{o.job.dst.name}/trust" if is_zarr(o.job.dst)
                          else trust_path(o.job.dst).name)
            rows[o.job.dst.name] = {"input": str(o.job.src), "output": o.job.dst.name,
                                    "trust_map": trust_file, "trust_score": f"{o.trust:.4f}"}
    with atomic_output(path, overwrite=True) as tmp, tmp.open("w", newline="",
                                                              encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=TRUST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows[k] for k in sorted(rows))
    return path
