"""``refocus demo``: the whole method on the real sample shipped with refocus, offline.

simulate (calibrated optics) -> train -> evaluate against identity, Richardson-Lucy and
Wiener on held-out fields at z=1, 5, 10 and, never trained on, z=32 -> refocus the 24 real
z=00 fields. What it trades against the full method is stated in :data:`FULL` and the
README: a ResNet-18 encoder trained from scratch (no ImageNet weights offline) on six
fields for minutes, instead of a pretrained ResNet-34 on 600+ fields for hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from refocus.data.bbbc006 import BEST_FOCUS_Z, TRAIN_Z
from refocus.errors import RefocusError
from refocus.evaluate import (
    DEFAULT_INPUT_Z,
    EvalConfig,
    EvalField,
    Evaluation,
    OutputSink,
    evaluate,
)
from refocus.images import ensure_writable_folder, refuse_used_folder
from refocus.inference.refocuser import Refocuser
from refocus.samples import in_focus_paths, z00_paths
from refocus.simulate import simulate_bbbc006
from refocus.train import TrainConfig, train

# 8 sample fields = 8 wells: 6 to train on, 1 to pick the best epoch (and tune
# Richardson-Lucy) on, 1 held out for the reported scores, which nothing was chosen on
FRACTIONS = (0.75, 0.125, 0.125)


@dataclass(frozen=True)
class DemoSettings:
    """The knobs that set the demo's run time; everything else is the library default."""

    arch: str
    loss: str
    size: int
    batch: int
    epochs: int
    crops_per_pair: int
    rl_candidates: tuple[int, ...]
    eval_fields: int | None  # held-out fields to evaluate (None: all)
    real_fields: int  # how many of the 24 real z=00 fields to refocus
    variant: str  # how the models run (measuring the fastest costs minutes on a CPU)


# about 160 steps of ~3 s (measured resnet18 step, 2 cores) + evaluation: ~15 minutes
FULL = DemoSettings("resnet18", "l1", 128, 8, 6, 12, (5, 10, 20, 40), None, 24, "auto")
# for tests and a first look: small crops, few steps, one held-out field scored and one
# real field refocused, in plain float32 (the measurement of the fastest variant for the
# two models took 2 of its 4 minutes on 2 cores and repays only over many fields)
QUICK = DemoSettings("resnet18", "l1", 64, 8, 3, 6, (5, 20), 1, 1, "eager")


def run_demo(
    out: str | Path,
    quick: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    device: str | None = None,
    console: Console | None = None,
) -> Evaluation:
    """Run the demo into ``out``; returns the evaluation (rows, summary, files)."""
    out = Path(out)
    console = console or Console()
    settings = QUICK if quick else FULL
    refuse_used_folder(out, overwrite)
    data = out / "data"
    in_focus = in_focus_paths()[0].parent

    console.rule("1/4 simulate defocus from the real in-focus fields")
    planes = simulate_bbbc006(in_focus, data, DEFAULT_INPUT_Z, seed=seed, overwrite=overwrite)
    console.print(f"{len(planes)} planes written to {data}")

    console.rule("2/4 train")
    config = TrainConfig(
        data=str(data),
        out=str(out / "model.pt"),
        input_z=list(TRAIN_Z),
        arch=settings.arch,
        weights=None,
        loss=settings.loss,
        vgg_weights=None,
        size=settings.size,
        batch=settings.batch,
        epochs=settings.epochs,
        crops_per_pair=settings.crops_per_pair,
        fractions=list(FRACTIONS),
        seed=seed,
        device=device,
        overwrite=overwrite,
    )
    result = train(config, console)

    console.rule("3/4 evaluate on held-out fields; 4/4 refocus the real z=00 fields")
    real = z00_paths()[: settings.real_fields]
    refocused = out / "z00-refocused"
    config = EvalConfig(
        model=result.out,
        data=data,
        input_z=DEFAULT_INPUT_Z,
        split="test",
        out=out,
        unpaired=tuple(real),
        second_model=shipped_model(),
        max_fields=settings.eval_fields,
        rl_candidates=settings.rl_candidates,
        variant=settings.variant,
        device=device,
        overwrite=True,  # the folder was checked above; earlier steps wrote into it
    )
    evaluation = evaluate(
        config,
        Refocuser.from_file(result.out, device=device, mode=settings.variant),  # prepared once
        on_unpaired=model_output_saver(refocused),
    )
    saved = sum(row["method"] == "model" for row in evaluation.unpaired_rows)
    console.print(f"{saved} real z=00 fields refocused into {refocused}")
    console.print(summary_table(evaluation))
    console.print(f"report: {evaluation.files['report']}")
    return evaluation


def shipped_model() -> Path | None:
    """The default pretrained model, scored beside the demo's own (None if none ships)."""
    from refocus.zoo import default_model

    try:
        return default_model().path()
    except RefocusError:
        return None


def model_output_saver(dest: Path) -> OutputSink:
    """Save the model's output for each real field as the file ``refocus predict`` would
    write (same name, format and dtype), so the evaluation's prediction is not repeated."""
    from refocus.images import read_image, write_like

    folder = ensure_writable_folder(dest)

    def save(field: EvalField, method: str, output: np.ndarray) -> None:
        if method != "model" or field.source is None:
            return
        image = read_image(field.source)
        write_like(image, output.reshape(image.data.shape), folder / field.source.name,
                   overwrite=True)

    return save


def summary_table(evaluation: Evaluation) -> Table:
    """Mean PSNR / SSIM per z and method: the summary that metrics.json and the report hold."""
    summary = evaluation.summary
    cells = {(r["z"], r["method"]): r for r in summary["paired"]}
    methods = summary["methods"]
    table = Table("z", *(f"{m}\nPSNR / SSIM" for m in methods), title="held-out fields")
    for z in dict.fromkeys(r["z"] for r in summary["paired"]):  # in summarize's z order
        row = [f"{c['psnr']['mean']:.2f} / {c['ssim']['mean']:.3f}"
               if (c := cells.get((z, m))) else "-" for m in methods]
        table.add_row(f"{z}{' (unseen side)' if z > BEST_FOCUS_Z else ''}", *row)
    return table
