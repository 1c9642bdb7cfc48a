"""CARE's U-Net (Weigert et al. 2018, CSBDeep): the small-network baseline to beat.

CSBDeep's ``common_unet``/``custom_unet`` with the defaults of its ``Config`` for one
channel in and out: depth 2, 32 filters at the first level (doubled per level), two
convolutions per level, ReLU, 2x2 max-pooling, nearest-neighbour upsampling with
concatenated skips, a linear 1x1 head and ``residual=True`` (``n_channel_in ==
n_channel_out``), i.e. output = input + head. The middle and each decoder level end with
half the filters, as ``unet_block`` does. One departure: CSBDeep's 2-D default kernel is
5x5 (0.92 M parameters); 3x3 (``kernel_size=3``, 0.33 M) is the default here, as in
CAREamics' CARE U-Net, the configuration that beat the paper's network at equal CPU time.
Initialisation is Glorot-uniform with zero biases, Keras' defaults.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refocus.archs import register_architecture
from refocus.archs.padding import pad_to_multiple


def _convs(channels: list[int], kernel_size: int) -> nn.Sequential:
    """``len(channels) - 1`` same-padded convolutions, each followed by ReLU."""
    layers: list[nn.Module] = []
    for ni, nf in zip(channels[:-1], channels[1:], strict=True):
        conv = nn.Conv2d(ni, nf, kernel_size, padding=kernel_size // 2)
        nn.init.xavier_uniform_(conv.weight)
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class CareUNet(nn.Module):
    """(N, 1, H, W) -> (N, 1, H, W) for any H and W (padded to ``2**depth``, cropped back)."""

    def __init__(
        self, depth: int, first_filters: int, convs_per_level: int, kernel_size: int,
        residual: bool,
    ) -> None:
        super().__init__()
        if depth < 1 or first_filters < 1 or convs_per_level < 1 or kernel_size % 2 == 0:
            raise ValueError("depth, filters and convolutions must be positive, kernel odd")
        self.multiple = 2**depth
        self.residual = residual
        n, k = convs_per_level, kernel_size
        self.down = nn.ModuleList()
        c_in = 1
        for level in range(depth):
            c = first_filters * 2**level
            self.down.append(_convs([c_in] + [c] * n, k))
            c_in = c
        deep, c_in = first_filters * 2**depth, first_filters * 2 ** max(0, depth - 1)
        self.middle = _convs([first_filters * 2 ** (depth - 1)] + [deep] * (n - 1) + [c_in], k)
        self.up = nn.ModuleList()
        for level in reversed(range(depth)):
            c = first_filters * 2**level
            out = first_filters * 2 ** max(0, level - 1)
            self.up.append(_convs([c_in + c] + [c] * (n - 1) + [out], k))
            c_in = out
        self.head = nn.Conv2d(c_in, 1, 1)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected (N, 1, H, W) input, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, self.multiple)
        y, skips = padded, []
        for block in self.down:
            y = block(y)
            skips.append(y)
            y = F.max_pool2d(y, 2)
        y = self.middle(y)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            y = block(torch.cat([F.interpolate(y, scale_factor=2.0, mode="nearest"), skip], 1))
        y = self.head(y)
        if self.residual:
            y = y + padded
        top, left = (y.shape[-2] - h) // 2, (y.shape[-1] - w) // 2
        return y[..., top : top + h, left : left + w]


@register_architecture("care", "CARE/CSBDeep U-Net (depth 2, 32 filters, residual): baseline")
def build_care(
    depth: int = 2,
    first_filters: int = 32,
    convs_per_level: int = 2,
    kernel_size: int = 3,
    residual: bool = True,
) -> CareUNet:
    """CSBDeep's CARE defaults for one channel (kernel 3x3, see the module docstring)."""
    return CareUNet(depth, first_filters, convs_per_level, kernel_size, residual)
