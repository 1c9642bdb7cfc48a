"""A compact refocusing network for CPUs and small data: a NAFNet-style U-Net.

The paper's ResNet-34 U-Net spends ~470 kMAC per pixel; a laptop with two cores needs a
network several times cheaper that still sees a 70-px defocus disk. This one follows
NAFNet (Chen et al. 2022, "Simple Baselines for Image Restoration"): every block is a
per-pixel LayerNorm, a 1x1 expansion, a 3x3 depthwise convolution, a SimpleGate (one half
of the channels times the other, instead of a nonlinearity), channel attention, a 1x1
projection, then the same without the depthwise part as a feed-forward branch. 1x1
convolutions cost ``6 c**2`` MACs per pixel at width ``c``, and doubling the width while
halving the size keeps that constant, so the blocks can sit deep (at 1/16 the depthwise
3x3 covers 48 px) for the price of shallow ones. Encoder and decoder of a scale are joined
by addition, upsampling is a 1x1 convolution and a pixel shuffle, and the output is
``input + correction``. The correction's last convolution and every block's branch
scales start at zero, so the untrained network returns its input unchanged: an in-focus
plane is a valid input and already the right answer.

One departure from NAFNet: its channel attention averages over the whole image, so a
network trained on 128-px crops would see other statistics on a whole plane, and tiled
prediction would give each tile its own attention (seams). Here the average is local, a
``attention_window``-px box at each scale (7 px: 112 px of the input at 1/16), which is
the same on crops, tiles and whole planes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from refocus.archs import register_architecture
from refocus.archs.padding import pad_to_multiple


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) as (N, H, W, C): a free view for channels-last tensors."""
    return x.permute(0, 2, 3, 1)


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel (independent of image size and batch).

    Computed as ``F.layer_norm`` on the channels-last view: one fused kernel, no copy.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[1],)
        return _nchw(F.layer_norm(_nhwc(x), shape, self.weight, self.bias, self.eps))


class Pointwise(nn.Linear):
    """1x1 convolution as a matrix product on the channels-last view (torch's CPU 1x1
    convolution copies channels-last tensors to a slow path instead)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _nchw(super().forward(_nhwc(x)))


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """NAFNet's SimpleGate: the product of the two channel halves (halves the channels)."""
    a, b = x.chunk(2, dim=1)
    return a * b


