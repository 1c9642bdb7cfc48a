"""The fastest way to run a trained model on each device, with its numerics checked.

Every variant is a callable mapping a float32 ``(N, 1, H, W)`` tensor on the device to a
float32 tensor of the same shape, so prediction code does not care which one it got.
``benchmarks/bench.py`` measures them all side by side; :func:`default_variant` keeps what
won there (medians; tables in the README's Performance section):

- CPU (AMD EPYC with AVX512-BF16, 2 cores shared with other work, torch 2.14.1),
  resnet34: **ONNX Runtime** (fp32) on both cores took 2.0 s for a 520x696 field and
  42 s for 2048x2048 (eager fp32: 9.2 s and 114 s, i.e. 4.5x and 2.7x; tiled 6.5x and
  3.9x), ahead of bf16 autocast (1.5x and 2.4x; tiled 1.3x and 2.2x), fp32
  channels_last (1.2x / 1.05x) and ``torch.compile`` (1.3x per core, but 4 minutes
  to compile and again for every new tile size). It is also float32-exact (2e-6 of the
  output range from eager, bf16: 2e-2). Per core (one thread) it ties with bf16 on
  whole images (both 1.7x) and bf16 leads on tiles (1.9x vs 1.6x); ONNX Runtime wins on
  two cores because its thread pool copes with busy cores better than OpenMP. Its cost
  is the export, about 15 s once per loaded model. Without ``onnxruntime`` installed
  (the ``export`` extra), ``auto`` takes bf16 on CPUs with hardware bf16 (AVX512-BF16
  or AMX) and eager fp32 elsewhere, where oneDNN emulates bf16 slower than fp32.
- CUDA: not measured yet (no GPU was lent when this was written). The default is fp16
  autocast in channels_last with CUDA-graph replay, the variant that usually wins for
  fixed-size convolutional inference on tensor-core GPUs; the numerics check below falls
  back to eager fp32 if it ever disagrees. Rerun the benchmark on a GPU to confirm.

Reduced precision only changes the arithmetic inside the network, never what is read or
written: inputs and outputs stay float32, and :func:`prepare_for_inference` compares a
probe prediction with eager fp32 before handing the fast variant out.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from refocus.inference.receptive import probe_image

Predictor = Callable[[Tensor], Tensor]

#: Variants each device can run, in the order the benchmark lists them.
DEVICE_VARIANTS: dict[str, tuple[str, ...]] = {
    "cpu": ("eager", "channels_last", "compile", "bf16", "onnxruntime"),
    "cuda": ("eager", "channels_last", "compile", "bf16", "fp16", "cuda_graphs"),
}
#: What :func:`prepare_for_inference` picks with ``mode="auto"`` (see the module docstring).
DEFAULT_VARIANT: dict[str, str] = {"cpu": "onnxruntime", "cuda": "cuda_graphs"}
#: Largest accepted max |variant - eager fp32| as a fraction of the eager output's range:
#: fp32 variants only reorder sums; fp16 keeps 11 significant bits and bf16 8.
TOLERANCE: dict[str, float] = {
    "eager": 0.0,
    "channels_last": 1e-3,
    "compile": 1e-3,
    "onnxruntime": 1e-3,
    "fp16": 1e-2,
    "cuda_graphs": 1e-2,
    "bf16": 5e-2,
}
#: The precision each variant computes in (for the benchmark's fraction-of-peak column).
COMPUTE_DTYPE: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "cuda_graphs": torch.float16,
}


def variants_for(device: str | torch.device) -> tuple[str, ...]:
    """The variants that can run on ``device`` (``cpu`` or ``cuda``)."""
    return DEVICE_VARIANTS[torch.device(device).type]


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere oneDNN
    emulates it and bf16 is slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def onnxruntime_available() -> bool:
    """True when ONNX export and ONNX Runtime are installed (the ``export`` extra)."""
    return all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))


def default_variant(device: str | torch.device) -> str:
    """What ``mode="auto"`` runs on ``device``: :data:`DEFAULT_VARIANT`; on CPU without
    ONNX Runtime, bf16 where the CPU has it in hardware, else eager fp32."""
    device = torch.device(device)
    name = DEFAULT_VARIANT[device.type]
    if device.type == "cpu" and name == "onnxruntime" and not onnxruntime_available():
        name = "bf16" if cpu_has_native_bf16() else "eager"
    return name


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    # no weight-cast cache: each call casts every weight once anyway, and CUDA-graph
    # capture requires the cache off
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def _layout(x: Tensor, channels_last: bool) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _torch_predictor(
    model: nn.Module, device: torch.device, *, channels_last: bool, dtype: torch.dtype | None
) -> Predictor:
    """Eager execution of ``model`` in the given layout and autocast precision."""

    def predict(x: Tensor) -> Tensor:
        with torch.inference_mode(), _autocast(device, dtype):
            y = model(_layout(x, channels_last))
        return y.float().contiguous()

    return predict


class _CudaGraphed:
    """Replay one captured CUDA graph per input shape: no Python or launch overhead.

    Capture needs fixed shapes, which tiled prediction and a camera stream provide; only
    the few most recent shapes are kept because each graph holds its own memory pool.
    """

    def __init__(self, fn: Predictor, max_shapes: int = 4) -> None:
        self.fn = fn
        self.max_shapes = max_shapes
        self.graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}

    def _capture(self, x: Tensor) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor]:
        static_in = x.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph (cuDNN algorithm choice)
                self.fn(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(static_in)
        return graph, static_in, static_out

    def __call__(self, x: Tensor) -> Tensor:
        key = tuple(x.shape)
        if key not in self.graphs:
            if len(self.graphs) >= self.max_shapes:
                self.graphs.pop(next(iter(self.graphs)))
            self.graphs[key] = self._capture(x)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()


def _onnxruntime_predictor(model: nn.Module) -> Predictor:
    """ONNX Runtime on CPU, with as many threads as torch uses (same budget, fair test)."""
    import onnxruntime as ort

    from refocus.convert import export_onnx

    buffer = io.BytesIO()
    export_onnx(model, buffer)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # idle ORT threads spin by default, stealing the cores torch needs between calls
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        buffer.getvalue(), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name

    def predict(x: Tensor) -> Tensor:
        (y,) = session.run(None, {name: x.detach().cpu().numpy()})
        return torch.from_numpy(y).to(x.device)

    return predict


def build_variant(model: nn.Module, device: str | torch.device, name: str) -> Predictor:
    """A predictor running a copy of ``model`` on ``device`` the ``name`` way.

    The copy is converted (layout, compilation), so the caller's model is left as it was.
    """
    device = torch.device(device)
    if name not in variants_for(device):
        raise ValueError(f"variant {name!r} does not run on {device.type} "
                         f"(choose from {', '.join(variants_for(device))})")
    model = copy.deepcopy(model).to(device).eval()
    if name == "onnxruntime":
        return _onnxruntime_predictor(model)
    channels_last = name in ("channels_last", "bf16", "fp16", "cuda_graphs")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if name == "compile":
        model = torch.compile(model, dynamic=False)  # type: ignore[assignment]
    fn = _torch_predictor(model, device, channels_last=channels_last,
                          dtype=COMPUTE_DTYPE.get(name))
    return _CudaGraphed(fn) if name == "cuda_graphs" else fn


def relative_error(fast: Tensor, reference: Tensor) -> float:
    """max |fast - reference| over the reference's value range (0 when identical)."""
    span = float(reference.max() - reference.min()) or 1.0
    return float((fast.float() - reference.float()).abs().max()) / span


def prepare_for_inference(
    model: nn.Module, device: str | torch.device, mode: str = "auto"
) -> Predictor:
    """The fastest measured way to run ``model`` on ``device``, checked against eager fp32.

    ``mode="auto"`` takes :func:`default_variant` for the device; any name from
    :func:`variants_for` forces that variant. A variant whose probe prediction differs from
    eager fp32 by more than :data:`TOLERANCE` (a broken kernel, an overflow in fp16) is
    refused with a warning and eager fp32 is used instead, so speed never costs correctness.
    """
    device = torch.device(device)
    name = default_variant(device) if mode == "auto" else mode
    model = model.to(device).eval()
    eager = _torch_predictor(model, device, channels_last=False, dtype=None)
    if name == "eager":
        return eager
    fast = build_variant(model, device, name)
    probe = probe_image(device)
    error = relative_error(fast(probe), eager(probe))
    if error > TOLERANCE[name]:
        warnings.warn(f"{name} prediction differs from fp32 by {error:.2g} of the output range "
                      f"(tolerance {TOLERANCE[name]:.0e}); using eager fp32", stacklevel=2)
        return eager
    return fast
