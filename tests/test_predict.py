"""Refocuser: real model files, whole vs tiled, the flux rule, dtypes, stacks, channels;
the receptive-field probe and memory estimate that size its tiles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from test_structure import import_graph
from torch import nn

import refocus
from refocus.archs.padding import grid_pads, pad_to_multiple
from refocus.errors import RefocusError
from refocus.inference.flux import apply_gain, flux_gain, gain_from_sums, to_dtype
from refocus.inference.memory import peak_bytes_per_pixel
from refocus.inference.receptive import receptive_radius
from refocus.inference.refocuser import Refocuser
from refocus.inference.tiling import tile_starts
from refocus.modelfile import load_model

#: Flux tolerance after rounding to uint16 (the rule itself is exact in float64).
FLUX_RTOL = 1e-4


def near_identity_net(seed: int = 0) -> nn.Module:
    """A stand-in "refocusing" network: identity plus a small random 3x3 perturbation, so
    its output keeps the input's structure and positive flux (like a trained model's)."""
    torch.manual_seed(seed)
    conv1, conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1)
    with torch.no_grad():
        for conv in (conv1, conv2):
            conv.weight.mul_(0.05)
            conv.bias.zero_()
            conv.weight[:, 0 if conv is conv2 else slice(None), 1, 1] += 1.0 / (
                4 if conv is conv2 else 1)
    return nn.Sequential(conv1, nn.ReLU(), conv2).eval()


@pytest.fixture(scope="module")
def tiny(tiny_model_path) -> Refocuser:
    return Refocuser.from_file(tiny_model_path, device="cpu", mode="eager")


@pytest.fixture
def stand_in() -> Refocuser:
    return Refocuser(near_identity_net(), device="cpu", channels=("w1",), mode="eager")


@pytest.fixture(scope="module")
def field(z00_files) -> np.ndarray:
    """A real defocused field (z=00), cropped to 384x512 to keep the CPU tests short."""
    from refocus.images import read_plane

    return read_plane(z00_files[0])[:384, :512]


@pytest.fixture(scope="module")
def whole_and_tiled(tiny, field):
    """The tiny model's output (normalised units) on the whole field and in 2 tiles."""
    lo, hi = tiny.normalizer.percentiles(field)
    x_n = tiny.normalizer.apply(field, lo, hi)
    whole = tiny.predict_normalised(x_n, tile=1024)
    tile, overlap = 416, 192
    assert len(tile_starts(field.shape[1], tile, overlap, 32)) == 2
    return whole, tiny.predict_normalised(x_n, tile=tile, overlap=overlap), (tile, overlap)


def test_from_file_brings_the_models_normaliser_and_channel(tiny, tiny_model_path):
    loaded = load_model(tiny_model_path)
    assert tiny.normalizer == loaded.normalizer
    assert tiny.channels == tuple(loaded.train_config["channels"])
    assert tiny.source == tiny_model_path.resolve()


def test_tiled_agrees_with_whole_image_prediction(whole_and_tiled):
    """A barely trained model mixes context from far away (its measured 99% radius fills
    the 256-px probe), so 192 px of overlap leaves a small, stated difference."""
    whole, tiled, _ = whole_and_tiled
    span = float(whole.max() - whole.min())
    diff = np.abs(tiled - whole)
    assert diff.mean() < 0.01 * span
    assert diff.max() < 0.06 * span


def test_no_seam_at_tile_borders(whole_and_tiled, field):
    whole, tiled, (tile, overlap) = whole_and_tiled
    starts = tile_starts(field.shape[1], tile, overlap, 32)
    blend = np.arange(starts[1], starts[0] + tile + 1)  # every column where tiles mix
    per_column = np.abs(np.diff(tiled, axis=1)).mean(axis=0)
    inside = np.delete(per_column, blend[blend < per_column.size])
    assert per_column[blend[blend < per_column.size]].max() <= np.percentile(inside, 95)


def test_uint16_in_uint16_out_with_flux_kept(stand_in, z00_files):
    from refocus.images import read_plane

    for path in z00_files[:3]:
        image = read_plane(path)
        out = stand_in.predict(image, tile=256, overlap=48)
        assert out.dtype == np.uint16 and out.shape == image.shape
        lo, _ = stand_in.normalizer.percentiles(image)
        flux_in = float(np.sum(image - lo, dtype=np.float64))
        flux_out = float(np.sum(out.astype(np.float64) - lo))
        assert abs(flux_out - flux_in) <= FLUX_RTOL * flux_in
        assert not np.array_equal(out, image)  # it did change the image


