"""``refocus export``: a model file as TorchScript, ONNX or a bioimage.io package."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from refocus.cli.app import app, console


class ExportFormat(StrEnum):
    torchscript = "torchscript"
    onnx = "onnx"
    bioimageio = "bioimageio"


@app.command("export")
def export_cmd(
    model: Path = typer.Argument(..., help="Trained model file (model.pt)."),
    fmt: ExportFormat = typer.Option(..., "--format", help="What to export to."),
    out: Path = typer.Option(..., "--out", help="Output file (.pt, .onnx, or .zip package)."),
    sample: Path | None = typer.Option(
        None, help="Image to check the export on (default: a shipped real defocused field)."),
    overwrite: bool = typer.Option(False, help="Replace the output if it exists."),
) -> None:
    """Export MODEL and check it against PyTorch on a real image (max abs diff)."""
    from refocus.export import export_model

    with console.status(f"exporting {model.name} to {fmt.value}..."):
        report = export_model(model, fmt.value, out, overwrite=overwrite, sample=sample)
    for line in report.lines():
        console.print(line, highlight=False, soft_wrap=True)
