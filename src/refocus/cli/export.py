"""``refocus export``: a model file as TorchScript, ONNX or a bioimage.io package."""

from __future__ import annotations

from pathlib import Path

import typer

from refocus.cli.app import app, console
from refocus.export import EXPORT_FORMATS, export_model

# a plain string shown as the registered choices: an unknown name is then the registry's
# one-line error (exit 2), not click's usage block
FORMAT_METAVAR = "[" + "|".join(EXPORT_FORMATS.names()) + "]"


@app.command("export")
def export_cmd(
    model: Path = typer.Argument(..., help="Trained model file (model.pt)."),
    fmt: str = typer.Option(..., "--format", metavar=FORMAT_METAVAR, help="What to export to."),
    out: Path = typer.Option(..., "--out", help="Output file (.pt, .onnx, or .zip package)."),
    sample: Path | None = typer.Option(
        None, help="Image to check the export on (default: a shipped real defocused field)."),
    overwrite: bool = typer.Option(False, help="Replace the output if it exists."),
) -> None:
    """Export MODEL and check it against PyTorch on a real image (max abs diff)."""
    with console.status(f"exporting {model.name} to {fmt}..."):
        report = export_model(model, fmt, out, overwrite=overwrite, sample=sample)
    for line in report.lines():
        console.print(line, highlight=False, soft_wrap=True)
