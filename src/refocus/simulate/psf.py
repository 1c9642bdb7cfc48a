"""Widefield defocus PSF from the optics (scalar Gibson-Lanni model) and blurring with it.

A Gaussian blur is symmetric in defocus and has no edge; the defocused PSF of a 0.45-NA
objective is a disk with a soft rim whose shape depends on which side of focus the stage
is, because the light crosses the sample, the plate bottom and air, which have different
refractive indices. The scalar Gibson & Lanni (1992) model gives the pupil's optical path
difference through those layers; the PSF is the squared Hankel transform of that pupil,
integrated over each pixel. Defocus is counted from the model's best focus, cached, and
applied with an FFT convolution. (Implemented here rather than taken from ``psfmodels``,
whose GPL licence does not fit this BSD project; tests check it against a direct 2-D FFT
of the same pupil.)
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import fft, special

from refocus.simulate.optics import BBBC006_OPTICS, Optics

GLASS_INDEX = 1.515  # plate-bottom glass (and the glass the collar corrects for)
_OVERSAMPLE = 3  # sub-pixels per pixel side, for pixel integration
# Kernel half-width: 1.5x the geometric blur radius + 16 px keeps >= 99.5% of the PSF.
_RADIUS_FACTOR, _MARGIN_PX = 1.5, 16


def _optical_path_um(rho: np.ndarray, stage_um: float, optics: Optics) -> np.ndarray:
    """Optical path difference at pupil radius ``rho`` (0..1) for a point in the sample.

    Sample layer (the point ``source_depth_um`` above the bottom), the stage term (air gap
    change; positive = objective further from the plate) and the plate bottom's thickness
    mismatch against the correction collar (same glass, so only the difference enters).
    """
    s2 = (optics.na * rho) ** 2
    return (
        optics.source_depth_um * np.sqrt(optics.ns**2 - s2)
        + stage_um * np.sqrt(optics.ni**2 - s2)
        + optics.bottom_mismatch_um * np.sqrt(GLASS_INDEX**2 - s2)
    )


def _pupil(stage_um: float, optics: Optics, n_rho: int) -> tuple[np.ndarray, np.ndarray]:
    """Pupil samples (rho, rho * exp(i k OPD) * trapezoid weights)."""
    rho = np.linspace(0.0, 1.0, n_rho)
    k = 2 * np.pi / optics.emission_um
    weights = np.full(n_rho, 1.0 / (n_rho - 1))
    weights[[0, -1]] /= 2
    return rho, rho * weights * np.exp(1j * k * _optical_path_um(rho, stage_um, optics))


def _radial_psf(r_um: np.ndarray, stage_um: float, optics: Optics) -> np.ndarray:
    """Intensity |int P(rho) J0(k NA r rho) rho drho|^2 at radii ``r_um`` (unnormalised)."""
    k = 2 * np.pi / optics.emission_um
    # enough pupil samples for the fastest of the defocus phase and the Bessel oscillation
    phase = _optical_path_um(np.array([0.0, 1.0]), stage_um, optics)
    defocus_waves = abs(phase[1] - phase[0]) / optics.emission_um
    bessel_waves = optics.na * r_um.max() / optics.emission_um
    rho, pupil = _pupil(stage_um, optics, max(512, int(16 * (defocus_waves + bessel_waves))))
    field = special.j0(k * optics.na * np.outer(r_um, rho)) @ pupil
    return np.abs(field) ** 2


@functools.lru_cache(maxsize=32)
def best_focus_um(optics: Optics) -> float:
    """Stage position where the point looks sharpest (peak intensity).

    Defocus is counted from here, so that aberrations change the PSF's shape and not just
    where focus lies, as in the data, where z=16 was picked as the sharpest plane.
    """
    paraxial = -optics.source_depth_um * optics.ni / optics.ns  # sample term's focal shift
    paraxial -= optics.bottom_mismatch_um * optics.ni / GLASS_INDEX  # and the glass term's

    def peak(stage: float) -> float:
        return -float(_radial_psf(np.zeros(1), stage, optics)[0])

    from scipy import optimize  # (here: 0.1-0.2 s off the start of commands that need no PSF)

    grid = paraxial + np.linspace(-30, 30, 241)  # aberrated focus can have side maxima
    start = grid[int(np.argmin([peak(z) for z in grid]))]
    res = optimize.minimize_scalar(
        peak, bounds=(start - 0.25, start + 0.25), method="bounded", options={"xatol": 1e-4}
    )
    return float(res.x)


def psf_size(defocus_um: float, optics: Optics = BBBC006_OPTICS) -> int:
    """Odd kernel width holding the geometric blur disk and the PSF's diffraction tails."""
    tan_theta = math.tan(math.asin(optics.na / optics.ni))
    radius_px = abs(defocus_um) * tan_theta / optics.pixel_um
    return 2 * math.ceil(_RADIUS_FACTOR * radius_px + _MARGIN_PX) + 1


