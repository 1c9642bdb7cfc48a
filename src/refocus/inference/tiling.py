"""Predict images of any size in overlapping tiles that blend without a seam.

A convolutional network sees a limited neighbourhood, so an output pixel computed with at
least that much real context around it equals the whole-image prediction. Tiles therefore
overlap by ``overlap`` pixels: in each overlap, the outer third next to a tile's edge is
thrown away (weight 0, the *halo*: every pixel that is kept had at least ``overlap // 3``
pixels of context inside its tile), and the middle third cross-fades between the two tiles
with a raised-cosine (Hann) ramp. The ramps of neighbouring tiles sum to one, and the
separable 2-D weights of up to four tiles meeting in a corner do too, so blending changes
nothing where the tiles already agree and spreads any remaining difference smoothly
instead of leaving a step.

Tile origins sit on multiples of ``align`` (the network's total stride, 32 for a ResNet
encoder), so every tile sees the same pooling grid as the whole image does; the last tile
of a row or column is cut at the image edge rather than shifted off the grid.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

TileFn = Callable[[np.ndarray], np.ndarray]
#: Tile sizes never go below this when shrinking after running out of memory.
MIN_TILE = 64


def halo_of(overlap: int) -> int:
    """Context (pixels) every kept output pixel had around it inside its tile."""
    return overlap // 3


def overlap_for_halo(halo: int, align: int = 1) -> int:
    """The smallest ``overlap`` (a multiple of ``align``) whose halo is at least ``halo``."""
    overlap = 3 * max(int(halo), 0)
    return int(math.ceil(overlap / align) * align) if overlap else 0


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Origins of the tiles covering ``length`` pixels; one tile when ``tile >= length``.

    The stride is ``tile - overlap`` rounded down to a multiple of ``align``, so
    neighbouring tiles share at least ``overlap`` pixels, and the last tile (cut at the
    edge) is always wider than that overlap.
    """
    if tile >= length:
        return [0]
    stride = ((tile - overlap) // align) * align
    if stride < 1:
        raise ValueError(f"tile {tile} leaves no stride after overlap {overlap} (align {align})")
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + stride)
    return starts


def _ramp(overlap: int) -> np.ndarray:
    """Weights for the ``overlap`` pixels next to a tile edge, outermost first.

    Zero over the halo, a raised cosine over the middle, one after; ``ramp[d] +
    ramp[overlap - 1 - d] == 1``, so two tiles sharing the overlap sum to one.
    """
    halo = halo_of(overlap)
    fade = overlap - 2 * halo
    d = np.arange(overlap, dtype=np.float64)
    t = np.clip((d - halo + 0.5) / max(fade, 1), 0.0, 1.0)
    return np.sin(0.5 * np.pi * t) ** 2


def _window_1d(size: int, before: int, after: int) -> np.ndarray:
    """1-D weights of a tile that shares ``before``/``after`` pixels with its neighbours."""
    w = np.ones(size, dtype=np.float64)
    if before:
        w[:before] *= _ramp(before)
    if after:
        w[size - after :] *= _ramp(after)[::-1]
    return w


def _axis_tiles(
    length: int, tile: int, overlap: int, align: int
) -> list[tuple[int, int, np.ndarray]]:
    """(start, stop, weights) of each tile along one axis."""
    starts = tile_starts(length, tile, overlap, align)
    stops = [min(s + tile, length) for s in starts]
    out = []
    for k, (start, stop) in enumerate(zip(starts, stops, strict=True)):
        before = stops[k - 1] - start if k > 0 else 0
        after = stop - starts[k + 1] if k + 1 < len(starts) else 0
        out.append((start, stop, _window_1d(stop - start, before, after)))
    return out


def _predict_once(fn: TileFn, image: np.ndarray, tile: int, overlap: int, align: int) -> np.ndarray:
    shape = image.shape[-2:]
    rows = _axis_tiles(shape[0], tile, overlap, align)
    cols = _axis_tiles(shape[1], tile, overlap, align)
    if len(rows) == 1 and len(cols) == 1:
        return _checked(fn(image), shape)
    total = np.zeros(shape, dtype=np.float32)
    weight = np.zeros(shape, dtype=np.float32)
    for y0, y1, wy in rows:
        for x0, x1, wx in cols:
            piece = fn(np.ascontiguousarray(image[..., y0:y1, x0:x1]))
            piece = _checked(piece, (y1 - y0, x1 - x0))
            w = np.outer(wy, wx).astype(np.float32)
            total[y0:y1, x0:x1] += piece * w
            weight[y0:y1, x0:x1] += w
    np.divide(total, weight, out=total, where=weight > 0)
    return total


