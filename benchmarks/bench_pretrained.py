"""How good the shipped default model is, honestly: scores on wells it never saw.

    python benchmarks/bench_pretrained.py [--model FILE (default: the shipped model)]
        [--second-model runs/release/care.pt] [--sites 3] [--quick] [--out FILE.md]

The 8 shipped in-focus fields (:mod:`refocus.samples`) are blurred by the calibrated
simulator (:func:`refocus.simulate.simulate_bbbc006`) to z = 0 .. 33 (16 = in focus, the
input itself). Each field is copied to ``--sites`` sites before simulating, so every plane
exists with independent camera noise per site (the noise is drawn per field and site): the
bootstrap 95% intervals are over fields x noise draws. Only the model's held-out wells
(read from the model file's provenance: a03, a07 for the shipped model; a model whose test
wells overlap its training or validation wells is refused) are scored, with
:func:`refocus.evaluate.evaluate`: identity, Richardson-Lucy with the exact PSF (an oracle
on simulated data), blind Richardson-Lucy (PSF from the image alone), unsupervised Wiener
(exact PSF), the model, and a second model if its file exists (a CARE-style U-Net trained
with the same recipe and split). RL's iterations are tuned on the model's validation well
(a06 for the shipped model), never on scored ones. The recipe's other folds
(``refocus train --recipe nuclei-widefield --seed 11``, ``2``, ``6``: a02/a04, a05/a06,
a08/a09 held out) are scored the same way on their own held-out wells, and
``bench_cv.py`` pools the four pages: cross-validation by well (the same for v2's recipe,
``--recipe nuclei-widefield-wiener``: ``pretrained-v2*.md``). Writes the tables
and the goals to ``--out`` (markdown) and prints them.
``--quick``: 1 field x 2 planes, small RL search, nothing written (a manual check).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from refocus import baselines
from refocus.data import build_pairs
from refocus.evaluate import EvalConfig, evaluate
from refocus.images import read_plane
from refocus.inference.cost import macs_per_pixel
from refocus.inference.refocuser import Refocuser
from refocus.metrics import Interval, bootstrap_ci
from refocus.modelfile import load_model, read_model_file
from refocus.samples import sample_dir
from refocus.simulate import BBBC006_OPTICS, plane_defocus_um, simulate_bbbc006
from refocus.zoo import resolve_model

Z_VALUES = (0, 1, 5, 10, 13, 16, 19, 22, 27, 32, 33)
QUICK_Z = (5, 27)
FOCUS_Z = BBBC006_OPTICS.focus_z
LABELS = {"identity": "identity", "richardson_lucy": "RL exact",
          "richardson_lucy_blind": "RL blind", "wiener": "Wiener", "model": "model"}
GAIN_DB, FOCUS_PSNR, FOCUS_SSIM = 3.0, 38.0, 0.95
ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="model file (default: the shipped default model's)")
    parser.add_argument("--second-model", type=Path, default=ROOT / "runs/release/care.pt",
                        help="scored too when the file exists (else the column is left out)")
    parser.add_argument("--sites", type=int, default=3, help="noise draws per field")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/pretrained.md")
    parser.add_argument("--eval-out", type=Path, default=None,
                        help="keep the evaluation's files (metrics.csv, report.html) here")
    parser.add_argument("--quick", action="store_true", help="1 field x 2 z; writes nothing")
    args = parser.parse_args(argv)
    args.model = args.model or resolve_model(None)
    if args.sites < 1:
        parser.error("--sites must be 1 or more")
    if args.quick:
        args.sites = 1
    return args


def split_wells(model: Path) -> dict[str, list[str]]:
    """The model's split by well (train, val, test) from its model file; refuses a model
    without held-out (test) wells or whose test wells it also trained or validated on."""
    groups = read_model_file(model)["provenance"].get("groups")
    if not groups or not groups.get("test"):
        sys.exit(f"{model}: the model file records no held-out (test) wells")
    test, seen = set(groups["test"]), set(groups.get("train", [])) | set(groups.get("val", []))
    if test & seen:
        sys.exit(f"{model}: held-out wells {sorted(test)} overlap its train/val wells "
                 f"{sorted(seen)}: no score would be held-out")
    return {k: sorted(groups.get(k, [])) for k in ("train", "val", "test")}


def simulate(work: Path, sites: int, z_values: Sequence[int]) -> Path:
    """The shipped in-focus fields copied to ``sites`` sites, then simulated at ``z_values``."""
    source = work / "in-focus"
    source.mkdir()
    for path in sorted((sample_dir() / "in-focus").glob("*.png")):
        for site in range(1, sites + 1):
            shutil.copyfile(path, source / path.name.replace("__s1__", f"__s{site}__"))
    data = work / "simulated"
    simulate_bbbc006(source, data, z_values, seed=0)
    return data


def describe_model(model: Path) -> str:
    """Architecture, cost (parameters, multiply-accumulates per input pixel) and training
    of a model file, as one markdown line."""
    payload = read_model_file(model)
    net = load_model(model).model
    params = sum(p.numel() for p in net.parameters())
    history = [h for h in payload["history"] if h.get("epoch")]  # epoch 0: before training
    seconds = sum(h.get("seconds", 0.0) for h in history)
    config = payload["train_config"]
    return (f"`{_rel(model)}`: {payload['arch']['arch']}, {params:,} parameters, "
            f"{macs_per_pixel(net):,.0f} MAC/px (torch FlopCounterMode); recipe "
            f"{config.get('recipe')}, {len(history)} of {config.get('epochs')} planned epochs "
            f"run ({seconds / 60:.0f} min of epochs, wall), checkpoint chosen on well(s) "
            f"{', '.join(payload['provenance']['groups']['val'])}")


def blind_choices(data: Path, wells: Sequence[str], z_values: Sequence[int]
                  ) -> dict[int, list[float]]:
    """Per z: the signed defocus (um) blind RL chose on each scored input."""
    pairs = [p for p in build_pairs(data, "bbbc006", z_values, FOCUS_Z)
             if p.group in wells]
    chosen: dict[int, list[float]] = {}
    for p in pairs:
        chosen.setdefault(p.z, []).append(baselines.blind_psf(read_plane(p.input)).defocus_um)
    return dict(sorted(chosen.items()))


def paired(rows: Sequence[Mapping[str, Any]], z: int, a: str, b: str) -> Interval:
    """Mean and 95% interval of PSNR(a) - PSNR(b) on the same fields at ``z``."""
    of = {(r["field"], r["method"]): r["psnr"] for r in rows if r["z"] == z}
    return bootstrap_ci([of[(f, a)] - of[(f, b)] for f, m in of if m == a and (f, b) in of])


def cell(ci: Mapping[str, float] | Interval, digits: int) -> str:
    ci = ci if isinstance(ci, Mapping) else ci.to_dict()
    if ci["mean"] is None or ci["mean"] != ci["mean"]:
        return "n/a"
    return f"{ci['mean']:.{digits}f} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def score_table(summary: Mapping[str, Any], metric: str, digits: int,
                blind: Mapping[int, Sequence[float]]) -> list[str]:
    """Markdown: one row per z, one column per method, mean [95% interval]."""
    methods = summary["methods"]
    head = ["z", "defocus um", *[LABELS.get(m, m) for m in methods]]
    if metric == "psnr":
        head.append("RL blind chose um")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    records = {(r["z"], r["method"]): r for r in summary["paired"]}
    for z in sorted({r["z"] for r in summary["paired"]}):
        row = [str(z), f"{plane_defocus_um(z):+.1f}"]
        row += ["inf (input = target)" if (z, m, metric) == (FOCUS_Z, "identity", "psnr")
                else cell(records[(z, m)][metric], digits) if (z, m) in records else "n/a"
                for m in methods]
        if metric == "psnr":
            row.append(cell(bootstrap_ci(blind[z]), 1) if z in blind else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def goal_table(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
               ) -> tuple[list[str], list[str]]:
    """Markdown goals per z (paired PSNR differences, dB) and the one-line verdicts."""
    methods = summary["methods"]
    rivals = [m for m in methods if m not in ("identity", "model", "wiener")]
    head = ["z", "model - identity", *[f"model - {LABELS.get(m, m)}" for m in rivals]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    misses: dict[str, list[str]] = {}
    for z in sorted({r["z"] for r in rows}):
        gain = paired(rows, z, "model", "identity")
        row = [str(z), "(input = target)" if z == FOCUS_Z else cell(gain, 2)]
        if z != FOCUS_Z and not gain.mean >= GAIN_DB:
            misses.setdefault("identity", []).append(f"z={z}: {gain.mean:+.2f}")
        for m in rivals:
            diff = paired(rows, z, "model", m)
            row.append(cell(diff, 2))
            if not diff.mean > 0:
                misses.setdefault(m, []).append(f"z={z}: {diff.mean:+.2f}")
        lines.append("| " + " | ".join(row) + " |")
    verdicts = [_verdict(f"model - identity >= {GAIN_DB:g} dB at every z != {FOCUS_Z}",
                         misses.get("identity"))]
    verdicts += [_verdict(f"model above {LABELS.get(m, m)} at every z", misses.get(m))
                 for m in rivals]
    return lines, verdicts + _focus_verdicts(summary)


def _verdict(goal: str, misses: Sequence[str] | None) -> str:
    return f"- {goal}: " + ("**met**" if not misses else
                            "**not met** (dB) at " + ", ".join(misses))


def _focus_verdicts(summary: Mapping[str, Any]) -> list[str]:
    """At z = 16 the model's output against the in-focus input itself."""
    record = next((r for r in summary["paired"] if r["z"] == FOCUS_Z and r["method"] == "model"),
                  None)
    if record is None:
        return [f"- z = {FOCUS_Z} not evaluated"]
    psnr, ssim = record["psnr"]["mean"], record["ssim"]["mean"]
    return [_verdict(f"z = {FOCUS_Z}: model PSNR >= {FOCUS_PSNR:g} dB (got {psnr:.2f})",
                     None if psnr >= FOCUS_PSNR else [f"{psnr - FOCUS_PSNR:+.2f} dB"]),
            _verdict(f"z = {FOCUS_Z}: model SSIM >= {FOCUS_SSIM:g} (got {ssim:.3f})",
                     None if ssim >= FOCUS_SSIM else [f"{ssim - FOCUS_SSIM:+.3f} SSIM"])]