class LocalChannelAttention(nn.Module):
    """Simplified channel attention on a local box mean (``window`` px; 0 = off).

    The box mean is a fixed depthwise convolution (on CPU, in channels-last layout, ten
    times faster than ``avg_pool2d``), divided at the borders by the number of pixels the
    box covers there, so borders average what exists.
    """

    def __init__(self, channels: int, window: int) -> None:
        super().__init__()
        if window < 0 or (window and window % 2 == 0):
            raise ValueError(f"attention window must be 0 (off) or odd, got {window}")
        self.window = window
        self.proj = Pointwise(channels, channels) if window else None
        box = torch.ones(channels, 1, max(window, 1), max(window, 1))
        self.register_buffer("box", box, persistent=False)

    def _counts(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """How many of the ``window`` pixels around each position of an ``n``-axis exist."""
        i = torch.arange(n, device=like.device, dtype=like.dtype)
        half = self.window // 2
        return (torch.clamp(i + half, max=n - 1) - torch.clamp(i - half, min=0) + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            return x
        h, w = x.shape[-2:]
        total = F.conv2d(x, self.box.to(x.dtype), padding=self.window // 2, groups=x.shape[1])
        counts = self._counts(h, x)[:, None] * self._counts(w, x)[None, :]
        return x * self.proj(total / counts)


class NAFBlock(nn.Module):
    """Depthwise-gated mixing then a gated feed-forward branch, each scaled by a learned
    per-channel factor that starts at zero (the block starts as the identity)."""

    def __init__(self, channels: int, attention_window: int = 7) -> None:
        super().__init__()
        c, c2 = channels, 2 * channels
        self.norm1 = LayerNorm2d(c)
        self.expand = Pointwise(c, c2)
        self.depthwise = nn.Conv2d(c2, c2, 3, padding=1, groups=c2)
        self.attention = LocalChannelAttention(c, attention_window)
        self.project = Pointwise(c, c)
        self.norm2 = LayerNorm2d(c)
        self.ffn_expand = Pointwise(c, c2)
        self.ffn_project = Pointwise(c, c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # addcmul: the scaled branch is added in one pass over the tensor, not two
        y = simple_gate(self.depthwise(self.expand(self.norm1(x))))
        x = torch.addcmul(x, self.beta, self.project(self.attention(y)))
        y = simple_gate(self.ffn_expand(self.norm2(x)))
        return torch.addcmul(x, self.gamma, self.ffn_project(y))


def _stage(channels: int, blocks: int, window: int) -> nn.Sequential:
    return nn.Sequential(*(NAFBlock(channels, window) for _ in range(blocks)))


class CompactUNet(nn.Module):
    """(N, 1, H, W) defocused -> (N, 1, H, W) refocused, for any H and W.

    ``width`` channels at full resolution, doubled at each of ``len(encoder_blocks)``
    halvings; ``encoder_blocks[i]``/``decoder_blocks[i]`` NAF blocks at scale ``2**-i``,
    ``middle_blocks`` at the deepest scale. ``in_channels`` > 1 adds guide channels after
    the image (e.g. a deconvolved copy): the output is still channel 0 plus a correction.
    """

    def __init__(
        self,
        width: int,
        encoder_blocks: Sequence[int],
        middle_blocks: int,
        decoder_blocks: Sequence[int],
        attention_window: int,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if len(encoder_blocks) != len(decoder_blocks) or not encoder_blocks:
            raise ValueError("encoder_blocks and decoder_blocks need one entry per scale each")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if width < 1 or min(*encoder_blocks, *decoder_blocks, middle_blocks) < 0:
            raise ValueError("width must be positive and block counts not negative")
        self.multiple = 2 ** len(encoder_blocks)
        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        c = width
        for n in encoder_blocks:
            self.encoders.append(_stage(c, n, attention_window))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = _stage(c, middle_blocks, attention_window)
        for n in reversed(decoder_blocks):
            self.ups.append(nn.Sequential(Pointwise(c, 2 * c, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(_stage(c, n, attention_window))
        self.ending = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.ending.weight)  # start as the identity: input + 0
        nn.init.zeros_(self.ending.bias)

    @property
    def in_channels(self) -> int:
        """The image and its guide channels (:func:`refocus.archs.input_channels`)."""
        return self.intro.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.intro.in_channels
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"expected (N, {channels}, H, W) input, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, self.multiple)
        # channels-last: CPU depthwise convolutions run 3-10x faster in that layout
        y = self.intro(padded).contiguous(memory_format=torch.channels_last)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            y = encoder(y)
            skips.append(y)
            y = down(y)
        y = self.middle(y)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            y = decoder(up(y) + skip)
        y = padded[:, :1] + self.ending(y).contiguous()
        top, left = (y.shape[-2] - h) // 2, (y.shape[-1] - w) // 2
        return y[..., top : top + h, left : left + w]


@register_architecture(
    "nafnet",
    "compact NAFNet-style U-Net for CPUs (~0.1 of the paper's compute), output = input + "
    "correction",
)
def build_compact(
    width: int = 16,
    encoder_blocks: Sequence[int] = (1, 1, 2, 4),
    middle_blocks: int = 6,
    decoder_blocks: Sequence[int] = (1, 1, 1, 1),
    attention_window: int = 7,
    in_channels: int = 1,
) -> CompactUNet:
    """The shipped configuration by default (see benchmarks/bench_archs.py for its cost);
    ``in_channels`` 2 for a guided model (:mod:`refocus.guides`)."""
    return CompactUNet(
        width, tuple(encoder_blocks), middle_blocks, tuple(decoder_blocks), attention_window,
        in_channels,
    )
