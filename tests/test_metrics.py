"""Metrics: CARE-convention PSNR/SSIM, nuclei matching, focus score, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from refocus.images import read_plane
from refocus.metrics import (
    affine_fit,
    bootstrap_ci,
    fit_to_target,
    focus_score,
    match_objects,
    normalize_target,
    pooled_psnr,
    psnr,
    score_field,
    segment_nuclei,
    ssim,
)


@pytest.fixture(scope="module")
def field(in_focus_images: list[np.ndarray]) -> np.ndarray:
    return in_focus_images[0][:256, :320]


@pytest.fixture(scope="module")
def blurred(field: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    return ndimage.gaussian_filter(field.astype(np.float64), 3) + rng.normal(0, 5, field.shape)


def test_normalize_target_maps_percentiles_to_unit_range(field: np.ndarray) -> None:
    ref = normalize_target(field)
    lo, hi = np.percentile(ref, (0.1, 99.9))
    assert lo == pytest.approx(0, abs=1e-9)
    assert hi == pytest.approx(1, abs=1e-9)


def test_psnr_and_ssim_agree_with_scikit_image(field: np.ndarray, blurred: np.ndarray) -> None:
    # Independent route: percentile-normalise by hand, fit with numpy's polyfit.
    lo, hi = np.percentile(field.astype(np.float64), (0.1, 99.9))
    ref = (field - lo) / (hi - lo)
    slope, offset = np.polyfit(blurred.ravel(), ref.ravel(), 1)
    fitted = slope * blurred + offset
    assert psnr(field, blurred) == pytest.approx(
        peak_signal_noise_ratio(ref, fitted, data_range=1.0), abs=1e-6)
    assert ssim(field, blurred) == pytest.approx(
        structural_similarity(ref, fitted, data_range=1.0), abs=1e-6)


def test_pooled_psnr_is_the_psnr_of_the_mean_error(field: np.ndarray, blurred: np.ndarray
                                                   ) -> None:
    """Two halves of a real field, one blurred and one returned as itself: the pooled PSNR
    is that of their mean squared error, not lifted to the mean of 30-ish and ~inf dB."""
    halves = [(field[:, :160], blurred[:, :160]), (field[:, 160:], field[:, 160:])]
    values = [psnr(t, p) for t, p in halves]
    errors = [np.mean((r - f) ** 2) for r, f in (fit_to_target(t, p) for t, p in halves)]
    assert values[1] > 100 and np.mean(values) > 60
    assert pooled_psnr(values) == pytest.approx(10 * np.log10(1 / np.mean(errors)), abs=1e-6)
    assert values[0] < pooled_psnr(values) < values[0] + 3.1  # half the error: +3 dB
    assert pooled_psnr([float("inf")]) == float("inf")


def test_psnr_of_a_constant_prediction_is_the_target_variance(field: np.ndarray) -> None:
    # The best affine fit of a constant is the target's mean, so MSE = var(target).
    ref = normalize_target(field)
    expected = 10 * np.log10(1.0 / ref.var())
    assert psnr(field, np.full(field.shape, 7.0)) == pytest.approx(expected, abs=1e-9)


def test_affine_fit_recovers_a_known_affine_map(field: np.ndarray) -> None:
    ref = normalize_target(field)
    prediction = (ref - 0.25) / 3.0  # ref = 3 * prediction + 0.25 exactly
    np.testing.assert_allclose(affine_fit(prediction, ref), ref, atol=1e-12)


@pytest.mark.parametrize(("scale", "offset"), [(3.7, 250.0), (0.01, -4.0), (-2.0, 9.0)])
def test_scores_do_not_depend_on_prediction_scale_or_offset(
    field: np.ndarray, blurred: np.ndarray, scale: float, offset: float
) -> None:
    base = score_field(field, blurred)
    moved = score_field(field, scale * blurred + offset)
    assert moved.psnr == pytest.approx(base.psnr, abs=1e-6)
    assert moved.ssim == pytest.approx(base.ssim, abs=1e-6)
    assert moved.fg_ssim == pytest.approx(base.fg_ssim, abs=1e-6)
    if scale > 0:  # a negative image is another image to a segmenter
        assert moved.nuclei_f1 == base.nuclei_f1
        assert moved.focus == pytest.approx(base.focus, rel=1e-9)


def test_identity_scores_below_the_target_against_itself(
    field: np.ndarray, blurred: np.ndarray
) -> None:
    perfect = score_field(field, field)
    degraded = score_field(field, blurred)
    assert perfect.psnr > 100
    assert perfect.ssim == pytest.approx(1.0, abs=1e-9)
    assert perfect.fg_ssim == pytest.approx(1.0, abs=1e-9)
    assert perfect.nuclei_f1 == 1.0 and perfect.count_error == 0
    assert degraded.psnr < perfect.psnr - 50
    assert degraded.ssim < 0.95 and degraded.fg_ssim < 0.95
    assert degraded.nuclei_f1 < 1.0
    assert degraded.focus < perfect.focus


def test_fg_ssim_only_looks_at_the_nuclei(field: np.ndarray) -> None:
    # Ruin only the background: whole-image SSIM drops, SSIM on the nuclei barely moves.
    mask = segment_nuclei(field) > 0
    rng = np.random.default_rng(0)
    damaged = field.astype(np.float64)
    grown = ndimage.binary_dilation(mask, iterations=6)
    damaged[~grown] += rng.normal(0, 40, (~grown).sum())
    scores = score_field(field, damaged)
    assert scores.fg_ssim > 0.97
    assert scores.ssim < scores.fg_ssim - 0.1


def test_segmentation_finds_the_sample_nuclei(in_focus_images: list[np.ndarray]) -> None:
    labels = segment_nuclei(in_focus_images[0])
    n = labels.max()
    assert 50 <= n <= 110  # 77 with these settings (overlay checked by eye)
    sizes = np.bincount(labels.ravel())[1:]
    assert np.median(sizes) > 150  # nuclei are ~15-25 px across at 0.645 um/px


def test_match_objects_uses_iou_half() -> None:
    ref = np.zeros((40, 80), dtype=np.int32)
    ref[10:20, 10:20] = 1
    ref[10:20, 50:60] = 2
    lab = np.zeros_like(ref)
    lab[10:20, 13:23] = 5  # shifted 3 px: IoU 70/130 = 0.54 -> a match
    lab[10:20, 54:64] = 9  # shifted 4 px: IoU 60/140 = 0.43 -> no match
    lab[30:35, 30:35] = 3  # a spurious object
    assert match_objects(ref, lab) == (1, 2, 3)
    assert match_objects(ref, np.zeros_like(ref)) == (0, 2, 0)


def test_bootstrap_interval_has_the_normal_width() -> None:
    values = np.random.default_rng(3).normal(10.0, 2.0, 400)
    ci = bootstrap_ci(values, seed=0)
    assert ci.n == 400 and ci.low < ci.mean < ci.high
    assert ci.mean == pytest.approx(values.mean())
    expected = 2 * 1.96 * values.std() / np.sqrt(values.size)
    assert ci.high - ci.low == pytest.approx(expected, rel=0.15)
    single = bootstrap_ci([3.0, float("inf")])
    assert (single.mean, single.low, single.high, single.n) == (3.0, 3.0, 3.0, 1)


def test_focus_score_separates_real_in_focus_from_real_z00(
    in_focus_images: list[np.ndarray], z00_files: list
) -> None:
    sharp = [focus_score(im) for im in in_focus_images]
    blurry = [focus_score(read_plane(p)) for p in z00_files[:8]]
    assert min(sharp) > 3 * max(blurry)
    image = in_focus_images[1]
    assert focus_score(image * 2.5 + 100) == pytest.approx(focus_score(image), rel=1e-9)
