"""Seeded splits by group, so no well (or file) ever lands in two splits."""

from __future__ import annotations

import random
from collections.abc import Sequence

SPLITS = ("train", "val", "test")


def split_groups(
    groups: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, str]:
    """Assign each distinct group to train/val/test with a seeded shuffle.

    With two or more groups there is always at least one validation group, because a run
    without validation cannot pick its best checkpoint. Test gets groups only when there are
    three or more and its fraction asks for at least one.
    """
    unique = sorted(set(groups))
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    random.Random(seed).shuffle(unique)
    n = len(unique)
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    if n >= 2:
        n_val = max(n_val, 1)
    if n >= 3 and fractions[2] > 0:
        n_test = max(n_test, 1)
    n_test = min(n_test, max(n - n_val - 1, 0))
    n_val = min(n_val, max(n - 1, 0))
    assignment = {}
    for i, group in enumerate(unique):
        if i < n_val:
            assignment[group] = "val"
        elif i < n_val + n_test:
            assignment[group] = "test"
        else:
            assignment[group] = "train"
    return assignment


def split_by_well(
    wells: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, str]:
    """Well -> split. Sites of one well share a split: neighbouring sites share cells' state."""
    return split_groups(wells, fractions, seed)
