"""Memory estimates that size the automatic tile: what a network needs per pixel, and what
the device has free, so tiles follow the architecture and the machine rather than a guess."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def activation_bytes_per_pixel(model: nn.Module, device: torch.device, size: int = 64) -> float:
    """Bytes of activations per input pixel: the sum over every layer's output (float32).

    An upper bound on what inference keeps alive at once, measured with forward hooks on
    a small ``size`` x ``size`` probe.
    """
    total = [0]

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 1, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
    return 4.0 * total[0] / (size * size)


def free_memory_bytes(device: torch.device) -> float:
    """Free memory where the activations will live (GPU memory, or available RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return float(free)
    import psutil

    return float(psutil.virtual_memory().available)
