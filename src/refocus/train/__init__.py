"""Training: configuration, schedule, resumable state, distributed runs and the loop."""

from refocus.train.loop import TrainConfig, TrainResult, autocast_dtype, last_path, train

__all__ = ["TrainConfig", "TrainResult", "autocast_dtype", "last_path", "train"]
