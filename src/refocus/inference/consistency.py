"""Physical consistency: can the refocused image be right, given the image it came from?

Defocus only blurs. If the output ``y`` were right, blurring it with the PSF of the input's
defocus would give back the input ``x`` up to camera noise. The PSF is the signed one of
the calibrated family (:func:`refocus.simulate.psf.defocus_psf`) that best explains ``x``
from ``y``, its distance taken from the input alone (:func:`refocus.focus.estimate_focus`,
see :func:`fit_defocus`). The residual ``r = (x - h*y) / sigma`` is counted in units of
the camera's noise (:class:`~refocus.simulate.camera.Camera`:
``sigma^2 = gain * (h*y - offset) + read^2`` plus the ADC's 1/12); its square, smoothed,
has expectation 1 where ``y`` can be right. What is left above 1, back in ADU and divided
by the share of the image's contrast the blur keeps, estimates the error in ``y`` that no
camera noise explains: there the output cannot be right. Blind spot: detail finer than the
PSF passes the blur unseen, so far from focus a wrong texture inside a nucleus can be
physically consistent. :mod:`refocus.inference.trust` combines this with model agreement.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import fft, ndimage

from refocus.focus.estimate import estimate_focus
from refocus.simulate.camera import BBBC006_CAMERA, Camera
from refocus.simulate.optics import BBBC006_OPTICS, Optics
from refocus.simulate.psf import blur, defocus_psf, psf_size

#: Gaussian sigma (px) of the smoothing of squared residuals and spreads.
SMOOTH_PX = 4.0
#: Defocus grid (um) of the PSF search, and how far it searches around its start.
DEFOCUS_STEP_UM = 1.0
_SEARCH_UM = (0.0, -2.0, 2.0, -1.0, 1.0)
#: How much closer to focus (um) than the input's focus estimate the fit may go.
SEARCH_WINDOW_UM = 4.0
#: Smallest image side (px) whose focus estimate the search relies on.
MIN_ESTIMATE_PX = 384
_MAX_DEFOCUS_UM = 48.0
#: Least fraction of the output's contrast the PSF is taken to keep (a blank output).
MIN_CONTRAST_KEPT = 0.1
#: Squared residuals count at most this much in the PSF search (a few wrong nuclei must
#: not pull the defocus).
_CLIP_R2 = 25.0


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
    """(error map in ADU, signed defocus um, chi2) of a refocused plane, from the residual.

    The smoothed squared residual minus the smoothed noise variance is the error energy
    no camera noise explains; the smoothing's own scatter (its noise-unit chi2 has a
    standard deviation of about ``sqrt(2 / n)`` over ``n = 4 pi sigma^2`` pixels) is
    allowed for three times over, so a right output reads 0 almost everywhere. The blur
    hides an error's detail as it hides the image's own, so the residual's rms is divided
    by the fraction of the output's own contrast (rms about its mean) that survives the
    PSF: about 1 near focus, 0.4 at 35 um, where the residual sees only 40% of an error.
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
    kept = float(np.std(expected)) / max(float(np.std(y)), 1e-12)
    excess /= min(max(kept, MIN_CONTRAST_KEPT), 1.0)
    return excess.astype(np.float32), float(defocus), float(np.mean(r2 / variance))
