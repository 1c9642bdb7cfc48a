"""The refocusing network: a U-Net on a torchvision ResNet, decoded the way fastai does it.

The decoder follows fastai's ``DynamicUnet`` (as used with ``blur=True`` and
``norm_type=NormType.Weight`` in the published method): each stage upsamples by pixel
shuffle with ICNR initialisation and the anti-checkerboard blur, concatenates the
batch-normalised encoder features of the same scale (cross connection), and applies two
weight-normed 3x3 convolutions; the last stage merges the raw input and ends with a residual
block and a 1x1 convolution. Self-attention (fastai's SAGAN block) is optional. Two
departures from fastai: the final x2 upsampling is blurred too (checkerboards are most
visible at full resolution), and there is no sigmoid ``y_range``, because percentile-normalised
targets have no fixed upper bound (bright nuclei exceed 1).

Grey input is *repeated* to three channels for the ImageNet stem (then ImageNet-normalised)
rather than summing the stem's filters to one channel: the two are the same linear map, but
repeating keeps the encoder byte-for-byte a torchvision ResNet, so torchvision's weights and
any saved ResNet state dict load unchanged; the first convolution is ~2% of the compute.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from refocus.archs import register_architecture
from refocus.archs.padding import MULTIPLE, pad_to_multiple
from refocus.errors import RefocusError
from refocus.imagenet import ImageNetRGB, load_pretrained

if TYPE_CHECKING:
    from torchvision import models

#: The encoders, by torchvision's names; torchvision is imported only when one is built
#: (it costs seconds of start-up that commands running a compact model never need).
ARCHS = ("resnet18", "resnet34", "resnet50")
OFFLINE_WAYS_OUT = (
    "train from scratch with --no-pretrained, or give a local state dict with --weights FILE."
)


def _torchvision_resnet(arch: str) -> tuple[Any, Any]:
    """torchvision's builder of ``arch`` and its ImageNet weights enum member."""
    from torchvision import models

    weights = getattr(models, f"ResNet{arch.removeprefix('resnet')}_Weights")
    return getattr(models, arch), weights.IMAGENET1K_V1