def test_flux_rule_is_exact_before_rounding():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 100.0, (64, 64)) + 500
    prediction = rng.gamma(1.0, 0.3, (64, 64))
    lo, hi = np.percentile(image, (1, 99.8))
    g = flux_gain(image, prediction, lo, hi)
    np.testing.assert_allclose(np.sum(lo + g * prediction - lo), np.sum(image - lo), rtol=1e-12)
    # a prediction with no positive flux cannot define a gain: plain de-normalisation
    assert gain_from_sums(100.0, -3.0, 10.0, 50.0) == 40.0
    assert gain_from_sums(0.0, 5.0, 10.0, 50.0) == 40.0


@pytest.mark.parametrize("height,width", [(520, 696), (64, 64), (33, 95), (7, 40)])
def test_grid_padding_repeats_the_networks_own(height, width):
    """Chunk-wise prediction pads image edges itself; it must pad as the network does."""
    padded = pad_to_multiple(torch.zeros(1, 1, height, width))
    (top, bottom), (left, right) = grid_pads(height), grid_pads(width)
    assert padded.shape[-2:] == (height + top + bottom, width + left + right)
    marker = torch.zeros(1, 1, height, width)
    marker[..., 0, 0] = 1  # the image's first pixel lands at (top, left)
    assert pad_to_multiple(marker)[0, 0, top, left] == 1


def test_the_gain_brings_the_prediction_back_to_the_inputs_units():
    prediction = np.array([[0.0, 0.5], [1.0, 2.0]])
    np.testing.assert_array_equal(apply_gain(prediction, 100.0, 10.0, np.uint16),
                                  [[100, 105], [110, 120]])
    out = apply_gain(prediction, 100.0, 10.0, np.float32)
    assert out.dtype == np.float32 and out[1, 1] == 120.0


def test_integer_outputs_are_clipped_never_wrapped():
    values = np.array([-7.0, 0.4, 3.6, 65535.4, 70000.0, np.inf])
    np.testing.assert_array_equal(to_dtype(values, np.uint16), [0, 0, 4, 65535, 65535, 65535])
    np.testing.assert_array_equal(to_dtype(np.array([-200.0, 200.0]), np.int8), [-128, 127])
    assert to_dtype(np.array([1.25]), np.float32).dtype == np.float32


def test_a_negative_network_saturates_at_zero(field):
    flip = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        flip.weight.fill_(-1.0)
    out = Refocuser(flip, device="cpu", mode="eager").predict(field, tile=1024)
    assert out.dtype == np.uint16 and out.min() == 0  # not wrapped to 65535-ish values
    assert out.max() <= field.max()


def test_float_input_stays_float(stand_in, field):
    out = stand_in.predict(field.astype(np.float32), tile=1024)
    assert out.dtype == np.float32 and out.shape == field.shape


def test_stacks_refocus_each_plane_of_the_chosen_channel(stand_in, field):
    planes = [field[:64, :96], field[64:128, :96], field[128:192, :96], field[192:256, :96]]
    stack = np.stack([np.stack([planes[0], planes[1]]), np.stack([planes[2], planes[3]])])
    stack = stack[:, None]  # T, Z=1, C=2, Y, X
    names = ["w1", "actin"]
    out = stand_in.predict(stack, axes="TZCYX", tile=256, channel_names=names)  # model: w1
    assert out.shape == stack.shape and out.dtype == stack.dtype
    for t in range(2):
        np.testing.assert_array_equal(out[t, 0, 0], stand_in.predict(stack[t, 0, 0], tile=256))
        np.testing.assert_array_equal(out[t, 0, 1], stack[t, 0, 1])  # other channel untouched
    by_index = stand_in.predict(stack, axes="TZCYX", tile=256, channel=1)
    np.testing.assert_array_equal(by_index[:, :, 0], stack[:, :, 0])
    by_name = stand_in.predict(stack, axes="TZCYX", tile=256, channel="actin",
                               channel_names=names)
    np.testing.assert_array_equal(by_name, by_index)
    # axes in another order: same result, transposed
    moved = stand_in.predict(np.moveaxis(stack, 2, -1), axes="TZYXC", tile=256, channel=1)
    np.testing.assert_array_equal(np.moveaxis(moved, -1, 2), by_index)


