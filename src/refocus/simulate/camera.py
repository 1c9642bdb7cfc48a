"""The camera (bias, shot noise, read noise, 12-bit ADC) and one simulated defocused plane.

A recorded in-focus plane is bias + photons + noise. To move it out of focus the bias is
taken off (blurring a constant changes nothing, but photon noise is counted above it),
the photon image is blurred with the defocus PSF, the bias is put back and fresh shot and
read noise are drawn. The in-focus plane's own noise is averaged away by the blur: its
leftover variance is sum(psf**2) times the original, 9% at z=15, 0.3% at z=10 and less
further out, so planes next to focus come out slightly noisier than a real camera's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refocus.errors import RefocusError
from refocus.simulate.optics import BBBC006_OPTICS, Optics, plane_defocus_um
from refocus.simulate.psf import blur, defocus_psf


@dataclass(frozen=True)
class Camera:
    """Cooled CCD as seen in the pixel values (ADU = analog-digital units, 'counts').

    ``gain`` is ADU per photoelectron (the slope of variance against mean), ``offset`` the
    bias added to every pixel, ``read_noise`` in ADU rms. ``gain`` and the variance at zero
    signal (read_noise**2 - gain * offset) were fitted on the 24 real z=00 fields; the data
    cannot split that intercept, so read noise is set to 2 ADU (about 6 e-, a cooled CCD)
    and the offset follows (scripts/calibrate_simulator.py, docs/simulator.md).
    """

    offset: float = 109.2
    gain: float = 0.328
    read_noise: float = 2.0
    bit_depth: int = 12

    def __post_init__(self) -> None:
        if self.gain <= 0 or self.read_noise < 0 or not 1 <= self.bit_depth <= 16:
            raise ValueError(f"impossible camera {self}")

    @property
    def max_value(self) -> int:
        return 2**self.bit_depth - 1

    def expose(self, expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Record an expected image (ADU, bias included): Poisson photons, read noise, ADC."""
        photons = np.clip(
            (np.asarray(expected, dtype=np.float64) - self.offset) / self.gain, 0, None
        )
        adu = self.gain * rng.poisson(photons) + self.offset
        if self.read_noise:
            adu += rng.normal(0.0, self.read_noise, size=adu.shape)
        return np.clip(np.rint(adu), 0, self.max_value).astype(np.uint16)


BBBC006_CAMERA = Camera()


def _check_plane(in_focus: np.ndarray, camera: Camera) -> np.ndarray:
    array = np.asarray(in_focus)
    if array.ndim != 2:
        raise RefocusError(None, f"in-focus image has shape {array.shape}; a 2-D plane is needed")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise RefocusError(None, f"in-focus image has unsupported pixel type {array.dtype}")
    if not np.isfinite(array).all():
        raise RefocusError(None, "in-focus image contains NaN or infinite values")
    if array.max() <= camera.offset:
        raise RefocusError(
            None,
            f"in-focus image never rises above the camera offset ({camera.offset} ADU): "
            "the simulator needs raw camera counts like BBBC006's, not a rescaled image",
        )
    return array


def simulate_plane(
    in_focus: np.ndarray,
    z: int,
    optics: Optics = BBBC006_OPTICS,
    camera: Camera = BBBC006_CAMERA,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Plane ``z`` of a field whose best-focus plane (``optics.focus_z``) is ``in_focus``.

    Returns uint16 camera counts; at ``focus_z`` the in-focus plane itself (clipped to the
    camera's range), since it is a real recording already.
    """
    array = _check_plane(in_focus, camera)
    if z == optics.focus_z:
        return np.clip(np.rint(array), 0, camera.max_value).astype(np.uint16)
    rng = np.random.default_rng(rng)
    photons = blur(
        array.astype(np.float64) - camera.offset, defocus_psf(plane_defocus_um(z, optics), optics)
    )
    return camera.expose(photons + camera.offset, rng)
