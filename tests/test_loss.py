"""The feature loss (the seed's) and the plain pixel losses, on real sample pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.metrics import structural_similarity
from torch import nn

from refocus.data import PercentileNormalizer
from refocus.errors import RefocusError
from refocus.loss import (
    LOSSES,
    FeatureLoss,
    PixelLoss,
    build_loss,
    gram_matrix,
    register_pixel_loss,
    ssim,
    vgg16_bn_features,
)


@pytest.fixture(scope="module")
def feature_loss() -> FeatureLoss:
    torch.manual_seed(0)
    return build_loss("feature", vgg_weights=None)


@pytest.fixture(scope="module")
def sharp_and_blurred(in_focus_images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64x64 crops of real nuclei, in focus and Gaussian-blurred (sigma 2)."""
    normalize = PercentileNormalizer()
    crops = [normalize(im)[200:264, 300:364] for im in in_focus_images[:2]]
    sharp = np.stack(crops)[:, None]
    blurred = np.stack([ndimage.gaussian_filter(c, 2.0) for c in crops])[:, None]
    return torch.from_numpy(sharp), torch.from_numpy(blurred)


def test_feature_loss_is_zero_for_identical_images(feature_loss, sharp_and_blurred) -> None:
    sharp, _ = sharp_and_blurred
    terms = feature_loss(sharp, sharp.clone())
    assert list(terms) == ["pixel", "feat_0", "feat_1", "feat_2", "gram_0", "gram_1", "gram_2"]
    assert all(v.item() == 0.0 for v in terms.values())


def test_every_feature_loss_term_is_positive_for_different_images(
    feature_loss, sharp_and_blurred
) -> None:
    sharp, blurred = sharp_and_blurred
    terms = feature_loss(blurred, sharp)
    assert all(v.item() > 0 for v in terms.values()), {k: v.item() for k, v in terms.items()}
    assert terms["pixel"].item() == pytest.approx((blurred - sharp).abs().mean().item())


def test_features_come_from_just_before_the_last_three_max_pools(feature_loss) -> None:
    assert feature_loss.layer_ids == [22, 32, 42]
    layers = list(feature_loss.vgg)
    assert all(isinstance(layers[i], nn.ReLU) for i in feature_loss.layer_ids)
    full = vgg16_bn_features().features
    assert all(isinstance(full[i + 1], nn.MaxPool2d) for i in feature_loss.layer_ids)
    assert len(layers) == 43  # nothing after the last used layer is computed


def test_gram_matrix_has_the_seeds_normalisation() -> None:
    x = torch.arange(8, dtype=torch.float32).view(1, 2, 2, 2)  # channels [0..3], [4..7]
    cross = 0 * 4 + 1 * 5 + 2 * 6 + 3 * 7
    expected = torch.tensor([[0 + 1 + 4 + 9, cross], [cross, 16 + 25 + 36 + 49]])
    assert torch.allclose(gram_matrix(x)[0], expected / (2 * 2 * 2))


def test_gram_terms_have_the_seeds_scale(feature_loss, sharp_and_blurred) -> None:
    """gram_i = w_i^2 * 5e3 * mean |G(f_pred) - G(f_target)|, G = F F^T / (C H W)."""
    sharp, blurred = sharp_and_blurred
    terms = feature_loss(blurred, sharp)
    with torch.no_grad():
        pred_feats = feature_loss.features(blurred)
        target_feats = feature_loss.features(sharp)
    for i, (fp, ft, w) in enumerate(zip(pred_feats, target_feats, (5.0, 15.0, 2.0), strict=True)):
        n, c, h, width = fp.shape
        gp = torch.einsum("nchw,ndhw->ncd", fp, fp) / (c * h * width)
        gt = torch.einsum("nchw,ndhw->ncd", ft, ft) / (c * h * width)
        expected = w**2 * 5e3 * (gp - gt).abs().mean()
        assert terms[f"gram_{i}"].item() == pytest.approx(expected.item(), rel=1e-4)
        feat = w * (fp - ft).abs().mean()
        assert terms[f"feat_{i}"].item() == pytest.approx(feat.item(), rel=1e-5)


