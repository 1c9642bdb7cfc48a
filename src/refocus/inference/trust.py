"""The trust map: where a refocused image can be believed and where the model is guessing.

Two signals, both turned into an estimate of the local error in the output's units (ADU):

1. **Physical consistency** (:mod:`refocus.inference.consistency`): the output, blurred
   with the PSF of the input's defocus, must give back the input within the camera's
   noise; the residual that noise cannot explain, smoothed and scaled back to the output's
   detail, marks where the output cannot be right.
2. **Model agreement**: the network is not exactly equivariant to the 8 rotations and
   flips of the plane, though the physics is: where its answers to the transformed input
   disagree, the output depends on arbitrary choices, i.e. the model is guessing. The
   per-pixel spread (std over the transforms, smoothed like the residual) is the second
   error estimate.

Combined error ``e = sqrt(AGREEMENT_WEIGHT * spread^2 + PHYSICAL_WEIGHT * physical^2)``;
the trust map is ``exp(-e / (TRUST_SCALE * range))`` with ``range`` the output's 0.1-99.9
percentile span (an error of ``TRUST_SCALE`` of the image's signal range gives 1/e), and
the per-image score is the map's geometric mean, the same function of the image's mean
``e``. Both lie in 0..1, higher = more trustworthy; NaN where the output is NaN.

Cost: ``flips`` predictions in all (``flips - 1`` besides the output itself) plus about a
dozen FFTs for the PSF search. Measured on a 520x696 field (``benchmarks/bench_trust.py``,
shipped model, 2 CPU cores): prediction with trust takes 8.7x the time of plain
prediction with 8 flips, 2.2x with 2 (identity and a left-right flip; nearly as good) and
1.2x with ``flips=1`` (physical consistency only: good per tile, weaker across images).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from refocus.errors import RefocusError
from refocus.images import write_tiff
from refocus.inference.consistency import SMOOTH_PX, physical_consistency
from refocus.simulate.camera import BBBC006_CAMERA, Camera
from refocus.simulate.optics import BBBC006_OPTICS, Optics

if TYPE_CHECKING:
    from refocus.inference.refocuser import Refocuser

#: Tile side (px) over which trust is compared with error.
TILE = 32
#: Predictions the agreement may use: identity only (physical signal alone), + a flip,
#: + the other flip and the half turn, or all 8 rotations and flips.
FLIP_CHOICES = (1, 2, 4, 8)
#: Weights of the two error estimates in the combination (see module doc): the answers
#: share the model's bias, so their spread is about half the error and counts twice
#: (weight 4 on its square); set on the held-out fields of ``benchmarks/bench_trust.py``.
AGREEMENT_WEIGHT = 4.0
PHYSICAL_WEIGHT = 1.0
#: Error (fraction of the output's signal range) at which trust falls to 1/e.
TRUST_SCALE = 0.02
#: Name of the trust map's array in an OME-Zarr output.
TRUST_ARRAY = "trust"
#: Least trust a pixel counts with in the image score (a geometric mean).
SCORE_FLOOR = 1e-6

Transform = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]
#: The dihedral group as (forward, inverse) pairs, in the order the flip counts take them.
DIHEDRAL: tuple[Transform, ...] = (
    (lambda a: a, lambda a: a),
    (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    (lambda a: a[::-1, :], lambda a: a[::-1, :]),
    (lambda a: a[::-1, ::-1], lambda a: a[::-1, ::-1]),
    (lambda a: a.T, lambda a: a.T),
    (lambda a: np.rot90(a, 1), lambda a: np.rot90(a, -1)),
    (lambda a: np.rot90(a, -1), lambda a: np.rot90(a, 1)),
    (lambda a: a[::-1, ::-1].T, lambda a: a.T[::-1, ::-1]),
)


@dataclass(frozen=True)
class Trust:
    """One plane's trust: ``map`` (float32, the plane's shape, 0..1, higher = more
    trustworthy), ``score`` (the whole image, 0..1), and what they came from: the error
    estimates in ADU (``physical``: the residual no noise explains, scaled to the output's
    detail; ``spread``: disagreement of the ``flips`` predictions, None with one), the
    signed ``defocus_um`` of the PSF that best explains the input and the mean squared
    noise-unit residual ``chi2`` there (about 1 when the output explains the input)."""

    map: np.ndarray
    score: float
    physical: np.ndarray
    spread: np.ndarray | None
    defocus_um: float
    chi2: float
    flips: int


def flip_answers(refocuser: Refocuser, image: np.ndarray, refocused: np.ndarray,
                 flips: int = 8, tile: int | None = None, overlap: int | None = None
                 ) -> list[np.ndarray]:
    """The model's answers (float64, back in the image's orientation) for the first
    ``flips`` transforms of :data:`DIHEDRAL`; the identity's answer is ``refocused``."""
    answers = [np.asarray(refocused, dtype=np.float64)]
    plane = np.asarray(image)
    for forward, inverse in DIHEDRAL[1:flips]:
        out = refocuser.predict_plane(np.ascontiguousarray(forward(plane)), tile, overlap)
        answers.append(np.asarray(inverse(out), dtype=np.float64))
    return answers


def spread_of(answers: Sequence[np.ndarray], smooth_px: float = SMOOTH_PX) -> np.ndarray:
    """Smoothed per-pixel std (ADU) over the answers: the model-agreement error estimate."""
    variance = np.var(np.stack(answers), axis=0)
    smooth = ndimage.gaussian_filter(variance, smooth_px, mode="reflect")
    return np.sqrt(np.clip(smooth, 0.0, None)).astype(np.float32)


