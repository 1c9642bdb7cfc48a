"""Every bad input gives one line naming the file and the problem, and exit code 2."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from refocus.cli import main
from refocus.data import build_pairs
from refocus.errors import RefocusError
from refocus.images import (
    MAX_IMAGE_GIB_ENV,
    max_image_gib,
    read_image,
    read_plane,
    set_max_image_gib,
)
from refocus.samples import in_focus_paths


def run_cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err


def first_tiff(root: Path, z: int) -> Path:
    return sorted((root / f"BBBC006_v1_images_z_{z:02d}").glob("*.tif"))[0]


def test_truncated_tiff_names_the_file(make_bbbc006, capsys):
    root = make_bbbc006()
    bad = first_tiff(root, 5)
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(RefocusError, match="cannot read image"):
        read_plane(bad)
    bad.write_bytes(b"II*\x00garbage")
    code, err = run_cli(capsys, "info", str(root))
    assert code == 2
    assert bad.name in err and "cannot read" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_rgb_and_3d_images_are_refused(tmp_path, in_focus_images):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    with pytest.raises(RefocusError, match=r"rgb.tif: RGB image"):
        read_plane(rgb)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.stack([in_focus_images[0][:64, :64]] * 5))
    with pytest.raises(RefocusError, match=r"stack.tif: 3-D image \(5, 64, 64\)"):
        read_plane(stack)


def test_missing_plane_names_folder_and_field(make_bbbc006, capsys):
    root = make_bbbc006()
    missing = first_tiff(root, 10)
    missing.unlink()
    with pytest.raises(
        RefocusError, match=r"BBBC006_v1_images_z_10: missing plane for field b02_s1"
    ):
        build_pairs(root, input_z=(1, 5, 10))


def test_two_files_for_one_plane(make_bbbc006, capsys):
    root = make_bbbc006()
    original = first_tiff(root, 1)
    twin = original.with_name(original.name[:-40] + "00000000-0000-0000-0000-000000000000.tif")
    shutil.copy(original, twin)
    code, err = run_cli(capsys, "info", str(root))
    assert code == 2 and "second file for field" in err
    assert (original.name in err) and (twin.name in err)


def test_unknown_channel(make_bbbc006, capsys):
    root = make_bbbc006(n_fields=2, channel="w1")
    odd = first_tiff(root, 1)
    odd.rename(odd.with_name(odd.name.replace("_w1", "_w3")))
    code, err = run_cli(capsys, "info", str(root))
    assert code == 2 and "unknown channel 'w3'" in err and "_w3" in err
    odd.with_name(odd.name.replace("_w1", "_w3")).unlink()
    with pytest.raises(RefocusError, match="channel 'w2' not in this folder"):
        build_pairs(root, input_z=(5,), channels=("w2",))


def test_cli_process_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "refocus", "info", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "nowhere: data folder not found" in result.stderr
    assert "Traceback" not in result.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "refocus", "--debug", "info", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_info_reports_the_shipped_sample(sample_root, capsys):
    main(["info", str(sample_root)])
    out = capsys.readouterr().out
    assert "fields: 32" in out and "696x520" in out and "uint16" in out


def claim_size(path: Path, height: int, width: int) -> Path:
    """A real 16x16 TIFF whose header is patched to claim ``height`` x ``width`` pixels:
    the file stays 768 bytes, the pixels it claims would need gigabytes."""
    tifffile.imwrite(path, np.zeros((16, 16), np.uint16), metadata=None)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        for name, value in (("ImageWidth", width), ("ImageLength", height),
                            ("RowsPerStrip", height)):
            assert tags[name].dtype == 4  # LONG: room for any size
            struct.pack_into("<I", data, tags[name].valueoffset, value)
    path.write_bytes(bytes(data))
    return path


def claim_png_size(path: Path, height: int, width: int) -> Path:
    """A real 16-bit 16x16 PNG with its IHDR (and the chunk's CRC) rewritten to claim
    ``height`` x ``width``."""
    iio.imwrite(path, np.zeros((16, 16), np.uint16), extension=".png")
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR" and data[24] == 16
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def size_limit(monkeypatch):
    """No limit set by an earlier test or the environment; reset afterwards."""
    monkeypatch.delenv(MAX_IMAGE_GIB_ENV, raising=False)
    set_max_image_gib(None)
    yield
    set_max_image_gib(None)


def test_huge_tiff_header_is_refused_before_decoding(tmp_path, size_limit):
    bomb = claim_size(tmp_path / "x.tif", 100000, 100000)
    assert bomb.stat().st_size < 1000
    with tifffile.TiffFile(bomb) as tif:  # what the header claims
        assert tif.series[0].shape == (100000, 100000)
    message = (f"{bomb}: 100000x100000 uint16 image (18.6 GiB) is larger than the 4.0 GiB "
               "limit; use --max-image-gib N or convert it to OME-Zarr, which refocus "
               "processes block by block")
    for read in (read_plane, read_image):
        with pytest.raises(RefocusError) as info:
            read(bomb)
        assert str(info.value) == message


def test_huge_png_header_is_refused_before_decoding(tmp_path, size_limit):
    bomb = claim_png_size(tmp_path / "x.png", 50000, 50000)
    with pytest.raises(RefocusError, match=r"x.png: 50000x50000 uint16 image \(4.7 GiB\) is "
                                           r"larger than the 4.0 GiB limit"):
        read_plane(bomb)


def test_size_limit_from_environment_and_setter(tmp_path, size_limit, monkeypatch,
                                                in_focus_images):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, in_focus_images[0])  # 520x696 uint16: 0.00067 GiB
    monkeypatch.setenv(MAX_IMAGE_GIB_ENV, "0.0005")
    assert max_image_gib() == 0.0005
    with pytest.raises(RefocusError, match=r"a.tif: 520x696 uint16 image \(0.00067 GiB\) is "
                                           r"larger than the 0.0005 GiB limit"):
        read_plane(path)
    png = tmp_path / "a.png"
    iio.imwrite(png, in_focus_images[0], extension=".png")
    for other in (png, in_focus_paths()[0]):  # a PNG, and the sample's TIFF named .png
        with pytest.raises(RefocusError, match=r"520x696 uint16 image .* 0.0005 GiB limit"):
            read_plane(other)
    set_max_image_gib(0.001)  # the CLI option wins over the environment
    for other in (path, png, in_focus_paths()[0]):
        np.testing.assert_array_equal(read_plane(other), in_focus_images[0])
    with pytest.raises(RefocusError, match="--max-image-gib: must be a positive number"):
        set_max_image_gib(0)
    set_max_image_gib(None)
    monkeypatch.setenv(MAX_IMAGE_GIB_ENV, "lots")
    with pytest.raises(RefocusError, match="REFOCUS_MAX_IMAGE_GIB: must be a positive number"):
        read_plane(path)
