"""The BBBC006 data layer on real sample pixels: pairing, splits, crops, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from refocus.data import LAYOUTS, PercentileNormalizer, build_pairs, scan_bbbc006, split_pairs
from refocus.data.dataset import CropDataset
from refocus.data.split import split_groups
from refocus.errors import RefocusError


def test_scan_pairs_planes_by_field_not_by_name(make_bbbc006):
    root = make_bbbc006()
    index = scan_bbbc006(root)
    assert index.z_values == [1, 5, 10, 16]
    assert len(index.fields) == 8 and index.channels == ["w1"]
    pairs = build_pairs(root, input_z=(1, 5, 10))
    assert len(pairs) == 24
    for p in pairs:
        # uuids differ between planes, so names never match; the field does
        assert p.input.name != p.target.name
        assert p.input.name.split("_")[1:3] == p.target.name.split("_")[1:3]  # well, site
        assert p.input.parent.name == f"BBBC006_v1_images_z_{p.z:02d}"
        assert p.target.parent.name == "BBBC006_v1_images_z_16"


def test_split_by_well_never_shares_a_well(make_bbbc006):
    pairs = build_pairs(make_bbbc006(), input_z=(1, 5, 10))
    splits = split_pairs(pairs, seed=3)
    wells = {name: {p.group for p in ps} for name, ps in splits.items()}
    assert not wells["train"] & wells["val"]
    assert not wells["train"] & wells["test"]
    assert not wells["val"] & wells["test"]
    assert wells["val"], "at least one validation well"
    assert sum(len(ps) for ps in splits.values()) == len(pairs)
    # every plane of a well follows its well
    for ps in splits.values():
        for p in ps:
            assert sum(q.group == p.group for q in ps) == 3


def test_split_is_seeded_and_stable():
    wells = [f"a{i:02d}" for i in range(1, 25)]
    assert split_groups(wells, seed=1) == split_groups(list(reversed(wells)), seed=1)
    assert split_groups(wells, seed=1) != split_groups(wells, seed=2)
    counts = {
        s: list(split_groups(wells, seed=1).values()).count(s) for s in ("train", "val", "test")
    }
    assert counts == {"train": 20, "val": 2, "test": 2}


def test_generic_pairs_layout_split_by_file(tmp_path, in_focus_images):
    import tifffile

    for sub in ("input", "target"):
        (tmp_path / sub).mkdir()
    for i, im in enumerate(in_focus_images[:3]):
        tifffile.imwrite(tmp_path / "input" / f"f{i}.tif", im[::-1])
        tifffile.imwrite(tmp_path / "target" / f"f{i}.tif", im)
    pairs = build_pairs(tmp_path, layout="pairs")
    assert [p.name for p in pairs] == ["f0", "f1", "f2"]
    splits = split_pairs(pairs, seed=0)
    assert len(splits["val"]) >= 1 and len(splits["train"]) >= 1


def test_unknown_layout_is_one_line_listing_the_choices(tmp_path):
    assert LAYOUTS.names()[:2] == ("bbbc006", "pairs")  # others may register more
    with pytest.raises(RefocusError) as info:
        build_pairs(tmp_path, layout="cellpose")
    assert str(info.value) == (
        f"--layout: unknown data layout 'cellpose' (choose from {', '.join(LAYOUTS.names())})"
    )


def test_pairs_layout_without_images_names_the_known_suffixes(tmp_path):
    for sub in ("input", "target"):
        (tmp_path / sub).mkdir()
    (tmp_path / "input" / "notes.txt").write_text("not an image")
    with pytest.raises(RefocusError, match=r"input: no images \(.tif, .tiff, .png files\)"):
        build_pairs(tmp_path, layout="pairs")


def test_percentile_normalisation_maps_percentiles_to_0_and_1(in_focus_images):
    norm = PercentileNormalizer(1.0, 99.8)
    image = in_focus_images[0]
    out = norm(image)
    assert out.dtype == np.float32
    assert np.percentile(out, 1.0) == pytest.approx(0.0, abs=1e-5)
    assert np.percentile(out, 99.8) == pytest.approx(1.0, abs=1e-5)
    assert norm.to_dict() == {"low": 1.0, "high": 99.8, "eps": 1e-6}


def test_crops_are_aligned_seeded_and_augmented(make_bbbc006):
    pairs = build_pairs(make_bbbc006(z_values=(16,)), input_z=(16,))  # input == target
    ds = CropDataset(pairs, size=64, crops_per_pair=4, seed=7)
    assert len(ds) == len(pairs) * 4
    x, y = ds[5]
    assert x.shape == y.shape == (1, 64, 64)
    assert np.array_equal(x.numpy(), y.numpy()), "same crop and pose for input and target"
    x2, _ = ds[5]
    assert np.array_equal(x.numpy(), x2.numpy()), "an index gives the same crop in an epoch"
    ds.set_epoch(1)
    assert not np.array_equal(x.numpy(), ds[5][0].numpy()), "a new epoch gives new crops"
    # crops come from the whole plane: over many items, the crop corners vary
    first = {tuple(np.round(ds[i][0].numpy()[0, 0, :3], 4)) for i in range(4)}
    assert len(first) > 1


def test_dataset_reads_each_file_once(make_bbbc006, monkeypatch):
    import refocus.data.dataset as dataset_mod

    calls: list[str] = []
    real = dataset_mod.read_plane
    monkeypatch.setattr(dataset_mod, "read_plane", lambda p: calls.append(p) or real(p))
    pairs = build_pairs(make_bbbc006(), input_z=(1,))
    ds = CropDataset(pairs, size=32, crops_per_pair=3)
    for i in range(len(ds)):
        ds[i]
    assert len(calls) == len(set(calls)) == 2 * len(pairs)
