"""Training losses; each returns its terms separately so training can log every one.

The feature loss is the published method's (fastai's super-resolution lesson): pixel L1,
plus L1 between VGG-16-bn activations of output and target, plus L1 between their Gram
matrices. Pixel losses alone give blurry results on defocus (the mean of plausible sharp
images is blurry); feature and Gram terms reward texture and edges.

Every loss is registered in :data:`LOSSES` next to its definition; ``--loss`` reads its
choices from there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VGG16_BN_Weights
from torchvision.models.vgg import cfgs, make_layers

from refocus.imagenet import ImageNetRGB, load_pretrained
from refocus.registry import Registry

#: A loss's builder: VGG weights (``"imagenet"``, a file or ``None``) -> the loss module.
LossBuilder = Callable[[str | Path | None], nn.Module]
#: Training losses by name (``--loss``); ``feature``, the published method's, comes first.
LOSSES: Registry[LossBuilder] = Registry("loss")
LAYER_WEIGHTS = (5.0, 15.0, 2.0)
GRAM_SCALE = 5e3
VGG_OFFLINE_WAYS_OUT = (
    "give a local VGG-16-bn state dict with --vgg-weights FILE, or train with --loss l1."
)


def vgg16_bn_features() -> nn.Module:
    """VGG-16-bn without its classifier (102M parameters never used here), under the same
    ``features.`` names as torchvision's so its state dicts load; initialised as torchvision
    does."""
    holder = nn.Module()
    holder.features = make_layers(cfgs["D"], batch_norm=True)
    for m in holder.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return holder


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) channel correlations, divided by C*H*W (the seed's scale)."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


class FeatureLoss(nn.Module):
    """``pixel`` + ``feat_i`` = w_i L1(VGG features) + ``gram_i`` = w_i^2 * 5e3 L1(Gram).

    Features are taken just before the 3rd, 4th and 5th max-pools of VGG-16-bn (max-pools
    "2, 3, 4" counting from 0; layers 22, 32, 42 of ``features``), as in the seed. The VGG is
    frozen and always in eval mode, and sees grey images repeated to RGB and
    ImageNet-normalised.
    """

    def __init__(
        self,
        weights: str | Path | None = "imagenet",
        layer_weights: Sequence[float] = LAYER_WEIGHTS,
        gram_scale: float = GRAM_SCALE,
    ) -> None:
        super().__init__()
        vgg = vgg16_bn_features()
        load_pretrained(
            vgg,
            weights,
            VGG16_BN_Weights.IMAGENET1K_V1,
            what="VGG-16-bn (feature loss)",
            ways_out=VGG_OFFLINE_WAYS_OUT,
            optional_prefixes=("classifier.",),
        )
        pools = [i for i, m in enumerate(vgg.features) if isinstance(m, nn.MaxPool2d)]
        self.layer_ids = [p - 1 for p in pools[2:5]]
        self.vgg = vgg.features[: self.layer_ids[-1] + 1].eval().requires_grad_(False)
        self.layer_weights = [float(w) for w in layer_weights]
        self.gram_scale = float(gram_scale)
        self.rgb = ImageNetRGB()  # the encoder's input step; no state-dict keys

    def train(self, mode: bool = True) -> FeatureLoss:
        super().train(mode)
        self.vgg.eval()  # BatchNorm statistics of ImageNet, never of a training batch
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """VGG activations at ``layer_ids`` for a (N, 1, H, W) image in [0, 1]."""
        x = self.rgb(x)
        out = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in self.layer_ids:
                out.append(x)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            target_feats = self.features(target)
        pred_feats = self.features(pred)
        terms = {"pixel": F.l1_loss(pred.float(), target.float())}
        pairs = list(zip(pred_feats, target_feats, self.layer_weights, strict=True))
        for i, (fp, ft, w) in enumerate(pairs):
            terms[f"feat_{i}"] = w * F.l1_loss(fp.float(), ft.float())
        # Gram matrices sum over H*W products: float32 keeps them finite under fp16 autocast
        with torch.autocast(pred.device.type, enabled=False):
            for i, (fp, ft, w) in enumerate(pairs):
                gp, gt = gram_matrix(fp.float()), gram_matrix(ft.float())
                terms[f"gram_{i}"] = w**2 * self.gram_scale * F.l1_loss(gp, gt)
        return terms


LOSSES.register("feature", FeatureLoss)

Term = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PixelLoss(nn.Module):
    """One pixel-wise term under its own name, computed in float32."""

    def __init__(self, name: str, term: Term) -> None:
        super().__init__()
        self.name = name
        self.term = term

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.name: self.term(pred.float(), target.float())}


def register_pixel_loss(name: str) -> Callable[[Term], Term]:
    """``@register_pixel_loss("name")`` on ``term(pred, target)`` adds it to :data:`LOSSES`
    (pixel losses need no VGG, so they ignore its weights)."""

    def add(term: Term) -> Term:
        LOSSES.register(name, lambda vgg_weights: PixelLoss(name, term))
        return term

    return add


register_pixel_loss("l1")(F.l1_loss)
register_pixel_loss("mse")(F.mse_loss)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5, valid region), the
    differentiable twin of ``skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)`` which scikit-image cannot backpropagate through."""
    window = _gaussian_window().to(pred.device, torch.float32)
    pred, target = pred.float(), target.float()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window)

    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p**2
    var_t = blur(target * target) - mu_t**2
    cov = blur(pred * target) - mu_p * mu_t
    num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    den = (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    return (num / den).mean()


@register_pixel_loss("ssim")
def ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - SSIM, so that minimising it maximises structural similarity."""
    return 1 - ssim(pred, target)


def build_loss(name: str = "feature", vgg_weights: str | Path | None = "imagenet") -> nn.Module:
    """The loss called ``name`` (one of :data:`LOSSES`); call it to get ``{term: tensor}``,
    whose values sum to the loss being minimised."""
    return LOSSES.get(name, "--loss")(vgg_weights)
