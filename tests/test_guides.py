"""Guide channels (refocus.guides): the Wiener and accelerated Richardson-Lucy copies
sharpen real fields, training crops carry them, and a guided model predicts, tiles, exports
and loads like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from refocus.archs.compact import CompactUNet
from refocus.baselines import richardson_lucy
from refocus.data.normalize import PercentileNormalizer
from refocus.data.synthetic import SyntheticPairs
from refocus.errors import RefocusError
from refocus.export import export_model
from refocus.guides import (
    GUIDES,
    estimate_psf,
    guide_input,
    richardson_lucy_accelerated,
    wiener_filter,
)
from refocus.images import read_plane
from refocus.inference.refocuser import Refocuser
from refocus.metrics import psnr
from refocus.modelfile import load_model, save_model
from refocus.samples import in_focus_paths, z00_paths
from refocus.simulate import plane_defocus_um, simulate_plane
from refocus.simulate.psf import defocus_psf
from refocus.train import TrainConfig

WIENER = GUIDES.get("wiener")


def guided_net(seed: int = 0) -> CompactUNet:
    """A small guided network whose output depends on both channels (random ending)."""
    torch.manual_seed(seed)
    net = CompactUNet(8, (1, 1), 1, (1, 1), 0, in_channels=2)
    torch.nn.init.normal_(net.ending.weight, std=0.05)
    return net.eval()


def tiny_arch(in_channels: int) -> dict:
    """The model file's ``arch`` entry of the networks :func:`guided_net` builds."""
    return {"arch": "nafnet", "width": 8, "encoder_blocks": [1, 1], "middle_blocks": 1,
            "decoder_blocks": [1, 1], "attention_window": 0, "in_channels": in_channels}


@pytest.fixture(scope="module")
def guided_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = guided_net()
    path = tmp_path_factory.mktemp("guided") / "guided.pt"
    return save_model(path, net, arch=tiny_arch(2), normalizer=PercentileNormalizer(),
                      train_config={"guide": "wiener", "channels": ["w1"]},
                      provenance={}, history=[])


def test_wiener_filter_sharpens_a_real_field_beyond_focus() -> None:
    field = read_plane(in_focus_paths()[1]).astype(np.float32)
    plane = simulate_plane(field, 22, rng=0).astype(np.float32)
    sharpened = wiener_filter(plane, defocus_psf(plane_defocus_um(22)).astype(np.float32))
    assert psnr(field, sharpened) > psnr(field, plane) + 3


@pytest.mark.parametrize("index", [1, 3])
def test_accelerated_rl_beats_wiener_and_plain_rl_far_from_focus(index: int) -> None:
    """At 24 um from focus the disc's transfer function is near zero over most frequencies:
    Wiener gives them up, RL's positivity recovers them, and the extrapolation gets there
    in the iterations plain RL needs to start."""
    field = read_plane(in_focus_paths()[index]).astype(np.float32)
    plane = simulate_plane(field, 27, rng=0).astype(np.float32)
    psf = defocus_psf(plane_defocus_um(27)).astype(np.float32)
    accelerated = psnr(field, richardson_lucy_accelerated(plane, psf, 15))
    assert accelerated > psnr(field, wiener_filter(plane, psf)) + 4
    assert accelerated > psnr(field, richardson_lucy(plane, psf, 15)) + 1.5
    assert accelerated > psnr(field, plane) + 12


def test_accelerated_rl_keeps_flux_and_background() -> None:
    """The guide must keep the plane's scale: background back where it was, the total
    signal above it within 2% (RL conserves flux; the borders are mirrored)."""
    field = read_plane(in_focus_paths()[0]).astype(np.float32)
    plane = simulate_plane(field, 5, rng=2).astype(np.float32)
    out = richardson_lucy_accelerated(plane, defocus_psf(plane_defocus_um(5)).astype(np.float32))
    assert out.shape == plane.shape and out.dtype == np.float32 and np.isfinite(out).all()
    bg = np.percentile(plane, 1)
    assert abs(np.percentile(out, 1) - bg) < 0.05 * (plane.max() - bg)
    signal = np.clip(plane - bg, 0, None).sum()
    assert abs((out - bg).sum() - signal) < 0.02 * signal


