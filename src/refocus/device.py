"""Which device to compute on: the same choice for training and prediction."""

from __future__ import annotations

import torch

from refocus.errors import RefocusError


def select_device(name: str | torch.device | None = None, local_rank: int = 0) -> torch.device:
    """``name`` if given (not ``"auto"``), else the first of CUDA (this process's GPU), MPS,
    CPU. One rule for training and prediction, so both pick the same device."""
    if name is not None and str(name) != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise RefocusError(None, f"unknown device {name!r}") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RefocusError(None, f"device {name!r} asked for but CUDA is not available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RefocusError(None, f"device {name!r} asked for but MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
