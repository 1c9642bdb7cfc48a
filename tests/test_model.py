"""The U-Net, its weight loading and the model file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet34

from refocus.archs.padding import pad_to_multiple
from refocus.archs.resnet_unet import PixelShuffleICNR, SelfAttention, build_unet
from refocus.data import PercentileNormalizer
from refocus.errors import RefocusError
from refocus.modelfile import load_model, read_model_file, save_model


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    torch.manual_seed(0)
    return build_unet("resnet18", weights=None).eval()


@pytest.mark.parametrize("shape", [(1, 1), (5, 70), (37, 53), (64, 64), (100, 33), (129, 96)])
def test_output_has_the_input_shape_for_any_size(unet: nn.Module, shape: tuple[int, int]) -> None:
    with torch.no_grad():
        y = unet(torch.rand(2, 1, *shape))
    assert y.shape == (2, 1, *shape)
    assert torch.isfinite(y).all()


def test_odd_sizes_train_with_gradients_everywhere() -> None:
    torch.manual_seed(0)
    model = build_unet("resnet18", weights=None, self_attention=True)
    model(torch.rand(2, 1, 45, 61)).square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert model.blocks[1].attention.gamma.grad.abs().sum() > 0


def test_padding_reflects_to_a_multiple_of_32_and_keeps_the_image_centred() -> None:
    x = torch.arange(37 * 53, dtype=torch.float32).view(1, 1, 37, 53)
    padded = pad_to_multiple(x)
    assert padded.shape == (1, 1, 64, 64)
    top, left = (64 - 37) // 2, (64 - 53) // 2
    assert torch.equal(padded[..., top : top + 37, left : left + 53], x)
    # reflect: the row above the image mirrors its second row, not its first
    assert torch.equal(padded[..., top - 1, left : left + 53], x[..., 1, :])
    assert torch.equal(padded[..., top : top + 37, left - 1], x[..., :, 1])


def test_padding_of_tiny_images_falls_back_to_replication() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    padded = pad_to_multiple(x)
    assert padded.shape == (1, 1, 32, 32)
    assert padded[0, 0, 0, 0] == 1.0 and padded[0, 0, -1, -1] == 4.0


def test_icnr_pixel_shuffle_starts_as_nearest_neighbour_upsampling() -> None:
    torch.manual_seed(0)
    up = PixelShuffleICNR(8, 4)
    x = torch.rand(1, 8, 6, 6)
    shuffled = up.shuffle(up.relu(up.conv(x)))
    for dy, dx in [(0, 1), (1, 0), (1, 1)]:
        assert torch.allclose(shuffled[..., 0::2, 0::2], shuffled[..., dy::2, dx::2])
    out = up(x)
    assert out.shape == (1, 4, 12, 12)
    # the blur is a 2x2 mean after replication padding at the top and left
    expected = torch.nn.functional.avg_pool2d(
        torch.nn.functional.pad(shuffled, (1, 0, 1, 0), mode="replicate"), 2, stride=1
    )
    assert torch.allclose(out, expected)


def test_decoder_convolutions_are_weight_normed() -> None:
    model = build_unet("resnet18", weights=None)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    decoder_convs = [m for n, m in convs.items() if not n.startswith("encoder")]
    assert len(decoder_convs) == 18
    assert all("weight" in getattr(m, "parametrizations", {}) for m in decoder_convs)
    encoder_convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert not any(hasattr(m, "parametrizations") for m in encoder_convs)


def test_self_attention_starts_as_identity_and_learns_a_gain() -> None:
    torch.manual_seed(0)
    attention = SelfAttention(16)
    x = torch.rand(2, 16, 5, 7)
    assert torch.equal(attention(x), x)
    with torch.no_grad():
        attention.gamma.fill_(0.5)
    assert not torch.allclose(attention(x), x)


def test_freezing_keeps_encoder_batchnorm_trainable() -> None:
    model = build_unet("resnet18", weights=None)
    model.freeze_pretrained(True)
    assert not model.encoder.conv1.weight.requires_grad
    assert not model.encoder.layer4[0].conv2.weight.requires_grad
    assert model.encoder.bn1.weight.requires_grad and model.encoder.layer3[1].bn2.bias.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("encoder"))
    model.freeze_pretrained(False)
    assert all(p.requires_grad for p in model.parameters())


def test_param_groups_split_encoder_early_late_and_decoder() -> None:
    model = build_unet("resnet34", weights=None)
    groups = model.param_groups()
    ids = [{id(p) for p in g} for g in groups]
    assert len(groups) == 3 and sum(len(g) for g in ids) == len({id(p) for p in model.parameters()})
    assert id(model.encoder.layer2[0].conv1.weight) in ids[0]
    assert id(model.encoder.layer3[0].conv1.weight) in ids[1]
    assert id(model.head[0].bias) in ids[2]


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(RefocusError, match="resnet18, resnet34, resnet50"):
        build_unet("vgg11", weights=None)


def test_encoder_loads_a_local_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = resnet18(weights=None)
    with torch.no_grad():
        reference.bn1.running_mean.uniform_()
    full = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), full)
    headless = tmp_path / "resnet18-no-fc.pth"
    state = reference.state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, headless)
    for path in (full, headless):
        model = build_unet("resnet18", weights=path)
        assert torch.equal(model.encoder.conv1.weight, reference.conv1.weight)
        assert torch.equal(model.encoder.layer4[1].bn2.weight, reference.layer4[1].bn2.weight)
        assert torch.equal(model.encoder.bn1.running_mean, reference.bn1.running_mean)


def test_encoder_refuses_a_state_dict_of_another_network(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(resnet34(weights=None).state_dict(), path)
    with pytest.raises(RefocusError, match="not a resnet18 encoder state dict") as err:
        build_unet("resnet18", weights=path)
    assert err.value.where == str(path)
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(RefocusError, match="refused: not a resnet18 encoder weights file"):
        build_unet("resnet18", weights=text)
    with pytest.raises(RefocusError, match="weights file not found"):
        build_unet("resnet18", weights=tmp_path / "missing.pth")


def test_offline_without_cached_weights_names_both_ways_out(offline: Path) -> None:
    with pytest.raises(RefocusError) as err:
        build_unet("resnet34", weights="imagenet")
    message = str(err.value)
    assert "--no-pretrained" in message and "--weights FILE" in message
    assert "resnet34 encoder" in message and str(offline / "hub" / "checkpoints") in message
    assert "\n" not in message and message.count(". ") == 0
    assert not list(offline.rglob("*.pth"))


def _save_tiny(path: Path, model: nn.Module, **overrides: object) -> Path:
    kwargs: dict = {
        "arch": model.config,
        "normalizer": PercentileNormalizer(low=2.0, high=99.5),
        "train_config": {"loss": "l1", "input_z": [1, 5], "lr": 1e-3},
        "provenance": {"groups": {"train": ["a02"], "val": ["a03"]}, "channel": "w1"},
        "history": [{"epoch": 1, "val_l1": 0.25}],
    }
    kwargs.update(overrides)
    return save_model(path, model, **kwargs)


def test_model_file_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_unet("resnet18", weights=None, self_attention=True)
    with torch.no_grad():
        model.blocks[1].attention.gamma.fill_(0.3)  # a trained-looking value must survive
    path = _save_tiny(tmp_path / "model.pt", model)
    loaded = load_model(path)
    assert not loaded.model.training
    assert loaded.arch == {"arch": "resnet18", "self_attention": True}
    assert loaded.normalizer == PercentileNormalizer(low=2.0, high=99.5)
    assert loaded.train_config["input_z"] == [1, 5]
    assert loaded.provenance["groups"]["val"] == ["a03"]
    assert loaded.history == [{"epoch": 1, "val_l1": 0.25}]
    x = torch.rand(1, 1, 40, 50)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model.eval()(x))
    with pytest.raises(RefocusError, match="exists already"):
        _save_tiny(path, model)
    _save_tiny(path, model, history=[], overwrite=True)
    assert load_model(path).history == []


class _Payload:
    """Anything that is not plain data; unpickling it would call os.mkdir."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


