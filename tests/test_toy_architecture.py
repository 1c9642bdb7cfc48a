"""Adding an architecture is one new file with one registration (issue 12): a toy network
dropped into ``refocus/archs/`` trains, saves, loads and predicts through the command line
with no other file changed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

import refocus.archs
from refocus.images import read_plane
from refocus.modelfile import read_model_file

TOY = '''"""A toy architecture: two convolutions around an identity (test only)."""

from torch import nn

from refocus.archs import register_architecture


class Toy(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


@register_architecture("toy_test", "two convolutions around an identity (test only)")
def build(width: int = 4) -> nn.Module:
    return Toy(width)
'''


@pytest.fixture
def toy_file() -> Iterator[Path]:
    path = Path(refocus.archs.__file__).parent / "toy_test_arch.py"
    assert not path.exists()
    path.write_text(TOY)
    try:
        yield path
    finally:
        path.unlink()


def _refocus(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line in a fresh interpreter (which discovers the new file by itself)."""
    return subprocess.run([sys.executable, "-m", "refocus", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_toy_architecture_trains_saves_loads_and_predicts(
    toy_file: Path, make_bbbc006: Callable[..., Path], tmp_path: Path
) -> None:
    data = make_bbbc006(z_values=(5, 16), crop=96)
    model = tmp_path / "toy.pt"
    trained = _refocus("train", "--data", data, "--out", model, "--arch", "toy_test",
                       "--loss", "l1", "--input-z", "5", "--size", "64", "--batch", "2",
                       "--epochs", "1", "--crops-per-pair", "1", "--device", "cpu")
    assert trained.returncode == 0, trained.stderr[-2000:]
    payload = read_model_file(model)
    assert payload["arch"] == {"arch": "toy_test", "width": 4}
    assert sum(v.numel() for v in payload["state_dict"].values()) == 2 * 9 * 4 + 4 + 1

    field = next((data / "BBBC006_v1_images_z_05").glob("*.tif"))
    predicted = _refocus("predict", model, field, "--out", tmp_path / "out", "--device", "cpu")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    out = tifffile.imread(tmp_path / "out" / field.name)
    source = read_plane(field)
    assert out.shape == source.shape and out.dtype == source.dtype
    assert not np.array_equal(out, source)  # trained weights changed the identity
    assert np.corrcoef(out.ravel(), source.ravel())[0, 1] > 0.5


def test_unknown_architecture_is_one_line(make_bbbc006: Callable[..., Path],
                                          tmp_path: Path) -> None:
    data = make_bbbc006(z_values=(5, 16), crop=96)
    result = _refocus("train", "--data", data, "--out", tmp_path / "m.pt", "--arch", "nope")
    assert result.returncode == 2
    assert "unknown architecture 'nope'" in result.stderr and "resnet34" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
