"""Cross-validation by well: the four folds of the shipped recipe, pooled into one table.

    python benchmarks/bench_cv.py [--folds PAGE.md ...] [--out FILE.md]

Each fold is one page written by ``bench_pretrained.py``: the shipped model (seed 0, wells
a03/a07 held out) and the same recipe with ``--seed 11`` (a02/a04), ``--seed 2``
(a05/a06) and ``--seed 6`` (a08/a09). Their held-out wells are disjoint, and together they
cover all 8 shipped fields, so each well is held out exactly once. Per z and method, the
table gives the mean over the folds and a 95% t-interval over them. The fold means are
independent because their wells are disjoint; the 3 noise draws of one field inside a fold
are not. It also says in how many folds each goal is met. It reads the pages and does not
score anything itself.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench_pretrained import FOCUS_Z, GAIN_DB, cell
from scipy import stats

from refocus.data.bbbc006 import plane_from_path
from refocus.metrics import Interval
from refocus.samples import in_focus_paths

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks/results"
FOLDS = tuple(RESULTS / name for name in (
    "pretrained.md", "pretrained-fold-a02a04.md", "pretrained-fold-a05a06.md",
    "pretrained-fold-a08a09.md"))
Table = dict[int, dict[str, float]]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=Path, nargs="+", default=list(FOLDS),
                        help="bench_pretrained.py pages, one per fold")
    parser.add_argument("--out", type=Path, default=RESULTS / "cross-validation.md")
    return parser.parse_args(argv)


def held_out_wells(page: str) -> list[str]:
    """The wells named in the page's title: ``# name on its held-out wells (a03, a07)``."""
    match = re.search(r"^# .* on its held-out wells \(([^)]*)\)", page, re.MULTILINE)
    if match is None:
        raise ValueError("no '# ... on its held-out wells (...)' title")
    return [w.strip() for w in match.group(1).split(",")]


def recipe_of(page: str) -> str:
    """The recipe on the page's model line (``...; recipe NAME, 80 of 80 planned epochs``)."""
    match = re.search(r"^- Model: .*; recipe ([\w.-]+), \d+ of", page, re.MULTILINE)
    if match is None:
        raise ValueError("no '- Model: ...; recipe NAME, ...' line")
    return match.group(1)


def read_table(page: str, heading: str) -> Table:
    """The markdown table under ``## heading``: z -> column -> the cell's mean (its first
    number; NaN for 'inf (input = target)', 'n/a' and other text)."""
    if f"## {heading}\n" not in page:
        raise ValueError(f"no '## {heading}' table")
    lines = page.split(f"## {heading}\n", 1)[1].strip().splitlines()
    table = itertools.takewhile(lambda line: line.startswith("|"), lines)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    head, body = rows[0], rows[2:]
    return {int(r[0]): {h: _mean(c) for h, c in zip(head[1:], r[1:], strict=True)}
            for r in body}


def _mean(text: str) -> float:
    match = re.match(r"^[+-]?\d+(\.\d+)?", text)
    return float(match.group(0)) if match else float("nan")