def test_vgg_is_frozen_and_stays_in_eval_mode(feature_loss, sharp_and_blurred) -> None:
    sharp, blurred = sharp_and_blurred
    feature_loss.train()
    assert not feature_loss.vgg.training
    assert not any(p.requires_grad for p in feature_loss.parameters())
    before = feature_loss.vgg[1].running_mean.clone()
    pred = blurred.clone().requires_grad_(True)
    sum(feature_loss(pred, sharp).values()).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert torch.equal(feature_loss.vgg[1].running_mean, before)


def test_vgg_loads_a_local_state_dict(tmp_path: Path) -> None:
    """Both a whole torchvision VGG state dict (with its classifier) and features alone."""
    torch.manual_seed(3)
    reference = vgg16_bn_features()
    features_only = tmp_path / "vgg16_bn-features.pth"
    torch.save(reference.state_dict(), features_only)
    whole = tmp_path / "vgg16_bn.pth"
    classifier = {"classifier.0.weight": torch.zeros(4, 4), "classifier.0.bias": torch.zeros(4)}
    torch.save({**reference.state_dict(), **classifier}, whole)
    for path in (features_only, whole):
        loss = FeatureLoss(weights=path)
        assert torch.equal(loss.vgg[0].weight, reference.features[0].weight)
        assert torch.equal(loss.vgg[41].running_var, reference.features[41].running_var)


def test_vgg_offline_error_names_the_ways_out(offline: Path) -> None:
    with pytest.raises(RefocusError, match="--vgg-weights FILE.*--loss l1"):
        build_loss("feature")


@pytest.mark.parametrize("name", ["l1", "mse", "ssim"])
def test_pixel_losses_are_zero_for_identical_images(name: str, sharp_and_blurred) -> None:
    sharp, blurred = sharp_and_blurred
    loss = build_loss(name)
    assert list(loss(sharp, sharp)) == [name]
    assert loss(sharp, sharp)[name].item() == pytest.approx(0.0, abs=1e-6)
    assert loss(blurred, sharp)[name].item() > 0


def test_l1_and_mse_are_the_usual_means(sharp_and_blurred) -> None:
    sharp, blurred = sharp_and_blurred
    assert build_loss("l1")(blurred, sharp)["l1"].item() == pytest.approx(
        F.l1_loss(blurred, sharp).item()
    )
    assert build_loss("mse")(blurred, sharp)["mse"].item() == pytest.approx(
        ((blurred - sharp) ** 2).mean().item()
    )


def test_ssim_matches_scikit_image(sharp_and_blurred) -> None:
    sharp, blurred = sharp_and_blurred
    ours = ssim(blurred[:1], sharp[:1]).item()
    theirs = structural_similarity(
        sharp[0, 0].numpy(),
        blurred[0, 0].numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert ours == pytest.approx(theirs, abs=1e-4)
    assert build_loss("ssim")(blurred[:1], sharp[:1])["ssim"].item() == pytest.approx(1 - ours)


def test_unknown_loss_is_one_line_listing_the_choices() -> None:
    assert LOSSES.names() == ("feature", "l1", "mse", "ssim")  # the published loss first
    with pytest.raises(RefocusError) as info:
        build_loss("perceptual")
    assert str(info.value) == (
        "--loss: unknown loss 'perceptual' (choose from feature, l1, mse, ssim)"
    )


def test_a_registered_pixel_loss_is_built_by_name(sharp_and_blurred) -> None:
    register_pixel_loss("max")(lambda pred, target: (pred - target).abs().max())
    try:
        assert LOSSES.names()[-1] == "max"
        sharp, blurred = sharp_and_blurred
        loss = build_loss("max", vgg_weights=None)
        assert isinstance(loss, PixelLoss)
        assert loss(blurred, sharp)["max"].item() == pytest.approx(
            (blurred - sharp).abs().max().item()
        )
    finally:
        LOSSES.unregister("max")
    assert "max" not in LOSSES
