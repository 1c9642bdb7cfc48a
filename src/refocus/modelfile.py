"""One file per model (``model.pt``): everything needed to use it and to know where it came from.

The file is a dict of tensors and plain data (dict, list, str, int, float, bool, None),
read back with ``torch.load(weights_only=True)``: opening a model someone sent you can never
run code. Architecture, normalisation, training settings, data provenance and the metrics
history travel with the weights, so predictions normalise exactly as training did and a
result can always be traced to its data.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from refocus.archs import build_network
from refocus.data.normalize import PercentileNormalizer
from refocus.errors import RefocusError
from refocus.guides import Guide, get_guide
from refocus.images import atomic_output
from refocus.torchfile import load_tensors

FORMAT = "refocus-model"
VERSION = 1
_PLAIN = (str, int, float, bool, type(None))
_REQUIRED = ("arch", "normalizer", "train_config", "provenance", "history", "state_dict")


@dataclass
class LoadedModel:
    """A model file's network (in eval mode) and its metadata."""

    model: nn.Module
    arch: dict[str, Any]
    normalizer: PercentileNormalizer
    train_config: dict[str, Any]
    provenance: dict[str, Any]
    history: list[dict[str, Any]]
    guide: Guide | None = None  # the channel the network sees beside the image, if any


def _check_plain(value: object, where: str) -> None:
    """Refuse (at save time) anything ``weights_only`` loading would refuse later."""
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif type(value) not in _PLAIN and not isinstance(value, torch.Tensor):
        # exact types: a str or float subclass (TorchVersion, np.float64) is pickled as a class
        raise TypeError(f"{where}: {type(value).__name__} is not plain data")


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (or compiled) wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def save_model(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    arch: dict[str, Any],
    normalizer: PercentileNormalizer,
    train_config: dict[str, Any],
    provenance: dict[str, Any],
    history: list[dict[str, Any]],
    overwrite: bool = False,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write the model file atomically; ``training_state`` (optimizer, scheduler, RNG,
    position) makes it a checkpoint that ``refocus train --resume`` continues from."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "arch": dict(arch),
        "normalizer": normalizer.to_dict(),
        "train_config": dict(train_config),
        "provenance": dict(provenance),
        "history": [dict(h) for h in history],
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
    }
    if training_state is not None:
        payload["training_state"] = training_state
    return _write(path, payload, overwrite)


def _write(path: str | os.PathLike[str], payload: dict[str, Any], overwrite: bool) -> Path:
    """Write through a temporary file, so a full disk never costs the previous file."""
    _check_plain(payload, "model file")
    try:
        with atomic_output(path, overwrite=overwrite) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports ENOSPC as RuntimeError
        free = shutil.disk_usage(Path(path).resolve().parent).free / 2**20
        raise RefocusError(path, f"could not be written ({type(exc).__name__}; {free:.0f} MB "
                                 "free on that disk); the previous file of that name, if any, "
                                 "is kept") from exc
    return Path(path)


def replace_history(path: str | os.PathLike[str], history: list[dict[str, Any]]) -> None:
    """Rewrite a model file with a longer metrics history, weights untouched (the best
    epoch's file is written mid-run; the run's whole history is known only at its end)."""
    payload = read_model_file(path)
    payload["history"] = [dict(h) for h in history]
    _write(path, payload, overwrite=True)


def save_half_precision(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                        overwrite: bool = False, keep_below: int = 0) -> Path:
    """A copy of model file ``src`` with float16 weights and no training state: half the
    bytes, for shipping inside the package (:func:`load_model` computes in float32).
    Tensors of fewer than ``keep_below`` values (biases, norms, per-channel scales: few
    bytes, but each scales a whole channel) stay float32."""
    payload = read_model_file(src)
    payload.pop("training_state", None)
    payload["state_dict"] = {
        k: v.half() if v.is_floating_point() and v.numel() >= keep_below else v
        for k, v in payload["state_dict"].items()}
    payload["provenance"] = {**payload["provenance"], "stored_as": "float16",
                             "stored_from": Path(src).name}
    return _write(dst, payload, overwrite)


