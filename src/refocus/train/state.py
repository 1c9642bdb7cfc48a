"""What makes a run resumable exactly: seeding, RNG state, and the checks on earlier files.

The last epoch is ``NAME.last.pt`` beside the model file; it holds the optimizer, scheduler,
RNG and position, so ``--resume`` continues where a run stopped, and only when the settings
that define the run are the interrupted run's.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refocus.errors import RefocusError
from refocus.modelfile import read_model_file
from refocus.train.config import TrainConfig
from refocus.zoo import resolve_model


def last_path(out: str | os.PathLike[str]) -> Path:
    """The last-epoch checkpoint beside the model file: ``model.pt`` -> ``model.last.pt``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.last{out.suffix or '.pt'}")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, so the same seed gives the same weights on a CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain data (a model file holds nothing else)."""
    np_state = np.random.get_state(legacy=False)
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def check_outputs(config: TrainConfig) -> dict[str, Any] | None:
    """Refuse to clobber an earlier run; with ``--resume`` return its checkpoint."""
    out, last = Path(config.out), last_path(config.out)
    if config.resume:
        return _resumable(config, last)
    if not config.overwrite:
        for path in (out, last):
            if path.exists():
                raise RefocusError(
                    path, "exists already (use --resume to continue, --overwrite to replace it)"
                )
    return None


def _resumable(config: TrainConfig, last: Path) -> dict[str, Any]:
    """The checkpoint at ``last``, if it is one of a run with the same settings."""
    if not last.is_file():
        raise RefocusError(last, "no checkpoint to resume from (one is written after each epoch)")
    checkpoint = read_model_file(last)
    if "training_state" not in checkpoint:
        raise RefocusError(last, "not a training checkpoint (no training state)")
    saved, now = checkpoint["train_config"], config.run_settings()
    changed = [k for k in now if k != "out" and saved.get(k) != now[k]]  # a moved run resumes
    if changed:
        k = changed[0]
        raise RefocusError(
            last,
            f"--resume needs the interrupted run's settings, but {k} was {saved.get(k)!r} "
            f"and is now {now[k]!r}",
        )
    return checkpoint


def initial_weights(init: str, spec: dict[str, Any], guide: str | None = None
                    ) -> dict[str, torch.Tensor]:
    """The weights of the model ``init`` (a file or a pretrained name) to fine-tune, refused
    unless it was built exactly as this run's network (architecture and its arguments) and
    sees the same guide channel (the same weights read a Wiener and an RL copy alike)."""
    path = resolve_model(init)
    payload = read_model_file(path)
    seen = payload.get("train_config", {}).get("guide")
    if seen != guide:  # first: a guide also changes the input channels
        hint = f"give --guide {seen}" if seen else "leave --guide out"
        raise RefocusError(path, f"--init: this model sees the guide {seen!r}, the run trains "
                                 f"with {guide!r} ({hint})")
    if payload["arch"] != spec:
        raise RefocusError(path, f"--init: this model is {payload['arch']!r}, the run trains "
                                 f"{spec!r} (give the same --arch and its settings)")
    return payload["state_dict"]
