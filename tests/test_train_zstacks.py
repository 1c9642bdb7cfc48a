"""``refocus train --zstacks``: training from raw z-stacks through focus, on stacks made by
``refocus simulate --stack`` (calibrated optics and camera noise) from crops of the shipped
in-focus fields: the focus plane is found, shown and recorded; bad stacks cost one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import write_bbbc006_layout
from rich.console import Console
from test_zstacks import busiest_window

from refocus.cli import main
from refocus.data import read_zstack
from refocus.data.stack_dataset import StackCrops, pairs_of_stack
from refocus.errors import RefocusError
from refocus.modelfile import load_model
from refocus.train import TrainConfig
from refocus.train.zstacks import focus_of, split_stacks

#: (planes simulated, their seed, index of the in-focus plane z=16 in the stack)
RANGES = {"centred": ("0-33", 0, 16), "late": ("10-33", 3, 6), "early": ("0-21", 5, 16)}
TINY = ["--arch", "nafnet", "--no-pretrained", "--loss", "l1", "--size", "64", "--batch", "4",
        "--epochs", "1", "--crops-per-pair", "1", "--max-defocus-um", "10"]


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, in_focus_images) -> dict[str, list[Path]]:
    """Three stacks of 160x160 crops of three real fields per z range of ``RANGES``."""
    root = tmp_path_factory.mktemp("train-zstacks")
    crops = [busiest_window(im) for im in in_focus_images[:3]]
    write_bbbc006_layout(root / "in-focus", crops, ["a02", "a03", "a04"], z_values=(16,))
    found = {}
    for name, (z, seed, _focus) in RANGES.items():
        main(["simulate", "--in-focus", str(root / "in-focus"), "--out", str(root / name),
              "--z", z, "--stack", "--seed", str(seed)])
        found[name] = sorted((root / name).glob("*.ome.tif"))
    return found


@pytest.mark.parametrize("name", RANGES)
def test_the_best_plane_is_found_exactly(stacks, name) -> None:
    expected = RANGES[name][2]
    for path in stacks[name]:
        stack = read_zstack(path)
        best, distances = focus_of(stack)
        assert best == expected, (path.name, distances)
        assert distances[best] < 2.0 and len(distances) == stack.n_planes
        far = best + 5 if best + 5 < stack.n_planes else best - 5  # 10 um from focus
        assert 7.0 < distances[far] < 13.0


def bad_inputs(folder: Path, good: Path) -> dict[Path, str]:
    """One file (or folder) per bad input, with the start of the line it must give."""
    planes = tifffile.imread(good)
    folder.mkdir()
    flat, single = folder / "flat.tif", folder / "single.tif"
    tifffile.imwrite(flat, planes[16])
    tifffile.imwrite(single, planes[16:17])
    sizes = folder / "sizes"
    sizes.mkdir()
    tifffile.imwrite(sizes / "cell_z00.tif", planes[0])
    tifffile.imwrite(sizes / "cell_z01.tif", planes[1, :100])
    unfocused = folder / "unfocused.ome.tif"  # planes z=0..9 only: 14 um or more from focus
    tifffile.imwrite(unfocused, planes[:10], photometric="minisblack",
                     metadata={"axes": "ZYX", "PhysicalSizeZ": 2.0})
    unspaced = folder / "unspaced.tif"
    tifffile.imwrite(unspaced, planes)
    return {
        flat: "2-D image (160, 160) where a z-stack (Z, Y, X) is expected",
        single: "a z-stack of one plane (1, 160, 160); training pairs need two or more",
        sizes / "cell_z01.tif": "plane z=1 is (100, 160), but z=0 (cell_z00.tif) is (160, 160)",
        unfocused: "no plane in focus: the focus curve has no peak (the closest plane, ",
        unspaced: "no z spacing (no PhysicalSizeZ in the file); give it with --z-step-um",
        folder / "missing.tif": "not found",
    }


def test_cli_trains_on_the_good_stacks_and_names_each_bad_one(stacks, tmp_path, capsys):
    good = stacks["centred"][:2]
    bad = bad_inputs(tmp_path / "bad", good[0])
    given = [*good, *(p.parent if p.parent.name == "sizes" else p for p in bad)]
    out = tmp_path / "model.pt"
    main(["train", "--zstacks", *map(str, given), "--out", str(out), *TINY])
    lines = capsys.readouterr().out.splitlines()
    for path, problem in bad.items():
        assert any(line.startswith(f"skipped {path}: ") and problem in line
                   for line in lines), (path, lines)
    for path in good:
        name = path.name.removesuffix(".ome.tif")
        line = next(line for line in lines if line.startswith(f"{name}: "))
        assert line.startswith(f"{name}: best focus plane 16 of 34 (2 um apart), 10 pairs "
                               "within 10 um; estimated um from focus, plane 0 on: ")
        assert line.split(": ")[-1].split()[16] in ("0", "1")
    assert "best epoch 1" in "\n".join(lines)

    loaded = load_model(out)
    prov = loaded.provenance
    assert prov["layout"] == "zstacks" and prov["max_defocus_um"] == 10.0
    assert [s["source"] for s in prov["zstacks"]] == [str(p) for p in good]
    assert {s["split"] for s in prov["zstacks"]} == {"train", "val"}
    for record in prov["zstacks"]:
        assert record["focus_plane"] == 16 and record["focus_from"] == "estimated"
        assert record["z_step_um"] == 2.0 and record["n_planes"] == 34
        assert record["n_pairs"] == 10 and len(record["estimated_um"]) == 34
    assert prov["n_pairs"] == {"train": 10, "val": 10, "test": 0}
    assert len(prov["skipped"]) == len(bad)
    assert loaded.train_config["zstacks"] == [str(p.resolve()) for p in given]
    assert loaded.train_config["channels"] == [] and loaded.arch["arch"] == "nafnet"


def test_fine_tuning_with_a_given_focus_plane(stacks, tmp_path, capsys):
    late = stacks["late"][:2]
    first = tmp_path / "first.pt"
    main(["train", "--zstacks", *map(str, late), "--out", str(first), *TINY])
    tuned = tmp_path / "tuned.pt"
    capsys.readouterr()
    main(["train", "--recipe", "nuclei-widefield", "--zstacks", str(late[0]), str(late[1]),
          "--init", str(first), "--focus-plane", "6", "--out", str(tuned), *TINY[5:]])
    out = capsys.readouterr().out
    assert "a02_s1_w1: focus plane 6 of 24 (2 um apart), 10 pairs within 10 um " \
           "(--focus-plane)" in out
    loaded = load_model(tuned)
    assert loaded.train_config["init"] == str(first)
    assert loaded.train_config["recipe"] == "nuclei-widefield"
    assert loaded.provenance["zstacks"][0]["focus_from"] == "--focus-plane"
    assert loaded.provenance["zstacks"][0]["estimated_um"] is None


def test_fewer_than_two_usable_stacks_is_one_line(stacks, tmp_path, capsys):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((160, 160), np.uint16))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--zstacks", str(stacks["early"][0]), str(flat),
              "--out", str(tmp_path / "m.pt"), *TINY])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "1 usable z-stack(s) of 2: training needs at least two" in err
    assert f"skipped {flat}: 2-D image" in err
    assert not (tmp_path / "m.pt").exists()


def test_split_is_by_stack_and_seeded(stacks, tmp_path):
    config = TrainConfig(zstacks=[str(p) for p in stacks["early"]], out=str(tmp_path / "m.pt"),
                         max_defocus_um=4.0, seed=1)
    splits, prov = split_stacks(config, Console(quiet=True))
    assert prov["groups"] == split_stacks(config, Console(quiet=True))[1]["groups"]
    assert [len(prov["groups"][k]) for k in ("train", "val", "test")] == [1, 1, 1]
    for name, pairs in splits.items():
        assert {p.group for p in pairs} == set(prov["groups"][name])
        assert sorted(p.input for p in pairs) == [14, 15, 17, 18]
    crops = StackCrops(pairs_of_stack(read_zstack(stacks["early"][0]), 16, 2.0), size=64,
                       crops_per_pair=2, augment=False)
    x, y = crops[0]
    assert len(crops) == 4 and x.shape == y.shape == (1, 64, 64)
    assert not np.array_equal(x.numpy(), y.numpy())


@pytest.mark.parametrize(("settings", "message"), [
    ({"data": "d"}, "--data and --zstacks exclude each other"),
    ({"layout": "in-focus"}, "--layout in-focus does not apply to --zstacks"),
    ({"z_step_um": 0.0}, "--z-step-um must be positive, got 0.0"),
    ({"focus_plane": -1}, "--focus-plane must be 0 or more, got -1"),
    ({"max_defocus_um": -2.0}, "--max-defocus-um must be positive, got -2.0"),
])
def test_bad_zstack_settings_are_one_line(settings, message) -> None:
    with pytest.raises(RefocusError, match=message):
        TrainConfig(**{"zstacks": ["s.tif"], "out": "m.pt", **settings})


def test_zstack_settings_need_zstacks() -> None:
    with pytest.raises(RefocusError, match="^--focus-plane applies to --zstacks only$"):
        TrainConfig(data="d", out="m.pt", focus_plane=3)
    with pytest.raises(RefocusError, match=r"^training needs --data \(or --zstacks"):
        TrainConfig(out="m.pt")
    assert TrainConfig(data="d", out="m.pt").channel == "w1"
    assert "zstacks" not in TrainConfig(data="d", out="m.pt").run_settings()