def agreement_spread(refocuser: Refocuser, image: np.ndarray, refocused: np.ndarray,
                     flips: int = 8, tile: int | None = None, overlap: int | None = None,
                     smooth_px: float = SMOOTH_PX) -> np.ndarray:
    """:func:`spread_of` the :func:`flip_answers`."""
    return spread_of(flip_answers(refocuser, image, refocused, flips, tile, overlap),
                     smooth_px)


def signal_range(refocused: np.ndarray) -> float:
    """The output's 0.1-99.9 percentile span (ADU): the scale errors are judged against."""
    finite = refocused[np.isfinite(refocused)]
    lo, hi = np.percentile(finite, (0.1, 99.9)) if finite.size else (0.0, 1.0)
    return max(float(hi - lo), 1.0)


def combine(physical: np.ndarray, spread: np.ndarray | None, scale: float
            ) -> tuple[np.ndarray, float]:
    """Trust map and per-image score from the two error estimates (module doc)."""
    error = PHYSICAL_WEIGHT * physical.astype(np.float64) ** 2
    if spread is not None:
        error = error + AGREEMENT_WEIGHT * spread.astype(np.float64) ** 2
    trust = np.exp(-np.sqrt(error) / (TRUST_SCALE * scale)).astype(np.float32)
    return trust, image_score(trust)


def image_score(trust: np.ndarray) -> float:
    """An image's (or stack's) trust score from its map: the geometric mean over its
    finite pixels, i.e. ``exp(-mean error / (TRUST_SCALE * range))``, so it ranks images
    by their mean estimated error (values under ``SCORE_FLOOR`` count as that); NaN when
    nothing was assessed."""
    values = np.asarray(trust, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan
    return float(np.exp(np.mean(np.log(np.clip(values, SCORE_FLOOR, 1.0)))))


def trust_path(output: str | os.PathLike[str]) -> Path:
    """Where the trust map of an output file goes: ``a1.tif`` -> ``a1.trust.tif``, any
    other name gets ``.trust.tif`` appended (``a1.png.trust.tif``), so two outputs never
    share a trust map."""
    output = Path(output)
    name = output.name
    stem = name[:-4] if name.lower().endswith(".tif") else name
    return output.with_name(f"{stem}.trust.tif")


def write_trust_map(output: str | os.PathLike[str], trust: np.ndarray, axes: str,
                    overwrite: bool = False, **tiff_kwargs: object) -> float:
    """Write the trust map of ``output`` to :func:`trust_path` (float32 TIFF with the
    image's ``axes``, atomically) and return its :func:`image_score`."""
    write_tiff(trust_path(output), np.asarray(trust, dtype=np.float32), overwrite=overwrite,
               metadata={"axes": axes}, **tiff_kwargs)
    return image_score(trust)


def check_flips(flips: int) -> int:
    """``flips`` as an int, refused unless one of :data:`FLIP_CHOICES`."""
    if flips not in FLIP_CHOICES:
        raise RefocusError(None, f"trust flips must be one of "
                                 f"{', '.join(map(str, FLIP_CHOICES))} (got {flips})")
    return int(flips)


def trust_map(refocuser: Refocuser | None, image: np.ndarray, refocused: np.ndarray,
              *, flips: int = 8, optics: Optics = BBBC006_OPTICS,
              camera: Camera = BBBC006_CAMERA, tile: int | None = None,
              overlap: int | None = None) -> Trust:
    """The :class:`Trust` of one refocused 2-D plane (see the module doc).

    ``refocuser`` made ``refocused`` from ``image`` and is asked for the ``flips - 1``
    other transforms; with ``flips=1`` (physical consistency only) it may be None.
    Non-finite pixels of the input or output get NaN trust.
    """
    flips = check_flips(flips)
    image = np.asarray(image)
    refocused = np.asarray(refocused)
    if image.ndim != 2 or image.shape != refocused.shape:
        raise RefocusError(None, f"trust needs a 2-D plane and its refocused plane of the "
                                 f"same shape (got {image.shape} and {refocused.shape})")
    if flips > 1 and refocuser is None:
        raise RefocusError(None, "model agreement (flips > 1) needs the refocuser")
    bad = ~(np.isfinite(image) & np.isfinite(refocused))
    x, y = _filled(image, bad), _filled(refocused, bad)
    physical, defocus, chi2 = physical_consistency(x, y, optics, camera)
    spread = (agreement_spread(refocuser, x, y, flips, tile, overlap) if flips > 1
              else None)
    if bad.any():
        physical[bad] = np.nan
        if spread is not None:
            spread[bad] = np.nan
    trust, score = combine(physical, spread, signal_range(y))
    return Trust(trust, score, physical, spread, defocus, chi2, flips)


def _filled(plane: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """float64 copy with the non-finite pixels set to the finite median (so blurs and
    predictions stay finite; their trust is NaN anyway)."""
    out = np.asarray(plane, dtype=np.float64).copy()
    if bad.any():
        out[bad] = np.median(out[~bad]) if (~bad).any() else 0.0
    return out


def tile_means(array: np.ndarray, tile: int = TILE) -> np.ndarray:
    """Mean of each whole ``tile`` x ``tile`` tile (NaN ignored), as a (rows, cols) grid:
    how trust is compared with error per tile."""
    h, w = (s // tile * tile for s in array.shape)
    blocks = np.asarray(array, dtype=np.float64)[:h, :w].reshape(h // tile, tile,
                                                                 w // tile, tile)
    return np.nanmean(blocks, axis=(1, 3))


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation of two samples (finite pairs only)."""
    from scipy import stats

    a, b = np.ravel(np.asarray(a, dtype=np.float64)), np.ravel(np.asarray(b, dtype=np.float64))
    keep = np.isfinite(a) & np.isfinite(b)
    return float(stats.spearmanr(a[keep], b[keep]).statistic)
