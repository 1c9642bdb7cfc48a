"""Plane reading and atomic, non-destructive writing."""

from __future__ import annotations

import os

import numpy as np
import pytest

from refocus.errors import RefocusError
from refocus.images import atomic_output, read_plane, write_tiff


def test_uint16_round_trip_is_exact(tmp_path, in_focus_images):
    image = in_focus_images[0]
    path = write_tiff(tmp_path / "a.tif", image)
    back = read_plane(path)
    assert back.dtype == np.uint16 and np.array_equal(back, image)


def test_existing_output_is_kept_without_overwrite(tmp_path, in_focus_images):
    path = write_tiff(tmp_path / "a.tif", in_focus_images[0])
    with pytest.raises(RefocusError, match="exists already"):
        write_tiff(path, in_focus_images[1])
    assert np.array_equal(read_plane(path), in_focus_images[0])
    write_tiff(path, in_focus_images[1], overwrite=True)
    assert np.array_equal(read_plane(path), in_focus_images[1])


def test_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.tif") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_the_usual_permissions(tmp_path, in_focus_images):
    mask = os.umask(0o022)
    try:
        path = write_tiff(tmp_path / "a.tif", in_focus_images[0])
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
