"""The guide-channel probe (benchmarks/bench_guides.py): its Wiener guide sharpens a real field
with the exact PSF, and a widened network starts as the shipped model exactly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from refocus.images import read_plane
from refocus.inference.refocuser import Refocuser
from refocus.metrics import psnr
from refocus.samples import in_focus_paths, z00_paths
from refocus.simulate import plane_defocus_um, simulate_plane
from refocus.simulate.psf import defocus_psf

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def probe():
    if str(BENCH) not in sys.path:  # its own imports: bench_pretrained, bench_trust
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_guides", BENCH / "bench_guides.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wiener_guide_sharpens_a_real_field_beyond_focus(probe) -> None:
    field = read_plane(in_focus_paths()[1]).astype(np.float32)
    plane = simulate_plane(field, 22, rng=0).astype(np.float32)
    sharpened = probe.wiener_filter(plane, defocus_psf(plane_defocus_um(22)).astype(np.float32))
    assert psnr(field, sharpened) > psnr(field, plane) + 3


def test_widened_network_starts_as_the_shipped_model(probe) -> None:
    net, normalizer, groups = probe.probe_network("wiener")
    assert groups["test"] == ["a03", "a07"]
    crop = read_plane(z00_paths()[0])[:96, :128]
    x = normalizer(crop)
    guide = x[::-1].copy()  # any guide: its weights start at zero
    with torch.no_grad():
        widened = net.eval()(torch.from_numpy(np.stack([x, guide]))[None])[0, 0].numpy()
        shipped = Refocuser.pretrained().model(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(widened, shipped, atol=1e-5)
    assert np.abs(widened - x).max() > 1e-3  # the shipped model does change the input
