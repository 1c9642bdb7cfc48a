"""One optimisation step and one validation pass: the two things every epoch repeats.

Validation scores crops as ``refocus evaluate`` scores images (:mod:`refocus.metrics`), so
the best epoch is chosen by the measure the model is judged by.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from refocus import metrics


def train_step(
    net: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    x: torch.Tensor,
    y: torch.Tensor,
    amp: torch.dtype | None,
) -> tuple[list[str], torch.Tensor]:
    """One optimisation step; returns the term names (``loss`` first) and their detached
    values as one tensor, so logging costs a single device sync when it is read."""
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        pred = net(x)
        terms = loss_fn(pred.float(), y)
    values = list(terms.values())
    total = torch.stack(values).sum()
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        total.backward()
        optimizer.step()
    scheduler.step()
    return ["loss", *terms], torch.stack([total, *values]).detach()


@torch.no_grad()
def evaluate(
    predict: Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    device: torch.device,
    amp: torch.dtype | None,
    prefix: str = "val",
) -> dict[str, float]:
    """Mean L1 (on normalised pixels, what the loss sees) and PSNR/SSIM as
    ``refocus evaluate`` scores them (:mod:`refocus.metrics`), over the validation crops;
    the PSNR pooled (:func:`~refocus.metrics.pooled_psnr`), since in-focus crops
    scored against themselves would rule a mean of dB values."""
    l1, psnr, ssim = [], [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            pred = predict(x)
        pred_np = pred.float().cpu().numpy()[:, 0]
        for p, t in zip(pred_np, y.numpy()[:, 0], strict=True):
            l1.append(float(np.abs(p - t).mean()))
            psnr.append(metrics.psnr(t, p))
            ssim.append(metrics.ssim(t, p))
    return {
        f"{prefix}_l1": float(np.mean(l1)),
        f"{prefix}_psnr": metrics.pooled_psnr(psnr),
        f"{prefix}_ssim": float(np.mean(ssim)),
    }