def read_model_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked contents of a model file (tensors on the CPU)."""
    path = Path(path)
    payload = load_tensors(path, "model file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RefocusError(path, "not a refocus model file (no refocus header)")
    if payload.get("version") != VERSION:
        raise RefocusError(
            path, f"model file version {payload.get('version')!r}; this refocus reads {VERSION}"
        )
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise RefocusError(path, f"damaged model file: missing {', '.join(missing)}")
    return payload


def _normalizer(path: Path, settings: Any) -> PercentileNormalizer:
    """The stored normaliser, refusing hand-edited settings at load time (not per image)."""
    fields = {f.name for f in dataclasses.fields(PercentileNormalizer)}
    if not isinstance(settings, dict) or not set(settings) <= fields:
        raise RefocusError(path, f"damaged model file: normalizer settings {settings!r} "
                                 f"(known keys: {', '.join(sorted(fields))})")
    bad = {k: v for k, v in settings.items() if type(v) not in (int, float) or v != v}
    if bad:
        raise RefocusError(path, f"damaged model file: normalizer values must be numbers, "
                                 f"got {bad!r}")
    normalizer = PercentileNormalizer(**settings)
    if not 0 <= normalizer.low < normalizer.high <= 100:
        raise RefocusError(path, f"damaged model file: percentiles {normalizer.low}, "
                                 f"{normalizer.high} are not 0 <= low < high <= 100")
    return normalizer


def _channels(path: Path, train_config: Any) -> None:
    channels = train_config.get("channels", []) if isinstance(train_config, dict) else None
    if isinstance(channels, str):
        channels = [channels]
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise RefocusError(path, f"damaged model file: channels must be a list of channel "
                                 f"names, got {channels!r}")


def _guide(path: Path, payload: dict[str, Any]) -> Guide | None:
    """The model's guide (:mod:`refocus.guides`), refused when the network's input does not
    have a channel for it (or has one too many)."""
    name = payload["train_config"].get("guide")
    guide = get_guide(name if isinstance(name, str) or name is None else repr(name), path)
    channels = payload["arch"].get("in_channels", 1) if isinstance(payload["arch"], dict) else 1
    if channels != (2 if guide else 1):
        raise RefocusError(path, f"damaged model file: a network of {channels} input channels "
                                 f"with guide {name!r}")
    return guide


def _check_finite(path: Path, state_dict: dict[str, Any]) -> None:
    bad = [k for k, v in state_dict.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise RefocusError(path, f"damaged model file: weights hold NaN or infinite values "
                                 f"({bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''})")


def _network(path: Path, payload: dict[str, Any]) -> nn.Module:
    arch = payload["arch"]
    if not isinstance(arch, dict) or not isinstance(arch.get("arch"), str):
        raise RefocusError(path, f"damaged model file: architecture entry {arch!r}")
    _check_finite(path, payload["state_dict"])
    model = build_network(arch, path)
    try:
        model.load_state_dict(payload["state_dict"])
    except MemoryError as exc:
        raise RefocusError(path, "not enough memory to load the model's weights") from exc
    except (KeyError, TypeError, RuntimeError) as exc:
        if "can't allocate memory" in str(exc) or "out of memory" in str(exc):
            raise RefocusError(path, "not enough memory to load the model's weights") from exc
        raise RefocusError(path, f"damaged model file: weights do not fit {arch!r}") from exc
    return model


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network of a model file on ``device``, in eval mode; every setting is
    checked here, so a damaged file fails once at load, never per image."""
    path = Path(path)
    payload = read_model_file(path)
    normalizer = _normalizer(path, payload["normalizer"])
    _channels(path, payload["train_config"])
    guide = _guide(path, payload)
    model = _network(path, payload)
    model.guide = guide  # what its input needs: refocus.guides.network_guide
    return LoadedModel(
        model=model.to(device).eval(),
        arch=payload["arch"],
        normalizer=normalizer,
        train_config=payload["train_config"],
        provenance=payload["provenance"],
        history=payload["history"],
        guide=guide,
    )
