"""Percentile normalisation (the CSBDeep convention) whose settings travel with the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PercentileNormalizer:
    """Map each image's ``low`` percentile to 0 and its ``high`` percentile to 1.

    Per-image percentiles make the network blind to exposure time and camera offset, which
    differ between plates; ``low``/``high`` are stored in the model file so prediction
    normalises exactly as training did.
    """

    low: float = 1.0
    high: float = 99.8
    eps: float = 1e-6

    def percentiles(self, image: np.ndarray) -> tuple[float, float]:
        lo, hi = np.percentile(image, (self.low, self.high))
        return float(lo), float(hi)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        lo, hi = self.percentiles(image)
        return self.apply(image, lo, hi)

    def apply(self, image: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return ((image.astype(np.float32) - lo) / max(hi - lo, self.eps)).astype(np.float32)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
