"""Random crops of (input, target) pairs for training, decoded once and kept in memory.

BBBC006 planes are 0.7 MB each, so even the full training set (768 fields x 4 planes)
fits in memory; decoding LZW TIFFs every step would starve the GPU instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from refocus.data.normalize import PercentileNormalizer
from refocus.data.pairs import Pair
from refocus.errors import RefocusError
from refocus.guides import get_guide, guide_input
from refocus.images import read_plane


class PlaneCache:
    """Decode each file once and keep its normalised plane (float32) by path."""

    def __init__(self, normalizer: PercentileNormalizer) -> None:
        self.normalizer = normalizer
        self._planes: dict[str, np.ndarray] = {}

    def __call__(self, path: object) -> np.ndarray:
        key = str(path)
        if key not in self._planes:
            self._planes[key] = self.normalizer(read_plane(key))
        return self._planes[key]


def _augment(rng: np.random.Generator, *images: np.ndarray) -> list[np.ndarray]:
    """The same random flip and 90-degree rotation for every image (the 8 dihedral poses),
    as fresh contiguous copies: never views of the cached planes."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for im in images:  # (Y, X) or (C, Y, X)
        im = np.rot90(im, k, axes=(-2, -1))
        if flip:
            im = im[..., ::-1]
        out.append(im.copy())  # C order, even for rotated or flipped views
    return out


class CropDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``crops_per_pair`` crops of ``size``x``size`` from each pair per epoch.

    Item ``i`` of epoch ``e`` always gives the same crop for the same ``seed``
    (a generator seeded by (seed, epoch, i)), so data order survives a resume and
    DataLoader workers need no shared random state. With ``augment=False`` crops do not
    change between epochs (for validation). With a ``guide`` (:mod:`refocus.guides`) each
    input plane gets its guide channel as at inference: computed once on the whole plane
    with the PSF estimated from the plane itself.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        normalizer: PercentileNormalizer | None = None,
        size: int = 128,
        crops_per_pair: int = 8,
        augment: bool = True,
        seed: int = 0,
        guide: str | None = None,
    ) -> None:
        if not pairs:
            raise RefocusError(None, "no image pairs to train or validate on")
        self.pairs = list(pairs)
        self.guide = get_guide(guide, "guide")
        self._inputs: dict[int, np.ndarray] = {}
        self.cache = PlaneCache(normalizer or PercentileNormalizer())
        self.size = size
        self.crops_per_pair = crops_per_pair
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs) * self.crops_per_pair

    def planes(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        """The normalised whole input and target planes of one pair (checked to match)."""
        x, y = self.cache(pair.input), self.cache(pair.target)
        if x.shape != y.shape:
            raise RefocusError(pair.input, f"shape {x.shape} differs from target {y.shape}")
        if min(x.shape) < self.size:
            raise RefocusError(pair.input, f"image {x.shape} smaller than crop size {self.size}")
        return x, y

    def raw_input(self, pair: Pair) -> np.ndarray:
        """The input plane as recorded: what a guide's PSF is estimated on."""
        return read_plane(pair.input)

    def network_input(self, index: int) -> np.ndarray:
        """(C, H, W): pair ``index``'s normalised input plane, and with a guide its guide
        channel (:func:`refocus.guides.guide_input`), computed once."""
        if index not in self._inputs:
            pair = self.pairs[index]
            x = self.planes(pair)[0]
            self._inputs[index] = (x[None] if self.guide is None else
                                   guide_input(self.guide, x, self.raw_input(pair)))
        return self._inputs[index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = i // self.crops_per_pair
        x, y = self.network_input(index), self.planes(self.pairs[index])[1]
        rng = np.random.default_rng([self.seed, self.epoch if self.augment else 0, i])
        top = int(rng.integers(y.shape[0] - self.size + 1))
        left = int(rng.integers(y.shape[1] - self.size + 1))
        window = (slice(top, top + self.size), slice(left, left + self.size))
        x, y = x[(slice(None), *window)], y[window]
        if self.augment:
            x, y = _augment(rng, x, y)
        else:  # copy, so a training step can never write into the cache
            x, y = x.copy(), y.copy()
        return torch.from_numpy(x), torch.from_numpy(y)[None]
