"""Training: configuration, schedule, data, resumable state, distributed runs and the loop.

:mod:`~refocus.train.config` (what defines a run, validated when built),
:mod:`~refocus.train.schedule` (stages, optimizer, learning rates),
:mod:`~refocus.train.data` (split and crops), :mod:`~refocus.train.zstacks` (the data
of ``--zstacks``: focus planes found, split by stack), :mod:`~refocus.train.step` (one
step, one validation), :mod:`~refocus.train.state` (seeding, RNG, checkpoint checks),
:mod:`~refocus.train.distributed` (torchrun, precision, Ctrl-C) and
:mod:`~refocus.train.loop` (epochs and stages).
"""

from refocus.train.config import TrainConfig
from refocus.train.distributed import autocast_dtype
from refocus.train.loop import TrainResult, train
from refocus.train.state import last_path

__all__ = ["TrainConfig", "TrainResult", "autocast_dtype", "last_path", "train"]
