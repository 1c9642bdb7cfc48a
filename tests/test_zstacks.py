"""Z-stacks for training, read from every accepted source, on stacks made by
``refocus simulate --stack`` from the shipped in-focus fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from conftest import write_bbbc006_layout
from scipy import ndimage

from refocus.cli import main
from refocus.data import ZStack, find_zstacks, read_zstack, read_zstacks, stack_pairs
from refocus.data.zstacks import plane_files
from refocus.errors import RefocusError

CROP = 160


def busiest_window(image: np.ndarray) -> np.ndarray:
    """The CROP x CROP window of ``image`` with the most light (nuclei, not background)."""
    half = CROP // 2
    mean = ndimage.uniform_filter(image.astype(np.float64), CROP)[half:-half, half:-half]
    y, x = np.unravel_index(np.argmax(mean), mean.shape)  # window centre - half = its start
    return image[y : y + CROP, x : x + CROP]


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, in_focus_images) -> list[Path]:
    """Two simulated 34-plane z-stacks (z=0..33, 2 um apart) of real fields, cropped."""
    root = tmp_path_factory.mktemp("zstacks")
    crops = [busiest_window(im) for im in in_focus_images[:2]]
    write_bbbc006_layout(root / "in-focus", crops, ["a02", "a03"], z_values=(16,))
    main(["simulate", "--in-focus", str(root / "in-focus"), "--out", str(root / "stacks"),
          "--z", "0-33", "--stack"])
    return sorted((root / "stacks").glob("*.ome.tif"))


@pytest.fixture(scope="module")
def pixels(stacks) -> np.ndarray:
    """The first stack's uint16 planes as written."""
    return tifffile.imread(stacks[0])


def contrast(stack: ZStack) -> int:
    """A stand-in focus finder: the plane with the most fine detail (variance of the
    Laplacian of the lightly smoothed plane)."""
    return int(np.argmax([ndimage.laplace(ndimage.gaussian_filter(p, 1.0)).var()
                          for p in stack.planes]))


def test_ome_tiff_stack_reads_with_its_z_spacing(stacks, pixels):
    stack = read_zstack(stacks[0], z_step_um=5.0)  # the file's PhysicalSizeZ wins
    assert stack.name == "a02_s1_w1" and stack.source == stacks[0]
    assert stack.planes.dtype == np.float32 and stack.planes.shape == (34, CROP, CROP)
    assert stack.z_step_um == 2.0 and stack.n_planes == 34
    np.testing.assert_array_equal(stack.planes, pixels)
    assert contrast(stack) == 16  # BBBC006's best focus, z=16, is plane 16 of 0..33


def test_stack_pairs_cover_the_defocus_range(stacks):
    stack = read_zstack(stacks[0])
    pairs = stack_pairs(stack, 16, max_defocus_um=10.0)
    assert pairs == [(i, 16, 2.0 * (i - 16)) for i in (11, 12, 13, 14, 15, 17, 18, 19, 20, 21)]
    assert stack_pairs(stack, contrast, 10.0) == pairs  # a focus finder instead of a plane
    assert stack_pairs(stack, 0, 4.0) == [(1, 0, 2.0), (2, 0, 4.0)]
    with pytest.raises(RefocusError, match=r"a02_s1_w1.ome.tif: focus plane 34 outside the "
                                           r"stack's 34 planes \(0..33\)"):
        stack_pairs(stack, 34, 10.0)
    with pytest.raises(RefocusError, match="no plane within 1.5 um of focus plane 16 "
                                           r"\(planes are 2.0 um apart\)"):
        stack_pairs(stack, 16, 1.5)
    with pytest.raises(RefocusError, match="maximum defocus must be positive"):
        stack_pairs(stack, 16, 0)


def test_plain_3d_tiff_needs_the_z_step(tmp_path, pixels):
    for name, metadata in (("plain.tif", None), ("shaped.tif", {})):
        path = tmp_path / name
        tifffile.imwrite(path, pixels, metadata=metadata)
        with pytest.raises(RefocusError) as info:
            read_zstack(path)
        assert str(info.value) == (f"{path}: no z spacing (no PhysicalSizeZ in the file); "
                                   "give it with --z-step-um")
        stack = read_zstack(path, z_step_um=0.5)
        assert stack.z_step_um == 0.5 and stack.name == name[:-4]
        np.testing.assert_array_equal(stack.planes, pixels)