def test_guide_of_a_real_defocused_field_uses_its_estimated_psf() -> None:
    field = read_plane(in_focus_paths()[2]).astype(np.float32)
    plane = simulate_plane(field, 27, rng=1).astype(np.float32)
    norm = PercentileNormalizer()
    x = guide_input(WIENER, norm(plane), plane)
    assert x.shape == (2, *plane.shape) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], norm(plane))
    target = norm(field)
    assert psnr(target, x[1]) > psnr(target, x[0]) + 2
    in_focus = estimate_psf(field)  # the in-focus PSF: the focus estimate is within 0.1 um
    focus = defocus_psf(0.0)
    pad = (in_focus.shape[0] - focus.shape[0]) // 2
    np.testing.assert_allclose(in_focus[pad : pad + focus.shape[0], pad : pad + focus.shape[1]],
                               focus, atol=0.05 * focus.max())


@pytest.mark.parametrize("guide", ["wiener", "rl"])
def test_guided_training_crops_carry_a_sharper_second_channel(guide: str) -> None:
    data = SyntheticPairs(in_focus_paths()[:2], guide=guide, crops_per_field=24, seed=3)
    plain = SyntheticPairs(in_focus_paths()[:2], crops_per_field=24, seed=3)
    gains = []
    for i in range(len(data)):
        spec = data.draw(i)
        x, y = data[i]
        assert x.shape == (2, 128, 128) and y.shape == (1, 128, 128)
        if spec.defocus_um == 0:  # the recorded plane, and its guide with the focus PSF
            np.testing.assert_array_equal(x[0], y[0])
            assert 0 < float((x[1] - x[0]).abs().mean()) < 0.05
        elif abs(spec.defocus_um) > 15 and y.std() > 0.05:  # far, and not empty background
            gains.append(psnr(y[0].numpy(), x[1].numpy())
                         - psnr(y[0].numpy(), x[0].numpy()))
    assert len(gains) >= 6 and np.median(gains) > 1
    assert plain[0][0].shape == (1, 128, 128)  # no guide: the crops are as before


def test_guided_prediction_tiles_exactly_and_uses_the_guide() -> None:
    plane = read_plane(z00_paths()[0])
    refocuser = Refocuser(guided_net(), guide=WIENER, device="cpu", mode="eager")
    refocuser._halo = 40
    whole = refocuser.predict(plane, tile=1024).astype(np.int32)
    tiled = refocuser.predict(plane, tile=256, overlap=96).astype(np.int32)
    assert np.abs(whole - tiled).max() <= 1
    unguided = Refocuser(guided_net(), device="cpu", mode="eager")
    x = unguided.normalizer(plane)
    with torch.no_grad():  # the same network handed the image twice instead of its guide
        twice = unguided.model(torch.from_numpy(np.stack([x, x]))[None])[0, 0].numpy()
    guided = refocuser.predict_normalised(guide_input(WIENER, x, plane), tile=1024)
    assert np.abs(guided - twice).mean() > 1e-3


def test_guided_model_file_loads_with_its_guide(guided_file: Path, tmp_path: Path) -> None:
    loaded = load_model(guided_file)
    assert loaded.guide is WIENER and loaded.model.in_channels == 2
    assert Refocuser.from_file(guided_file, mode="eager").guide is WIENER
    payload = torch.load(guided_file, weights_only=False)
    payload["train_config"] = {}  # two input channels but no guide named
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(RefocusError, match="2 input channels with guide None"):
        load_model(tmp_path / "bad.pt")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_guided_model_exports_with_two_input_channels(guided_file: Path, tmp_path: Path,
                                                      fmt: str) -> None:
    report = export_model(guided_file, fmt, tmp_path / f"m.{fmt}")
    assert 0 <= report.max_abs_diff[fmt] <= 1e-4 and (tmp_path / f"m.{fmt}").stat().st_size


