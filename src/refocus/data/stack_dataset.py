"""Random crops of (defocused plane, best-focus plane) pairs taken from z-stacks in memory.

A lab's own z-stacks (:mod:`refocus.data.zstacks`) hold every plane of a field, so a pair
is two planes of one stack rather than two files. The crops, augmentation and per-plane
percentile normalisation are :class:`~refocus.data.dataset.CropDataset`'s, so training on
stacks and training on files see the same kind of example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from refocus.data.dataset import CropDataset
from refocus.data.normalize import PercentileNormalizer
from refocus.data.zstacks import ZStack, stack_pairs
from refocus.errors import RefocusError


@dataclass(frozen=True)
class StackPair:
    """Plane ``input`` of ``stack`` (``defocus_um`` from focus) and its target plane."""

    stack: ZStack
    input: int
    target: int
    defocus_um: float

    @property
    def group(self) -> str:
        """What the split is made by: the stack (its planes share every cell)."""
        return str(self.stack.source)

    @property
    def name(self) -> str:
        return f"{self.stack.name}_z{self.input:02d}"


def pairs_of_stack(stack: ZStack, focus_plane: int, max_defocus_um: float) -> list[StackPair]:
    """Every plane within ``max_defocus_um`` of ``focus_plane`` paired with it."""
    return [StackPair(stack, i, t, d) for i, t, d in stack_pairs(stack, focus_plane,
                                                                 max_defocus_um)]


class StackCrops(CropDataset):
    """``crops_per_pair`` random crops of each :class:`StackPair` per epoch (seeded, as
    :class:`~refocus.data.dataset.CropDataset`); each plane is normalised once, whole."""

    def __init__(
        self,
        pairs: Sequence[StackPair],
        normalizer: PercentileNormalizer | None = None,
        size: int = 128,
        crops_per_pair: int = 8,
        augment: bool = True,
        seed: int = 0,
        guide: str | None = None,
    ) -> None:
        super().__init__(
            pairs, normalizer, size, crops_per_pair, augment, seed,  # type: ignore[arg-type]
            guide,
        )
        self._normalised: dict[tuple[str, int], np.ndarray] = {}

    def raw_input(self, pair: StackPair) -> np.ndarray:  # type: ignore[override]
        return pair.stack.planes[pair.input]

    def _plane(self, stack: ZStack, index: int) -> np.ndarray:
        key = (str(stack.source), index)
        if key not in self._normalised:
            self._normalised[key] = self.cache.normalizer(stack.planes[index])
        return self._normalised[key]

    def planes(self, pair: StackPair) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        """The normalised whole input and target planes of one pair."""
        x, y = self._plane(pair.stack, pair.input), self._plane(pair.stack, pair.target)
        if min(x.shape) < self.size:
            raise RefocusError(pair.stack.source, f"planes {x.shape} smaller than the crop "
                                                  f"size {self.size} (--size)")
        return x, y