def _conv(ni: int, nf: int, ks: int = 3, act: bool = True) -> nn.Sequential:
    """fastai's ``conv_layer`` with ``NormType.Weight``: kaiming init, weight norm, ReLU."""
    conv = nn.Conv2d(ni, nf, ks, padding=ks // 2, bias=True)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    layers: list[nn.Module] = [weight_norm(conv)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def icnr_(weight: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """ICNR init: all ``scale**2`` sub-pixel outputs of a channel start with one kernel, so
    the freshly initialised pixel shuffle is a nearest-neighbour upsampling (no checkerboard).
    """
    nf_out = weight.shape[0] // scale**2
    kernel = torch.empty(nf_out, *weight.shape[1:])
    nn.init.kaiming_normal_(kernel, nonlinearity="relu")
    with torch.no_grad():
        weight.copy_(kernel.repeat_interleave(scale**2, dim=0))
    return weight


class PixelShuffleICNR(nn.Module):
    """x2 upsampling: 1x1 conv (ICNR) + ReLU + pixel shuffle + replication pad + 2x2 mean."""

    def __init__(self, ni: int, nf: int, scale: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d(ni, nf * scale**2, 1, bias=True)
        icnr_(conv.weight, scale)
        nn.init.zeros_(conv.bias)
        self.conv = weight_norm(conv)  # after ICNR: the norm decomposes the ICNR kernel
        self.relu = nn.ReLU(inplace=True)
        self.shuffle = nn.PixelShuffle(scale)
        # "Super-resolution ... without any checkerboard artifacts" (Sugawara et al. 2018)
        self.pad = nn.ReplicationPad2d((1, 0, 1, 0))
        self.blur = nn.AvgPool2d(2, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur(self.pad(self.shuffle(self.relu(self.conv(x)))))


class SelfAttention(nn.Module):
    """SAGAN self-attention as in fastai: starts as the identity (``gamma = 0``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()

        def conv1d(ni: int, nf: int) -> nn.Module:
            conv = nn.Conv1d(ni, nf, 1, bias=False)
            nn.init.kaiming_normal_(conv.weight)
            return spectral_norm(conv)

        self.query = conv1d(channels, max(channels // 8, 1))
        self.key = conv1d(channels, max(channels // 8, 1))
        self.value = conv1d(channels, channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.flatten(2)
        f, g, h = self.query(flat), self.key(flat), self.value(flat)
        beta = F.softmax(torch.bmm(f.transpose(1, 2), g), dim=1)
        out = self.gamma * torch.bmm(h, beta) + flat
        return out.view(shape)


class UnetBlock(nn.Module):
    """Upsample, merge the cross connection from the encoder, two convolutions."""

    def __init__(
        self, up_in: int, skip_in: int, final_div: bool = True, self_attention: bool = False
    ) -> None:
        super().__init__()
        self.shuf = PixelShuffleICNR(up_in, up_in // 2)
        self.bn = nn.BatchNorm2d(skip_in)
        ni = up_in // 2 + skip_in
        self.out_channels = ni if final_div else ni // 2
        self.relu = nn.ReLU()
        self.conv1 = _conv(ni, self.out_channels)
        self.conv2 = _conv(self.out_channels, self.out_channels)
        self.attention = SelfAttention(self.out_channels) if self_attention else nn.Identity()

    def forward(self, up_in: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.shuf(up_in)
        merged = self.relu(torch.cat([up, self.bn(skip)], dim=1))
        return self.attention(self.conv2(self.conv1(merged)))


class ResBlock(nn.Module):
    """Two weight-normed convolutions with an identity shortcut (fastai's ``res_block``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(_conv(channels, channels), _conv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.convs(x)


class Encoder(nn.Module):
    """A torchvision ResNet without its head, returning the features of every scale."""

    def __init__(self, resnet: models.ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = (
            resnet.conv1,
            resnet.bn1,
            resnet.relu,
            resnet.maxpool,
        )
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))  # 1/2
        f1 = self.layer1(self.maxpool(stem))  # 1/4
        f2 = self.layer2(f1)  # 1/8
        f3 = self.layer3(f2)  # 1/16
        return [stem, f1, f2, f3, self.layer4(f3)]  # last: 1/32

    def channels(self) -> list[int]:
        with torch.no_grad():
            was_training = self.training
            feats = self.eval()(torch.zeros(1, 3, MULTIPLE, MULTIPLE))
            self.train(was_training)
        return [f.shape[1] for f in feats]

    def param_groups(self) -> list[list[nn.Parameter]]:
        """fastai's ResNet split: (stem, layer1, layer2) and (layer3, layer4)."""
        low = [self.conv1, self.bn1, self.layer1, self.layer2]
        high = [self.layer3, self.layer4]
        return [[p for m in low for p in m.parameters()], [p for m in high for p in m.parameters()]]


class RefocusUNet(nn.Module):
    """(N, 1, H, W) defocused -> (N, 1, H, W) refocused, for any H and W."""

    def __init__(self, arch: str = "resnet34", self_attention: bool = False) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise RefocusError(None, f"unknown architecture {arch!r} (choose {', '.join(ARCHS)})")
        self.config = {"arch": arch, "self_attention": bool(self_attention)}
        self.encoder = Encoder(_torchvision_resnet(arch)[0](weights=None))
        chans = self.encoder.channels()
        deep = chans[-1]
        self.bn = nn.BatchNorm2d(deep)
        self.middle = nn.Sequential(_conv(deep, deep * 2), _conv(deep * 2, deep))
        blocks = []
        up = deep
        skips = chans[-2::-1]  # 1/16, 1/8, 1/4, 1/2
        for i, skip in enumerate(skips):
            final = i == len(skips) - 1
            # fastai puts the attention in the third block from the end (1/8 scale)
            attend = self_attention and i == 1
            block = UnetBlock(up, skip, final_div=not final, self_attention=attend)
            blocks.append(block)
            up = block.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.final_up = PixelShuffleICNR(up, up)
        self.res = ResBlock(up + 1)
        self.head = _conv(up + 1, 1, ks=1, act=False)
        self.rgb = ImageNetRGB()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected (N, 1, H, W) input, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = pad_to_multiple(x)
        feats = self.encoder(self.rgb(x))
        y = self.middle(F.relu(self.bn(feats[-1])))
        for block, skip in zip(self.blocks, feats[-2::-1], strict=True):
            y = block(y, skip)
        y = self.final_up(y)
        y = self.head(self.res(torch.cat([y, x], dim=1)))
        top, left = (y.shape[-2] - h) // 2, (y.shape[-1] - w) // 2
        return y[..., top : top + h, left : left + w]

    def freeze_pretrained(self, frozen: bool = True) -> None:
        """Stage one of the method: train the decoder only, but keep the encoder's
        BatchNorm layers trainable (fastai's ``train_bn``) so they adapt to microscopy."""
        for module in self.encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                continue
            for p in module.parameters(recurse=False):
                p.requires_grad_(not frozen)

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Three groups for discriminative learning rates: early encoder, late encoder,
        decoder (fastai's split of a ResNet U-Net)."""
        encoder = {id(p) for p in self.encoder.parameters()}
        decoder = [p for p in self.parameters() if id(p) not in encoder]
        return [*self.encoder.param_groups(), decoder]


def build_unet(
    arch: str = "resnet34",
    weights: str | Path | None = "imagenet",
    self_attention: bool = False,
) -> RefocusUNet:
    """A :class:`RefocusUNet` whose encoder starts from ``weights``.

    ``weights``: ``"imagenet"`` (torchvision's ``IMAGENET1K_V1`` for the chosen ResNet,
    downloaded once into the torch cache), another enum member name, a local ResNet state
    dict file, or ``None`` for random initialisation.
    """
    model = RefocusUNet(arch, self_attention)
    if weights is not None:
        load_encoder_weights(model, weights)
    return model


def load_encoder_weights(model: RefocusUNet, weights: str | Path) -> None:
    """Start the encoder from ImageNet (or a local ResNet state dict)."""
    arch = model.config["arch"]
    builder, default = _torchvision_resnet(arch)
    resnet = builder(weights=None)
    load_pretrained(
        resnet,
        weights,
        default,
        what=f"{arch} encoder",
        ways_out=OFFLINE_WAYS_OUT,
        optional_prefixes=("fc.",),
    )
    model.encoder.load_state_dict(Encoder(resnet).state_dict())


def _register(arch: str) -> None:
    def build(self_attention: bool = False) -> RefocusUNet:
        return RefocusUNet(arch, self_attention)

    summary = f"the paper's U-Net: {arch} encoder (ImageNet), fastai-style decoder"
    register_architecture(arch, summary, load_encoder_weights)(build)


for _arch in ARCHS:
    _register(_arch)
