"""How far a trained network looks: the measured receptive radius that sizes tile halos.

A U-Net's theoretical receptive field spans hundreds of pixels, but almost all of an output
pixel's dependence is close by. Measuring it (the input gradient of one output pixel) lets
tiles overlap just enough for tiled prediction to match the whole image
(:mod:`refocus.inference.tiling`), and lets exported models declare their halo.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from refocus.archs import input_channels

#: Gradient mass (of one output pixel w.r.t. the input) that the halo must contain.
RECEPTIVE_MASS = 0.99
#: Side of the probe image the receptive field is measured on (caps the halo at half).
PROBE_SIZE = 256


def probe_image(device: str | torch.device, shape: tuple[int, int] = (96, 128),
                channels: int = 1) -> Tensor:
    """A deterministic, image-like (smooth, 0..1) ``(1, channels, H, W)`` input for probing
    a network: numerics checks of fast variants and the receptive-field measurement. Guide
    channels repeat the image (what a guide is in focus)."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand((1, 1, shape[0] // 8, shape[1] // 8), generator=gen)
    smooth = nn.functional.interpolate(noise, size=shape, mode="bilinear", align_corners=False)
    return smooth.repeat(1, channels, 1, 1).to(device)


def receptive_radius(model: nn.Module, device: torch.device, size: int = PROBE_SIZE,
                     mass: float = RECEPTIVE_MASS) -> int:
    """Radius (px) of the square around an output pixel holding ``mass`` of its gradient,
    measured at the centre of a ``size`` x ``size`` probe (so at most ``size // 2``)."""
    x = probe_image(device, (size, size), input_channels(model)).requires_grad_(True)
    with torch.enable_grad():
        y = model(x)
        c = size // 2
        y[0, 0, c, c].backward()
    grad = x.grad.detach().abs()[0].sum(0).double().cpu().numpy()
    total = grad.sum()
    if total <= 0:
        return 0
    for r in range(c + 1):
        if grad[c - r : c + r + 1, c - r : c + r + 1].sum() >= mass * total:
            return r
    return c
