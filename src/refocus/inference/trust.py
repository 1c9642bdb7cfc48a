"""The trust map: where a refocused image can be believed and where the model is guessing.

Two signals, both turned into an estimate of the local error in the output's units (ADU):

1. **Physical consistency.** Defocus only blurs. If the output ``y`` were right, blurring
   it with the PSF of the input's defocus would give back the input ``x`` up to camera
   noise. The defocus is the signed PSF of the calibrated family
   (:func:`refocus.simulate.psf.defocus_psf`) that best explains ``x`` from ``y``, searched
   from :func:`refocus.focus.estimate_focus`'s distance on both sides. The residual
   ``r = (x - h*y) / sigma`` is counted in units of the camera's noise
   (:class:`~refocus.simulate.camera.Camera`: ``sigma^2 = gain * (h*y - offset) + read^2``
   plus the ADC's 1/12); its square, smoothed, has expectation 1 where ``y`` can be right.
   What is left above 1 (and above the smoothing's own scatter), back in ADU, is the rms
   of an error in ``y`` that no camera noise explains: there the output cannot be right.
   Blind spot: detail finer than the PSF passes the blur unseen, so far from focus a
   hallucinated texture inside a nucleus can be physically consistent.
2. **Model agreement.** The network is not exactly equivariant to the 8 rotations and
   flips of the plane, though the physics is: where its 8 answers disagree, the output
   depends on arbitrary choices, i.e. the model is guessing. The per-pixel spread (std over
   the transforms, smoothed like the residual) is the second error estimate.

Combined error ``e = sqrt(AGREEMENT_WEIGHT * spread^2 + PHYSICAL_WEIGHT * excess^2)``; the
trust map is ``exp(-e / (TRUST_SCALE * range))`` with ``range`` the output's 0.1-99.9
percentile span (an error of ``TRUST_SCALE`` of the image's signal range gives 1/e), and
the per-image score is the same function of the image's mean ``e``. Both lie in 0..1,
higher = more trustworthy; NaN where the output is NaN.

Cost: ``flips`` predictions in all (``flips - 1`` besides the output itself) plus about a
dozen FFT blurs for the PSF search; ``flips=1`` is the physical signal only (blurs only),
``flips=2`` (identity and a left-right flip) halves the agreement's cost of 8.
``benchmarks/bench_trust.py`` measures both against plain prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import fft, ndimage

from refocus.errors import RefocusError
from refocus.focus.estimate import estimate_focus
from refocus.simulate.camera import BBBC006_CAMERA, Camera
from refocus.simulate.optics import BBBC006_OPTICS, Optics
from refocus.simulate.psf import blur, defocus_psf, psf_size

if TYPE_CHECKING:
    from refocus.inference.refocuser import Refocuser

#: Gaussian sigma (px) of the smoothing of squared residuals and spreads.
SMOOTH_PX = 4.0
#: Predictions the agreement may use: identity only (physical signal alone), + a flip,
#: + the other flip and the half turn, or all 8 rotations and flips.
FLIP_CHOICES = (1, 2, 4, 8)
#: Weights of the two error estimates in the combination (see module doc).
AGREEMENT_WEIGHT = 1.0
PHYSICAL_WEIGHT = 1.0
#: Error (fraction of the output's signal range) at which trust falls to 1/e.
TRUST_SCALE = 0.05
#: Defocus grid (um) of the PSF search, and how far it searches around its start.
DEFOCUS_STEP_UM = 1.0
_SEARCH_UM = (0.0, -2.0, 2.0, -1.0, 1.0)
#: How much closer to focus (um) than the input's focus estimate the fit may go.
SEARCH_WINDOW_UM = 4.0
#: Smallest image side (px) whose focus estimate the search relies on.
MIN_ESTIMATE_PX = 384
_MAX_DEFOCUS_UM = 48.0
#: Squared residuals count at most this much in the PSF search (a few wrong nuclei must
#: not pull the defocus).
_CLIP_R2 = 25.0

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
    estimates in ADU (``physical``: unexplained residual, ``spread``: disagreement of the
    ``flips`` predictions, None with one), the signed ``defocus_um`` of the PSF that best
    explains the input and the mean squared noise-unit residual ``chi2`` there (about 1
    when the output explains the input)."""

    map: np.ndarray
    score: float
    physical: np.ndarray
    spread: np.ndarray | None
    defocus_um: float
    chi2: float
    flips: int


def noise_variance(expected: np.ndarray, camera: Camera) -> np.ndarray:
    """Variance (ADU^2) of a recording whose expected value is ``expected`` (bias included):
    shot noise at the camera's gain, read noise and the ADC's rounding."""
    photons_adu = np.clip(expected - camera.offset, 0.0, None)
    return camera.gain * photons_adu + camera.read_noise**2 + 1.0 / 12.0


def reblur(refocused: np.ndarray, defocus_um: float, optics: Optics = BBBC006_OPTICS,
           camera: Camera = BBBC006_CAMERA) -> np.ndarray:
    """What the camera would have recorded (noise-free) if ``refocused`` were the truth
    and the stage ``defocus_um`` from focus (the bias is not blurred)."""
    psf = defocus_psf(defocus_um, optics)
    return blur(refocused - camera.offset, psf) + camera.offset


