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


def flux_gain(image: np.ndarray, prediction: np.ndarray, lo: float, hi: float) -> float:
    """The ``g`` of the intensity rule for one plane (float64 sums)."""
    above = float(np.sum(np.asarray(image, dtype=np.float64) - lo))
    predicted = float(np.sum(prediction, dtype=np.float64))
    return gain_from_sums(above, predicted, lo, hi)


def gain_from_sums(above: float, predicted: float, lo: float, hi: float) -> float:
    """``sum(x - lo) / sum(y_n)``, or ``hi - lo`` when that is undefined (see module doc)."""
    if above > 0 and predicted > 0 and np.isfinite(above / predicted):
        return above / predicted
    return max(hi - lo, 0.0) or 1.0


def apply_gain(prediction: np.ndarray, lo: float, gain: float, dtype: np.dtype) -> np.ndarray:
    """``lo + gain * prediction`` in the input's units and ``dtype`` (see :func:`to_dtype`)."""
    return to_dtype(lo + gain * np.asarray(prediction, dtype=np.float64), dtype)


def to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to an integer ``dtype`` (never wrap around); cast to a float one."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return np.asarray(values).astype(dtype)
