"""Export: TorchScript and ONNX match PyTorch on real images of any size; the bioimage.io
package is complete, self-consistent and valid (checked offline)."""

from __future__ import annotations

import ast
import json
import re
import socket
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import onnx
import pytest
import torch
import yaml

import refocus.convert
from refocus.cli import main
from refocus.convert import run_onnx, run_torchscript
from refocus.export import (
    BBBC006_CITATION,
    EXPORT_FORMATS,
    REFOCUS_CITATION,
    bioimageio_normalise,
    export_model,
    pytorch_output,
    sample_input,
    validate_bioimageio,
)
from refocus.images import read_plane, write_tiff
from refocus.inference.receptive import receptive_radius
from refocus.modelfile import load_model


@pytest.fixture(scope="module")
def loaded(tiny_model_path: Path):
    return load_model(tiny_model_path)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory, z00_files: list[Path]) -> Path:
    """A real defocused field cut to 300x340: not on the 32-px grid, big enough for the
    tiny model's halo, small enough to check quickly on a CPU."""
    path = tmp_path_factory.mktemp("sample") / "z00_crop.tif"
    return write_tiff(path, read_plane(z00_files[3])[110:410, 200:540])


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path, sample: Path):
    out = tmp_path_factory.mktemp("bioimageio") / "refocus.zip"
    return export_model(tiny_model_path, "bioimageio", out, sample=sample)


@pytest.mark.parametrize("fmt, suffix", [("torchscript", ".pt"), ("onnx", ".onnx")])
def test_cli_export_matches_pytorch_at_other_sizes(
    tmp_path: Path, tiny_model_path: Path, loaded, z00_files: list[Path], fmt: str, suffix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    small = write_tiff(tmp_path / "small.tif", read_plane(z00_files[5])[:150, :230])
    out = tmp_path / f"model{suffix}"
    main(["export", str(tiny_model_path), "--format", fmt, "--out", str(out),
          "--sample", str(small)])
    printed = capsys.readouterr().out
    reported = float(printed.split("max abs diff ")[1].split()[0])
    x = sample_input(loaded.normalizer, small)
    run = run_torchscript if fmt == "torchscript" else run_onnx
    assert abs(np.abs(run(out, x) - pytorch_output(loaded.model, x)).max() - reported) < 1e-6
    assert reported < 1e-4
    # a batch of two planes at a third size, neither on the 32-px grid: dynamic N, H and W
    batch = np.concatenate([x[..., :70, :101], x[..., 50:120, 90:191]])
    np.testing.assert_allclose(run(out, batch), pytorch_output(loaded.model, batch), atol=1e-4)
    if fmt == "onnx":
        dims = onnx.load(out).graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in dims][1] == 1
        assert all(d.dim_param and not d.dim_value for d in (dims[0], dims[2], dims[3]))


def test_export_refuses_to_overwrite(tmp_path: Path, tiny_model_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_model_path), "--format", "onnx", "--out", str(out)])
    assert exit_info.value.code == 2
    assert out.read_bytes() == b"keep me"