def t_interval(values: Sequence[float]) -> Interval:
    """Mean and 95% t-interval of independent values (one per fold)."""
    mean = statistics.fmean(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return Interval(mean, mean - half, mean + half, len(values))


def read_folds(paths: Sequence[Path]) -> list[dict[str, object]]:
    """Each page's wells and tables; stops on pages whose held-out wells overlap or whose
    models come from different recipes (pooling those would measure no one recipe)."""
    folds, seen = [], set()
    for path in paths:
        try:
            fold = read_fold(path)
        except ValueError as exc:
            raise SystemExit(f"{path}: not a bench_pretrained.py page ({exc})") from None
        if seen & set(fold["wells"]):
            raise SystemExit(f"{path}: held-out wells {fold['wells']} are held out by another "
                             "fold too")
        if folds and fold["recipe"] != folds[0]["recipe"]:
            raise SystemExit(f"{path}: recipe {fold['recipe']} differs from the first fold's "
                             f"({folds[0]['recipe']})")
        seen |= set(fold["wells"])
        folds.append(fold)
    return folds


def read_fold(path: Path) -> dict[str, object]:
    """One page's held-out wells and its PSNR, SSIM and goal tables."""
    page = path.read_text()
    return {"path": path, "wells": held_out_wells(page), "recipe": recipe_of(page),
            "psnr": read_table(page, "PSNR (dB)"),
            "ssim": read_table(page, "SSIM"), "goals": read_table(
                page, "Goals (paired PSNR differences, dB, mean [95% interval])")}


def _cell(values: Sequence[float], digits: int = 2) -> str:
    return cell(t_interval(values), digits)


def pooled_rows(folds: Sequence[Mapping[str, Table]], methods: Sequence[str],
                diffs: Sequence[str]) -> list[str]:
    """One markdown row per z: pooled PSNR of each method, pooled paired differences, and
    the number of folds where each difference meets its goal."""
    lines = []
    for z in sorted(folds[0]["psnr"]):
        scores = [_cell([f["psnr"][z][m] for f in folds]) if z != FOCUS_Z or m != "identity"
                  else "(target)" for m in methods]
        gaps, met = [], []
        for d in diffs:
            values = [f["goals"][z][d] for f in folds]
            if any(v != v for v in values):  # z = 16: no gain over the target itself
                gaps.append("")
                met.append("")
                continue
            goal = GAIN_DB if d == "model - identity" else 0.0
            gaps.append(_cell(values))
            met.append(f"{sum(v >= goal if goal else v > 0 for v in values)}/{len(values)}")
        lines.append("| " + " | ".join([str(z), *scores, *gaps, *met]) + " |")
    return lines


def coverage(folds: Sequence[Mapping[str, object]]) -> str:
    """Whether the folds hold out every shipped well once, or which wells no fold has yet."""
    shipped = sorted({plane_from_path(p).field.well for p in in_focus_paths()})
    missing = [w for w in shipped if not any(w in f["wells"] for f in folds)]
    if not missing:
        return f"{len(folds)} folds; every shipped well is held out by exactly one of them:"
    return (f"{len(folds)} folds, **not a full cross-validation**: wells {', '.join(missing)} "
            f"of the {len(shipped)} shipped are held out by no fold yet. The folds:")


def report(folds: Sequence[Mapping[str, object]], command: str) -> str:
    """The markdown page: folds, pooled PSNR and differences per z, in-focus SSIM."""
    methods = ["identity", "RL exact", "RL blind", "model"]
    diffs = ["model - identity", "model - RL exact", "model - RL blind"]
    head = ["z", *methods, *diffs, "folds >= 3 dB over input", "folds above RL exact",
            "folds above RL blind"]
    ssim = [f["ssim"][FOCUS_Z]["model"] for f in folds]
    focus = [f["psnr"][FOCUS_Z]["model"] for f in folds]
    listing = [f"- `{os.path.relpath(f['path'], ROOT)}`: wells {', '.join(f['wells'])} held out"
               for f in folds]
    return "\n".join([
        f"# Cross-validation by well: {folds[0]['recipe']} recipe, pooled over folds", "",
        f"Command: `{command}` over {coverage(folds)}", "", *listing, "",
        "PSNR (dB) on simulated defocus of each fold's held-out wells, mean over the folds "
        f"[95% t-interval over the {len(folds)} fold means]; the last columns count the folds "
        "where the model meets the goal (>= 3 dB over the input, above each RL).", "",
        "| " + " | ".join(head) + " |", "|" + " --- |" * len(head),
        *pooled_rows(folds, methods, diffs), "",
        f"In focus (z = {FOCUS_Z}, the model against its own input): PSNR {_cell(focus)} dB, "
        f"SSIM {_cell(ssim, 3)}; lowest fold {min(focus):.2f} dB / {min(ssim):.3f}.", ""])


def _shown(arg: str) -> str:
    """A command-line argument as the page shows it: paths inside the repository relative."""
    path = Path(arg).resolve()
    inside = not arg.startswith("-") and path.is_relative_to(ROOT)
    return os.path.relpath(path, ROOT) if inside else arg


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    missing = [p for p in args.folds if not p.is_file()]
    if missing:
        raise SystemExit(f"{missing[0]}: no such fold page (run bench_pretrained.py for it)")
    command = " ".join(["python benchmarks/bench_cv.py",
                        *map(_shown, sys.argv[1:] if argv is None else argv)])
    text = report(read_folds(args.folds), command)
    print(text)
    args.out.write_text(text)
    print(f"wrote {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
