"""Which variant runs by default on a CPU: the fastest one that keeps the quality.

Reduced precision (int8, bf16) is faster on many CPUs but changes the network's
arithmetic, and by how much depends on the weights. So it is measured per model, once,
when the model is first prepared (the result is cached with its graphs by
:mod:`refocus.inference.graphcache`): the fp32 baseline and every candidate refocus the
same shipped fields, and a candidate becomes the default only if its PSNR against the
in-focus truth differs from fp32's by less than :data:`PSNR_BUDGET_DB` on every field AND
it takes at most :data:`SPEED_MARGIN` of fp32's time (a margin, because shared cores make
times noisy). A candidate refused for quality is reported with a warning.

The fields are the shipped in-focus fields (:func:`refocus.samples.in_focus_paths`) with
their z=00 defocus simulated by :func:`refocus.simulate.simulate_plane` (the shipped real
z=00 fields have no in-focus truth; int8 is calibrated on those instead,
:mod:`refocus.inference.quantize`), so the two sets never overlap. PSNR is
:func:`refocus.metrics.psnr`, the score ``refocus evaluate`` reports.
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from refocus.guides import Guide, guide_input

log = logging.getLogger(__name__)

#: Largest PSNR change (dB, on any field) against fp32 that a faster variant may cost.
PSNR_BUDGET_DB = 0.1
#: A candidate counts as faster when it needs at most this fraction of fp32's time.
SPEED_MARGIN = 0.9


@dataclass(frozen=True)
class QualityFields:
    """The fields every variant refocuses: how many, cropped to what, defocused how far."""

    count: int = 3
    crop: int | None = 384  # square crops of the 520x696 fields (None: whole fields)
    defocus_z: int = 0  # BBBC006 plane simulated (0: ~32 um, like the shipped z00 fields)


FIELDS = QualityFields()


@dataclass(frozen=True)
class Measurement:
    """One variant on the quality fields: median seconds a field, PSNR (dB) of each."""

    variant: str
    seconds: float
    psnr_db: tuple[float, ...]


def quality_pairs(fields: QualityFields | None = None, guide: Guide | None = None
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(network input, in-focus truth) for each quality field: the simulated defocused
    plane normalised, (C, H, W), with the ``guide`` channel if any (:func:`guide_input`)."""
    from refocus.data.normalize import PercentileNormalizer
    from refocus.images import read_plane
    from refocus.samples import in_focus_paths
    from refocus.simulate import simulate_plane

    fields = fields or FIELDS
    normalizer = PercentileNormalizer()
    pairs = []
    for index, path in enumerate(in_focus_paths()[: fields.count]):
        truth = read_plane(path)
        if fields.crop:
            truth = truth[: fields.crop, : fields.crop]
        defocused = simulate_plane(truth, fields.defocus_z, rng=index)
        pairs.append((guide_input(guide, normalizer(defocused), defocused), truth))
    return pairs


def measure(variant: str, predict: Callable[[Tensor], Tensor],
            pairs: list[tuple[np.ndarray, np.ndarray]]) -> Measurement:
    """Time ``predict`` on every pair's input (after a small warm-up) and score it."""
    from refocus.metrics import psnr

    def run(x: np.ndarray) -> np.ndarray:
        return predict(torch.from_numpy(np.ascontiguousarray(x))[None])[0, 0].numpy()

    run(pairs[0][0][..., :64, :64])  # first-call costs (allocations, kernel choice)
    times, scores = [], []
    for x, truth in pairs:
        start = time.perf_counter()
        y = run(x)
        times.append(time.perf_counter() - start)
        scores.append(psnr(truth, y))
    return Measurement(variant, statistics.median(times), tuple(scores))


def verdict(candidate: Measurement, baseline: Measurement, budget_db: float | None = None,
            margin: float | None = None) -> str | None:
    """Why ``candidate`` may not replace ``baseline`` (None: it may)."""
    budget_db = PSNR_BUDGET_DB if budget_db is None else budget_db
    margin = SPEED_MARGIN if margin is None else margin
    change = max(abs(c - b) for c, b in zip(candidate.psnr_db, baseline.psnr_db, strict=True))
    if not change < budget_db:
        return f"changes PSNR by {change:.3f} dB on the shipped fields (budget {budget_db} dB)"
    if candidate.seconds > margin * baseline.seconds:
        return (f"is not faster ({candidate.seconds:.3g} s a field against "
                f"{baseline.seconds:.3g} s)")
    return None


def choose_variant(baseline: str, predictors: dict[str, Callable[[Tensor], Tensor]],
                   pairs: list[tuple[np.ndarray, np.ndarray]] | None = None,
                   guide: Guide | None = None) -> dict:
    """Measure ``baseline`` and the other ``predictors``; the report (JSON-able) names the
    fastest accepted one as ``variant`` and says why each other one was refused."""
    pairs = quality_pairs(guide=guide) if pairs is None else pairs
    reference = measure(baseline, predictors[baseline], pairs)
    measured, refused = [reference], {}
    for name, predict in predictors.items():
        if name == baseline:
            continue
        candidate = measure(name, predict, pairs)
        measured.append(candidate)
        reason = verdict(candidate, reference)
        if reason is not None:
            refused[name] = reason
            if "PSNR" in reason:
                warnings.warn(f"{name} {reason}; not using it by default", stacklevel=3)
            else:
                log.info("%s %s; not using it by default", name, reason)
    accepted = [m for m in measured[1:] if m.variant not in refused]
    best = min(accepted, key=lambda m: m.seconds) if accepted else reference
    return {"variant": best.variant, "budget_db": PSNR_BUDGET_DB, "margin": SPEED_MARGIN,
            "measurements": [asdict(m) for m in measured], "refused": refused}
