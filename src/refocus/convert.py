"""Conversion of a network to TorchScript and ONNX, and the runners for those files.

Low level on purpose (of refocus it imports only the padding and channel count of
:mod:`refocus.archs`): the inference back-ends (:mod:`refocus.inference.backends`, ONNX
Runtime) and ``refocus export`` (:mod:`refocus.export`, which checks every file with
:data:`RUNNERS`) both build on it, so neither depends on the other.

- TorchScript: the network is traced on a 32-px-aligned input (where its internal padding
  is a no-op) and wrapped in a small *scripted* module that pads to the 32-px grid and
  crops back, so the file accepts any height and width, not only the traced one.
- ONNX: exported through ``torch.export`` with symbolic batch, height and width, so the
  padding arithmetic stays symbolic and the file accepts any size.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor, nn

from refocus.archs import input_channels
from refocus.archs.padding import MULTIPLE, pad_to_multiple

INPUT_NAME, OUTPUT_NAME = "input", "output"


def _example(shape: tuple[int, int, int, int]) -> Tensor:
    """A fixed example input: tracing and export record operations, so only its shape
    matters (and which sizes torch.export may treat as special)."""
    gen = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=gen)


class _AnySize(nn.Module):
    """Pad to the network's grid (``multiple``: 32 px for the ResNet U-Nets, 16 for the
    compact one; padding more would change the border pixels), run the traced network,
    crop back: any size in TorchScript."""

    def __init__(self, core: nn.Module, multiple: int) -> None:
        super().__init__()
        self.core = core
        self.multiple = multiple

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2], x.shape[3]
        y = self.core(pad_to_multiple(x, self.multiple))
        top, left = (y.shape[2] - h) // 2, (y.shape[3] - w) // 2
        return y[:, :, top : top + h, left : left + w]


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch.jit is deprecated in favour of torch.export, but deepImageJ and bioimageio.core
    run TorchScript; the tracer's python-bool warnings concern the padding branch, which
    the scripted wrapper handles instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def export_torchscript(model: nn.Module, out: str | os.PathLike[str] | BinaryIO) -> None:
    """Write ``model`` as a TorchScript file that accepts (N, C, H, W) of any H and W (C: 1,
    or the image and its guide channels for a guided model)."""
    model = model.eval()
    example = _example((1, input_channels(model), 4 * MULTIPLE, 5 * MULTIPLE))
    with torch.no_grad(), _quiet_jit():
        core = torch.jit.trace(model, example)
        multiple = int(getattr(model, "multiple", MULTIPLE))
        torch.jit.save(torch.jit.script(_AnySize(core, multiple)), out)


def export_onnx(model: nn.Module, out: str | os.PathLike[str] | BinaryIO) -> int:
    """Write ``model`` as ONNX with dynamic batch, height and width; returns the opset."""
    import onnx
    from torch.export import Dim

    model = model.eval()
    # batch 2 and odd sizes: 0/1 sizes and aligned sizes would be specialised by torch.export
    example = _example((2, input_channels(model), 3 * MULTIPLE + 4, 4 * MULTIPLE + 12))
    dims = {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    with torch.no_grad():
        exported = torch.export.export(model, (example,), dynamic_shapes={"x": dims})
        program = torch.onnx.export(exported, (example,), dynamo=True, verbose=False,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    proto = program.model_proto
    onnx.save(proto, out)
    return next(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx"))


def run_torchscript(path: str | os.PathLike[str], x: np.ndarray) -> np.ndarray:
    """Run a TorchScript file on a (N, C, H, W) float32 array."""
    with _quiet_jit():
        module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def run_onnx(path: str | os.PathLike[str], x: np.ndarray) -> np.ndarray:
    """Run an ONNX file on a (N, C, H, W) float32 array with ONNX Runtime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})
    return y


RUNNERS = {"torchscript": run_torchscript, "onnx": run_onnx}
