"""Tile power spectra, the noise floor and a no-reference focus score.

Defocus is a low-pass filter whose shape is set by the optics, so everything here is read
off the radially averaged power spectrum of square tiles (Hann-windowed, mean removed):
the per-tile map and the whole-field value come from one FFT per tile. Camera noise is
white, so its level is the mean power far out (``NOISE_FROM`` cycles/px and beyond, where
even in-focus BBBC006 nuclei carry almost nothing at 0.645 um pixels); spectra are then
expressed as signal-to-noise per frequency ring, which does not depend on the offset.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from refocus.errors import RefocusError
from refocus.images import check_plane

#: Frequencies (cycles/px) from which power counts as camera noise.
NOISE_FROM = 0.40
#: Highest ring used to judge focus: above it signal hardly ever clears the noise.
BAND_TO = 0.35
#: Lowest and highest frequency of the focus score (cycles/px): below it is layout
#: (where the nuclei are), above it noise.
SCORE_BAND = (0.02, BAND_TO)


@dataclass(frozen=True)
class TileSpectra:
    """Radial power spectra of a tile grid: ``power[i, j, k]`` for tile row i, column j and
    ring k (k/tile cycles/px), ``noise[i, j]`` its white-noise level, ``origin`` the pixel of
    tile (0, 0)'s corner (the grid is centred on the image)."""

    tile: int
    origin: tuple[int, int]
    power: np.ndarray
    noise: np.ndarray

    @property
    def grid(self) -> tuple[int, int]:
        return self.power.shape[0], self.power.shape[1]

    def field(self) -> tuple[np.ndarray, float]:
        """(power, noise) of the whole field: the tiles' mean (Welch's estimate)."""
        return self.power.mean(axis=(0, 1)), float(self.noise.mean())


@functools.lru_cache(maxsize=8)
def _rings(tile: int) -> tuple[np.ndarray, np.ndarray]:
    """(Hann window, averaging matrix) of a tile: the matrix turns the half-plane power of
    ``rfft2`` (pixels) into the mean per ring (columns 0 .. tile/2) and, in its last column,
    the mean over the noise frequencies; mirrored columns of the half plane count twice."""
    hann = np.hanning(tile + 2)[1:-1]  # no zero rows: every pixel counts
    window = np.outer(hann, hann)
    window /= np.sqrt((window**2).mean())  # power of white noise is unchanged
    fy, fx = np.fft.fftfreq(tile), np.fft.rfftfreq(tile)
    radius = np.hypot(*np.meshgrid(fy, fx, indexing="ij"))
    mirrored = np.full(len(fx), 2.0)
    mirrored[[0, -1]] = 1.0  # the zero and Nyquist columns have no mirror image
    count = np.broadcast_to(mirrored, radius.shape).ravel()
    ring = np.rint(radius * tile).astype(int).ravel()
    n_rings = tile // 2 + 1
    matrix = np.zeros((radius.size, n_rings + 1))
    inside = np.flatnonzero(ring < n_rings)
    matrix[inside, ring[inside]] = count[inside]
    matrix[:, -1] = np.where(radius.ravel() >= NOISE_FROM, count, 0.0)
    return window, matrix / matrix.sum(axis=0)


def ring_frequencies(tile: int) -> np.ndarray:
    """Frequency of each ring of :func:`tile_spectra` in cycles/px."""
    return np.arange(tile // 2 + 1) / tile


def check_image(image: np.ndarray, tile: int) -> np.ndarray:
    """A finite 2-D plane at least one tile large, as float64."""
    array = check_plane(None, np.asarray(image))
    if min(array.shape) < tile:
        raise RefocusError(None, f"image {array.shape} is smaller than one {tile}-px tile")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise RefocusError(None, "image contains NaN or infinite values")
    return array


def _tiles(array: np.ndarray, tile: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """(tiles (n, tile, tile), grid shape, origin) of the centred grid of whole tiles."""
    ny, nx = array.shape[0] // tile, array.shape[1] // tile
    oy, ox = (array.shape[0] - ny * tile) // 2, (array.shape[1] - nx * tile) // 2
    tiles = array[oy : oy + ny * tile, ox : ox + nx * tile]
    tiles = tiles.reshape(ny, tile, nx, tile).swapaxes(1, 2).reshape(ny * nx, tile, tile)
    return tiles, (ny, nx), (oy, ox)


def tile_spectra(image: np.ndarray, tile: int = 128) -> TileSpectra:
    """Radial power spectrum and noise level of every tile of a centred grid."""
    tiles, grid, origin = _tiles(check_image(image, tile), tile)
    window, matrix = _rings(tile)
    tiles = (tiles - tiles.mean(axis=(1, 2), keepdims=True)) * window
    power = np.abs(np.fft.rfft2(tiles)).reshape(len(tiles), -1) ** 2 / (tile * tile)
    rings = power @ matrix
    return TileSpectra(
        tile,
        origin,
        rings[:, :-1].reshape(*grid, -1),
        np.maximum(rings[:, -1], 1e-12).reshape(grid),
    )


def white_noise_power(variance: np.ndarray, tile: int) -> np.ndarray:
    """Per-tile power that independent pixel noise of ``variance`` (a map) adds to every
    ring of :func:`tile_spectra`: the window-weighted mean variance."""
    tiles, grid, _ = _tiles(np.asarray(variance, dtype=np.float64), tile)
    window = _rings(tile)[0]
    return (tiles * window**2).mean(axis=(1, 2)).reshape(grid)


def focus_score(power: np.ndarray, noise: np.ndarray | float, tile: int) -> np.ndarray:
    """Root-mean-square frequency (cycles/px) of the signal with the camera noise taken off.

    ``sqrt(sum f^2 S / sum S)`` over ``SCORE_BAND`` with S = power - noise per ring (ring
    area counted): in cycles/px, higher is sharper, blind to brightness and offset and,
    unlike a Laplacian's energy, not raised by camera noise. ``power`` is (..., rings).
    """
    freq = ring_frequencies(tile)
    band = (freq >= SCORE_BAND[0]) & (freq <= SCORE_BAND[1])
    signal = (power[..., band] - np.asarray(noise)[..., None]) * freq[band]  # ring area ~ f
    total = signal.sum(axis=-1)
    moment = (signal * freq[band] ** 2).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.sqrt(np.clip(moment / total, 0.0, None))
    return np.where(total > 0, score, 0.0)
