"""The intensity rule: why a refocused image can be measured like the raw one.

The network sees each plane percentile-normalised with the model's
:class:`~refocus.data.normalize.PercentileNormalizer` (``x_n = (x - lo) / (hi - lo)``,
``lo``/``hi`` the plane's low/high percentiles), and it was trained to map that to the
in-focus plane normalised the same way, so its output ``y_n`` has the background at 0 but
an arbitrary brightness scale. Defocus only moves photons, so the scale is fixed by
conserving the total flux above background::

    y = lo + g * y_n,    g = sum(x - lo) / sum(y_n)

which makes ``sum(y - lo) == sum(x - lo)`` exactly (before rounding): integrated nuclear
intensities stay comparable between raw and refocused images. ``lo`` (the low percentile)
is the background level on both sides. When the sums cannot define a gain (a blank plane,
or a prediction with no positive flux), ``g = hi - lo`` (plain de-normalisation) is used.
The result is rounded and clipped (never wrapped) to the input's integer dtype; float
input stays float. Each plane of a stack is normalised and rescaled on its own.

Whole planes (:class:`~refocus.inference.refocuser.Refocuser`) and chunk-wise OME-Zarr
(:mod:`refocus.inference.chunked`, which only has the sums) share these functions.
"""

from __future__ import annotations

import numpy as np

#: Elements per slice of the rescale: 8 MiB of float64 temporaries at a time.
CHUNK_PIXELS = 1 << 20


def flux_gain(image: np.ndarray, prediction: np.ndarray, lo: float, hi: float) -> float:
    """The ``g`` of the intensity rule for one plane (float64 sums, a few rows at a time so
    a large plane needs no float64 copy of itself)."""
    image = np.atleast_1d(np.asarray(image))
    above = sum(float(np.sum(image[rows].astype(np.float64) - lo)) for rows in row_chunks(image))
    predicted = float(np.sum(prediction, dtype=np.float64))
    return gain_from_sums(above, predicted, lo, hi)


def gain_from_sums(above: float, predicted: float, lo: float, hi: float) -> float:
    """``sum(x - lo) / sum(y_n)``, or ``hi - lo`` when that is undefined (see module doc)."""
    if above > 0 and predicted > 0 and np.isfinite(above / predicted):
        return above / predicted
    return max(hi - lo, 0.0)  # 0 for a blank plane: it comes back as itself, blank


def apply_gain(prediction: np.ndarray, lo: float, gain: float, dtype: np.dtype) -> np.ndarray:
    """``lo + gain * prediction`` in the input's units and ``dtype`` (see :func:`to_dtype`).

    Computed in float64 a few rows at a time into the output: the rescale comes after
    every tile is done, and whole-plane float64 temporaries (24 bytes a pixel) would fail
    a large image there, under a memory limit the tiles respected.
    """
    prediction = np.asarray(prediction)
    if prediction.ndim == 0:
        return to_dtype(lo + gain * prediction.astype(np.float64), dtype)
    out = np.empty(prediction.shape, dtype=np.dtype(dtype))
    for rows in row_chunks(prediction):
        out[rows] = to_dtype(lo + gain * prediction[rows].astype(np.float64), dtype)
    return out


def row_chunks(array: np.ndarray, pixels: int = CHUNK_PIXELS) -> list[slice]:
    """Slices of the first axis holding about ``pixels`` elements each (at least one row)."""
    per_row = max(int(np.prod(array.shape[1:])), 1)
    step = max(pixels // per_row, 1)
    return [slice(i, i + step) for i in range(0, max(array.shape[0], 1), step)]


def to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to an integer ``dtype`` (never wrap around); cast to a float one."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return np.asarray(values).astype(dtype)