def test_multichannel_ome_tiff_and_imagej_stacks(tmp_path, pixels):
    both = np.stack([pixels, pixels[:, ::-1]], axis=1)  # Z, C, Y, X
    path = tmp_path / "two.ome.tif"
    tifffile.imwrite(path, both, photometric="minisblack", metadata={
        "axes": "ZCYX", "PhysicalSizeZ": 500, "PhysicalSizeZUnit": "nm",
        "Channel": {"Name": ["Hoechst", "Actin"]}})
    actin = read_zstack(path, channel="Actin")
    assert actin.z_step_um == pytest.approx(0.5) and actin.name == "two"
    np.testing.assert_array_equal(actin.planes, pixels[:, ::-1])
    np.testing.assert_array_equal(read_zstack(path, channel=0).planes, pixels)
    with pytest.raises(RefocusError, match=r"two.ome.tif: 2 channels \(Hoechst, Actin\): pick "
                                           "one with --channel"):
        read_zstack(path)
    with pytest.raises(RefocusError, match=r"no channel 'DAPI' \(the stack has Hoechst, Act"):
        read_zstack(path, channel="DAPI")
    hyper = tmp_path / "hyper.tif"
    tifffile.imwrite(hyper, both, imagej=True,
                     metadata={"axes": "ZCYX", "spacing": 2.0, "unit": "micron"})
    stack = read_zstack(hyper, channel=1)
    assert stack.z_step_um == 2.0
    np.testing.assert_array_equal(stack.planes, pixels[:, ::-1])


