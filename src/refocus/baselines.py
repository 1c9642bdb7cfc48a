"""Classical baselines the model has to beat: doing nothing, deconvolution with a known PSF,
and blind deconvolution (the PSF chosen from the image alone: the fair classical rival on data
whose defocus nobody knows).

Deconvolution assumes the image is the PSF convolved with non-negative fluorescence, so the
camera's dark offset (about 100 counts on BBBC006) is subtracted first and added back after;
left in, it is "explained" as a uniform glow and distorts everything near the nuclei.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from refocus.focus import estimate_focus
from refocus.metrics import psnr
from refocus.simulate import BBBC006_OPTICS, Optics, blur, defocus_psf

BACKGROUND_PERCENTILE = 1.0
RL_CANDIDATES = (10, 20, 40, 80, 160)
#: RL iterations behind the re-blur residual that picks a blind PSF's side of focus.
PROBE_ITERATIONS = 20
#: Largest centred square (px) the side of focus is chosen on: the residual of two PSFs
#: compares as well on a million pixels as on a whole 2048^2 frame, at a quarter the cost.
SIDE_CROP = 1024
#: PSFs of the two sides that differ by less than this fraction of their peak are one PSF
#: (under 0.04 um from focus; the 12-bit camera's noise is larger): no side to choose.
SAME_PSF = 0.01


def identity(image: np.ndarray) -> np.ndarray:
    """The unprocessed input as float32: the score any method must improve on."""
    return np.asarray(image, dtype=np.float32).copy()


def estimate_background(image: np.ndarray) -> float:
    """Camera offset plus diffuse background: a low percentile of the image."""
    return float(np.percentile(image, BACKGROUND_PERCENTILE))


def _check_psf(psf: np.ndarray) -> np.ndarray:
    """The PSF normalised to sum 1, in float32 (like the image: FFTs run 2-3x faster than in
    float64, and the results differ by under 1e-5 of the peak)."""
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2 or psf.sum() <= 0 or np.any(psf < 0):
        raise ValueError("PSF must be a 2-D non-negative kernel with a positive sum")
    return (psf / psf.sum()).astype(np.float32)


def _unit_signal(image: np.ndarray, background: float | None
                 ) -> tuple[np.ndarray, float, float]:
    """Background-free float32 image scaled to at most 1, with the background and scale to
    undo it."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D plane, got shape {image.shape}")
    bg = estimate_background(image) if background is None else float(background)
    signal = np.clip(image - bg, 0, None)
    scale = float(signal.max()) or 1.0
    return (signal / scale).astype(np.float32), bg, scale


