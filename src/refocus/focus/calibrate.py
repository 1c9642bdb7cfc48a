"""Building focus templates with the calibrated simulator (slow: minutes, done once).

Each real in-focus field is blurred with the Gibson-Lanni PSF at every stage defocus of
the grid and its expected signal-to-noise spectrum taken under the calibrated camera
model (:mod:`refocus.simulate`, docs/simulator.md). ``scripts/calibrate_focus.py`` runs it
for BBBC006; other optics or cameras give their own template file the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np

from refocus.focus.measure import tile_spectra, white_noise_power
from refocus.focus.templates import STAGE_UM, TILES, Templates, normalised
from refocus.simulate import BBBC006_CAMERA, BBBC006_OPTICS, Camera, Optics, blur, defocus_psf


def field_signal(image: np.ndarray, tile: int) -> np.ndarray:
    """Signal-to-noise spectrum (power / noise - 1 per ring) of a whole field."""
    power, noise = tile_spectra(image, tile).field()
    return power / noise - 1.0


def _blurred(image: np.ndarray, stage_um: float, optics: Optics, camera: Camera) -> np.ndarray:
    """Expected counts (bias included, before noise) of the plane ``stage_um`` away."""
    photons = np.asarray(image, dtype=np.float64) - camera.offset
    return blur(photons, defocus_psf(stage_um * optics.defocus_scale, optics)) + camera.offset


def expected_signal(
    image: np.ndarray, stage_um: float, tile: int, optics: Optics, camera: Camera
) -> np.ndarray:
    """Signal-to-noise spectrum a noisy simulated plane has on average, without drawing
    noise: blurred signal power over the camera's noise power (shot + read + rounding)."""
    if stage_um == 0:
        return field_signal(image, tile)  # the real recording, real noise
    expected = _blurred(image, stage_um, optics, camera)
    variance = camera.gain * np.clip(expected - camera.offset, 0, None) + camera.read_noise**2
    noise = white_noise_power(variance + 1 / 12, tile)
    return tile_spectra(expected, tile).power.mean(axis=(0, 1)) / noise.mean()


def simulated_signals(
    images: Sequence[np.ndarray],
    stage_um: Sequence[float] = tuple(STAGE_UM),
    tiles: Sequence[int] = TILES,
    optics: Optics = BBBC006_OPTICS,
    camera: Camera = BBBC006_CAMERA,
    on_field: Callable[[int], None] | None = None,
) -> dict[int, np.ndarray]:
    """Per-field signal spectra ``{tile: (field, defocus, ring)}`` of simulated planes.

    At 0 um the real in-focus image itself; elsewhere the calibrated simulator's expected
    plane (deterministic: the camera noise enters as its mean power, no draw).
    """
    out = {t: np.zeros((len(images), len(stage_um), t // 2 + 1)) for t in tiles}
    for i, image in enumerate(images):
        for j, stage in enumerate(stage_um):
            for t in tiles:
                out[t][i, j] = expected_signal(image, stage, t, optics, camera)
        if on_field is not None:
            on_field(i)
    return out


def build_templates(
    images: Sequence[np.ndarray],
    optics: Optics = BBBC006_OPTICS,
    camera: Camera = BBBC006_CAMERA,
    on_field: Callable[[int], None] | None = None,
) -> Templates:
    """Templates of ``images`` (real in-focus fields) on the standard grid and tiles."""
    per_field = simulated_signals(images, optics=optics, camera=camera, on_field=on_field)
    about = json.dumps(
        {"fields": len(images), "optics": asdict(optics), "camera": asdict(camera)}
    )
    return Templates(
        STAGE_UM,
        {t: normalised(s, STAGE_UM) for t, s in per_field.items()},
        optics.defocus_scale,
        about,
    )
