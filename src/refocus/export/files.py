"""A model file as one TorchScript or ONNX file, for tools that run either directly.

The conversion itself is :mod:`refocus.convert` (shared with the inference back-ends);
here the file is written next to its destination, checked against PyTorch and only then
moved into place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from refocus.convert import export_onnx, export_torchscript
from refocus.export.check import ExportReport, Reference
from refocus.export.formats import EXPORT_FORMATS
from refocus.images import atomic_output

if TYPE_CHECKING:
    from refocus.modelfile import LoadedModel


def _checked_file(
    fmt: str,
    write: Callable[[nn.Module, Path], object],
    loaded: LoadedModel,
    out: Path,
    reference: Reference,
    overwrite: bool,
) -> ExportReport:
    """Write next to ``out``, check against PyTorch, and only then move into place."""
    with atomic_output(out, overwrite=overwrite) as tmp:
        write(loaded.model, tmp)
        diff = reference.check(fmt, tmp)
    return ExportReport(fmt, out, reference.sample.name, {fmt: diff})


@EXPORT_FORMATS.register("torchscript")
def export_torchscript_file(
    loaded: LoadedModel, out: Path, reference: Reference, *, overwrite: bool = False
) -> ExportReport:
    """A TorchScript file (``.pt``) accepting any height and width, e.g. for deepImageJ."""
    return _checked_file("torchscript", export_torchscript, loaded, out, reference, overwrite)


@EXPORT_FORMATS.register("onnx")
def export_onnx_file(
    loaded: LoadedModel, out: Path, reference: Reference, *, overwrite: bool = False
) -> ExportReport:
    """An ONNX file (``.onnx``) with dynamic batch, height and width."""
    return _checked_file("onnx", export_onnx, loaded, out, reference, overwrite)