def test_bioimageio_export_of_a_guided_model_is_refused(guided_file: Path,
                                                        tmp_path: Path) -> None:
    with pytest.raises(RefocusError, match="cannot compute this model's 'wiener' guide"):
        export_model(guided_file, "bioimageio", tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()


@pytest.mark.parametrize(("settings", "message"), [
    ({"arch": "resnet34", "data": "d", "layout": "in-focus"}, "takes one input channel"),
    ({"arch": "care", "zstacks": ["s.tif"]}, "takes one input channel"),
    ({"arch": "nafnet", "data": "d", "layout": "in-focus", "guide": "unsharp"}, "unsharp"),
])
def test_guide_settings_that_cannot_run_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(RefocusError, match=message):
        TrainConfig.from_mapping({"guide": "wiener", "out": "m.pt", "weights": None,
                                  **settings})


@pytest.mark.parametrize("guide", ["wiener", "rl"])
def test_guided_ome_zarr_blocks_match_whole_plane_prediction(tmp_path: Path,
                                                             guide: str) -> None:
    from test_formats import write_ome_zarr

    from refocus.images import open_ome_zarr
    from refocus.inference.chunked import refocus_ome_zarr

    plane = read_plane(z00_paths()[1])
    write_ome_zarr(tmp_path / "in.zarr", plane, "YX", (128, 128), levels=1)
    refocuser = Refocuser(guided_net(), guide=GUIDES.get(guide), device="cpu", mode="eager")
    refocuser._halo = 40
    out = refocus_ome_zarr(refocuser, tmp_path / "in.zarr", tmp_path / "out.zarr", tile=256,
                           overlap=96)
    blocks = open_ome_zarr(out).level(0)[:].astype(np.float64)
    whole = refocuser.predict(plane, tile=1024).astype(np.float64)
    assert np.abs(blocks - plane).mean() > 5 * np.abs(blocks - whole).mean()
    assert np.percentile(np.abs(blocks - whole), 99) < 0.02 * np.ptp(whole)


@pytest.fixture(scope="module")
def whole_stacks(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three real fields, whole (696x520: the focus estimator needs room), as z-stacks
    z = 10..22 (index 6 in focus) simulated with the calibrated optics."""
    from conftest import write_bbbc006_layout

    from refocus.cli import main

    root = tmp_path_factory.mktemp("guided-stacks")
    fields = [read_plane(p) for p in in_focus_paths()[:3]]
    write_bbbc006_layout(root / "in-focus", fields, ["a02", "a03", "a04"], z_values=(16,))
    main(["simulate", "--in-focus", str(root / "in-focus"), "--out", str(root / "stacks"),
          "--z", "10-22", "--stack", "--seed", "4"])
    return sorted((root / "stacks").glob("*.ome.tif"))


def test_zstack_crops_carry_the_guide_of_their_whole_plane(whole_stacks: list[Path]) -> None:
    """A user's own z-stacks train a guided model: each plane's guide is made as at
    inference (its PSF estimated on the whole recorded plane), and is sharper than the
    plane far from focus."""
    from refocus.data import read_zstack
    from refocus.data.stack_dataset import StackCrops, pairs_of_stack

    stack = read_zstack(whole_stacks[0])
    pairs = [p for p in pairs_of_stack(stack, 6, 12.5) if abs(p.defocus_um) > 10]
    crops = StackCrops(pairs, size=256, crops_per_pair=3, augment=False, guide="rl")
    norm = PercentileNormalizer()
    for index, pair in enumerate(pairs):
        whole = crops.network_input(index)
        raw = stack.planes[pair.input]
        np.testing.assert_array_equal(whole, guide_input(GUIDES.get("rl"), norm(raw), raw))
        target = norm(stack.planes[pair.target])
        assert psnr(target, whole[1]) > psnr(target, whole[0]) + 3
    x, y = crops[0]
    assert x.shape == (2, 256, 256) and y.shape == (1, 256, 256)


def test_guided_model_trains_on_zstacks_and_init_must_share_its_guide(
        whole_stacks: list[Path], tmp_path: Path) -> None:
    from refocus.cli import main
    from refocus.train.state import initial_weights

    out = tmp_path / "guided.pt"
    main(["train", "--zstacks", *map(str, whole_stacks), "--guide", "rl", "--arch", "nafnet",
          "--loss", "l1", "--size", "64", "--batch", "4", "--epochs", "1",
          "--crops-per-pair", "1", "--max-defocus-um", "4", "--out", str(out)])
    loaded = load_model(out)
    assert loaded.guide is GUIDES.get("rl") and loaded.model.in_channels == 2
    spec = torch.load(out, weights_only=False)["arch"]
    assert initial_weights(str(out), spec, "rl").keys() == loaded.model.state_dict().keys()
    with pytest.raises(RefocusError, match="sees the guide 'rl', the run trains with 'wiener'"):
        initial_weights(str(out), spec, "wiener")
    plain = save_model(tmp_path / "plain.pt", CompactUNet(8, (1, 1), 1, (1, 1), 0),
                       arch=tiny_arch(1), normalizer=PercentileNormalizer(), train_config={},
                       provenance={}, history=[])
    with pytest.raises(RefocusError, match=r"\(leave --guide out\)"):
        initial_weights(str(plain), tiny_arch(1), "rl")
