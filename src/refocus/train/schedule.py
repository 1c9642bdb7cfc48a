"""The method's schedule: two one-cycle stages, AdamW, discriminative learning rates.

Stage one trains around a frozen pretrained part (its BatchNorm layers still adapt) at ten
times the learning rate, stage two trains everything with discriminative learning rates
(early encoder layers move 100x slower than the decoder), as in the published fastai method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from refocus.archs import param_groups
from refocus.train.config import TrainConfig

FROZEN_LR_FACTOR = 10.0  # the method: slice(lr * 10) with the encoder frozen
DISCRIMINATIVE = (0.01, 0.1, 1.0)  # the method: slice(lr / 100, lr) over three groups


@dataclass(frozen=True)
class Stage:
    """Epochs ``start`` to ``end`` (exclusive), with the pretrained part frozen or not."""

    index: int
    start: int
    end: int
    frozen: bool


def stages(config: TrainConfig) -> list[Stage]:
    """The run's stages: frozen for ``n_frozen`` epochs (if any), then all layers."""
    n = config.n_frozen
    out = []
    if n:
        out.append(Stage(0, 0, n, frozen=True))
    if n < config.epochs:
        out.append(Stage(len(out), n, config.epochs, frozen=False))
    return out


def max_lrs(config: TrainConfig, stage: Stage, n_groups: int) -> list[float]:
    """Each parameter group's peak learning rate: discriminative only where there are the
    three groups the method splits a pretrained network into; one rate otherwise."""
    if stage.frozen:
        return [config.lr * FROZEN_LR_FACTOR] * n_groups
    if config.pretrained and n_groups == len(DISCRIMINATIVE):
        return [config.lr * f for f in DISCRIMINATIVE]
    return [config.lr] * n_groups


def make_optimizer(
    model: nn.Module, config: TrainConfig, stage: Stage, steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.OneCycleLR]:
    """AdamW and a one-cycle schedule over the stage's ``steps`` per epoch."""
    groups = param_groups(model)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(
        [{"params": g} for g in groups],
        lr=config.lr,
        betas=(0.9, 0.99),
        weight_decay=config.weight_decay,
        fused=device.type in ("cpu", "cuda"),  # one kernel: 4x faster than foreach on CPU
    )
    # fastai's fit_one_cycle: 30% warm-up, lr/25 start, momentum 0.95 -> 0.85 -> 0.95
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lrs(config, stage, len(groups)),
        total_steps=steps * (stage.end - stage.start),
        pct_start=0.3,
        div_factor=25.0,
        final_div_factor=1e4,
        base_momentum=0.85,
        max_momentum=0.95,
    )
    return optimizer, scheduler
