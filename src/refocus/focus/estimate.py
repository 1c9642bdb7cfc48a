"""Distance from focus of one image (and of each of its tiles), and the best plane of a stack.

The field's spectrum (log10 signal-to-noise per ring, rings 1 .. ``BAND_TO``) is compared
with every template ``log10(1 + a * T_d)``: T_d a calibration field's spectrum blurred to
signed stage defocus d (:mod:`refocus.focus.templates`), ``a`` a free brightness (dense or
bright fields just have more signal), fitted by reweighted Gauss-Newton per (field, d).
The best (calibration field, d) under a robust loss is the estimate; the tiles are then
fitted with that field's templates only. A side is named only where the PSF's asymmetry
(spherical aberration: a centre-heavy blur on one side, a rimmed disk on the other) tells
the two apart clearly. Tiles with too little signal (no nuclei) get NaN in the map. The
grid spans +-40 um: anything further reads as about 40.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from refocus.errors import RefocusError
from refocus.focus.measure import BAND_TO, focus_score, ring_frequencies, tile_spectra
from refocus.focus.templates import Templates, shipped_templates

#: Tile of the whole-field (Welch) spectrum: on the benchmark it judges fields better than
#: 64 or 128 px (finer rings resolve the PSF, coarser ones average the object's texture).
FIELD_TILE = 96
#: Grid step (um) the templates are interpolated to before matching.
FIT_STEP_UM = 0.5
#: A side is named only this far from focus (um) ...
SIDE_MIN_UM = 8.0
#: ... and when the other side's best fit is this much worse (relative rms residual).
SIDE_MARGIN = 0.15
#: Least log10 signal-to-noise in the lowest rings for a tile to be judged at all.
MIN_SIGNAL = 1.0
_GAUSS_NEWTON_STEPS = 5
#: Residual (log10) beyond which a ring counts less and less (Cauchy loss).
ROBUST_SCALE = 0.3


@dataclass(frozen=True)
class FocusEstimate:
    """How far one image is from focus.

    ``distance_um``: stage distance (nominal um, as the z drive counts); ``side``: -1 (the
    side of BBBC006's z<16 planes), +1, or None where the two sides cannot be told apart;
    ``score``: rms signal frequency in cycles/px (higher = sharper); ``fit_rms``: robust
    rms log10 residual of the best template (large: unlike the calibration sample).
    The tile maps hold the same per ``tile``-px tile, starting at pixel ``origin``.
    """

    distance_um: float
    side: int | None
    score: float
    fit_rms: float
    tile: int
    origin: tuple[int, int]
    tile_distance_um: np.ndarray
    tile_side: np.ndarray
    tile_score: np.ndarray

    @property
    def signed_um(self) -> float:
        """Signed stage defocus where the side is known, else NaN."""
        return self.distance_um * self.side if self.side is not None else math.nan


@dataclass(frozen=True)
class _Fit:
    signed_um: np.ndarray  # (n,) best signed defocus
    side: np.ndarray  # (n,) -1, 0 (unknown), +1
    rms: np.ndarray  # (n,)
    valid: np.ndarray  # (n,) bool


@functools.lru_cache(maxsize=8)
def _fine_grid(templates: Templates, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """(stage grid, templates (field, grid, band rings)) interpolated to FIT_STEP_UM."""
    stage = templates.stage_um
    grid = np.arange(stage[0], stage[-1] + FIT_STEP_UM / 2, FIT_STEP_UM)
    logs = np.log10(templates.for_tile(tile)[..., _band(tile)])
    weights = np.interp(grid, stage, np.arange(len(stage)))
    low = np.minimum(weights.astype(int), len(stage) - 2)
    frac = (weights - low)[None, :, None]
    fine = logs[:, low] * (1 - frac) + logs[:, low + 1] * frac
    return grid, 10.0**fine


def _band(tile: int) -> slice:
    return slice(1, int(np.searchsorted(ring_frequencies(tile), BAND_TO, side="right")))


def _costs(y: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Robust mean log residual (spectra, defocus), brightness fitted per pair.

    Cauchy loss with scale ``ROBUST_SCALE``: rings a template cannot explain at any
    distance (sharp debris, pattern noise) lose their pull instead of dragging the fit.
    """
    low = np.log(np.maximum(10.0 ** y[:, None, :3] - 1.0, 1e-3)) - np.log(template[None, :, :3])
    log_a = low.mean(axis=2)
    for _ in range(_GAUSS_NEWTON_STEPS):
        scaled = np.exp(log_a)[..., None] * template[None]
        resid = y[:, None, :] - np.log10(1.0 + scaled)
        slope = scaled / (1.0 + scaled) / np.log(10.0)
        weight = 1.0 / (1.0 + (resid / ROBUST_SCALE) ** 2)
        step = (weight * slope * resid).sum(axis=2) / np.maximum(
            (weight * slope**2).sum(axis=2), 1e-12
        )
        log_a += np.clip(step, -2.0, 2.0)
    scaled = np.exp(log_a)[..., None] * template[None]
    resid = (y[:, None, :] - np.log10(1.0 + scaled)) / ROBUST_SCALE
    return ROBUST_SCALE**2 * np.log1p(resid**2).mean(axis=2)


def _refine(grid: np.ndarray, cost: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Sub-grid minimum from a parabola through the best point and its neighbours."""
    i = np.clip(best, 1, len(grid) - 2)
    rows = np.arange(len(best))
    c0, c1, c2 = cost[rows, i - 1], cost[rows, i], cost[rows, i + 1]
    curve = c0 - 2 * c1 + c2
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(curve > 0, 0.5 * (c0 - c2) / curve, 0.0)
    return grid[i] + np.clip(shift, -1, 1) * (grid[1] - grid[0])


def _log_snr(power: np.ndarray, noise: np.ndarray, tile: int) -> np.ndarray:
    return np.log10(np.maximum(power[:, _band(tile)] / noise[:, None], 1e-3))


def _decide(grid: np.ndarray, cost: np.ndarray, y: np.ndarray) -> _Fit:
    """Best signed defocus, side and residual from costs (spectra, defocus)."""
    best = np.argmin(cost, axis=1)
    signed = _refine(grid, cost, best)
    neg = cost[:, grid < 0].min(axis=1)
    pos = cost[:, grid > 0].min(axis=1)
    best_cost = cost[np.arange(len(best)), best]
    clear = (np.maximum(neg, pos) - best_cost) > SIDE_MARGIN * np.maximum(best_cost, 1e-6)
    side = np.where(clear & (np.abs(signed) >= SIDE_MIN_UM), np.sign(signed), 0).astype(int)
    valid = y[:, :2].mean(axis=1) >= MIN_SIGNAL
    return _Fit(signed, side, np.sqrt(best_cost), valid)


def fit_field(
    power: np.ndarray, noise: float, tile: int, templates: Templates
) -> tuple[_Fit, int]:
    """Fit of one field spectrum against every calibration field's templates; returns the
    fit and the calibration field that explains it best (the tiles then use that one)."""
    grid, template = _fine_grid(templates, tile)
    y = _log_snr(power[None], np.array([noise]), tile)
    n_fields, n_grid, n_rings = template.shape
    cost = _costs(y, template.reshape(-1, n_rings)).reshape(n_fields, n_grid)
    prior = int(np.argmin(cost.min(axis=1)))
    return _decide(grid, cost.min(axis=0, keepdims=True), y), prior


def fit_tiles(
    power: np.ndarray, noise: np.ndarray, tile: int, templates: Templates, prior: int
) -> _Fit:
    """Fits of (n, rings) spectra against calibration field ``prior``'s templates."""
    grid, template = _fine_grid(templates, tile)
    y = _log_snr(power, noise, tile)
    return _decide(grid, _costs(y, template[prior]), y)


def estimate_focus(
    image: np.ndarray, tile: int = 128, templates: Templates | None = None
) -> FocusEstimate:
    """Distance from focus of a 2-D plane (from its ``FIELD_TILE``-px Welch spectrum) and of
    each ``tile``-px tile of its map (see module doc)."""
    templates = templates or shipped_templates()
    whole = tile_spectra(image, FIELD_TILE)
    field_power, field_noise = whole.field()
    field, prior = fit_field(field_power, field_noise, FIELD_TILE, templates)
    spectra = whole if tile == FIELD_TILE else tile_spectra(image, tile)
    power = spectra.power.reshape(-1, tile // 2 + 1)
    tiles = fit_tiles(power, spectra.noise.ravel(), tile, templates, prior)
    distance = np.where(tiles.valid, np.abs(tiles.signed_um), np.nan).reshape(spectra.grid)
    valid = bool(field.valid[0])
    return FocusEstimate(
        distance_um=float(abs(field.signed_um[0])) if valid else math.nan,
        side=(int(field.side[0]) or None) if valid else None,
        score=float(focus_score(field_power, field_noise, FIELD_TILE)),
        fit_rms=float(field.rms[0]),
        tile=tile,
        origin=spectra.origin,
        tile_distance_um=distance,
        tile_side=np.where(tiles.valid, tiles.side, 0).reshape(spectra.grid),
        tile_score=focus_score(spectra.power, spectra.noise, tile),
    )


def best_focus_plane(
    stack: np.ndarray | Sequence[np.ndarray], tile: int = 128, templates: Templates | None = None
) -> tuple[int, list[FocusEstimate]]:
    """Index of the sharpest plane of a (Z, Y, X) stack, and every plane's estimate.

    The planes estimated closest to focus (within 1 um of the closest) compete on the
    focus score: near focus the distance estimate floors at 0 for more than one plane.
    """
    planes = list(stack)
    if not planes:
        raise RefocusError(None, "empty stack: no plane to choose")
    estimates = [estimate_focus(p, tile, templates) for p in planes]
    distance = np.array([e.distance_um for e in estimates])
    if np.isnan(distance).all():
        raise RefocusError(None, "no plane of the stack has enough signal to judge focus")
    close = np.flatnonzero(distance <= np.nanmin(distance) + 1.0)
    best = int(close[np.argmax([estimates[i].score for i in close])])
    return best, estimates
