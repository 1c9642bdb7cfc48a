"""Nothing silent, nothing lost (issue 17) on the inference side: NaN pixels, bad options,
one output per input, Ctrl-C, and a default model for `refocus predict` / `watch`."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from test_cli_predict import run_cli
from test_predict import near_identity_net

from refocus.errors import RefocusError
from refocus.images import read_image, read_plane
from refocus.inference.files import plan_jobs
from refocus.inference.refocuser import Refocuser, check_tiling
from refocus.zoo import MODELS, PretrainedModel

TEST_MODEL = "test-default-tiny"


@pytest.fixture
def stand_in() -> Refocuser:
    return Refocuser(near_identity_net(), device="cpu", mode="eager")


@pytest.fixture(scope="module")
def field(z00_files: list[Path]) -> np.ndarray:
    """A real defocused field as float32 (where NaN can occur), cropped for a CPU."""
    return read_plane(z00_files[0])[:192, :256].astype(np.float32)


def _without_defaults() -> dict[str, PretrainedModel]:
    """Unregister the default model(s) for a test; the caller registers them back."""
    defaults = {name: entry for name, entry in MODELS.items() if entry.default}
    for name in defaults:
        MODELS.unregister(name)
    return defaults


@pytest.fixture
def no_default_model() -> Iterator[None]:
    defaults = _without_defaults()
    yield
    for name, entry in defaults.items():
        MODELS.register(name, entry)


@pytest.fixture
def default_tiny_model(range_server, tiny_model_path: Path, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> Iterator[PretrainedModel]:
    """The tiny model registered as the (only) default pretrained model, served from a
    local HTTP server into an empty cache, as a real default model would be."""
    base, handler = range_server
    data = tiny_model_path.read_bytes()
    handler.files["/tiny.pt"] = data
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path / "model-cache"))
    defaults = _without_defaults()
    entry = PretrainedModel(TEST_MODEL, "tiny test model", "resnet18",
                            hashlib.sha256(data).hexdigest(), url=f"{base}/tiny.pt",
                            default=True)
    MODELS.register(entry.name, entry)
    try:
        yield entry
    finally:
        MODELS.unregister(entry.name)
        for name, other in defaults.items():
            MODELS.register(name, other)


# --- 1. non-finite pixels -------------------------------------------------------------

def test_one_nan_pixel_is_refocused_around_and_stays_nan(stand_in, field, caplog) -> None:
    clean = stand_in.predict(field, tile=1024)
    image = field.copy()
    image[50, 60] = np.nan
    image[100:110, 200:230] = np.inf  # a saturated stripe
    image[0, 0] = -np.inf
    bad = ~np.isfinite(image)
    with caplog.at_level(logging.WARNING):
        out = stand_in.predict(image, tile=1024, where="plate/a1.tif")
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.isnan(out[bad]).all() and np.isfinite(out[~bad]).all()
    far = np.ones_like(bad)  # away from the holes the network sees the same input
    far[30:70, 40:80] = far[80:130, 180:250] = far[:12, :12] = False
    span = float(clean.max() - clean.min())
    assert np.abs(out - clean)[far].max() < 0.01 * span
    # the flux rule holds on the finite pixels, with percentiles of the finite pixels
    lo, _ = stand_in.normalizer.percentiles(image[~bad])
    flux_in = np.sum(image[~bad] - lo, dtype=np.float64)
    np.testing.assert_allclose(np.sum(out[~bad] - lo, dtype=np.float64), flux_in, rtol=1e-4)
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage().startswith("plate/a1.tif: 302 non-finite pixel(s)")


@pytest.mark.parametrize("value", [0.0, 0.5, 1000.0])
def test_a_blank_float_plane_comes_back_blank(value: float) -> None:
    """Issue 17 #11: the shipped network draws a faint pattern (its biases) from a blank
    input; a plane without contrast has nothing to refocus and must come back as itself."""
    refocuser = Refocuser.pretrained(mode="eager")
    blank = np.full((64, 80), value, np.float32)
    out = refocuser.predict(blank)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, blank)
    stack = np.stack([blank, blank + 1.0])  # each plane of a stack on its own
    np.testing.assert_array_equal(refocuser.predict(stack, axes="ZYX"), stack)


def test_a_stack_warns_once_and_an_all_nan_plane_is_one_error(stand_in, field,
                                                              caplog) -> None:
    stack = np.stack([field[:64, :96], field[64:128, :96]]).copy()
    stack[0, 5, 5] = stack[1, 7, 9] = np.nan
    with caplog.at_level(logging.WARNING):
        out = stand_in.predict(stack, axes="ZYX", tile=256, where="s.tif")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith("s.tif: 2 non-finite pixel(s) (NaN or infinite)")
    assert np.isnan(out[0, 5, 5]) and np.isnan(out[1, 7, 9])
    assert np.isfinite(out).sum() == out.size - 2
    stack[1] = np.nan
    with pytest.raises(RefocusError, match=r"s.tif, plane \(1,\): no finite pixel") as err:
        stand_in.predict(stack, axes="ZYX", tile=256, where="s.tif")
    assert "\n" not in str(err.value)


def test_cli_refocuses_a_float_image_with_nan_and_says_so(tiny_model_path, field, tmp_path,
                                                         capsys, caplog) -> None:
    image = field[:96, :128].copy()
    image[40, 41] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", image)
    tifffile.imwrite(tmp_path / "blank.tif", np.full((32, 32), np.nan, np.float32))
    with caplog.at_level(logging.WARNING):
        code, _, stderr = run_cli(capsys, "predict", tmp_path / "nan.tif", tmp_path / "blank.tif",
                                  "--model", tiny_model_path, "--out", tmp_path / "out",
                                  "--device", "cpu")
    assert code == 1  # the blank plane failed, with one line; the other was refocused
    assert "blank.tif: no finite pixel (all NaN or infinite)" in stderr
    out = read_image(tmp_path / "out" / "nan.tif").data
    assert np.isnan(out[40, 41]) and np.isfinite(out).sum() == out.size - 1
    assert any(r.getMessage().endswith("nan.tif: 1 non-finite pixel(s) (NaN or infinite): "
                                       "refocused around them, NaN in the output")
               for r in caplog.records)


# --- 5. bad options -------------------------------------------------------------------

@pytest.mark.parametrize("options,problem", [
    (("--tile", "0"), "--tile must be at least 64 px (got 0)"),
    (("--overlap", "-1"), "--overlap must be 0 or more px (got -1)"),
    (("--tile", "128", "--overlap", "64"), "--tile (128 px) must be more than twice"),
])
def test_bad_tiling_exits_2_before_any_work(tiny_model_path, z00_files, tmp_path, capsys,
                                            options, problem) -> None:
    out = tmp_path / "out"
    for command in (["predict", z00_files[0], "--model", tiny_model_path, "--out", out],
                    ["watch", tmp_path, "--model", tiny_model_path, "--out", out]):
        code, stdout, stderr = run_cli(capsys, *command, *options)
        assert code == 2 and problem in stderr
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
        assert not out.exists()  # no folder made, nothing read or loaded


@pytest.mark.parametrize("options,problem", [
    (("--poll", "0"), "--poll must be more than 0 seconds"),
    (("--settle", "-1"), "--settle must be 0 or more seconds"),
    (("--unreadable-after", "-2"), "--unreadable-after must be 0 or more seconds"),
    (("--idle-timeout", "0"), "--idle-timeout must be more than 0 seconds"),
])
def test_bad_watch_timings_exit_2(tmp_path, capsys, options, problem) -> None:
    code, _, stderr = run_cli(capsys, "watch", tmp_path, "--model", tmp_path / "none.pt",
                              "--out", tmp_path / "out", *options)
    assert code == 2 and problem in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_check_tiling_accepts_what_works() -> None:
    for tile, overlap in ((None, None), (64, 0), (64, 31), (512, None), (None, 96)):
        check_tiling(tile, overlap)


# --- 3. one output per input ----------------------------------------------------------

def test_predict_keeps_one_output_per_input_whatever_the_suffix(tiny_model_path, z00_files,
                                                                tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a1.tif", read_plane(z00_files[0])[:64, :96])
    iio.imwrite(folder / "a1.png", read_plane(z00_files[1])[:64, :96])
    code, stdout, _ = run_cli(capsys, "predict", folder, "--model", tiny_model_path,
                              "--out", tmp_path / "out", "--device", "cpu")
    assert code == 0 and "2 of 2 refocused" in stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a1.png", "a1.tif"]
    assert read_image(tmp_path / "out" / "a1.png").kind == "png"


def test_names_differing_only_in_case_are_refused(tmp_path) -> None:
    with pytest.raises(RefocusError, match="has the same name as"):
        plan_jobs([tmp_path / "p1" / "A1.tif", tmp_path / "p2" / "a1.tif"], tmp_path / "out")


# --- 6. Ctrl-C ------------------------------------------------------------------------

def test_interrupted_predict_exits_130_and_leaves_no_partial_output(
        tiny_model_path, z00_files, tmp_path) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i, path in enumerate(z00_files[:8]):
        tifffile.imwrite(folder / f"f{i}.tif", read_plane(path))  # full fields: seconds each
    cmd = [sys.executable, "-m", "refocus", "predict", str(folder), "--model",
           str(tiny_model_path), "--out", str(out), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and [p for p in out.iterdir() if not p.name.startswith(".")]):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    done = sorted(out.iterdir())
    assert 1 <= len(done) < 8 and not [p for p in done if p.name.startswith(".")]
    assert f"stopped: {len(done)} of 8 refocused" in stdout
    for path in done:  # every output there is whole
        assert read_plane(path).shape == (520, 696)


# --- 7. a default model ---------------------------------------------------------------

def test_pretrained_loads_the_default_or_a_named_model(default_tiny_model, tiny_model_path,
                                                       field) -> None:
    by_default = Refocuser.pretrained(device="cpu", mode="eager")
    by_name = Refocuser.pretrained(TEST_MODEL, device="cpu", mode="eager")
    by_file = Refocuser.from_file(tiny_model_path, device="cpu", mode="eager")
    assert by_default.source == by_name.source == default_tiny_model.path().resolve()
    crop = field[:64, :96]
    np.testing.assert_array_equal(by_default.predict(crop, tile=128),
                                  by_file.predict(crop, tile=128))


def test_predict_and_watch_without_a_model_use_the_default(default_tiny_model, tiny_model_path,
                                                           z00_files, tmp_path, capsys) -> None:
    image = read_plane(z00_files[2])[:64, :96]
    tifffile.imwrite(tmp_path / "f.tif", image)
    code, stdout, _ = run_cli(capsys, "predict", tmp_path / "f.tif", "--out", tmp_path / "a",
                              "--device", "cpu", "--tile", 128)
    assert code == 0 and "1 of 1 refocused" in stdout
    code, _, _ = run_cli(capsys, "predict", tmp_path / "f.tif", "--model", TEST_MODEL,
                         "--out", tmp_path / "b", "--device", "cpu", "--tile", 128)
    assert code == 0
    code, _, _ = run_cli(capsys, "predict", tiny_model_path, tmp_path / "f.tif",  # older form
                         "--out", tmp_path / "c", "--device", "cpu", "--tile", 128)
    assert code == 0
    expected = Refocuser.from_file(tiny_model_path, device="cpu").predict(image, tile=128)
    for out in "abc":
        np.testing.assert_array_equal(read_plane(tmp_path / out / "f.tif"), expected)
    watched = tmp_path / "w"
    code, stdout, _ = run_cli(capsys, "watch", tmp_path, "--out", watched, "--device", "cpu",
                              "--tile", 128, "--settle", 0.05, "--idle-timeout", 0.5)
    assert code == 0 and "1 refocused" in stdout
    np.testing.assert_array_equal(read_plane(watched / "f.tif"), expected)


def test_without_a_default_model_it_is_one_line(no_default_model, tiny_model_path, z00_files,
                                                tmp_path, capsys) -> None:
    code, _, stderr = run_cli(capsys, "predict", z00_files[0], "--out", tmp_path / "out")
    assert code == 2 and "no default pretrained model is installed" in stderr
    assert len(stderr.strip().splitlines()) == 1
    code, _, stderr = run_cli(capsys, "predict", tiny_model_path, z00_files[0], "--model",
                              tiny_model_path, "--out", tmp_path / "out")
    assert code == 2 and "is a model file, not an image" in stderr
    code, _, stderr = run_cli(capsys, "predict", tmp_path / "typo.pt", z00_files[0],
                              "--out", tmp_path / "out")
    assert code == 2 and "typo.pt: model file not found" in stderr
