"""A model file written before the restructure (commit dcad382) still loads and predicts
the same pixels: users' trained models must survive refactoring (tests/data/legacy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from refocus.images import read_plane
from refocus.modelfile import load_model
from refocus.predict import Refocuser
from refocus.samples import z00_paths

LEGACY = Path(__file__).parent / "data" / "legacy"


def test_legacy_model_file_loads_with_its_architecture() -> None:
    loaded = load_model(LEGACY / "resnet18-dcad382.pt")
    assert loaded.arch == {"arch": "resnet18", "self_attention": False}
    assert sum(p.numel() for p in loaded.model.parameters()) > 30_000_000
    assert loaded.provenance["made_by"] == "refocus dcad382 save_model"


def test_legacy_model_predicts_bit_identically() -> None:
    image = read_plane(z00_paths()[0])
    refocuser = Refocuser.from_file(LEGACY / "resnet18-dcad382.pt", device="cpu", mode="eager")
    out = refocuser.predict(image, tile=1024)  # one tile: independent of free memory
    expected = tifffile.imread(LEGACY / "expected-eager.tif")
    assert out.dtype == expected.dtype == np.uint16
    assert out.std() > 10  # a real picture, not a flat field
    np.testing.assert_array_equal(out, expected)
