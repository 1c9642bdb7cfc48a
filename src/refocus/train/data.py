"""A run's data: pairs split by well (or file), random training crops, fixed validation crops.

Every plane is decoded once, before the loaders start, so that forked DataLoader workers
share the cache; the split and its provenance go into the model file, because evaluating
on training wells would overstate the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import track
from torch.utils.data import DataLoader, DistributedSampler

from refocus.data import PercentileNormalizer, build_pairs, split_pairs
from refocus.data.dataset import CropDataset
from refocus.data.in_focus import NAME as IN_FOCUS
from refocus.data.in_focus import PROTOCOLS
from refocus.data.stack_dataset import StackCrops
from refocus.data.synthetic import SyntheticPairs
from refocus.errors import RefocusError
from refocus.train.config import TrainConfig
from refocus.train.distributed import DistContext
from refocus.train.zstacks import split_stacks

#: Data-loading processes when ``--workers`` is not given.
GPU_WORKERS = 4


@dataclass
class TrainData:
    """The crops a run trains and validates on, and where they came from."""

    config: TrainConfig
    ctx: DistContext
    normalizer: PercentileNormalizer
    provenance: dict[str, Any]
    train_set: CropDataset | SyntheticPairs  # StackCrops is a CropDataset
    val_loader: DataLoader
    loader_kw: dict[str, Any]
    steps: int  # per epoch and process

    def epoch_loader(self, epoch: int, skip: int) -> DataLoader:
        """This process's batches of ``epoch``, from step ``skip`` on (a resumed epoch sees
        exactly the batches the interrupted one had left)."""
        config, ctx = self.config, self.ctx
        self.train_set.set_epoch(epoch)
        sampler = DistributedSampler(
            self.train_set, ctx.world, ctx.rank, shuffle=True, seed=config.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        return DataLoader(
            self.train_set,
            batch_size=config.batch,
            sampler=list(sampler)[skip * config.batch : self.steps * config.batch],
            drop_last=True,
            generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch),
            **self.loader_kw,
        )


def prepare_data(
    config: TrainConfig, ctx: DistContext, device: torch.device, console: Console
) -> TrainData:
    """Split the pairs, build the crop datasets and decode every plane once."""
    splits, provenance = split_stacks(config, console) if config.zstacks else split_data(config)
    normalizer = PercentileNormalizer()
    train_set, val_set = make_datasets(config, splits, normalizer)
    cuda = device.type == "cuda"
    workers = config.workers if config.workers is not None else (GPU_WORKERS if cuda else 0)
    loader_kw: dict[str, Any] = {"num_workers": workers, "pin_memory": cuda}
    steps = len(train_set) // ctx.world // config.batch
    if steps == 0:
        on = f" on {ctx.world} processes" if ctx.world > 1 else ""
        msg = f"only {len(train_set)} training crops for --batch {config.batch}{on}"
        raise RefocusError(config.data, msg)
    for dataset in (train_set, val_set):
        if isinstance(dataset, SyntheticPairs):
            dataset.warm_up()  # every PSF and table entry now, before workers fork
            continue
        reading = "reading images" + (" and computing their guides" if config.guide else "")
        for index in track(range(len(dataset.pairs)), reading, console=console,
                           transient=True):
            dataset.network_input(index)
    val_loader = DataLoader(val_set, batch_size=config.batch, **loader_kw)
    return TrainData(config, ctx, normalizer, provenance, train_set, val_loader, loader_kw, steps)


def make_datasets(config: TrainConfig, splits: dict[str, list], normalizer: PercentileNormalizer
                  ) -> tuple[CropDataset | SyntheticPairs, CropDataset | SyntheticPairs]:
    """Training and validation crops: read from pairs of files or planes of z-stacks, or
    (the ``in-focus`` layout) simulated on the fly from in-focus fields with the
    ``--synthetic`` protocol."""
    if config.zstacks or config.layout != IN_FOCUS:
        crops = StackCrops if config.zstacks else CropDataset
        return (
            crops(splits["train"], normalizer, config.size, config.crops_per_pair, True,
                  config.seed, config.guide),
            crops(splits["val"], normalizer, config.size, config.val_crops, False, config.seed,
                  config.guide),
        )
    protocol = PROTOCOLS.get(config.synthetic, "--synthetic")()

    def synthetic(split: str, crops: int, augment: bool) -> SyntheticPairs:
        fields = [p.target for p in splits[split]]
        return SyntheticPairs(fields, protocol, normalizer, config.size, crops, augment,
                              config.seed, guide=config.guide)

    return synthetic("train", config.crops_per_pair, True), synthetic("val", config.val_crops,
                                                                        False)


def split_data(config: TrainConfig) -> tuple[dict[str, list], dict[str, Any]]:
    """The seeded split by well (or file) and the provenance the model file records."""
    assert config.data is not None and config.channel is not None  # set without zstacks
    pairs = build_pairs(
        config.data, config.layout, config.input_z, config.target_z, (config.channel,)
    )
    fractions = tuple(config.fractions)
    splits = split_pairs(pairs, fractions, config.seed)  # type: ignore[arg-type]
    for name in ("train", "val"):
        if not splits[name]:
            raise RefocusError(
                config.data,
                f"no {name} images after splitting by well/file: training needs at least two "
                "wells (or files) so one can be held out for validation",
            )
    provenance: dict[str, Any] = {
        "data": str(Path(config.data).resolve()),
        "layout": config.layout,
        **({"synthetic": config.synthetic} if config.layout == IN_FOCUS else {}),
        "split_seed": config.seed,
        "fractions": [float(f) for f in fractions],
        "groups": {k: sorted({p.group for p in v}) for k, v in splits.items()},
        "n_pairs": {k: len(v) for k, v in splits.items()},
    }
    if config.layout == "bbbc006":
        provenance.update(
            channel=config.channel, input_z=list(config.input_z), target_z=config.target_z
        )
    return splits, provenance