class _Reblur:
    """:func:`reblur` for many defocus values of one output: the output's mirrored,
    padded spectrum is computed once, so each PSF costs one inverse FFT."""

    def __init__(self, refocused: np.ndarray, optics: Optics, camera: Camera) -> None:
        self.optics, self.offset = optics, camera.offset
        self.pad = psf_size(_MAX_DEFOCUS_UM, optics) // 2
        padded = np.pad(refocused - self.offset, self.pad, mode="reflect")
        self.size = tuple(fft.next_fast_len(n, real=True) for n in padded.shape)
        self.spectrum = fft.rfft2(padded, self.size)
        self.shape = refocused.shape

    def __call__(self, defocus_um: float) -> np.ndarray:
        psf = defocus_psf(defocus_um, self.optics)
        half = psf.shape[0] // 2
        out = fft.irfft2(self.spectrum * fft.rfft2(psf, self.size), self.size)
        top = self.pad + half  # the full convolution is shifted by the kernel's half width
        return out[top : top + self.shape[0], top : top + self.shape[1]] + self.offset


def _on_grid(value: float) -> float:
    clipped = min(max(value, -_MAX_DEFOCUS_UM), _MAX_DEFOCUS_UM)
    return round(clipped / DEFOCUS_STEP_UM) * DEFOCUS_STEP_UM


def _allowed(image: np.ndarray, optics: Optics) -> tuple[list[float], Callable[[float], bool]]:
    """Where the PSF search starts and which signed defocus values it may take.

    The PSF is the input's, so its distance comes from the input alone
    (:func:`~refocus.focus.estimate_focus`), never from what makes the output look
    right: otherwise an output still as blurred as its input would explain the input
    perfectly "in focus". The search may go further from focus than the estimate (small
    images read closer than they are) but not more than ``SEARCH_WINDOW_UM`` closer, and
    only on the sides the estimate allows. An image too small for a reliable estimate
    (under ``MIN_ESTIMATE_PX`` a side) or without signal searches the whole family.
    """
    whole = [float(d) for d in np.arange(-_MAX_DEFOCUS_UM, _MAX_DEFOCUS_UM + 1, 4.0)]
    if min(image.shape) < MIN_ESTIMATE_PX:
        return whole, lambda d: True
    estimate = estimate_focus(image)
    if not math.isfinite(estimate.distance_um):
        return whole, lambda d: True
    distance = estimate.distance_um * optics.defocus_scale
    sides = (estimate.side,) if estimate.side else (-1, 1)
    nearest = max(distance - SEARCH_WINDOW_UM, 0.0)

    def allowed(d: float) -> bool:
        return abs(d) >= nearest and (abs(d) < DEFOCUS_STEP_UM or np.sign(d) in sides)

    return sorted({_on_grid(s * distance) for s in sides}), allowed


def fit_defocus(image: np.ndarray, refocused: np.ndarray, optics: Optics = BBBC006_OPTICS,
                camera: Camera = BBBC006_CAMERA) -> tuple[float, np.ndarray]:
    """Signed defocus (um, on a ``DEFOCUS_STEP_UM`` grid) whose PSF best explains ``image``
    as a blurred ``refocused`` (within what :func:`_allowed` permits), and that blurred
    ``refocused``.

    Descends on the grid from the best start until the best point is a local minimum of
    the clipped mean squared noise-unit residual; the PSFs are cached, so a data set at a
    few distances reuses a handful of kernels.
    """
    starts, allowed = _allowed(image, optics)
    blurred = _Reblur(refocused, optics, camera)
    tried: dict[float, tuple[float, np.ndarray]] = {}

    def cost(d: float) -> float:
        d = _on_grid(d)
        if not allowed(d):
            return math.inf
        if d not in tried:
            expected = blurred(d)
            r2 = (image - expected) ** 2 / noise_variance(expected, camera)
            tried[d] = float(np.mean(np.minimum(r2, _CLIP_R2))), expected
        return tried[d][0]

    best = min(starts, key=cost)
    while True:
        around = min((_on_grid(best + s) for s in _SEARCH_UM), key=cost)
        if around == best:
            return best, tried[best][1]
        best = around


def physical_consistency(image: np.ndarray, refocused: np.ndarray,
                         optics: Optics = BBBC006_OPTICS, camera: Camera = BBBC006_CAMERA,
                         smooth_px: float = SMOOTH_PX) -> tuple[np.ndarray, float, float]:
    """(unexplained error map in ADU, signed defocus um, chi2) of a refocused plane.

    The smoothed squared residual minus the smoothed noise variance is the error energy
    no camera noise explains; the smoothing's own scatter (its noise-unit chi2 has a
    standard deviation of about ``sqrt(2 / n)`` over ``n = 4 pi sigma^2`` pixels) is
    allowed for three times over, so a right output reads 0 almost everywhere.
    """
    x = np.asarray(image, dtype=np.float64)
    y = np.asarray(refocused, dtype=np.float64)
    defocus, expected = fit_defocus(x, y, optics, camera)
    variance = noise_variance(expected, camera)
    r2 = (x - expected) ** 2
    energy = ndimage.gaussian_filter(r2, smooth_px, mode="reflect")
    noise = ndimage.gaussian_filter(variance, smooth_px, mode="reflect")
    scatter = 3.0 * math.sqrt(2.0 / (4.0 * math.pi * smooth_px**2))
    excess = np.sqrt(np.clip(energy - (1.0 + scatter) * noise, 0.0, None))
    return excess.astype(np.float32), float(defocus), float(np.mean(r2 / variance))


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
    error = np.sqrt(error)
    unit = TRUST_SCALE * scale
    trust = np.exp(-error / unit).astype(np.float32)
    mean_error = float(np.nanmean(error)) if np.isfinite(error).any() else math.nan
    return trust, float(math.exp(-mean_error / unit))


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


def tile_means(array: np.ndarray, tile: int = 32) -> np.ndarray:
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
