"""Image-quality metrics that let methods be compared honestly.

Full-reference scores follow the CARE paper's convention (Weigert et al. 2018): the target
is percentile-normalised, and every restored image is affinely fitted to it by least squares
before PSNR/SSIM, so no method wins or loses by intensity scale or offset alone. A
downstream score asks whether the restored image gives the same nuclei as the target under
one fixed classical segmentation (Otsu + watershed). Unpaired images get a no-reference
focus score. Bootstrap intervals over fields say how much the means can be trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

# CARE normalises targets between these percentiles; PSNR/SSIM then use a data range of 1.
TARGET_PERCENTILES = (0.1, 99.9)
DATA_RANGE = 1.0
IOU_MATCH = 0.5


def normalize_target(target: np.ndarray, low: float = TARGET_PERCENTILES[0],
                     high: float = TARGET_PERCENTILES[1]) -> np.ndarray:
    """The target mapped so its ``low``/``high`` percentiles become 0/1 (float64, unclipped)."""
    target = np.asarray(target, dtype=np.float64)
    lo, hi = np.percentile(target, (low, high))
    return (target - lo) / max(hi - lo, 1e-12)


def affine_fit(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``a * prediction + b`` with (a, b) minimising the squared error to ``reference``.

    A constant prediction can only be fitted by its offset, so it becomes the reference mean.
    """
    x = np.asarray(prediction, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"prediction {x.shape} and reference {y.shape} differ in shape")
    xc = x - x.mean()
    var = float(np.mean(xc * xc))
    scale = float(np.mean(xc * (y - y.mean()))) / var if var > 0 else 0.0
    return scale * xc + y.mean()


def fit_to_target(target: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normalised target, prediction affinely fitted to it): what every score compares."""
    ref = normalize_target(target)
    return ref, affine_fit(prediction, ref)


def psnr(target: np.ndarray, prediction: np.ndarray) -> float:
    """PSNR (dB) of the affinely fitted prediction against the normalised target."""
    from skimage.metrics import peak_signal_noise_ratio

    ref, fitted = fit_to_target(target, prediction)
    return float(peak_signal_noise_ratio(ref, fitted, data_range=DATA_RANGE))


def pooled_psnr(values: Sequence[float]) -> float:
    """PSNR (dB) of the mean squared error behind per-image PSNRs ``values``.

    The mean of the dB values is ruled by any image returned (almost) exactly: one in-focus
    crop scored against itself at 300 dB lifts a set scoring 30 dB to 57. Pooling the
    errors counts such a crop as (almost) zero error instead.
    """
    errors = [10 ** (-v / 10) for v in values]
    mean = float(np.mean(errors))
    return float(-10 * np.log10(mean)) if mean > 0 else float("inf")


def ssim_map(target: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of the affinely fitted prediction against the normalised target."""
    from skimage.metrics import structural_similarity

    ref, fitted = fit_to_target(target, prediction)
    return structural_similarity(ref, fitted, data_range=DATA_RANGE, full=True)[1]


def ssim(target: np.ndarray, prediction: np.ndarray) -> float:
    """Mean SSIM (scikit-image's definition: borders of half a window left out)."""
    return masked_ssim(ssim_map(target, prediction), None)


