"""Every bad input gives one line naming the file and the problem, and exit code 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from refocus.cli import main
from refocus.data import build_pairs
from refocus.errors import RefocusError
from refocus.images import read_plane


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
