"""What a network computes per pixel: the number that decides whether ONNX Runtime is worth
an export (:mod:`refocus.inference.backends`) and that the benchmarks report."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from refocus.archs import input_channels


def macs_per_pixel(model: nn.Module, device: str | torch.device | None = None,
                   side: int = 128) -> float:
    """Multiply-accumulates of one forward pass per input pixel (convolutions and matmuls,
    as torch's FlopCounterMode counts them; 2 flops per MAC), on a ``side`` x ``side``
    zero image with the model's input channels, on ``device`` (default: the model's)."""
    device = device or next(model.parameters()).device
    x = torch.zeros(1, input_channels(model), side, side, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # not inference_mode:
        # FlopCounterMode fails on parametrized (weight-normed) modules under it
        model(x)
    return counter.get_total_flops() / 2 / side**2