def _pixel_integrated(defocus_um: float, optics: Optics) -> np.ndarray:
    size = psf_size(defocus_um, optics)
    sub = optics.pixel_um / _OVERSAMPLE
    half = size * _OVERSAMPLE // 2
    coords = (np.arange(size * _OVERSAMPLE) - half) * sub
    r = np.hypot(*np.meshgrid(coords, coords, indexing="ij"))
    r_samples = np.arange(0.0, r.max() + sub, sub / 2)
    radial = _radial_psf(r_samples, best_focus_um(optics) + defocus_um, optics)
    fine = np.interp(r, r_samples, radial)
    return fine.reshape(size, _OVERSAMPLE, size, _OVERSAMPLE).sum(axis=(1, 3))


@functools.lru_cache(maxsize=64)
def _cached_psf(defocus_um: float, optics: Optics) -> np.ndarray:
    kernel = _pixel_integrated(defocus_um, optics)
    kernel /= kernel.sum()
    kernel.flags.writeable = False
    return kernel


def defocus_psf(defocus_um: float, optics: Optics = BBBC006_OPTICS) -> np.ndarray:
    """2-D float64 PSF of a point ``defocus_um`` from focus: sums to 1, centred, read-only.

    Positive defocus = objective further from the plate than at best focus. Cached per
    (defocus, optics): a whole data set reuses a handful of kernels.
    """
    return _cached_psf(round(float(defocus_um), 6), optics)


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve by FFT with mirrored borders (no dark frame creeping in from the edges)."""
    ky, kx = kernel.shape
    py, px = ky // 2, kx // 2
    padded = np.pad(np.asarray(image, dtype=np.float64), ((py, py), (px, px)), mode="reflect")
    return convolve_valid(padded, kernel)


def convolve_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``scipy.signal.fftconvolve(image, kernel, mode="valid")`` for 2-D arrays.

    A circular convolution as large as the image already holds the valid part unaliased,
    so the transforms are that size, not the full output's; and scipy.signal (with the
    scipy.stats it imports) would add a second and a half to every command's start.
    """
    (h, w), (kh, kw) = image.shape, kernel.shape
    shape = (fft.next_fast_len(h, real=True), fft.next_fast_len(w, real=True))
    spectrum = fft.rfft2(image, shape, workers=1) * fft.rfft2(kernel, shape, workers=1)
    return fft.irfft2(spectrum, shape, workers=1)[kh - 1 : h, kw - 1 : w]


def kernel_spectrum(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The real FFT of ``kernel`` centred on the origin of a ``shape`` frame: what a
    convolution (or its inverse) by FFT multiplies with, without shifting the image."""
    half_y, half_x = kernel.shape[0] // 2, kernel.shape[1] // 2
    placed = np.zeros(shape, np.float32)
    placed[: kernel.shape[0], : kernel.shape[1]] = kernel
    return fft.rfft2(np.roll(placed, (-half_y, -half_x), axis=(0, 1)), workers=1)
