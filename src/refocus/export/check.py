"""The check every export passes before it is kept: same output as PyTorch on a real image.

The exported network and the PyTorch network refocus the same real defocused BBBC006 field
(by default; normalised as in training, 520x696, so not a multiple of the encoder's 32-px
stride and the padding path is exercised too), and the largest absolute difference is
reported. An export further than :data:`TOLERANCE` from PyTorch is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from refocus.convert import RUNNERS
from refocus.errors import RefocusError
from refocus.guides import Guide, guide_input
from refocus.images import read_plane

if TYPE_CHECKING:
    from refocus.data.normalize import PercentileNormalizer
    from refocus.modelfile import LoadedModel

#: Exported files must match PyTorch this closely on the normalised sample (0..1 scale).
TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportReport:
    """Where an export went and how closely each exported runtime matches PyTorch."""

    format: str
    path: Path
    sample: str
    max_abs_diff: dict[str, float]
    validation: str | None = None
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.format}: {self.path}"]
        out += [
            f"  {runtime} vs PyTorch on {self.sample}: max abs diff {diff:.2e}"
            for runtime, diff in self.max_abs_diff.items()
        ]
        if self.validation is not None:
            out.append(f"  bioimageio.spec validation: {self.validation}")
        out += [f"  warning: {w}" for w in self.warnings]
        return out


@dataclass(frozen=True, eq=False)
class Reference:
    """A real plane and the PyTorch network's output for it: what an export must reproduce.

    The plane is decoded once, as ``raw``: the bioimage.io package also cuts its test
    tensors from it.
    """

    sample: Path
    raw: np.ndarray  # the plane as read
    x: np.ndarray  # normalised as in training, (1, C, H, W) float32 (C = 2 with a guide)
    expected: np.ndarray  # the PyTorch network's output for x

    @classmethod
    def of(cls, loaded: LoadedModel, sample: str | os.PathLike[str]) -> Reference:
        """Read ``sample`` and run the loaded PyTorch network on it (CPU, float32)."""
        sample = Path(sample)
        raw = read_plane(sample)
        x = _normalised(loaded.normalizer, raw, loaded.guide)
        return cls(sample, raw, x, pytorch_output(loaded.model, x))

    def check(self, runtime: str, path: Path) -> float:
        """Max abs difference between the exported file and PyTorch; refuse a bad export."""
        y = RUNNERS[runtime](path, self.x)
        diff = float(np.max(np.abs(y.astype(np.float64) - self.expected.astype(np.float64))))
        if not diff <= TOLERANCE:
            raise RefocusError(path, f"{runtime} export differs from PyTorch by {diff:.3g} "
                                     f"(tolerance {TOLERANCE:g}); not kept")
        return diff


def sample_input(normalizer: PercentileNormalizer, sample: str | os.PathLike[str],
                 guide: Guide | None = None) -> np.ndarray:
    """A real plane normalised as in training, shaped (1, C, H, W) float32."""
    return _normalised(normalizer, read_plane(sample), guide)


def _normalised(normalizer: PercentileNormalizer, raw: np.ndarray, guide: Guide | None
                ) -> np.ndarray:
    """``raw`` as the network sees it, shaped (1, C, H, W) float32: normalised, and with a
    guide the guide channel after it (:func:`refocus.guides.guide_input`)."""
    return guide_input(guide, normalizer(raw), raw)[None]


def pytorch_output(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The reference: the PyTorch network in float32 eager mode."""
    with torch.no_grad():
        return model.eval()(torch.from_numpy(np.ascontiguousarray(x))).numpy()