def machine() -> str:
    cpus = os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpus} CPU cores ({platform.processor() or platform.machine()}), shared with "
            f"other jobs (load average {load} at the end), no GPU; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def evaluate_held_out(args: argparse.Namespace, data: Path, out: Path, second: Path | None
                      ) -> Any:
    """The evaluation of the held-out wells (RL tuned on the validation well)."""
    config = EvalConfig(
        model=args.model, data=data, input_z=QUICK_Z if args.quick else Z_VALUES,
        split="test", out=out, second_model=second, max_fields=1 if args.quick else None,
        max_val_fields=1, rl_candidates=(10, 40) if args.quick else baselines.RL_CANDIDATES,
        device="cpu", n_panels=2, overwrite=True, progress=sys.stderr.isatty())
    return evaluate(config, model=Refocuser.from_file(args.model, "cpu"))


def check_scored(rows: Sequence[Mapping[str, Any]], wells: Sequence[str]) -> list[str]:
    """The scored fields; stops if any lies outside the held-out wells."""
    fields = sorted({r["field"] for r in rows})
    outside = [f for f in fields if f.split("_")[0] not in wells]
    if outside:
        sys.exit(f"scored fields outside the held-out wells {wells}: {outside}")
    return fields


def notes(blind: Mapping[int, Sequence[float]]) -> list[str]:
    """What the baselines know, in words, with the blind PSF's largest distance error."""
    error = max((abs(v - plane_defocus_um(z)) for z, vs in blind.items() for v in vs),
                default=float("nan"))
    return [
        "RL exact and Wiener get the simulator's own PSF for each z: an oracle on simulated "
        "data. RL blind sees only the image: distance from `refocus.focus.estimate_focus`, "
        "side (where the estimator cannot name it) by the re-blur residual, PSF from the "
        "nominal BBBC006 optics, iterations tuned on the validation well keyed by the "
        "estimated distance. "
        "These planes were simulated with those very optics, so its PSF family is the right "
        f"one (largest distance error on a scored field: {error:.2f} um) and it is nearly "
        "the oracle here; on real data the nominal optics are only a calibration.",
    ]


