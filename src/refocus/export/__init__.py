"""Take a trained model to other tools: TorchScript, ONNX or a bioimage.io model package.

One file per job: :mod:`~refocus.export.check` (every export must reproduce PyTorch on a
real image), :mod:`~refocus.export.files` (single TorchScript and ONNX files),
:mod:`~refocus.export.bioimageio` (the bioimage.io package). Each exporter registers its
format in :data:`EXPORT_FORMATS`, through which :func:`export_model` dispatches; the
conversion itself is :mod:`refocus.convert`.
"""

from __future__ import annotations

import os
from pathlib import Path

from refocus.export.bioimageio import (
    BBBC006_CITATION,
    REFOCUS_CITATION,
    bioimageio_normalise,
    export_bioimageio,
    validate_bioimageio,
)
from refocus.export.check import TOLERANCE, ExportReport, Reference, pytorch_output, sample_input
from refocus.export.files import export_onnx_file, export_torchscript_file
from refocus.export.formats import EXPORT_FORMATS, Exporter
from refocus.images import prepare_destination
from refocus.modelfile import load_model
from refocus.samples import z00_paths

__all__ = [
    "BBBC006_CITATION",
    "EXPORT_FORMATS",
    "REFOCUS_CITATION",
    "TOLERANCE",
    "ExportReport",
    "Exporter",
    "Reference",
    "bioimageio_normalise",
    "export_bioimageio",
    "export_model",
    "export_onnx_file",
    "export_torchscript_file",
    "pytorch_output",
    "sample_input",
    "validate_bioimageio",
]


def export_model(
    model_file: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    sample: str | os.PathLike[str] | None = None,
) -> ExportReport:
    """Export a model file to ``fmt`` (a name in :data:`EXPORT_FORMATS`) at ``out``,
    checked against PyTorch on ``sample``.

    ``sample`` defaults to the first shipped real defocused BBBC006 field. The format and
    the destination are checked before the model is loaded, and nothing is written under
    ``out`` unless the check passes (and, for bioimage.io, validation).
    """
    exporter = EXPORT_FORMATS.get(fmt)
    out = Path(out)
    prepare_destination(out, overwrite, must_be_file=True)
    loaded = load_model(model_file, device="cpu")
    reference = Reference.of(loaded, sample if sample is not None else z00_paths()[0])
    return exporter(loaded, out, reference, overwrite=overwrite)