def test_cli_format_choices_are_the_registered_formats(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert set(EXPORT_FORMATS.names()) == {"torchscript", "onnx", "bioimageio"}
    monkeypatch.setenv("COLUMNS", "200")  # the choices on one line of the help table
    main(["export", "--help"])
    (choices,) = re.findall(r"--format\s+\[([a-z|]+)\]", capsys.readouterr().out)
    assert sorted(choices.split("|")) == sorted(EXPORT_FORMATS.names())


def test_unknown_format_is_one_line_and_exit_2(
    tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.tiff"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_model_path), "--format", "tiff", "--out", str(out)])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "unknown export format 'tiff'" in line
    assert all(name in line for name in EXPORT_FORMATS.names())
    assert not out.exists()


def test_bioimageio_package_is_complete_and_self_consistent(
    package, loaded, sample: Path
) -> None:
    assert package.validation == "valid-format"
    assert set(package.max_abs_diff) == {"torchscript", "onnx"}
    assert all(d < 1e-4 for d in package.max_abs_diff.values())
    with zipfile.ZipFile(package.path) as zf:
        names = set(zf.namelist())
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        tensors = {n: np.load(zf.open(n)) for n in ("test_input.npy", "test_output.npy")}
        readme = zf.read("README.md").decode()
        cover = iio.imread(zf.read("cover.png"))
        for n in ("weights_torchscript.pt", "weights.onnx"):
            zf.extract(n, package.path.parent)
    assert {"README.md", "cover.png", "weights.onnx", "weights_torchscript.pt"} <= names
    assert rdf["format_version"].startswith("0.5.") and rdf["type"] == "model"

    (inp,), (outp,) = rdf["inputs"], rdf["outputs"]
    (pre,) = [p for p in inp["preprocessing"] if p["id"] != "ensure_dtype"]
    assert pre["id"] == "scale_range"
    assert pre["kwargs"]["min_percentile"] == loaded.normalizer.low
    assert pre["kwargs"]["max_percentile"] == loaded.normalizer.high
    assert pre["kwargs"]["axes"] == ["y", "x"]
    assert {p["id"] for p in outp["postprocessing"]} == {"ensure_dtype"}
    halos = {a["id"]: a.get("halo") for a in outp["axes"] if a["type"] == "space"}
    radius = receptive_radius(loaded.model, torch.device("cpu"))
    assert halos == {"y": radius, "x": radius}
    space = [a["size"] for a in inp["axes"] if a["type"] == "space"]
    assert all(s["step"] == 32 and s["min"] > 2 * radius for s in space)

    assert "## Validation" in readme and f"{package.max_abs_diff['onnx']:.2e}" in readme
    assert cover.ndim == 2 and 1.9 < cover.shape[1] / cover.shape[0] < 2.1
    cites = json.dumps(rdf["cite"])
    assert BBBC006_CITATION[1] in cites and REFOCUS_CITATION[1] in cites

    # the test tensors: a real crop, and what each exported runtime makes of it
    raw = tensors["test_input.npy"]
    assert raw.shape[:2] == (1, 1) and raw.shape[2] >= space[0]["min"]
    crop = read_plane(sample).astype(np.float32)
    top, left = (crop.shape[0] - raw.shape[2]) // 2, (crop.shape[1] - raw.shape[3]) // 2
    expected = crop[top : top + raw.shape[2], left : left + raw.shape[3]]
    np.testing.assert_array_equal(raw[0, 0], expected)
    x = bioimageio_normalise(raw, loaded.normalizer)
    for run, name in ((run_torchscript, "weights_torchscript.pt"), (run_onnx, "weights.onnx")):
        y = run(package.path.parent / name, x)
        np.testing.assert_allclose(y, tensors["test_output.npy"], atol=1e-4)


def test_bioimageio_validation_runs_offline(package, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    status, problems = validate_bioimageio(package.path)
    assert status == "valid-format"
    assert not any("error" in p.lower() for p in problems)


def test_convert_stays_below_inference_and_export() -> None:
    """refocus.convert is the low-level module both build on, so it imports neither."""
    tree = ast.parse(Path(refocus.convert.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "refocus.archs.padding" in imported
    assert not [m for m in imported if m and m.startswith(("refocus.export", "refocus.inference"))]


def test_export_onto_an_existing_folder_is_refused_before_any_work(
    tiny_model_path, tmp_path, capsys
):
    """issue 17 (11): ``--out <existing folder> --overwrite`` used to end in an
    IsADirectoryError traceback after the whole export."""
    folder = tmp_path / "exports"
    folder.mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["export", str(tiny_model_path), "--format", "onnx", "--out", str(folder),
              "--overwrite"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "is a folder" in err and len(err.splitlines()) == 1
    assert list(folder.iterdir()) == []
