"""Pretrained weights for torchvision networks: a weights enum, a local file, or none.

The encoder and the feature loss's VGG both load through :func:`load_pretrained`, so both
give the same clear message when a download is impossible (machines without internet are
common in microscopy facilities) and both accept a state dict saved on another machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from refocus.errors import RefocusError
from refocus.torchfile import load_tensors

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

IMAGENET = "imagenet"


def _download(enum_member: WeightsEnum, what: str, ways_out: str) -> dict[str, torch.Tensor]:
    try:
        return enum_member.get_state_dict(progress=True, check_hash=True)
    except OSError as exc:  # URLError, socket errors, DNS failures are all OSErrors
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise RefocusError(
            None,
            f"cannot download the pretrained {what} weights ({exc}) and none are cached in "
            f"{cache}: {ways_out}",
        ) from exc


def _read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    state = load_tensors(path, f"{what} weights file")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RefocusError(path, f"not a {what} state dict (expected a dict of tensors)")
    return state


def load_pretrained(
    module: nn.Module,
    weights: str | Path | None,
    default: WeightsEnum,
    *,
    what: str,
    ways_out: str,
    optional_prefixes: Sequence[str] = (),
) -> None:
    """Fill ``module`` (a torchvision network) with pretrained weights, in place.

    ``weights`` is ``None`` (keep the random initialisation), ``"imagenet"`` (``default``),
    the name of another member of ``default``'s enum (e.g. ``"IMAGENET1K_V2"``), or a local
    state-dict file. Keys under ``optional_prefixes`` (the classifier head, which refocus
    discards) may be missing or extra. ``ways_out`` ends the offline message.
    """
    if weights is None:
        return
    enum_cls = type(default)
    name = str(weights)
    if name == IMAGENET:
        state = _download(default, what, ways_out)
        source: str | Path | None = None
    elif name in enum_cls.__members__:
        state = _download(enum_cls[name], what, ways_out)
        source = None
    else:
        source = Path(weights)
        state = _read_state_dict(source, what)
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes (another depth or channel count)
        first = str(exc).strip().splitlines()[-1].strip()
        raise RefocusError(source, f"not a {what} state dict ({first})") from exc
    optional = tuple(optional_prefixes)
    missing = [k for k in result.missing_keys if not k.startswith(optional)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(optional)]
    if missing or unexpected:
        bad = missing or unexpected
        kind = "missing" if missing else "unexpected"
        raise RefocusError(
            source,
            f"not a {what} state dict: {len(bad)} {kind} keys (first: {bad[0]!r})",
        )


IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetRGB(nn.Module):
    """Grey (N, 1, H, W) -> ImageNet-normalised RGB (N, 3, H, W): the input step of both the
    encoder and the feature loss's VGG. Its buffers are not persistent, so state dicts (and
    saved model files) carry no trace of it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std
