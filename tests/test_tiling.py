"""Tiled prediction equals whole-image prediction where the network's context fits the halo,
blends without a seam where it does not, and shrinks its tiles when memory runs out."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from refocus.inference.tiling import (
    _ramp,
    choose_tile,
    halo_of,
    overlap_for_halo,
    predict_tiled,
    tile_starts,
)


def conv_net(layers: int = 4, seed: int = 0) -> nn.Module:
    """A random 3x3 conv net: receptive radius = ``layers`` pixels, zero-padded like a U-Net."""
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Conv2d(1 if i == 0 else 8, 1 if i == layers - 1 else 8, 3, padding=1))
        if i < layers - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


def as_fn(net: nn.Module):
    def fn(tile: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(tile)[None, None])[0, 0].numpy()

    return fn


@pytest.fixture
def field(in_focus_images) -> np.ndarray:
    """A real 520x696 field scaled to about 0..1."""
    im = in_focus_images[0].astype(np.float32)
    return (im - im.min()) / (im.max() - im.min())


@pytest.mark.parametrize("length,tile,overlap,align", [
    (696, 256, 48, 32), (520, 128, 30, 1), (100, 512, 48, 32), (257, 256, 48, 32),
])
def test_tiles_cover_the_axis_with_at_least_the_overlap(length, tile, overlap, align):
    starts = tile_starts(length, tile, overlap, align)
    stops = [min(s + tile, length) for s in starts]
    assert starts[0] == 0 and stops[-1] == length
    assert all(s % align == 0 for s in starts)
    for k in range(1, len(starts)):
        assert stops[k - 1] - starts[k] >= overlap  # neighbours share the overlap
        assert stops[k] - starts[k] > overlap  # the cut last tile is still wider than it


@pytest.mark.parametrize("overlap", [3, 10, 48, 97])
def test_neighbouring_ramps_sum_to_one_and_drop_the_halo(overlap):
    ramp = _ramp(overlap)
    np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-12)
    halo = halo_of(overlap)
    assert np.all(ramp[:halo] == 0) and np.all(np.diff(ramp) >= 0)
    assert overlap_for_halo(halo_of(overlap)) <= overlap


def test_tile_larger_than_image_is_one_whole_image_call(field):
    calls = []

    def fn(t):
        calls.append(t.shape)
        return t * 2

    out = predict_tiled(fn, field, tile=1024, overlap=96)
    assert calls == [field.shape]
    np.testing.assert_array_equal(out, field * 2)


@pytest.mark.parametrize("tile,overlap,align", [(128, 24, 32), (160, 12, 1), (96, 30, 1)])
def test_tiled_equals_whole_when_halo_covers_the_receptive_field(field, tile, overlap, align):
    net = conv_net(layers=4)  # receptive radius 4 <= halo_of(overlap)
    assert halo_of(overlap) >= 4
    whole = as_fn(net)(field)
    tiled = predict_tiled(as_fn(net), field, tile, overlap, align=align)
    assert tiled.shape == field.shape and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, atol=1e-5 * np.abs(whole).max())


def seam_gradients(image: np.ndarray, borders: list[int]) -> tuple[float, np.ndarray]:
    """Largest mean |d/dx| on a tile border column, and the same for every other column."""
    per_column = np.abs(np.diff(image, axis=1)).mean(axis=0)  # column j: x=j -> x=j+1
    on_border = np.zeros(per_column.shape, bool)
    for b in borders:
        on_border[max(b - 2, 0) : b + 1] = True
    return float(per_column[on_border].max()), per_column[~on_border]


def test_no_seam_even_when_tiles_disagree(field):
    """Worst case: a function that rescales each tile by its own statistics, so tiles
    disagree everywhere. Cut tiles leave steps; blended tiles must not."""

    def per_tile_stretch(t):
        return (t - t.mean()) / (t.std() + 1e-6)

    tile, overlap = 256, 96
    starts = tile_starts(field.shape[1], tile, overlap)
    # every column where two tiles are blended counts as border
    blend_columns = [x for k in range(1, len(starts))
                     for x in range(starts[k], starts[k - 1] + tile + 1)]
    blended = predict_tiled(per_tile_stretch, field, tile, overlap)
    border, inside = seam_gradients(blended, blend_columns)
    assert border <= np.percentile(inside, 95)

    # the same function on abutting tiles (no overlap) shows the step the test looks for
    cut_starts = tile_starts(field.shape[1], tile, 0)
    cut = np.concatenate([per_tile_stretch(field[:, s : s + tile]) for s in cut_starts], axis=1)
    cut_border, cut_inside = seam_gradients(cut, cut_starts[1:])
    assert cut_border > np.percentile(cut_inside, 95)


def test_out_of_memory_halves_the_tile_and_goes_on(field, caplog):
    net = conv_net(layers=3)
    seen: list[tuple[int, int]] = []
    shrunk: list[int] = []

    def fn(t):
        seen.append(t.shape)
        if max(t.shape) > 200:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return as_fn(net)(t)

    with caplog.at_level(logging.WARNING, logger="refocus.inference.tiling"):
        out = predict_tiled(fn, field, tile=2048, overlap=24, align=32, on_shrink=shrunk.append)
    assert shrunk == [320, 160]  # 696 -> 348 rounded to the 32 grid -> 320 -> 160
    assert all(max(s) <= 160 for s in seen[2:])
    assert "out of memory" in caplog.text
    np.testing.assert_allclose(out, as_fn(net)(field), atol=1e-5)


def _ort_error(kind: str, message: str) -> Exception:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return getattr(state, kind)(message)


CPU_FAILURES = {
    "torch": lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. "
                                  "DefaultCPUAllocator: can't allocate memory: you tried to "
                                  "allocate 4294967296 bytes. Error code 12"),
    "ort-arena": lambda: _ort_error("RuntimeException", "[ONNXRuntimeError] : 6 : "
                                    "RUNTIME_EXCEPTION : BFCArena::AllocateRawInternal Failed "
                                    "to allocate memory for requested buffer of size 8388608"),
    "ort-fail": lambda: _ort_error("Fail", "[ONNXRuntimeError] : 1 : FAIL : bad allocation"),
    "numpy": lambda: MemoryError("Unable to allocate 64.0 MiB for an array"),
}


@pytest.mark.parametrize("failure", sorted(CPU_FAILURES))
def test_cpu_allocation_failures_halve_the_tile_too(field, failure):
    net = conv_net(layers=3)

    def fn(t):
        if max(t.shape) > 200:
            raise CPU_FAILURES[failure]()
        return as_fn(net)(t)

    shrunk: list[int] = []
    out = predict_tiled(fn, field, tile=2048, overlap=24, align=32, on_shrink=shrunk.append)
    assert shrunk == [320, 160]
    np.testing.assert_allclose(out, as_fn(net)(field), atol=1e-5)


def test_other_errors_are_not_swallowed(field):
    def fn(t):
        raise RuntimeError("bad weights")

    with pytest.raises(RuntimeError, match="bad weights"):
        predict_tiled(fn, field, 128, 24)


def test_choose_tile_fits_memory_and_stays_tileable():
    # 8 GiB free, 4 KiB per pixel, half of it used -> sqrt(2**20) = 1024
    assert choose_tile(8 * 2**30, 4096) == 1024
    assert choose_tile(8 * 2**30, 4096, largest=512) == 512
    assert choose_tile(1e6, 4096, overlap=96) == 224  # tiny memory: smallest tileable size
    assert choose_tile(8 * 2**30, 5000) % 32 == 0
