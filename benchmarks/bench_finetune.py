"""Fine-tuning the shipped model on two z-stacks of "your" microscope, against the shipped
model alone and against training from scratch with the same budget.

    python benchmarks/bench_finetune.py [--model NAME|FILE (default: the shipped model)] \
        [--epochs 4] [--crops-per-pair 6] [--threads 2] [--optics other] [--json out.json]

"Your microscope" is simulated (:mod:`refocus.simulate`): z-stacks z=0..33 (2 um apart,
focus at plane 16) of the shipped in-focus fields, through optics and a camera unlike the
BBBC006 ones the shipped model learned (``--optics other``: NA 0.5, no plate-bottom
aberration, a camera with other gain, offset and read noise; ``--optics bbbc006``: the
calibrated BBBC006 microscope itself). Two stacks of wells the shipped model trained on
are the user's data (``refocus train --zstacks``: one trains, one chooses the epoch);
the two wells the shipped recipe held out for testing are the held-out stacks, seen by no
run. Both runs (``--init`` the shipped model, and from scratch) train the same number of
steps with the same crops, on the CPU. Scores: CARE-style PSNR (:func:`refocus.metrics.
psnr`, affine fit to the percentile-normalised best plane) of whole 520x696 planes, every
other plane within 32 um of focus, by distance from focus.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import torch
from rich.console import Console

from refocus.data import read_zstack
from refocus.data.in_focus import build_in_focus_pairs
from refocus.data.split import split_groups
from refocus.inference.refocuser import Refocuser
from refocus.metrics import psnr
from refocus.modelfile import read_model_file
from refocus.samples import sample_dir
from refocus.simulate import simulate_stacks
from refocus.simulate.camera import BBBC006_CAMERA, Camera
from refocus.simulate.optics import BBBC006_OPTICS, Optics
from refocus.train import TrainConfig, last_path, train
from refocus.train.recipes import RECIPES
from refocus.zoo import resolve_model

MICROSCOPES = {
    "other": (Optics(na=0.5, bottom_mismatch_um=0.0, defocus_scale=1.0),
              Camera(offset=100.0, gain=0.6, read_noise=3.0)),
    "bbbc006": (BBBC006_OPTICS, BBBC006_CAMERA),
}
#: |defocus| bins (um) of the table, upper edges inclusive.
BINS = ((2.0, 10.0), (12.0, 20.0), (22.0, 32.0))
MAX_DEFOCUS_UM = 32.0


def wells(seed: int = 0) -> tuple[list[str], list[str]]:
    """(two wells the shipped recipe trained on, the recipe's held-out test wells)."""
    settings = RECIPES.get("nuclei-widefield", "recipe").settings()
    pairs = build_in_focus_pairs(settings["data"], [], 16, ["w1"])
    split = split_groups([p.group for p in pairs], tuple(settings["fractions"]),
                         settings["seed"])
    train_wells = sorted(g for g, s in split.items() if s == "train")
    test_wells = sorted(g for g, s in split.items() if s == "test")
    return train_wells[:2], test_wells


def make_stacks(work: Path, chosen: list[str], microscope: str, seed: int) -> list[Path]:
    """One simulated 34-plane OME-TIFF stack per chosen well (whole 520x696 fields);
    those of an earlier run of the benchmark in ``work`` are kept (``--resume``)."""
    if (work / "stacks").is_dir():
        return sorted((work / "stacks").glob("*.ome.tif"))
    source = work / "in-focus"
    source.mkdir(parents=True)
    for path in sorted((sample_dir() / "in-focus").iterdir()):
        if any(f"__{w}__" in path.name for w in chosen):
            shutil.copy(path, source / path.name)
    optics, camera = MICROSCOPES[microscope]
    return simulate_stacks(source, work / "stacks", range(34), seed=seed, optics=optics,
                           camera=camera)


def run_training(stacks: list[Path], out: Path, init: str | None, lr: float,
                 args: argparse.Namespace, console: Console) -> dict:
    """One ``refocus train --zstacks`` run (library call, same code path) and its cost:
    steps, and the seconds of its training steps as the loop timed them (validation left
    out; a run continued with ``--resume`` counts every epoch)."""
    config = TrainConfig(
        zstacks=[str(p) for p in stacks], out=str(out), arch="nafnet", weights=None,
        loss="l1", size=128, batch=8, epochs=args.epochs, crops_per_pair=args.crops_per_pair,
        val_crops=args.val_crops, lr=lr, select_by="l1", init=init, seed=0, device="cpu",
        max_defocus_um=MAX_DEFOCUS_UM, resume=args.resume and last_path(out).is_file(),
    )
    result = train(config, console)
    steps = (len(result.history) - 1) * _steps_per_epoch(out)
    seconds = sum(h["seconds"] for h in result.history[1:])
    return {"train_s": seconds, "steps": steps, "best_epoch": result.best_epoch, "lr": lr}


def _steps_per_epoch(model: Path) -> int:
    payload = read_model_file(model)
    n = payload["provenance"]["n_pairs"]["train"]
    config = payload["train_config"]
    return n * config["crops_per_pair"] // config["batch"]


def score(model: Path | None, stacks: list[Path], step: int) -> dict[str, list[float]]:
    """PSNR per |defocus| bin of each held-out plane (``model`` None: the input itself)."""
    refocuser = None if model is None else Refocuser.from_file(model, device="cpu",
                                                               mode="eager")
    found: dict[str, list[float]] = {f"{lo:g}-{hi:g}": [] for lo, hi in BINS}
    for path in stacks:
        stack = read_zstack(path)
        focus = 16  # simulate_stacks puts the in-focus plane z=16 at index 16 of 0..33
        target = stack.planes[focus]
        for i in range(0, stack.n_planes, step):
            d = abs(i - focus) * stack.z_step_um
            key = next((f"{lo:g}-{hi:g}" for lo, hi in BINS if lo <= d <= hi), None)
            if key is None:
                continue
            plane = stack.planes[i]
            if refocuser is not None:
                plane = refocuser.predict_normalised(refocuser.normalizer(plane))
            found[key].append(psnr(target, plane))
    return found


def table(scores: dict[str, dict[str, list[float]]], costs: dict[str, dict]) -> str:
    bins = list(next(iter(scores.values())))
    head = "| method | " + " | ".join(f"PSNR {b} um" for b in bins) + \
        " | PSNR all | steps | train s |"
    lines = [head, "|" + " --- |" * (len(bins) + 4)]
    for name, per_bin in scores.items():
        every = [v for values in per_bin.values() for v in values]
        cost = costs.get(name, {})
        cells = [f"{statistics.fmean(v):.2f}" if v else "-" for v in per_bin.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {statistics.fmean(every):.2f} | "
                     f"{cost.get('steps', '-')} | {_num(cost.get('train_s'))} |")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="Model to fine-tune: a registered name or a file (default: the "
                             "shipped default model).")
    parser.add_argument("--optics", choices=sorted(MICROSCOPES), default="other")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--crops-per-pair", type=int, default=6)
    parser.add_argument("--val-crops", type=int, default=2)
    parser.add_argument("--finetune-lr", type=float, default=3e-4)
    parser.add_argument("--scratch-lr", type=float, default=1e-3)
    parser.add_argument("--eval-step", type=int, default=2, help="Score every Nth plane.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--resume", action="store_true",
                        help="Continue the interrupted benchmark in --work (its stacks, "
                             "snapshot and training checkpoints).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    shipped = work / "shipped.pt"  # a snapshot: the release run may replace the file
    work.mkdir(parents=True, exist_ok=True)
    if not (args.resume and shipped.is_file()):
        shutil.copy(resolve_model(args.model), shipped)
    history = read_model_file(shipped)["history"]
    sha = hashlib.sha256(shipped.read_bytes()).hexdigest()[:12]
    print(f"shipped model: {args.model or 'default'} (sha256 {sha}..., epoch "
          f"{len(history) - 1} of its run saved), microscope: {args.optics}")
    tune_wells, test_wells = wells()
    print(f"fine-tune stacks: wells {', '.join(tune_wells)}; held out: {', '.join(test_wells)}")
    train_stacks = make_stacks(work / "tune", tune_wells, args.optics, args.seed)
    test_stacks = make_stacks(work / "test", test_wells, args.optics, args.seed + 1)
    console = Console()
    costs = {
        "fine-tuned shipped": run_training(train_stacks, work / "tuned.pt", str(shipped),
                                           args.finetune_lr, args, console),
        "from scratch": run_training(train_stacks, work / "scratch.pt", None,
                                     args.scratch_lr, args, console),
    }
    models = {"input itself": None, "shipped": shipped, "fine-tuned shipped": work / "tuned.pt",
              "from scratch": work / "scratch.pt"}
    scores = {name: score(path, test_stacks, args.eval_step) for name, path in models.items()}
    print(table(scores, costs))
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "sha256": sha,
                                         "optics": args.optics, "scores": scores,
                                         "costs": costs, "args": {k: str(v) for k, v in
                                                                  vars(args).items()}},
                                        indent=1))


if __name__ == "__main__":
    main()
