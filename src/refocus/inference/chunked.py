"""Refocus OME-Zarr images larger than memory, chunk by chunk with Dask.

Each plane is cut into blocks of whole storage chunks. One Dask task per block reads the
block with a halo of real neighbouring pixels (half the tile overlap, on the 32-px grid,
so at least 1.5 receptive radii), predicts it in blended tiles
(:mod:`refocus.inference.tiling`), and writes only the block's own pixels: this is
``map_overlap``'s scheme, but with every task reading its own halo, tasks share nothing
and memory stays at a few blocks whatever the image size (``dask.array.map_overlap``
itself buffered whole rows of blocks: its peak memory grew with the image width when
measured, about 40 -> 100 -> 145 MB for an identity function on 4096, 8192 and 12288 px
wide uint16 images).

The intensity rule (:mod:`refocus.inference.flux`) needs whole-plane numbers, so a plane
takes two passes: the first computes the percentiles (exactly, from a histogram, for
8/16-bit images; from an even subsample otherwise) and the sum of the input, then writes
the network output (float32) to a temporary Zarr beside the output and sums it; the
second applies ``lo + g * y_n`` and writes the input's dtype. The temporary store takes
4 bytes per pixel of one plane and is removed afterwards.

With ``trust`` the output gets a ``trust`` array beside its levels (float32, level 0's
shape and chunks, :mod:`refocus.inference.trust`) and its score in the group attribute
``refocus.trust_score``. The trust map's PSF fit is global, so it is made plane by plane
with each whole plane in memory (not chunk-wise).

``scheduler``: ``None`` runs on local threads; an address (``tcp://host:8786``) sends the
work to that dask.distributed cluster, whose workers must see the input and output folders
and load the model file themselves (a file-backed :class:`Refocuser` pickles as its path).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from refocus.archs.padding import MULTIPLE, grid_pads, reflect_fits
from refocus.errors import RefocusError
from refocus.guides import estimate_psf
from refocus.images import atomic_output_dir, build_pyramid, create_like, open_ome_zarr
from refocus.inference.flux import apply_gain, gain_from_sums
from refocus.inference.refocuser import Refocuser
from refocus.inference.trust import TRUST_ARRAY, image_score, trust_map

Progress = Callable[[int, int], None]
#: Planes of floating-point (or 32-bit) images are sampled down to about this many pixels
#: for their percentiles; 8- and 16-bit images use an exact histogram instead.
PERCENTILE_SAMPLE = 4_000_000
#: Side (px) of the central square a guided model's PSF is estimated on.
PSF_SAMPLE = 2048
#: Local thread count: one thread feeds the network while another reads and writes chunks.
LOCAL_WORKERS = 2


@contextlib.contextmanager
def dask_scheduler(address: str | None) -> Iterator[Any]:
    """Local threads, or a client connected to the dask.distributed cluster at ``address``."""
    import dask

    if not address:
        with dask.config.set(scheduler="threads", num_workers=LOCAL_WORKERS):
            yield None
        return
    from distributed import Client

    try:
        client = Client(address, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise RefocusError(None, f"cannot reach the Dask scheduler at {address} ({exc})") from exc
    try:
        yield client
    finally:
        client.close()


def _run(client: Any, *collections: Any, progress: Progress | None = None) -> list[Any]:
    """Compute dask collections on the client, or locally with progress in tasks."""
    import dask

    if client is not None:
        return list(client.compute(list(collections), sync=True))
    if progress is None:
        return list(dask.compute(*collections))
    from dask.callbacks import Callback

    class _Tasks(Callback):  # type: ignore[misc]
        def _start_state(self, _dsk: Any, state: Any) -> None:
            self.total = sum(len(state[k]) for k in ("ready", "waiting", "running"))
            self.done = 0

        def _posttask(self, *_args: Any) -> None:
            self.done += 1
            progress(self.done, self.total)

    with _Tasks():
        return list(dask.compute(*collections))


def percentiles(
    plane: Any, q: tuple[float, float], client: Any = None
) -> tuple[tuple[float, float], float]:
    """``np.percentile(plane, q)`` (linear) and ``plane.sum()`` for a 2-D dask array.

    Exact for 8/16-bit integers (one histogram pass); otherwise percentiles come from an
    even subsample of about :data:`PERCENTILE_SAMPLE` pixels.
    """
    dtype = np.dtype(plane.dtype)
    if dtype.kind in "ui" and dtype.itemsize <= 2:
        offset = int(np.iinfo(dtype).min)
        bins = 2 ** (8 * dtype.itemsize)

        def histogram(block: np.ndarray) -> np.ndarray:
            values = block.ravel() if offset == 0 else block.astype(np.int32).ravel() - offset
            return np.bincount(values, minlength=bins).astype(np.int32)[None, None, :]

        hist = plane.map_blocks(histogram, dtype=np.int32, new_axis=2,
                                chunks=((1,) * plane.numblocks[0], (1,) * plane.numblocks[1],
                                        (bins,))).sum(axis=(0, 1), dtype=np.int64, split_every=2)
        (counts,) = _run(client, hist)
        total = float(np.dot(counts.astype(np.float64), np.arange(bins, dtype=np.float64) + offset))
        cum = np.cumsum(counts)
        n = int(cum[-1])
        values = []
        for p in q:
            pos = p / 100 * (n - 1)
            k = int(math.floor(pos))
            lo = int(np.searchsorted(cum, k, side="right")) + offset
            hi = int(np.searchsorted(cum, min(k + 1, n - 1), side="right")) + offset
            values.append(lo + (pos - k) * (hi - lo))
        return (values[0], values[1]), float(total)
    step = max(1, int(math.sqrt(plane.size / PERCENTILE_SAMPLE)))
    sample, total = _run(client, plane[::step, ::step], plane.sum(dtype=np.float64))
    lo, hi = np.percentile(np.asarray(sample, dtype=np.float64), q)
    return (float(lo), float(hi)), float(total)


def _block_chunks(
    shape: tuple[int, ...], storage: tuple[int, ...], target: int
) -> tuple[int, ...]:
    """Processing blocks: whole storage chunks (so writes never share a chunk), at most
    ``target`` pixels a side unless one chunk is larger."""
    return tuple(
        min(max(1, target // c) * c, max(n, c)) for n, c in zip(shape, storage, strict=True)
    )


def _grid_span(a0: int, a1: int, n: int, depth: int) -> tuple[int, int, int, int, int]:
    """Rows (or columns) to predict for the block ``[a0, a1)`` of an axis of length ``n``.

    Works in the coordinates of the whole axis padded to the 32-px grid as the network
    pads a whole image (:func:`refocus.archs.padding.grid_pads`), so every region starts
    and ends on that grid and pools exactly as whole-image prediction does. Returns the
    image range to read ``[i0, i1)``, the padding to add before/after it, and where the
    block starts inside the region.
    """
    before, after = grid_pads(n, MULTIPLE)
    r0 = max(((a0 + before - depth) // MULTIPLE) * MULTIPLE, 0)
    r1 = min(-(-(a1 + before + depth) // MULTIPLE) * MULTIPLE, n + before + after)
    i0, i1 = max(r0 - before, 0), min(r1 - before, n)
    return i0, i1, i0 - (r0 - before), (r1 - before) - i1, a0 + before - r0


def _predict_block(
    refocuser: Refocuser,
    source: Any,
    prefix: tuple[int, ...],
    window: tuple[int, int, int, int],
    depth: int,
    scaling: tuple[float, float],
    sizes: tuple[int, int],
    scratch: Any,
    psf: np.ndarray | None = None,
) -> float:
    """One block: read it with at least ``depth`` pixels of real context (the image edge
    padded as in whole-image prediction), predict, keep the block's own pixels in
    ``scratch``; returns their sum. A guided model's guide is computed on the block and
    its halo with the plane's ``psf``."""
    y0, y1, x0, x1 = window
    height, width = source.shape[-2:]
    iy0, iy1, top, bottom, oy = _grid_span(y0, y1, height, depth)
    ix0, ix1, left, right, ox = _grid_span(x0, x1, width, depth)
    x = np.asarray(source[prefix + (slice(iy0, iy1), slice(ix0, ix1))])
    x_n = refocuser.normalizer.apply(x, *scaling)
    if refocuser.guide is not None:  # before the grid padding, as for a whole plane
        x_n = refocuser.guide.stack(x_n, psf)
    if top or bottom or left or right:
        mode = "reflect" if reflect_fits(height, width, MULTIPLE) else "edge"
        pads = ((0, 0),) * (x_n.ndim - 2) + ((top, bottom), (left, right))
        x_n = np.pad(x_n, pads, mode=mode)
    y = refocuser.predict_normalised(x_n, *sizes)
    core = y[oy : oy + y1 - y0, ox : ox + x1 - x0]
    scratch[y0:y1, x0:x1] = core
    return float(core.sum(dtype=np.float64))


