"""Guide channels (refocus.guides): the Wiener copy sharpens real fields, training crops
carry it, and a guided model predicts, tiles, exports and loads like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from refocus.archs.compact import CompactUNet
from refocus.data.normalize import PercentileNormalizer
from refocus.data.synthetic import SyntheticPairs
from refocus.errors import RefocusError
from refocus.export import export_model
from refocus.guides import GUIDES, estimate_psf, guide_input, wiener_filter
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


@pytest.fixture(scope="module")
def guided_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = guided_net()
    arch = {"arch": "nafnet", "width": 8, "encoder_blocks": [1, 1], "middle_blocks": 1,
            "decoder_blocks": [1, 1], "attention_window": 0, "in_channels": 2}
    path = tmp_path_factory.mktemp("guided") / "guided.pt"
    return save_model(path, net, arch=arch, normalizer=PercentileNormalizer(),
                      train_config={"guide": "wiener", "channels": ["w1"]},
                      provenance={}, history=[])


def test_wiener_filter_sharpens_a_real_field_beyond_focus() -> None:
    field = read_plane(in_focus_paths()[1]).astype(np.float32)
    plane = simulate_plane(field, 22, rng=0).astype(np.float32)
    sharpened = wiener_filter(plane, defocus_psf(plane_defocus_um(22)).astype(np.float32))
    assert psnr(field, sharpened) > psnr(field, plane) + 3


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


def test_guided_training_crops_carry_a_sharper_second_channel() -> None:
    data = SyntheticPairs(in_focus_paths()[:2], guide="wiener", crops_per_field=24, seed=3)
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
    ({"arch": "nafnet", "data": "d"}, "needs --layout in-focus"),
    ({"arch": "nafnet", "zstacks": ["s.tif"]}, "not --zstacks"),
    ({"arch": "nafnet", "data": "d", "layout": "in-focus", "guide": "unsharp"}, "unsharp"),
])
def test_guide_settings_that_cannot_run_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(RefocusError, match=message):
        TrainConfig.from_mapping({"guide": "wiener", "out": "m.pt", "weights": None,
                                  **settings})


def test_guided_ome_zarr_blocks_match_whole_plane_prediction(tmp_path: Path) -> None:
    from test_formats import write_ome_zarr

    from refocus.images import open_ome_zarr
    from refocus.inference.chunked import refocus_ome_zarr

    plane = read_plane(z00_paths()[1])
    write_ome_zarr(tmp_path / "in.zarr", plane, "YX", (128, 128), levels=1)
    refocuser = Refocuser(guided_net(), guide=WIENER, device="cpu", mode="eager")
    refocuser._halo = 40
    out = refocus_ome_zarr(refocuser, tmp_path / "in.zarr", tmp_path / "out.zarr", tile=256,
                           overlap=96)
    blocks = open_ome_zarr(out).level(0)[:].astype(np.float64)
    whole = refocuser.predict(plane, tile=1024).astype(np.float64)
    assert np.abs(blocks - plane).mean() > 5 * np.abs(blocks - whole).mean()
    assert np.percentile(np.abs(blocks - whole), 99) < 0.02 * np.ptp(whole)
