"""Where a run executes: one process or several under ``torchrun``, and at what precision.

Under ``torchrun`` every process trains on its share of each epoch's crops through
DistributedDataParallel; rank 0 alone prints and writes files. A Ctrl-C must stop every
process at the same step, so the request is shared before it is honoured.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    """This process's place among the run's processes (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_context() -> tuple[DistContext, bool]:
    """The context ``torchrun`` set up, and whether this call started the process group
    (then the caller destroys it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), False
    started = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started = True
    rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    return DistContext(rank, local_rank, dist.get_world_size()), started


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """The model as this process trains it: itself alone, DDP-wrapped under torchrun."""
    if ctx.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs that have it, fp16 (with loss scaling) on older ones, none elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class StopRequest:
    """Turn the first Ctrl-C into a request honoured between steps (so the checkpoint holds
    a consistent step); a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """The handler for the ``with`` block (only the main thread can take signals)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, self._previous)

    def agreed(self, ctx: DistContext, device: torch.device) -> bool:
        """Whether any process was asked to stop (all must stop at the same step)."""
        if ctx.world == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
