"""Classical baselines the model has to beat: doing nothing, and deconvolution with a known PSF.

Deconvolution assumes the image is the PSF convolved with non-negative fluorescence, so the
camera's dark offset (about 100 counts on BBBC006) is subtracted first and added back after;
left in, it is "explained" as a uniform glow and distorts everything near the nuclei.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refocus.metrics import psnr

BACKGROUND_PERCENTILE = 1.0
RL_CANDIDATES = (10, 20, 40, 80, 160)


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
                         psf: np.ndarray, candidates: Sequence[int] = RL_CANDIDATES
                         ) -> tuple[int, dict[int, float]]:
    """The iteration count with the best mean PSNR on (validation) fields, and every mean.

    Ties go to fewer iterations (cheaper, less noise amplified).
    """
    if not inputs or len(inputs) != len(targets):
        raise ValueError("need the same positive number of inputs and targets")
    means = {
        int(n): float(np.mean([psnr(t, richardson_lucy(x, psf, n)) for x, t in
                               zip(inputs, targets, strict=True)]))
        for n in sorted(set(candidates))
    }
    best = max(means, key=lambda n: (means[n], -n))
    return best, means
