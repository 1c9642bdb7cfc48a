"""``refocus predict``: a bad file costs one line, not the batch; nothing is overwritten."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from test_formats import write_ome_zarr

from refocus.cli import main
from refocus.images import open_ome_zarr, read_image, read_plane


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    """Exit code (0 when the command returns normally), stdout, stderr."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def plate(tmp_path, z00_files) -> Path:
    """Two good fields, a damaged TIFF, an RGB PNG and a two-channel OME-TIFF."""
    folder = tmp_path / "plate"
    folder.mkdir()
    for name, path in (("good1.tif", z00_files[0]), ("good2.tif", z00_files[1])):
        tifffile.imwrite(folder / name, read_plane(path)[:96, :128])
    (folder / "corrupt.tif").write_bytes(b"II*\x00" + os.urandom(200))
    iio.imwrite(folder / "rgb.png", np.zeros((32, 32, 3), np.uint8))
    two = np.stack([read_plane(z00_files[2])[:64, :64], read_plane(z00_files[3])[:64, :64]])
    tifffile.imwrite(folder / "two.ome.tif", two, metadata={
        "axes": "CYX", "Channel": {"Name": ["DAPI", "actin"]}})
    return folder


def test_bad_files_are_reported_and_the_batch_goes_on(plate, tiny_model_path, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, "predict", plate, "--model", tiny_model_path,
                                   "--out", out, "--channel", "GFP", "--tile", 256)
    assert code == 1
    failed = [line for line in stderr.splitlines() if line.startswith("failed")]
    assert len(failed) == 3, stderr
    assert any("corrupt.tif: cannot read image" in line for line in failed)
    assert any("rgb.png: RGB image" in line for line in failed)
    assert any("two.ome.tif: channel 'GFP' not found; the image's channels are (DAPI, actin)"
               in line for line in failed)
    assert "Traceback" not in stderr
    assert "2 of 5 refocused" in stdout and "3 failed" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["good1.tif", "good2.tif"]  # no temp files
    for name in ("good1.tif", "good2.tif"):
        got, given = read_image(out / name).data, read_image(plate / name).data
        assert got.dtype == np.uint16 and got.shape == given.shape


def test_nothing_is_overwritten_without_overwrite(plate, tiny_model_path, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "good1.tif").write_bytes(b"yesterday's result")
    inputs = [str(plate / "good*.tif")]  # a glob, as a shell would leave it quoted
    code, stdout, stderr = run_cli(capsys, "predict", tiny_model_path, *inputs, "--out", out)
    assert code == 1
    assert "good1.tif: exists already (use --overwrite" in stderr
    assert (out / "good1.tif").read_bytes() == b"yesterday's result"
    assert (out / "good2.tif").is_file() and "1 of 2 refocused" in stdout
    code, stdout, _ = run_cli(capsys, "predict", tiny_model_path, *inputs, "--out", out,
                              "--overwrite")
    assert code == 0 and "2 of 2 refocused" in stdout
    assert read_image(out / "good1.tif").data.shape == (96, 128)


def test_ome_zarr_input_through_the_cli(tiny_model_path, z00_files, tmp_path, capsys):
    src = tmp_path / "slide.zarr"
    write_ome_zarr(src, read_plane(z00_files[4])[:160, :192], "YX", (64, 64), levels=2)
    code, stdout, _ = run_cli(capsys, "predict", src, "--model", tiny_model_path,
                              "--out", tmp_path / "o", "--tile", 128, "--overlap", 32)
    assert code == 0 and "1 of 1 refocused" in stdout
    out = open_ome_zarr(tmp_path / "o" / "slide.zarr")
    assert out.level(0).shape == (160, 192) and out.level(0).dtype == np.uint16


def test_unwritable_output_folder_is_one_line_and_touches_nothing(plate, tiny_model_path,
                                                                  tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = sorted(p.name for p in plate.iterdir())
    code, stdout, stderr = run_cli(capsys, "predict", tiny_model_path, plate,
                                   "--out", blocker / "out")
    assert code == 2
    assert stderr.strip().splitlines() == [stderr.strip()]
    assert "cannot create output folder" in stderr and "Traceback" not in stderr
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in plate.iterdir()) == before
    if os.geteuid() != 0:  # root may write anywhere, whatever the mode bits say
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, stderr = run_cli(capsys, "predict", tiny_model_path, plate, "--out", locked)
        assert code == 2 and "output folder is not writable" in stderr


def test_a_pattern_matching_nothing_is_refused(tiny_model_path, tmp_path, capsys):
    code, _, stderr = run_cli(capsys, "predict", tiny_model_path, tmp_path / "nope*.tif",
                              "--out", tmp_path / "out")
    assert code == 2 and "no such file or folder, and no image matches it" in stderr