def _plane_psf(source: Any, prefix: tuple[int, ...], side: int = PSF_SAMPLE) -> np.ndarray:
    """The plane's PSF for a guided model, estimated on its central ``side`` px square
    (blind estimation of a whole slide would not fit in memory, and one field's worth of
    cells is what it is calibrated on)."""
    height, width = source.shape[-2:]
    top, left = max((height - side) // 2, 0), max((width - side) // 2, 0)
    centre = np.asarray(source[prefix + (slice(top, top + side), slice(left, left + side))])
    return estimate_psf(centre)


def refocus_plane(
    refocuser: Refocuser,
    source: Any,
    prefix: tuple[int, ...],
    target: Any,
    scratch_path: Path,
    *,
    tile: int,
    overlap: int,
    client: Any = None,
    progress: Progress | None = None,
) -> None:
    """Refocus plane ``source[prefix]`` (a zarr array) into ``target[prefix]``.

    Pass 1 is one Dask task per block that reads its own halo and writes its result,
    so tasks share nothing and memory stays at (workers x one block) for any image size
    (``map_overlap`` buffers whole rows of blocks instead: its memory grew with the image
    width when measured). Pass 2 is a plain chunk-wise map to the output dtype.
    """
    import dask
    import dask.array as da
    import zarr

    plane = da.from_zarr(source)[prefix]
    storage = tuple(source.chunks[-2:])
    (lo, hi), total = percentiles(plane, (refocuser.normalizer.low, refocuser.normalizer.high),
                                  client)
    depth = int(math.ceil((overlap // 2) / MULTIPLE) * MULTIPLE)
    block = _block_chunks(plane.shape, storage, tile - 2 * depth)  # block + halo: one tile
    scratch = zarr.open_array(scratch_path, mode="w", shape=plane.shape, chunks=block,
                              dtype=np.float32)
    model = dask.delayed(refocuser)
    psf = None if refocuser.guide is None else _plane_psf(source, prefix)
    if psf is not None:  # the guide's inversion needs a PSF's width of context more
        depth += -(-psf.shape[0] // MULTIPLE) * MULTIPLE
    tasks = [
        dask.delayed(_predict_block, pure=False)(
            model, source, prefix, (y0, min(y0 + block[0], plane.shape[0]),
                                    x0, min(x0 + block[1], plane.shape[1])),
            depth, (lo, hi), (tile, overlap), scratch, psf)
        for y0 in range(0, plane.shape[0], block[0])
        for x0 in range(0, plane.shape[1], block[1])
    ]
    predicted = float(sum(_run(client, *tasks, progress=progress)))
    gain = gain_from_sums(total - lo * plane.size, predicted, lo, hi)
    out = da.from_zarr(scratch).map_blocks(
        lambda b: apply_gain(b, lo, gain, target.dtype), dtype=target.dtype
    ).rechunk(storage)
    region = prefix + (slice(None), slice(None))
    _run(client, da.store(out, target, regions=region, lock=False, compute=False))


def refocus_ome_zarr(
    refocuser: Refocuser,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    tile: int | None = None,
    overlap: int | None = None,
    channel: int | str | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
    progress: Progress | None = None,
    trust: int = 0,
) -> Path:
    """Refocus an OME-Zarr image into ``dst`` (same layout, metadata and pyramid).

    Every Y-X plane of level 0 is refocused (with a C axis, only the chosen ``channel``;
    the others are copied), then the lower pyramid levels are rebuilt from it. ``trust``
    (a flip count, 0 = none) adds the trust array and score (module doc).
    """
    import dask.array as da

    src, dst = Path(src), Path(dst)
    image = open_ome_zarr(src)
    if image.axes[-2:] != "YX":
        raise RefocusError(src, f"axes {image.axes!r}: expected Y and X last (NGFF order)")
    level0 = image.level(0)
    c_axis = image.axes.find("C")
    chosen = None
    if c_axis >= 0:
        try:
            chosen = refocuser.select_channel(level0.shape[c_axis], channel, image.channel_names)
        except RefocusError as exc:
            raise RefocusError(src, exc.problem) from exc
    with atomic_output_dir(dst, overwrite=overwrite) as tmp, dask_scheduler(scheduler) as client:
        tile, overlap = refocuser.tile_and_overlap(tile, overlap)
        group = create_like(image, tmp)
        target = group[image.level_paths[0]]
        scratch = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".scratch",
                                        dir=dst.parent))
        try:
            for index in np.ndindex(*level0.shape[:-2]):
                if chosen is not None and index[c_axis] != chosen:  # copied as it is
                    region = index + (slice(None), slice(None))
                    plane = da.from_zarr(level0)[region].rechunk(level0.chunks[-2:])
                    _run(client, da.store(plane, target, regions=region, lock=False,
                                          compute=False))
                    continue
                refocus_plane(refocuser, level0, index, target, scratch / "y.zarr",
                              tile=tile, overlap=overlap, client=client, progress=progress)
            if trust:
                add_trust(refocuser, level0, group, target, chosen, c_axis, trust,
                          (tile, overlap))
            build_pyramid(tmp, image, scheduler=client)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return dst


def add_trust(refocuser: Refocuser, source: Any, group: Any, output: Any, chosen: int | None,
              c_axis: int, flips: int, tiling: tuple[int, int]) -> float:
    """Write the ``trust`` array of an output ``group`` whose refocused level 0 is
    ``output`` and its score (the geometric mean over the refocused planes' scores);
    channels copied unchanged stay NaN. Returns the score."""
    maps = group.create_array(TRUST_ARRAY, shape=source.shape, chunks=source.chunks,
                              dtype=np.float32, fill_value=np.nan)
    scores: list[float] = []
    for index in np.ndindex(*source.shape[:-2]):
        if chosen is not None and index[c_axis] != chosen:
            continue
        plane = trust_map(refocuser, np.asarray(source[index]), np.asarray(output[index]),
                          flips=flips, tile=tiling[0], overlap=tiling[1]).map
        maps[index] = plane
        scores.append(image_score(plane))
    score = float(np.exp(np.nanmean(np.log(scores)))) if scores else math.nan
    group.attrs["refocus"] = {"trust_array": TRUST_ARRAY, "trust_flips": flips,
                              "trust_score": score}
    return score
