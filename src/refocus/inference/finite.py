"""Non-finite pixels (NaN, ±inf): refocus around them and keep them marked.

Float images carry NaN for masked, saturated or stitched-over pixels. One NaN would make
the plane's percentiles, the normalised input and every output pixel NaN (the network
mixes each pixel with its neighbourhood), so one bad pixel would silently cost the image.
Instead the bad pixels are filled with a local value for the network only: the median of
their finite 8-neighbours, growing inwards ring by ring for small holes, and the plane's
background (its low percentile) for whatever a few rings do not reach. The caller then
puts NaN back at those positions, so the output still says where the data were missing.
"""

from __future__ import annotations

import warnings

import numpy as np

from refocus.errors import RefocusError

#: Rings of a hole filled from their neighbours; deeper pixels get the background.
FILL_RINGS = 8
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def non_finite_mask(plane: np.ndarray, where: str | None = None) -> np.ndarray | None:
    """Where ``plane`` is NaN or infinite (None when nowhere, always for integer pixels).

    A plane with no finite pixel at all cannot be refocused: one clear error.
    """
    if not np.issubdtype(plane.dtype, np.floating):
        return None
    bad = ~np.isfinite(plane)
    if not bad.any():
        return None
    if bad.all():
        raise RefocusError(where, "no finite pixel (all NaN or infinite): nothing to refocus")
    return bad


def fill_non_finite(plane: np.ndarray, bad: np.ndarray, background: float) -> np.ndarray:
    """A copy of ``plane`` whose ``bad`` pixels hold a finite local value (module doc)."""
    filled = np.array(plane, copy=True)
    filled[bad] = np.nan
    todo = np.argwhere(bad)
    for _ in range(FILL_RINGS):
        values = _neighbour_median(filled, todo)
        ok = np.isfinite(values)
        filled[todo[ok, 0], todo[ok, 1]] = values[ok]  # all of one ring at once
        todo = todo[~ok]
        if not len(todo):
            return filled
    filled[todo[:, 0], todo[:, 1]] = background
    return filled


def _neighbour_median(plane: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Median of the finite 8-neighbours of each point (NaN where it has none)."""
    h, w = plane.shape
    columns = []
    for dy, dx in _NEIGHBOURS:
        y, x = points[:, 0] + dy, points[:, 1] + dx
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        values = plane[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)].astype(np.float64)
        columns.append(np.where(inside, values, np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": deeper in a hole
        return np.nanmedian(np.stack(columns, axis=1), axis=1)
