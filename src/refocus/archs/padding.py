"""The size rule of the networks: inputs are padded to a multiple of their stride (32 px
for the five-times-halving U-Nets) and cropped back. One definition, because chunk-wise
prediction (:mod:`refocus.inference`) must pad exactly as the network does."""

from __future__ import annotations

import torch
import torch.nn.functional as F

MULTIPLE = 32  # the encoder halves the size five times


MULTIPLE = 32  # the encoder halves the size five times


def grid_pads(n: int, multiple: int = MULTIPLE) -> tuple[int, int]:
    """(before, after) padding of a length-``n`` axis up to ``multiple``, split evenly with
    the odd pixel after. The one definition of the split: chunk-wise prediction
    (:mod:`refocus.predict`, :mod:`refocus.largeimage`) must pad exactly as the network does."""
    pad = -n % multiple
    return pad // 2, pad - pad // 2


def reflect_fits(height: int, width: int, multiple: int = MULTIPLE) -> bool:
    """Whether :func:`grid_pads` can reflect (each pad shorter than its axis, as reflection
    needs); on tiny images the edge is replicated instead."""
    top, bottom = grid_pads(height, multiple)
    left, right = grid_pads(width, multiple)
    return max(left, right) < width and max(top, bottom) < height


def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> torch.Tensor:
    """Pad the last two dims up to ``multiple``, split evenly; reflect (replicate if tiny)."""
    h, w = x.shape[-2:]
    top, bottom = grid_pads(h, multiple)
    left, right = grid_pads(w, multiple)
    pads = (left, right, top, bottom)
    if not any(pads):
        return x
    mode = "reflect" if reflect_fits(h, w, multiple) else "replicate"
    return F.pad(x, pads, mode=mode)