def test_model_file_with_a_pickled_object_is_refused_without_running_it(tmp_path: Path) -> None:
    model = build_unet("resnet18", weights=None)
    good = read_model_file(_save_tiny(tmp_path / "good.pt", model))
    marker = tmp_path / "code-ran"
    bad = tmp_path / "bad.pt"
    torch.save({**good, "provenance": {"note": _Payload(marker)}}, bad)
    with pytest.raises(RefocusError, match=r"refused: .* pickled Python objects \(\w+\.mkdir\)"):
        load_model(bad)
    assert not marker.exists()


def test_saving_refuses_what_loading_would_refuse(tmp_path: Path) -> None:
    model = build_unet("resnet18", weights=None)
    with pytest.raises(TypeError, match="float64 is not plain data"):
        _save_tiny(tmp_path / "m.pt", model, history=[{"val_l1": np.float64(0.1)}])
    assert not (tmp_path / "m.pt").exists()


def test_foreign_files_are_not_model_files(tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    torch.save({"weight": torch.zeros(2)}, state)
    with pytest.raises(RefocusError, match="no refocus header"):
        load_model(state)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(RefocusError, match="refused: not a model file"):
        load_model(junk)
    with pytest.raises(RefocusError, match="model file not found"):
        load_model(tmp_path / "absent.pt")