def _checked(piece: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    piece = np.asarray(piece, dtype=np.float32)
    if piece.shape != tuple(shape):
        raise ValueError(f"tile function returned shape {piece.shape} for input {tuple(shape)}")
    return piece


#: Words of allocation failures that arrive as plain RuntimeErrors: torch's CPU allocator
#: ("DefaultCPUAllocator: can't allocate memory"), ONNX Runtime's arena ("Failed to
#: allocate memory", "bad allocation" on Windows), C++ std::bad_alloc, cuBLAS/cuDNN.
OOM_MESSAGES = (
    "can't allocate memory",
    "not enough memory",
    "failed to allocate memory",
    "bad allocation",
    "bad_alloc",
    "out of memory",
    "status_alloc_failed",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation failure (host or GPU, torch or ONNX Runtime) that a smaller
    tile may avoid; any other error is left to propagate.

    Only :class:`MemoryError` and CUDA's error have types of their own: a CPU tensor that
    does not fit is a RuntimeError, and ONNX Runtime raises its own exception classes
    (``RuntimeException``, ``Fail``), so those are recognised by their message.
    """
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # no torch import here: tiling works for any fn
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    from_ort = type(exc).__module__.startswith("onnxruntime")
    if isinstance(exc, RuntimeError) or from_ort:
        message = str(exc).lower()
        return any(words in message for words in OOM_MESSAGES)
    return False


def _release_cached_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def predict_tiled(
    fn: TileFn,
    image: np.ndarray,
    tile: int,
    overlap: int,
    *,
    align: int = 1,
    on_shrink: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Apply ``fn`` (float32 (h, w) -> (h, w)) to ``image`` in blended tiles; float32 result.

    A (C, H, W) ``image`` (a plane and its guide channels) is cut into (C, h, w) tiles,
    and ``fn`` still returns (h, w).

    ``tile`` at least the image size means one call on the whole image. When ``fn`` runs
    out of memory, the tile is halved and the image restarted, down to :data:`MIN_TILE`
    (or until the tile is no longer more than twice the overlap); ``on_shrink`` hears the
    new size so a caller can keep it for the next image.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise ValueError(f"predict_tiled needs a (H, W) or (C, H, W) image, got shape "
                         f"{image.shape}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    tile = int(tile)
    while True:
        if tile < max(image.shape[-2:]) and tile <= 2 * overlap:
            raise ValueError(f"tile {tile} must be more than twice the overlap {overlap}")
        try:
            return _predict_once(fn, image, tile, overlap, align)
        except Exception as exc:
            smaller = max(((min(tile, max(image.shape[-2:])) // 2) // align) * align, align)
            if not is_out_of_memory(exc) or smaller < MIN_TILE or smaller <= 2 * overlap:
                raise
            log.warning("out of memory with %d px tiles; retrying with %d px", tile, smaller)
            del exc
            _release_cached_memory()
            tile = smaller
            if on_shrink is not None:
                on_shrink(tile)


def choose_tile(
    free_bytes: float,
    bytes_per_pixel: float,
    *,
    overlap: int = 0,
    align: int = 32,
    fraction: float = 0.5,
    largest: int = 4096,
) -> int:
    """The largest square tile whose working memory fits ``fraction`` of ``free_bytes``.

    Bigger tiles waste less work on overlaps; the fraction leaves room for the framework's
    own buffers and fragmentation. The result is a multiple of ``align``, more than twice
    ``overlap`` (so tiling stays possible) and at most ``largest``.
    """
    side = math.sqrt(max(free_bytes, 0.0) * fraction / max(bytes_per_pixel, 1e-9))
    side = min(int(side // align) * align, largest)
    return max(side, min_tile(overlap, align))


def min_tile(overlap: int, align: int = 32) -> int:
    """The smallest tile :func:`choose_tile` gives: at least :data:`MIN_TILE`, a multiple of
    ``align`` and more than twice ``overlap`` (so tiling stays possible)."""
    return max(MIN_TILE, (2 * overlap // align + 1) * align)
