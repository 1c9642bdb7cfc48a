"""``refocus evaluate``: score a model against classical baselines and write a report."""

from __future__ import annotations

from pathlib import Path

import typer

from refocus.cli.app import app, console, plane_numbers
from refocus.data.bbbc006 import BEST_FOCUS_Z
from refocus.data.pairs import LAYOUTS
from refocus.data.split import SPLITS


@app.command("evaluate", context_settings={"allow_extra_args": True})
def evaluate_cmd(
    ctx: typer.Context,
    model: Path = typer.Argument(..., help="Trained model file (model.pt)."),
    data: Path = typer.Option(..., "--data", help="Data folder (BBBC006 or input/ + target/)."),
    layout: str = typer.Option(
        "bbbc006", help=f"Data folder layout: {' or '.join(LAYOUTS.names())}."),
    input_z: list[str] | None = typer.Option(
        None, "--input-z", help="Defocused planes to score (default: 1 5 10 32)."),
    target_z: int = typer.Option(
        BEST_FOCUS_Z, "--target-z", help="In-focus plane used as the target."),
    split: str = typer.Option(
        "test", help=f"{', '.join(SPLITS)} or all (split by well, seeded)."),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.csv/json, report.html."),
    second_model: Path | None = typer.Option(
        None, "--second-model", help="Another model file to compare (e.g. an L1-trained U-Net)."),
    unpaired: Path | None = typer.Option(
        None, "--unpaired", help="Folder of defocused images without targets (focus score)."),
    max_fields: int | None = typer.Option(
        None, help="Score at most this many fields (and unpaired images)."),
    seed: int | None = typer.Option(
        None, help="Split seed (default: the one stored in the model file)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: best)."),
    trust_flips: int = typer.Option(
        2, help="Predictions per field for the model's trust maps: 8, 4, 2 (about 2x the "
                "model's time), 1 (physical consistency only) or 0 (no trust maps)."),
    overwrite: bool = typer.Option(False, help="Replace outputs that exist already."),
) -> None:
    """Compare the model with identity, Richardson-Lucy and Wiener on the same fields."""
    from refocus.evaluate import DEFAULT_INPUT_Z, EvalConfig, evaluate

    planes = plane_numbers(input_z, ctx.args, "--input-z", DEFAULT_INPUT_Z)
    # every option above is an EvalConfig key, so the config checks them all in one place
    result = evaluate(EvalConfig.from_mapping({**ctx.params, "input_z": planes}))
    for record in result.summary["paired"]:
        z = "-" if record["z"] is None else record["z"]
        console.print(f"z={z:>2}  {record['method']:<16} PSNR {record['psnr']['mean']:6.2f}  "
                      f"SSIM {record['ssim']['mean']:.3f}  nuclei F1 "
                      f"{record['nuclei_f1']['mean']:.3f}", highlight=False)
    console.print(f"report: {result.files['report']}", highlight=False)
