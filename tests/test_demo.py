"""``refocus demo --quick`` end to end on the shipped sample: files, numbers, refusal."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from refocus.cli import main
from refocus.data.bbbc006 import TRAIN_Z
from refocus.errors import RefocusError
from refocus.images import read_plane
from refocus.metrics import focus_score
from refocus.modelfile import read_model_file
from refocus.samples import z00_paths


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    main(["demo", "--quick", "--out", str(out), "--overwrite"])  # tmp folder exists, empty
    return out


def test_demo_writes_everything(demo_out):
    for name in ("model.pt", "metrics.csv", "metrics.json", "report.html"):
        assert (demo_out / name).stat().st_size > 0, name
    figures = sorted(p.name for p in (demo_out / "figures").glob("*.png"))
    assert {"panels_z01.png", "panels_z32.png", "panels_unpaired.png"} <= set(figures)
    with (demo_out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"identity", "richardson_lucy", "richardson_lucy_blind",
                                           "wiener", "model", "nuclei-widefield-v2"}
    assert {int(r["z"]) for r in rows} == {1, 5, 10, 32}
    assert all(np.isfinite(float(r["psnr"])) for r in rows)
    assert json.loads((demo_out / "metrics.json").read_text())


def test_demo_scores_wells_nothing_was_chosen_on(demo_out):
    groups = read_model_file(demo_out / "model.pt")["provenance"]["groups"]
    assert len(groups["train"]) == 6 and len(groups["val"]) == len(groups["test"]) == 1
    summary = json.loads((demo_out / "metrics.json").read_text())
    assert summary["meta"]["split"] == "test" and "warnings" not in summary["meta"]
    with (demo_out / "metrics.csv").open() as f:
        wells = {r["field"].split("_")[0] for r in csv.DictReader(f)}
    assert wells == set(groups["test"])  # not the epoch-picking (val) or training wells


def test_demo_model_beats_the_input_on_the_held_out_field(demo_out):
    with (demo_out / "metrics.csv").open() as f:
        psnr = {(int(r["z"]), r["method"]): float(r["psnr"]) for r in csv.DictReader(f)}
    # the planes it trained most on; z=32 (unseen side) is not asked, nor z=10: the paper
    # architecture draws its output through a 1x1 convolution (not input + correction), so
    # after the quick demo's ~40 steps it cannot yet reproduce its input to the ~34.5 dB the
    # z=10 input already scores (the full demo's model: 33.4 dB on an in-focus field)
    for z in (1, 5):
        assert psnr[z, "model"] > psnr[z, "identity"] + 0.5, f"z={z}"
    for z in (*TRAIN_Z, 32):  # the shipped model, which never saw these wells
        assert psnr[z, "nuclei-widefield-v2"] > psnr[z, "identity"] + 0.5, f"z={z}"


def test_demo_refocuses_real_fields_in_their_units(demo_out):
    written = sorted((demo_out / "z00-refocused").glob("*.tif"))
    assert [p.name for p in written] == [p.name for p in z00_paths()[: len(written)]]
    source, result = read_plane(z00_paths()[0]), read_plane(written[0])
    assert result.dtype == source.dtype == np.uint16 and result.shape == source.shape
    assert not np.array_equal(result, source)
    # the file is the very output the evaluation scored (not a second, different run)
    with (demo_out / "unpaired.csv").open() as f:
        scored = [r for r in csv.DictReader(f) if r["method"] == "model"]
    assert len(scored) == len(written)
    assert float(scored[0]["focus"]) == pytest.approx(focus_score(result), rel=1e-6)


def test_demo_refuses_a_used_folder(demo_out):
    with pytest.raises(RefocusError, match="not empty"):
        from refocus.demo import run_demo

        run_demo(demo_out, quick=True)