@pytest.mark.parametrize("kwargs,problem", [
    (dict(channel="GFP", channel_names=["w1", "actin"]), r"channel 'GFP' not found; .*w1, actin"),
    (dict(channel=2), r"channel 2 does not exist: the image has 2 channel"),
    (dict(channel_names=["DAPI", "actin"]), r"2 channels \(DAPI, actin\); choose"),
])
def test_wrong_channel_is_one_clear_line(stand_in, field, kwargs, problem):
    stack = np.stack([field[:32, :32], field[32:64, :32]])
    with pytest.raises(RefocusError, match=problem) as info:
        stand_in.predict(stack, axes="CYX", tile=64, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("shape,axes,problem", [
    ((3, 32, 32), None, r"3-D array .*say what its axes are"),
    ((32, 32, 3), "YXS", "RGB image"),
    ((32, 32), "ZYX", "do not fit a 2-D array"),
])
def test_unclear_arrays_are_refused(stand_in, shape, axes, problem):
    with pytest.raises(RefocusError, match=problem):
        stand_in.predict(np.zeros(shape, np.uint16), axes=axes)


def test_small_chosen_tile_keeps_the_tile_and_shrinks_the_overlap(stand_in, caplog):
    stand_in._halo = 40  # as if measured: default overlap 3 * 40 -> 128 on the 32 grid
    assert stand_in.default_overlap() == 128
    assert stand_in.tile_and_overlap(None, None, (100, 100))[1] == 0  # one tile, no overlap
    assert stand_in.tile_and_overlap(192, None, (500, 500)) == (192, 64)
    assert "overlap" in caplog.text
    stand_in.tile = 128  # an automatic tile grows to hold the overlap instead
    assert stand_in.tile_and_overlap(None, None, (500, 500)) == (288, 128)


def test_out_of_memory_shrinks_and_remembers_the_tile(stand_in, field):
    reference = stand_in.predict(field, tile=1024)
    run = stand_in._run

    def limited(tile: np.ndarray) -> np.ndarray:
        if max(tile.shape) > 256:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return run(tile)

    stand_in._run = limited  # type: ignore[method-assign]
    stand_in._halo = 2
    out = stand_in.predict(field, tile=1024, overlap=32)
    assert stand_in.tile == 256
    np.testing.assert_array_equal(out, reference)


def test_a_file_backed_refocuser_pickles_as_its_path(tiny, field):
    data = pickle.dumps(tiny)
    assert len(data) < 2000  # the path, not 50 MB of weights
    again = pickle.loads(data)
    assert again.source == tiny.source and again.normalizer == tiny.normalizer
    crop = field[:96, :128]
    np.testing.assert_array_equal(again.predict(crop, tile=256), tiny.predict(crop, tile=256))


def test_the_user_import_paths_give_the_one_refocuser():
    from refocus.predict import Refocuser as from_predict

    assert from_predict is Refocuser is refocus.Refocuser


@pytest.mark.parametrize("layers", [2, 3, 5])
def test_receptive_radius_of_stacked_3x3_convs_is_their_count(layers):
    """Each 3x3 convolution adds one pixel of context; all of the gradient lies inside."""
    convs = [nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(layers)]
    with torch.no_grad():
        for conv in convs:
            conv.weight.fill_(1.0)  # every tap counts: the radius is exactly ``layers``
    net = nn.Sequential(*convs)
    assert receptive_radius(net, torch.device("cpu"), size=64, mass=1.0) == layers
    assert receptive_radius(net, torch.device("cpu"), size=64, mass=0.5) < layers


def test_peak_bytes_count_the_activations_alive_at_once_not_every_layer():
    """A chain 1 -> 4 -> 4 -> 4 -> 1 maps: every layer's output sums to 13 maps, but at most
    the input and two neighbouring 4-map outputs live together (9 maps of float32)."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1),
                        nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 1, 1))
    assert peak_bytes_per_pixel(net, torch.device("cpu"), size=32) == 4.0 * 9


def test_inference_modules_build_on_the_refocuser_never_the_reverse():
    """Counting imports inside functions too (:func:`test_structure.import_graph`): the
    refocuser is built from the helper modules, the ways of running it build on it."""
    graph = import_graph()
    inference = {m for m in graph if m.startswith("refocus.inference.")}
    uses = {m.rsplit(".", 1)[1]: {d.rsplit(".", 1)[1] for d in graph[m] & inference}
            for m in inference}
    assert {"backends", "finite", "flux", "memory", "receptive", "tiling"} <= uses["refocuser"]
    helpers, todo = set(), set(uses["refocuser"])
    while todo:  # everything the refocuser is built from, directly or not
        module = todo.pop()
        helpers.add(module)
        todo |= uses[module] - helpers
    runners = {"refocuser", "files", "chunked", "watch", "acquisition"}
    assert not helpers & runners
    assert not uses["finite"]
    assert all("refocuser" in uses[m] for m in ("files", "chunked"))
