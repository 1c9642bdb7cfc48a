"""Many inputs, one output folder: expand files/folders/globs, refocus each, report each.

A plate is hundreds of files; one damaged file must not cost the others. Every input
becomes a :class:`Job` whose output keeps the input's name (suffix and format included, so
``a1.png`` and ``a1.tif`` never share an output) in the output folder; a job that
fails becomes an :class:`Outcome` with its one-line reason, and the batch goes on. With a
dask.distributed scheduler address, each file is one task on the cluster (OME-Zarr inputs
are split into chunk tasks instead, see :mod:`refocus.inference.chunked`). With
``trust``, each output gets its trust map (:mod:`refocus.inference.trust`) as
``<name>.trust.tif`` beside it (an OME-Zarr output holds it as its ``trust`` array) and
its score goes into ``trust.csv`` in the output folder.
"""

from __future__ import annotations

import csv
import glob
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from refocus.errors import RefocusError
from refocus.images import (
    atomic_output,
    is_image_path,
    is_zarr,
    prepare_destination,
    read_image,
    write_like,
)
from refocus.inference.chunked import dask_scheduler, refocus_ome_zarr
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
    prepare_destination(job.dst, overwrite)  # say so before spending the compute
    if trust:
        prepare_destination(trust_path(job.dst), overwrite)
    image = read_image(job.src)
    try:
        result = refocuser.predict(image.data, image.axes, tile, overlap, channel=channel,
                                   channel_names=image.channel_names, where=job.src,
                                   trust=trust)
    except RefocusError as exc:
        if exc.where is None:
            raise RefocusError(job.src, exc.problem) from exc
        raise
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


def _attempt(refocuser: Refocuser, job: Job, **options: object) -> Outcome:
    """Run one job; any failure becomes its one-line reason instead of stopping the batch."""
    start = time.perf_counter()
    try:
        _, score = refocus_file(refocuser, job, **options)  # type: ignore[arg-type]
    except RefocusError as exc:
        return Outcome(job, str(exc), time.perf_counter() - start)
    except Exception as exc:  # an unexpected failure on one file must not stop the plate
        reason = f"{job.src}: failed ({type(exc).__name__}: {exc})".splitlines()[0]
        return Outcome(job, reason, time.perf_counter() - start)
    return Outcome(job, None, time.perf_counter() - start, score)


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
) -> list[Outcome]:
    """Run every job and return their outcomes in job order.

    Locally the files run one after another in this process (the model is loaded once;
    the network already uses every core or the GPU). With ``scheduler`` (an address),
    each TIFF/PNG file is one task on that cluster, and each OME-Zarr is split into chunk
    tasks. ``on_done`` hears each outcome as it arrives; ``progress`` hears the chunk
    progress of local OME-Zarr jobs. ``trust`` (a flip count, 0 = none) adds each output's
    trust map and score (module doc).
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