def write_zarr(path: Path, data: np.ndarray, axes: str, scale: list[float],
               unit: str | None = "micrometer", names: list[str] | None = None) -> Path:
    """A one-level NGFF 0.4 image as a microscope writes it."""
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=(1, *data.shape[1:]))
    kinds = {"c": "channel", "z": "space", "y": "space", "x": "space"}
    axes_meta = [{"name": a, "type": kinds[a], **({"unit": unit} if unit and a != "c" else {})}
                 for a in axes.lower()]
    attrs = {"multiscales": [{"version": "0.4", "axes": axes_meta, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]}
    if names:
        attrs["omero"] = {"channels": [{"label": n} for n in names]}
    group.attrs.update(attrs)
    return path


def test_ome_zarr_stack_takes_the_z_scale(tmp_path, pixels):
    path = write_zarr(tmp_path / "cells.zarr", pixels, "ZYX", [2.0, 0.645, 0.645])
    stack = read_zstack(path, z_step_um=9.0)
    assert stack.name == "cells" and stack.z_step_um == 2.0
    np.testing.assert_array_equal(stack.planes, pixels)
    both = np.stack([pixels[:, ::-1], pixels])
    named = write_zarr(tmp_path / "two.zarr", both, "CZYX", [1, 1.5, 0.645, 0.645],
                       names=["actin", "nuclei"])
    stack = read_zstack(named, channel="nuclei")
    assert stack.z_step_um == 1.5
    np.testing.assert_array_equal(stack.planes, pixels)
    unitless = write_zarr(tmp_path / "nounit.zarr", pixels, "ZYX", [1.0, 1.0, 1.0], unit=None)
    with pytest.raises(RefocusError, match=r"nounit.zarr: no z spacing \(no z scale in "
                                           "micrometres in its metadata\\); give it with"):
        read_zstack(unitless)
    assert read_zstack(unitless, z_step_um=3.0).z_step_um == 3.0


def test_folder_of_planes_by_name_or_subfolder(tmp_path, pixels):
    by_name = tmp_path / "by_name"
    by_name.mkdir()
    for z in range(0, 34, 2):  # every other plane: 4 um apart
        tifffile.imwrite(by_name / f"cell_z{z:02d}.tif", pixels[z])
    (by_name / "notes.txt").write_text("not a plane")
    stack = read_zstack(by_name, z_step_um=2.0)
    assert stack.name == "by_name" and stack.z_step_um == 4.0 and stack.n_planes == 17
    np.testing.assert_array_equal(stack.planes, pixels[::2])
    assert contrast(stack) == 8  # z=16
    with pytest.raises(RefocusError, match=r"by_name: no z spacing \(a folder of planes has "
                                           r"none\); give it with --z-step-um"):
        read_zstack(by_name)

    by_folder = tmp_path / "by_folder"
    for z in range(34):
        (by_folder / f"z_{z:02d}").mkdir(parents=True)
        tifffile.imwrite(by_folder / f"z_{z:02d}" / "plane.tif", pixels[z])
    assert sorted(plane_files(by_folder)) == list(range(34))
    np.testing.assert_array_equal(read_zstack(by_folder, z_step_um=2.0).planes, pixels)


def test_bad_stacks_give_one_line_naming_the_file(tmp_path, pixels):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, pixels[16])
    with pytest.raises(RefocusError, match=r"flat.tif: 2-D image \(160, 160\) where a z-stack "
                                           r"\(Z, Y, X\) is expected"):
        read_zstack(flat, z_step_um=2.0)
    single = tmp_path / "single.tif"
    tifffile.imwrite(single, pixels[16:17])  # shape (1, 160, 160), as tifffile records it
    with pytest.raises(RefocusError, match=r"single.tif: a z-stack of one plane "
                                           r"\(1, 160, 160\); training pairs need two or more"):
        read_zstack(single, z_step_um=2.0)
    one = write_zarr(tmp_path / "one.zarr", pixels[16:17], "ZYX", [2.0, 0.645, 0.645])
    with pytest.raises(RefocusError, match="one.zarr: a z-stack of one plane"):
        read_zstack(one)

    folder = tmp_path / "planes"
    folder.mkdir()
    tifffile.imwrite(folder / "a_z00.tif", pixels[0])
    with pytest.raises(RefocusError, match="planes: a z-stack of 1 plane"):
        read_zstack(folder, z_step_um=2.0)
    tifffile.imwrite(folder / "a_z01.tif", pixels[1, :100])
    with pytest.raises(RefocusError) as info:
        read_zstack(folder, z_step_um=2.0)
    assert str(info.value) == (f"{folder / 'a_z01.tif'}: plane z=1 is (100, 160), but z=0 "
                               "(a_z00.tif) is (160, 160)")
    tifffile.imwrite(folder / "a_z01.tif", pixels[1])
    tifffile.imwrite(folder / "a_z03.tif", pixels[3])
    with pytest.raises(RefocusError, match=r"planes: planes not evenly spaced \(missing z=2\)"):
        read_zstack(folder, z_step_um=2.0)
    tifffile.imwrite(folder / "b_Z3.tif", pixels[3])
    with pytest.raises(RefocusError, match=r"b_Z3.tif: second file for plane z=3 \(first: "):
        read_zstack(folder, z_step_um=2.0)


def test_find_zstacks_lists_every_kind(tmp_path, stacks, pixels):
    root = tmp_path / "data"
    root.mkdir()
    for path in stacks:
        (root / path.name).write_bytes(path.read_bytes())
    write_zarr(root / "c.zarr", pixels, "ZYX", [2.0, 0.645, 0.645])
    (root / "d").mkdir()
    for z in (15, 16, 17):
        tifffile.imwrite(root / "d" / f"d_z{z}.tif", pixels[z])
    (root / "empty").mkdir()
    found = find_zstacks(root)
    assert [p.name for p in found] == ["a02_s1_w1.ome.tif", "a03_s1_w1.ome.tif", "c.zarr", "d"]
    assert find_zstacks(root / "d") == [root / "d"]
    read = read_zstacks(root, z_step_um=2.0)
    assert [s.n_planes for s in read] == [34, 34, 34, 3]
    assert [contrast(s) for s in read] == [16, 16, 16, 1]
    with pytest.raises(RefocusError, match="empty: no z-stacks"):
        find_zstacks(root / "empty")
