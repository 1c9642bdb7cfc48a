"""Focus QC on real pixels: distance from focus of real and simulated BBBC006 fields, tile
maps, the best plane of a stack, the plate outputs and the command's bad-input lines."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import tifffile

from refocus.cli import main
from refocus.errors import RefocusError
from refocus.focus import best_focus_plane, estimate_focus
from refocus.focus.plate import WellParser, parse_well, plate_shape, summarize_wells
from refocus.focus.templates import shipped_templates
from refocus.images import read_plane
from refocus.samples import z00_paths
from refocus.simulate import simulate_plane


@pytest.fixture(scope="module")
def z00_estimates():
    return [estimate_focus(read_plane(p)) for p in z00_paths()]


def test_real_in_focus_fields_are_within_4_um(in_focus_images):
    templates = shipped_templates()
    for i, image in enumerate(in_focus_images):
        # judged with the other 7 fields' templates: these fields built the templates
        assert estimate_focus(image, templates=templates.leave_out(i)).distance_um < 4.0
        assert estimate_focus(image).distance_um < 4.0


def test_real_z00_fields_are_32_um_away_below_focus(z00_estimates):
    distances = np.array([e.distance_um for e in z00_estimates])
    assert len(distances) == 24
    assert ((distances > 24) & (distances < 40)).all(), distances.round(1)
    assert 29 < np.median(distances) < 36
    sides = [e.side for e in z00_estimates]
    assert 1 not in sides and sides.count(-1) >= 20  # z<16: the '-' side


def test_estimate_grows_with_simulated_distance_on_both_sides(in_focus_images):
    held_out = shipped_templates().leave_out(0)
    for planes in ((16, 14, 11, 8, 4, 0), (16, 18, 21, 24, 28, 33)):
        estimates = [
            estimate_focus(simulate_plane(in_focus_images[0], z, rng=z), templates=held_out)
            for z in planes
        ]
        distances = [e.distance_um for e in estimates]
        truth = [abs(z - 16) * 2.0 for z in planes]
        assert np.all(np.diff(distances) > 0), distances
        assert np.abs(np.subtract(distances, truth)).max() < 3.0, (distances, truth)
        far = estimates[-1]
        assert far.side == np.sign(planes[-1] - 16)


def test_tile_map_covers_the_field_and_leaves_empty_tiles_out(in_focus_images):
    image = in_focus_images[2].copy()
    background = int(np.percentile(image, 5))
    rng = np.random.default_rng(0)
    image[:, 348:] = rng.poisson(background, size=image[:, 348:].shape)  # no nuclei there
    estimate = estimate_focus(image, tile=128)
    assert estimate.tile_distance_um.shape == (4, 5) == estimate.tile_score.shape
    assert estimate.origin == (4, 28)
    right = estimate.tile_distance_um[:, 3:]
    left = estimate.tile_distance_um[:, :2]
    assert np.isnan(right).all()
    assert np.isfinite(left).all() and (left < 4).all()
    assert estimate.distance_um < 4


def test_best_plane_of_a_simulated_stack_with_focus_off_centre(in_focus_images):
    planes = list(range(11, 23))  # focus (z=16) is plane 5 of 12
    stack = np.stack(
        [simulate_plane(in_focus_images[3], z, rng=100 + z) for z in planes]
    )
    best, estimates = best_focus_plane(stack, templates=shipped_templates().leave_out(3))
    assert planes[best] == 16
    assert len(estimates) == len(planes)
    distances = [e.distance_um for e in estimates]
    assert np.argmin(distances) == best
    with pytest.raises(RefocusError, match="empty stack"):
        best_focus_plane(np.zeros((0, 64, 64)))


def test_bad_images_are_refused_with_one_line():
    with pytest.raises(RefocusError, match="smaller than one 128-px tile"):
        estimate_focus(np.zeros((100, 300), np.uint16))
    with pytest.raises(RefocusError, match="NaN"):
        estimate_focus(np.full((200, 200), np.nan))
    with pytest.raises(RefocusError, match="no focus templates for 80-px tiles"):
        estimate_focus(np.zeros((200, 200), np.uint16), tile=80)


def test_wells_from_bbbc006_names_and_a_pattern():
    bbbc = WellParser()
    assert bbbc.well(z00_paths()[0]) == "A19"
    assert bbbc.well("BBBC006_z_aligned__a02__s1__w1_10.png") == "A02"
    assert bbbc.well("other.tif") is None
    custom = WellParser(r"_(?P<row>[A-H])(?P<col>\d+)_")
    assert custom.well("plate1_C7_site2.tif") == "C07"
    assert parse_well("AF48") is not None and parse_well("A00") is None
    assert plate_shape([parse_well("H12")]) == (8, 12)
    assert plate_shape([parse_well("B01"), parse_well("P24")]) == (16, 24)
    wells = summarize_wells([("B02", 30.0), ("A03", 2.0), ("B02", 34.0), ("A03", float("nan"))])
    assert [(w.well, w.fields, w.median_um) for w in wells] == [("A03", 1, 2.0), ("B02", 2, 32.0)]
    with pytest.raises(RefocusError, match="needs a"):
        WellParser(r"_(?P<plate>\d)_")
    with pytest.raises(RefocusError, match="not a valid regex"):
        WellParser(r"(")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plate_run_writes_csv_png_and_html(tmp_path, sample_root, capsys):
    out = tmp_path / "qc"
    code, stdout, _ = run_cli(capsys, "focus", str(sample_root), "--out", str(out))
    assert code == 0 and "32 of 32 files judged" in stdout
    with open(out / "focus.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 32 and not any(r["error"] for r in rows)
    near = [float(r["distance_um"]) for r in rows if "aligned" in r["file"]]
    far = [float(r["distance_um"]) for r in rows if "z-stacks" in r["file"]]
    assert max(near) < 4 and min(far) > 24 and max(far) < 40
    with open(out / "focus_tiles.csv", newline="") as handle:
        tiles = list(csv.DictReader(handle))
    assert len(tiles) == 32 * 20 and {t["size"] for t in tiles} == {"128"}
    assert (out / "plate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "focus.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page and "A19" in page
    code, _, err = run_cli(capsys, "focus", str(sample_root), "--out", str(out))
    assert code == 2 and "exists already" in err and len(err.strip().splitlines()) == 1
    code, _, _ = run_cli(capsys, "focus", str(sample_root), "--out", str(out), "--overwrite")
    assert code == 0
    inside = tmp_path / "plate"  # an output folder inside the input: its PNG is no input
    shutil.copytree(sample_root / "in-focus", inside)
    for _ in range(2):
        code, stdout, _ = run_cli(
            capsys, "focus", str(inside), "--out", str(inside / "qc"), "--overwrite"
        )
        assert code == 0 and "8 of 8 files judged" in stdout


def test_a_damaged_file_is_reported_and_the_rest_go_on(tmp_path, capsys):
    folder = tmp_path / "plate"
    folder.mkdir()
    for path in z00_paths()[:2]:
        shutil.copy(path, folder / path.name)
    (folder / "B07_broken.tif").write_bytes(b"II*\x00garbage")
    tifffile.imwrite(folder / "C03_tiny.tif", np.zeros((16, 16), np.uint16))
    code, stdout, err = run_cli(
        capsys, "focus", str(folder), "--out", str(tmp_path / "qc"),
        "--well-pattern", r"(?P<well>[A-P]\d\d)_",
    )
    assert code == 1 and "2 of 4 files judged" in stdout
    assert "B07_broken.tif" in err and "C03_tiny.tif" in err
    with open(tmp_path / "qc" / "focus.csv", newline="") as handle:
        rows = {r["well"]: r for r in csv.DictReader(handle)}
    assert "cannot read" in rows["B07"]["error"] and "smaller than" in rows["C03"]["error"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing-folder"], "no such file or folder"),
        (["EMPTY"], "holds no TIFF or PNG"),
        (["SAMPLE", "--tile", "50"], "--tile must be one of 64, 96, 128"),
        (["SAMPLE", "--well-pattern", "("], "not a valid regex"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, sample_root, capsys, args, message):
    (tmp_path / "empty").mkdir()
    args = [{"EMPTY": str(tmp_path / "empty"), "SAMPLE": str(sample_root)}.get(a, a) for a in args]
    code, _, err = run_cli(capsys, "focus", *args, "--out", str(tmp_path / "qc"))
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "qc" / "focus.csv").exists()
