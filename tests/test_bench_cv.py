"""The cross-validation summary (benchmarks/bench_cv.py) pools the committed fold pages
correctly and refuses folds that hold out the same well twice or come from two recipes."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_cv.py"
PAGES = [ROOT / "benchmarks/results/pretrained.md",
         ROOT / "benchmarks/results/pretrained-fold-a02a04.md"]


def _gain_over_input(page: Path, z: int) -> float:
    """The page's 'model - identity' mean at ``z``: the first cell of its Goals row."""
    goals = page.read_text().split("## Goals", 1)[1]
    return float(re.search(rf"^\| {z} \| ([-\d.]+) \[", goals, re.MULTILINE).group(1))


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_pools_the_folds_gain_over_the_input(tmp_path: Path) -> None:
    out = tmp_path / "cv.md"
    proc = _run("--folds", *PAGES, "--out", out)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in out.read_text().splitlines() if line.startswith("| 22 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    gains = [_gain_over_input(p, 22) for p in PAGES]
    assert cells[5].startswith(f"{statistics.fmean(gains):.2f} [")  # model - identity
    met = sum(g >= 3.0 for g in gains)
    assert cells[8] == f"{met}/2"  # the shipped fold misses 3 dB at z = 22, a02/a04 meets it
    assert "wells a03, a07 held out" in out.read_text()
    # two of the four folds: the page says which shipped wells no fold has held out yet
    assert "not a full cross-validation**: wells a05, a06, a08, a09 of the 8" in out.read_text()
    assert out.read_text().startswith("# Cross-validation by well: nuclei-widefield recipe")


def test_refuses_a_well_held_out_twice(tmp_path: Path) -> None:
    proc = _run("--folds", PAGES[0], PAGES[0], "--out", tmp_path / "cv.md")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(str(PAGES[0]))
    assert "held out by another fold" in proc.stderr
    assert not (tmp_path / "cv.md").exists()


def test_refuses_folds_of_two_recipes(tmp_path: Path) -> None:
    v2 = ROOT / "benchmarks/results/pretrained-v2.md"  # a03/a07, the Wiener-guided recipe
    proc = _run("--folds", v2, PAGES[1], "--out", tmp_path / "cv.md")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        f"{PAGES[1]}: recipe nuclei-widefield differs from the first fold's "
        "(nuclei-widefield-wiener)")
    assert not (tmp_path / "cv.md").exists()
