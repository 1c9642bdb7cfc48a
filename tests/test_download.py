"""BBBC006 download against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from refocus.data import scan_bbbc006
from refocus.data.download import download_bbbc006
from refocus.errors import RefocusError

UUIDS = ["0f8e7a52-1c1e-4b8e-9f53-6f1d2a3b4c5d", "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"]


def make_zip(z: int, image: np.ndarray) -> bytes:
    """A zip shaped like the Broad's: a top folder, both channels, one field."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(f"BBBC006_v1_images_z_{z:02d}/", "")
        for channel, uid in zip(("w1", "w2"), UUIDS, strict=True):
            tif = io.BytesIO()
            tifffile.imwrite(tif, image, compression="lzw")
            name = f"BBBC006_v1_images_z_{z:02d}/mcf-z-stacks-03212011_a01_s1_{channel}{uid}.tif"
            archive.writestr(name, tif.getvalue())
    return buf.getvalue()


@pytest.fixture
def server(range_server, in_focus_images) -> tuple[str, type]:
    """The conftest's local Range server holding planes z=1 and z=16 as the Broad's zips:
    (URL template for ``base_url``, handler class with ``files`` and the request ``log``)."""
    base, handler = range_server
    image = in_focus_images[0][:64, :96]
    for z in (1, 16):
        handler.files[f"/BBBC006_v1_images_z_{z:02d}.zip"] = make_zip(z, image)
    return f"{base}/BBBC006_v1_images_z_{{z:02d}}.zip", handler


def test_download_extracts_requested_channel(server, tmp_path, in_focus_images):
    url, handler = server
    folders = download_bbbc006(tmp_path, [1, 16], ["w1"], base_url=url)
    assert [f.name for f in folders] == ["BBBC006_v1_images_z_01", "BBBC006_v1_images_z_16"]
    index = scan_bbbc006(tmp_path)
    assert index.channels == ["w1"] and index.z_values == [1, 16]
    plane = tifffile.imread(next(folders[0].glob("*.tif")))
    assert np.array_equal(plane, in_focus_images[0][:64, :96])
    assert not list((tmp_path / ".downloads").glob("*.zip")), "zips removed after extraction"
    # a second run skips complete planes without touching the network
    n_requests = len(handler.log)
    download_bbbc006(tmp_path, [1, 16], ["w1"], base_url=url)
    assert len(handler.log) == n_requests


def test_half_download_resumes_with_range(server, tmp_path):
    url, handler = server
    data = handler.files["/BBBC006_v1_images_z_01.zip"]
    cache = tmp_path / ".downloads"
    cache.mkdir()
    (cache / "BBBC006_v1_images_z_01.zip.part").write_bytes(data[: len(data) // 2])
    download_bbbc006(tmp_path, [1], ["w1", "w2"], base_url=url, keep_zips=True)
    assert handler.log == [("/BBBC006_v1_images_z_01.zip", f"bytes={len(data) // 2}-")]
    assert (cache / "BBBC006_v1_images_z_01.zip").read_bytes() == data
    assert scan_bbbc006(tmp_path).channels == ["w1", "w2"]


def test_checksum_mismatch_is_caught(server, tmp_path):
    url, handler = server
    download_bbbc006(tmp_path, [1], ["w1"], base_url=url, keep_zips=True)
    zip_path = tmp_path / ".downloads" / "BBBC006_v1_images_z_01.zip"
    zip_path.unlink()
    (tmp_path / "BBBC006_v1_images_z_01" / ".complete.json").unlink()
    original = handler.files["/BBBC006_v1_images_z_01.zip"]
    handler.files["/BBBC006_v1_images_z_01.zip"] = original[:-1] + bytes([original[-1] ^ 1])
    with pytest.raises(RefocusError, match="checksum differs"):
        download_bbbc006(tmp_path, [1], ["w1"], base_url=url)


def test_offline_fails_with_one_sentence(tmp_path, dead_url):
    with pytest.raises(RefocusError, match="are you offline") as info:
        download_bbbc006(tmp_path, [1], base_url=f"{dead_url}/z_{{z:02d}}.zip")
    assert str(info.value).endswith(
        "are you offline? Download BBBC006 on a connected machine with "
        "`refocus download bbbc006` and copy the folder here."
    )
    assert "\n" not in str(info.value)


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(RefocusError, match="unknown channel 'w9'"):
        download_bbbc006(tmp_path, [1], ["w9"])
    with pytest.raises(RefocusError, match="z=40 outside"):
        download_bbbc006(tmp_path, [40])


def test_cli_takes_several_planes_and_channels(server, tmp_path, monkeypatch):
    import refocus.data.download as download_mod
    from refocus.cli import main

    url, _ = server
    real = download_mod.download_bbbc006
    monkeypatch.setattr(
        download_mod, "download_bbbc006", lambda *a, **k: real(*a, **k, base_url=url)
    )
    main(
        ["download", "bbbc006", "--dest", str(tmp_path), "--z", "1", "16", "--channel", "w1", "w2"]
    )
    index = scan_bbbc006(tmp_path)
    assert index.z_values == [1, 16] and index.channels == ["w1", "w2"]