def richardson_lucy(image: np.ndarray, psf: np.ndarray, iterations: int,
                    background: float | None = None) -> np.ndarray:
    """Richardson-Lucy deconvolution (scikit-image) of one plane with a known PSF.

    ``background`` defaults to :func:`estimate_background`. Too few iterations leave blur,
    too many amplify noise: choose them on validation fields with :func:`choose_rl_iterations`.
    scikit-image convolves with zeros beyond the border, so the plane is reflect-padded by
    the PSF's radius to keep the border from looking like a dark edge.
    """
    from skimage.restoration import richardson_lucy as skimage_rl

    psf = _check_psf(psf)
    signal, bg, scale = _unit_signal(image, background)
    h, w = signal.shape
    py, px = min(psf.shape[0] // 2, h - 1), min(psf.shape[1] // 2, w - 1)
    padded = np.pad(signal, ((py, py), (px, px)), mode="reflect")
    result = skimage_rl(padded, psf, num_iter=int(iterations), clip=False)[py:py + h, px:px + w]
    return (result * scale + bg).astype(np.float32)


def wiener(image: np.ndarray, psf: np.ndarray, background: float | None = None,
           seed: int = 0) -> np.ndarray:
    """Unsupervised Wiener-Hunt deconvolution (scikit-image): regularisation and noise level
    are estimated from the image itself, so it has no knob to tune on validation fields.

    It works in Fourier space, i.e. on a periodic image: the plane is mirrored to twice its
    size so the periodic copy has no seams to ring at.
    """
    from skimage.restoration import unsupervised_wiener

    psf = _check_psf(psf)
    signal, bg, scale = _unit_signal(image, background)
    h, w = signal.shape
    mirrored = np.pad(signal, ((0, h), (0, w)), mode="symmetric")
    result, _ = unsupervised_wiener(mirrored, psf, clip=False, rng=np.random.default_rng(seed))
    return (result[:h, :w] * scale + bg).astype(np.float32)


def choose_rl_iterations(inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                         psf: np.ndarray | Sequence[np.ndarray],
                         candidates: Sequence[int] = RL_CANDIDATES
                         ) -> tuple[int, dict[int, float]]:
    """The iteration count with the best mean PSNR on (validation) fields, and every mean.

    ``psf`` is one PSF for every input, or a list with one per input (blind deconvolution
    chooses each field's own). Ties go to fewer iterations (cheaper, less noise amplified).
    """
    if not inputs or len(inputs) != len(targets):
        raise ValueError("need the same positive number of inputs and targets")
    psfs = [psf] * len(inputs) if isinstance(psf, np.ndarray) else list(psf)
    if len(psfs) != len(inputs):
        raise ValueError(f"got {len(psfs)} PSFs for {len(inputs)} inputs")
    means = {
        int(n): float(np.mean([psnr(t, richardson_lucy(x, k, n)) for x, t, k in
                               zip(inputs, targets, psfs, strict=True)]))
        for n in sorted(set(candidates))
    }
    best = max(means, key=lambda n: (means[n], -n))
    return best, means


def reblur_residual(image: np.ndarray, psf: np.ndarray,
                    iterations: int = PROBE_ITERATIONS) -> float:
    """How badly ``psf`` explains ``image``: mean squared difference (counts^2) between the
    image and its RL estimate blurred again with the same PSF.

    Only a comparison between PSFs of one size means anything: a smaller PSF always
    explains the image better (the image itself, with no blur at all, explains it exactly).
    """
    image = np.asarray(image, dtype=np.float64)
    background = estimate_background(image)
    estimate = richardson_lucy(image, psf, iterations, background)
    reblurred = blur(estimate.astype(np.float64) - background, _check_psf(psf)) + background
    return float(np.mean((image - reblurred) ** 2))


@dataclass(frozen=True)
class BlindPSF:
    """The PSF blind deconvolution chose for one image, and why.

    ``defocus_um``: signed stage defocus of the chosen PSF (the simulator's convention);
    ``estimated_um``: the distance the focus estimator measured; ``residuals``: the re-blur
    residual of each side tried (empty when the estimator named the side itself).
    """

    defocus_um: float
    estimated_um: float
    side_from: str
    residuals: dict[float, float]
    psf: np.ndarray


def blind_psf(image: np.ndarray, optics: Optics = BBBC006_OPTICS) -> BlindPSF:
    """The PSF of the calibrated family (:func:`refocus.simulate.defocus_psf`, nominal
    ``optics``) that fits an image of unknown defocus.

    The distance is the focus estimator's (:func:`refocus.focus.estimate_focus`, templates
    from the same PSF family); the side, where the estimator cannot name it (near focus),
    is the one whose PSF explains the image better (:func:`reblur_residual`, on the central
    :data:`SIDE_CROP` square), unless both sides give the same PSF. The distance is not
    refined by that residual: it always prefers the smaller PSF (see there).
    """
    estimate = estimate_focus(image)
    nominal = 0.0 if math.isnan(estimate.distance_um) else estimate.distance_um
    distance = round(nominal * optics.defocus_scale, 3)
    if estimate.side is not None or distance == 0:
        signed = distance * (estimate.side or 1)
        return BlindPSF(signed, distance, "focus estimate", {},
                        defocus_psf(signed, optics))
    psfs = {d: defocus_psf(d, optics) for d in (-distance, distance)}
    if _same_psf(*psfs.values()):
        return BlindPSF(distance, distance, "both sides alike", {}, psfs[distance])
    crop = _central(image, SIDE_CROP)
    residuals = {d: reblur_residual(crop, psf) for d, psf in psfs.items()}
    signed = min(residuals, key=lambda d: residuals[d])
    return BlindPSF(signed, distance, "re-blur residual", residuals, psfs[signed])


def _same_psf(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two PSFs (same family, same distance) differ by under :data:`SAME_PSF`."""
    return a.shape == b.shape and float(np.abs(a - b).max()) < SAME_PSF * float(a.max())


def _central(image: np.ndarray, side: int) -> np.ndarray:
    """The centred square of at most ``side`` px per axis."""
    h, w = image.shape
    top, left = max((h - side) // 2, 0), max((w - side) // 2, 0)
    return image[top : top + side, left : left + side]


def richardson_lucy_blind(image: np.ndarray, iterations: int,
                          optics: Optics = BBBC006_OPTICS) -> np.ndarray:
    """Richardson-Lucy with the PSF :func:`blind_psf` chooses: no z, no known optics beyond
    the nominal microscope."""
    return richardson_lucy(image, blind_psf(image, optics).psf, iterations)
