"""The guide-channel probe (benchmarks/bench_guides.py): a widened network starts as the
shipped model exactly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from refocus.images import read_plane
from refocus.inference.refocuser import Refocuser
from refocus.samples import z00_paths

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def probe():
    if str(BENCH) not in sys.path:  # its own imports: bench_pretrained, bench_trust
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_guides", BENCH / "bench_guides.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_widened_network_starts_as_the_shipped_model(probe) -> None:
    net, normalizer, groups = probe.probe_network("wiener")
    assert groups["test"] == ["a03", "a07"]
    crop = read_plane(z00_paths()[0])[:96, :128]
    x = normalizer(crop)
    guide = x[::-1].copy()  # any guide: its weights start at zero
    with torch.no_grad():
        widened = net.eval()(torch.from_numpy(np.stack([x, guide]))[None])[0, 0].numpy()
        v1 = Refocuser.pretrained("nuclei-widefield-v1").model
        shipped = v1(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(widened, shipped, atol=1e-5)
    assert np.abs(widened - x).max() > 1e-3  # the shipped model does change the input