def masked_ssim(smap: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean of an SSIM map inside ``mask`` (all of it if ``None``), borders left out as
    scikit-image does (its default 7-pixel window leaves 3 unreliable pixels each side)."""
    pad = 3
    inner = (slice(pad, -pad), slice(pad, -pad))
    values = smap[inner] if mask is None else smap[inner][mask[inner]]
    return float(values.mean()) if values.size else float("nan")


def segment_nuclei(image: np.ndarray, min_size: int = 30, min_distance: int = 7) -> np.ndarray:
    """Label image of nuclei: Gaussian smoothing, Otsu threshold, distance-transform watershed.

    Fixed and classical on purpose: it measures whether an image *behaves* like the in-focus
    one for a standard analysis, not how good a segmenter can be. Otsu's threshold does not
    depend on intensity scale, so raw and restored images can be compared directly.
    """
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), 1.0)
    if np.ptp(smooth) == 0:
        return np.zeros(smooth.shape, dtype=np.int32)
    components, n = ndimage.label(ndimage.binary_fill_holes(smooth > threshold_otsu(smooth)))
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    keep = sizes >= min_size
    keep[0] = False
    mask = keep[components]
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(mask), 1.0)
    components, _ = ndimage.label(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components,
                           exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask).astype(np.int32)


def match_objects(reference: np.ndarray, labels: np.ndarray, iou: float = IOU_MATCH
                  ) -> tuple[int, int, int]:
    """(matched, objects in reference, objects in labels): one-to-one matches with IoU >= iou."""
    from scipy.optimize import linear_sum_assignment

    ref_ids, ref_inv = np.unique(reference, return_inverse=True)
    lab_ids, lab_inv = np.unique(labels, return_inverse=True)
    n_ref = int((ref_ids > 0).sum())
    n_lab = int((lab_ids > 0).sum())
    if n_ref == 0 or n_lab == 0:
        return 0, n_ref, n_lab
    overlap = np.zeros((len(ref_ids), len(lab_ids)), dtype=np.int64)
    np.add.at(overlap, (ref_inv.ravel(), lab_inv.ravel()), 1)
    ref_area = overlap.sum(axis=1, keepdims=True)
    lab_area = overlap.sum(axis=0, keepdims=True)
    ious = overlap / np.maximum(ref_area + lab_area - overlap, 1)
    ious = ious[ref_ids > 0][:, lab_ids > 0]
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return int((ious[rows, cols] >= iou).sum()), n_ref, n_lab


def focus_score(image: np.ndarray) -> float:
    """No-reference sharpness: variance of the Laplacian over the variance of the image.

    The ratio is blind to exposure and offset; a light smoothing first keeps pixel noise from
    passing for sharpness. Higher is sharper (in-focus BBBC006 nuclei score about ten times
    their z=00 planes); compare within one dataset.
    """
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), 1.0)
    var = float(np.var(smooth))
    return float(np.var(ndimage.laplace(smooth))) / var if var > 0 else 0.0


@dataclass(frozen=True)
class FieldScores:
    """Every score of one restored field against its target (one row of metrics.csv)."""

    psnr: float
    ssim: float
    fg_ssim: float
    nuclei_target: int
    nuclei_pred: int
    count_error: int
    nuclei_f1: float
    focus: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def score_field(target: np.ndarray, prediction: np.ndarray,
                target_labels: np.ndarray | None = None) -> FieldScores:
    """All full-reference and downstream scores of ``prediction`` against ``target``.

    Pass ``target_labels`` (``segment_nuclei(target)``) when scoring many methods on one field.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if target_labels is None:
        target_labels = segment_nuclei(target)
    ref, fitted = fit_to_target(target, prediction)
    smap = structural_similarity(ref, fitted, data_range=DATA_RANGE, full=True)[1]
    labels = segment_nuclei(prediction)
    matched, n_ref, n_pred = match_objects(target_labels, labels)
    f1 = 2 * matched / (n_ref + n_pred) if n_ref + n_pred else 1.0
    return FieldScores(
        psnr=float(peak_signal_noise_ratio(ref, fitted, data_range=DATA_RANGE)),
        ssim=masked_ssim(smap, None),
        fg_ssim=masked_ssim(smap, target_labels > 0),
        nuclei_target=n_ref,
        nuclei_pred=n_pred,
        count_error=n_pred - n_ref,
        nuclei_f1=float(f1),
        focus=focus_score(prediction),
    )


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap confidence interval over ``n`` fields."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean, resampling fields with replacement.

    Fields, not pixels, are the independent units: pixels of one field share its cells.
    Non-finite values (PSNR of a perfect match) are left out.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, (tail, 100 - tail))
    return Interval(float(x.mean()), float(low), float(high), int(x.size))
