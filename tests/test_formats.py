"""Images go back out as they came in: format, dtype, shape, axes and metadata."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from refocus.data import build_pairs
from refocus.errors import RefocusError
from refocus.images import (
    READERS,
    WRITERS,
    Image,
    atomic_output,
    atomic_output_dir,
    build_pyramid,
    create_like,
    is_image_path,
    open_ome_zarr,
    read_image,
    read_plane,
    write_like,
)


@pytest.fixture
def plane(in_focus_images) -> np.ndarray:
    return in_focus_images[0]


def test_real_lzw_tiff_round_trip_keeps_pixels_and_resolution(z00_files, tmp_path):
    image = read_image(z00_files[0])
    assert image.kind == "tiff" and image.axes == "YX" and image.data.dtype == np.uint16
    out = write_like(image, image.data, tmp_path / z00_files[0].name)
    back = read_image(out)
    np.testing.assert_array_equal(back.data, image.data)
    with tifffile.TiffFile(z00_files[0]) as a, tifffile.TiffFile(out) as b:
        assert b.pages[0].resolution == a.pages[0].resolution
        assert b.pages[0].resolutionunit == a.pages[0].resolutionunit


def test_ome_tiff_stack_keeps_axes_channels_and_ome_xml(plane, tmp_path):
    stack = np.stack([np.stack([plane[:64, :80], plane[64:128, :80]])] * 3).astype(np.uint16)
    src = tmp_path / "in" / "stack.ome.tif"
    src.parent.mkdir()
    tifffile.imwrite(src, stack, photometric="minisblack", metadata={
        "axes": "ZCYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65,
        "Channel": {"Name": ["Hoechst", "Actin"]}})
    image = read_image(src)
    assert image.kind == "ome-tiff" and image.axes == "ZCYX"
    assert image.channel_names == ("Hoechst", "Actin")
    out = write_like(image, image.data[::-1].copy(), tmp_path / "stack.ome.tif")
    back = read_image(out)
    assert back.kind == "ome-tiff" and back.axes == "ZCYX" and back.data.dtype == np.uint16
    np.testing.assert_array_equal(back.data, stack[::-1])
    with tifffile.TiffFile(out) as tif:
        assert tif.ome_metadata == image.tiff_kwargs["description"]  # verbatim
        assert 'PhysicalSizeX="0.65"' in tif.ome_metadata


def test_imagej_hyperstack_keeps_calibration(plane, tmp_path):
    stack = np.stack([plane[:48, :64]] * 6).reshape(2, 3, 48, 64).astype(np.uint16)
    src = tmp_path / "hyper.tif"
    tifffile.imwrite(src, stack, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"axes": "TZYX", "unit": "um", "spacing": 2.0})
    image = read_image(src)
    assert image.kind == "imagej-tiff" and image.axes == "TZYX"
    out = write_like(image, image.data, tmp_path / "out" / "hyper.tif")
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZYX"
        meta = tif.imagej_metadata
        assert meta["unit"] == "um" and meta["spacing"] == 2.0
        np.testing.assert_allclose(tif.pages[0].resolution, (1 / 0.65, 1 / 0.65), rtol=1e-6)
        np.testing.assert_array_equal(tif.asarray(), stack)


def test_png_16_bit_round_trip(tmp_path):
    src = next(p for p in __import__("refocus.samples").samples.in_focus_paths())
    image = read_image(src)
    assert image.kind == "png" and image.data.dtype == np.uint16
    out = write_like(image, image.data, tmp_path / src.name)
    back = read_plane(out)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, image.data)


def test_nothing_is_overwritten_without_permission(z00_files, tmp_path):
    image = read_image(z00_files[0])
    target = tmp_path / "x.tif"
    target.write_bytes(b"precious")
    with pytest.raises(RefocusError, match="exists already"):
        write_like(image, image.data, target)
    assert target.read_bytes() == b"precious"
    write_like(image, image.data, target, overwrite=True)
    np.testing.assert_array_equal(read_image(target).data, image.data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tif"]  # no temp files left


@pytest.mark.parametrize("content,problem", [
    (b"II*\x00garbage", "cannot read image"),
    (None, "RGB image"),
])
def test_bad_files_give_one_clear_line(tmp_path, content, problem):
    path = tmp_path / "bad.tif"
    if content is None:
        tifffile.imwrite(path, np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    else:
        path.write_bytes(content)
    with pytest.raises(RefocusError, match=problem) as info:
        read_image(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_unknown_suffix_is_one_line_listing_the_formats(tmp_path):
    path = tmp_path / "cells.jpg"
    path.write_bytes(b"\xff\xd8")
    with pytest.raises(RefocusError) as info:
        read_image(path)
    assert str(info.value) == (
        f"{path}: unknown image file type '.jpg' (choose from .tif, .tiff, .png)"
    )
    assert not is_image_path(path)


@pytest.fixture
def npy_format():
    """A NumPy ``.npy`` format added the way a new format is: one reader, one writer, two
    registrations; both are unregistered after the test."""

    def read_npy(path):
        data = np.load(path)
        return Image(path, data, "ZYX"[3 - data.ndim:], "npy")

    def write_npy(image, data, path, overwrite):
        with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
            np.save(f, data)
        return path

    READERS.register(".npy", read_npy)
    WRITERS.register(".npy", write_npy)
    yield
    READERS.unregister(".npy")
    WRITERS.unregister(".npy")


def test_a_registered_reader_is_used_everywhere(npy_format, plane, tmp_path):
    stack = np.stack([plane[:32, :48], plane[32:64, :48]]).astype(np.uint16)
    src = tmp_path / "stack.npy"
    np.save(src, stack)
    assert is_image_path(src)
    image = read_image(src)
    assert image.kind == "npy" and image.axes == "ZYX"
    np.testing.assert_array_equal(image.data, stack)
    out = write_like(image, image.data + 1, tmp_path / "out" / "stack.npy")
    np.testing.assert_array_equal(np.load(out), stack + 1)
    with pytest.raises(RefocusError, match=r"3-D image \(2, 32, 48\) where a 2-D plane"):
        read_plane(src)
    for sub in ("input", "target"):  # the pairs layout finds the new suffix too
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "a.npy", stack[0])
    (pair,) = build_pairs(tmp_path, layout="pairs")
    np.testing.assert_array_equal(read_plane(pair.input), stack[0])


def test_added_reader_is_gone_after_its_test():
    assert READERS.names() == WRITERS.names() == (".tif", ".tiff", ".png")


def write_ome_zarr(path, data: np.ndarray, axes: str, chunks, levels: int = 3,
                   zarr_format: int = 2, names=None) -> None:
    """An NGFF image as a microscope would write it (0.4 on Zarr v2, 0.5 on Zarr v3)."""
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    types = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
    datasets = []
    level = data
    for i in range(levels):
        group.create_array(str(i), data=level, chunks=chunks)
        scale = [2.0**i if a in "YX" else 1.0 for a in axes]
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [s * (0.65 if a in "YX" else 1) for s, a in
                                        zip(scale, axes, strict=True)]}]})
        level = level[(slice(None),) * (len(axes) - 2) + (slice(None, None, 2),) * 2]
    multiscales = [{"version": "0.4", "name": "img", "datasets": datasets,
                    "axes": [{"name": a.lower(), "type": types[a]} for a in axes]}]
    attrs = {"multiscales": multiscales}
    if names:
        attrs["omero"] = {"channels": [{"label": n, "color": "FFFFFF"} for n in names]}
    if zarr_format == 3:
        multiscales[0].pop("version")
        attrs = {"ome": {"version": "0.5", **attrs}}
    group.attrs.update(attrs)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_copy_keeps_metadata_and_rebuilds_the_pyramid(plane, tmp_path, zarr_format):
    data = np.stack([plane[:200, :300], plane[200:400, :300]]).astype(np.uint16)
    src = tmp_path / "in.zarr"
    write_ome_zarr(src, data, "CYX", (1, 64, 64), zarr_format=zarr_format, names=["a", "b"])
    assert is_image_path(src)
    image = open_ome_zarr(src)
    assert image.axes == "CYX" and image.channel_names == ("a", "b")
    assert image.zarr_format == zarr_format and image.level_paths == ["0", "1", "2"]
    dst = tmp_path / "out.zarr"
    with atomic_output_dir(dst) as tmp:
        group = create_like(image, tmp)
        group["0"][:] = data + 1
        build_pyramid(tmp, image)
    out = open_ome_zarr(dst)
    assert out.attrs == image.attrs
    for i in range(3):
        a, b = image.level(i), out.level(i)
        assert (a.shape, a.chunks, a.dtype) == (b.shape, b.chunks, b.dtype)
        np.testing.assert_array_equal(b[:], a[:] + 1)  # same decimation as the source
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_not_an_ome_zarr_is_refused(tmp_path):
    zarr.open_group(tmp_path / "plain.zarr", mode="w").create_array("x", shape=(4, 4),
                                                                    dtype="u2")
    with pytest.raises(RefocusError, match="without OME 'multiscales'"):
        open_ome_zarr(tmp_path / "plain.zarr")


def test_failed_zarr_write_leaves_the_old_output(tmp_path):
    dst = tmp_path / "out.zarr"
    dst.mkdir()
    (dst / "keep").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_output_dir(dst, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]
    assert (dst / "keep").read_text() == "old"
    with atomic_output_dir(dst, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in dst.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]