def report(args: argparse.Namespace, result: Any, blind: Mapping[int, Sequence[float]],
           models: Sequence[str], wall: float, split: Mapping[str, list[str]]) -> str:
    """The markdown page: command, machine, models, tables, goals."""
    summary, rows = result.summary, result.rows
    fields = check_scored(rows, split["test"])
    goals, verdicts = goal_table(summary, rows)
    meta = summary["meta"]
    command = "python benchmarks/bench_pretrained.py " + " ".join(sys.argv[1:])
    return "\n".join([
        f"# {args.model.stem} on its held-out wells ({', '.join(split['test'])})", "",
        f"Command: `{command.strip()}` (wall time {wall / 60:.1f} min)", "",
        f"Machine: {machine()}.", "",
        *[f"- {line}" for line in models], "",
        f"Scored: {len(fields)} fields ({', '.join(fields)}: held-out wells x {args.sites} "
        f"noise draws as sites), every z; intervals are bootstrap 95% over them (the draws of "
        "one field are not independent, so these are narrower than the spread between wells: "
        "`bench_cv.py` gives the interval over folds). RL iterations "
        f"(exact PSF) tuned on the validation well {', '.join(split['val'])} per z: "
        f"{meta.get('rl_iterations')}. PSNR/SSIM after "
        "the CARE normalisation and affine fit (refocus.metrics); at z = 16 the input is the "
        "target itself, so the model is scored against its own input.", "",
        *notes(blind), "",
        "## PSNR (dB)", "", *score_table(summary, "psnr", 2, blind), "",
        "## SSIM", "", *score_table(summary, "ssim", 3, blind), "",
        "## Goals (paired PSNR differences, dB, mean [95% interval])", "", *goals, "",
        *verdicts, ""])


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> None:
    start = time.perf_counter()
    args = parse_args(argv)
    split = split_wells(args.model)
    wells = split["test"]
    second = args.second_model if args.second_model.is_file() else None
    if second is not None and split_wells(second) != split:
        sys.exit(f"{second}: trained on another split than {args.model}; both models must "
                 "hold out the same wells")
    models = [f"Model: {describe_model(args.model)}.",
              f"Second model: {describe_model(second)}." if second else
              f"Second model: none (`{_rel(args.second_model)}` does not exist: column left out)."]
    z_values = QUICK_Z if args.quick else Z_VALUES
    with tempfile.TemporaryDirectory(prefix="bench-pretrained-") as tmp:
        data = simulate(Path(tmp), args.sites, z_values)
        out = args.eval_out or Path(tmp) / "evaluation"
        result = evaluate_held_out(args, data, out, second)
        scored = wells[:1] if args.quick else wells
        blind = blind_choices(data, scored, z_values)
    text = report(args, result, blind, models, time.perf_counter() - start, split)
    print(text)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
