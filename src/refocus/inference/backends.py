"""The fastest way to run a trained model on each device, with its numerics checked.

Every variant is a callable mapping a float32 ``(N, 1, H, W)`` tensor on the device to a
float32 tensor of the same shape, so prediction code does not care which one it got.
``benchmarks/bench.py`` measures them all side by side.

- CPU: the fp32 baseline is **torch channels_last**, or **ONNX Runtime** for networks
  heavy enough to be compute-bound (:data:`ONNX_MIN_MACS_PER_PIXEL`). Measured on 2 CPU
  cores, a 520x696 field: the paper's resnet34 (472 kMAC/px) takes 6.3 s with ONNX
  Runtime against 7.5 s channels_last (AVX-512 EPYC); the shipped nafnet v2 (42 kMAC/px)
  needs 1.8x channels_last's time with ONNX Runtime there and 1.5x on an AVX2-only EPYC
  (2.1x on 2048^2), so for it the ONNX export (about 50 s: torch.export, then the dynamo
  exporter) is not paid at all. Faster reduced-precision variants, **int8** (ONNX Runtime
  static quantisation, :mod:`refocus.inference.quantize`, measured only beside ONNX
  Runtime) and **bf16** autocast where the CPU has it in hardware (AVX512-BF16 or AMX;
  elsewhere oneDNN emulates it slower than fp32), become the default of ``mode="auto"``
  only for models where they are measured faster and within a PSNR budget
  (:mod:`refocus.inference.budget`). The export, the calibration and that measurement
  happen once per model: they are cached with the graphs
  (:mod:`refocus.inference.graphcache`); where there is nothing to compare (a light
  network on a CPU without hardware bf16) nothing is measured. ``torch.compile`` is 1.3x
  per core but needs 4 minutes to compile, again for every tile size, so it is never a
  default.
- CUDA: not measured yet (no GPU was lent when this was written). The default is fp16
  autocast in channels_last with CUDA-graph replay, the variant that usually wins for
  fixed-size convolutional inference on tensor-core GPUs; the numerics check below falls
  back to eager fp32 if it ever disagrees. Rerun the benchmark on a GPU to confirm.

Reduced precision only changes the arithmetic inside the network, never what is read or
written: inputs and outputs stay float32. A variant that was not measured on the quality
fields (one forced by name, or the default when nothing can be cached) is compared with
eager fp32 on a probe image by :func:`prepare_for_inference` before it is handed out.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from refocus import convert
from refocus.archs import input_channels
from refocus.guides import network_guide
from refocus.inference import budget, quantize
from refocus.inference.graphcache import ModelCache, cached_macs_per_pixel
from refocus.inference.receptive import probe_image

log = logging.getLogger(__name__)

Predictor = Callable[[Tensor], Tensor]

#: Variants each device can run, in the order the benchmark lists them.
DEVICE_VARIANTS: dict[str, tuple[str, ...]] = {
    "cpu": ("eager", "channels_last", "compile", "bf16", "onnxruntime", "int8"),
    "cuda": ("eager", "channels_last", "compile", "bf16", "fp16", "cuda_graphs"),
}
#: What ``mode="auto"`` runs before (or without) a measurement (see the module docstring).
DEFAULT_VARIANT: dict[str, str] = {"cpu": "channels_last", "cuda": "cuda_graphs"}
#: ONNX Runtime is measured for models at least this heavy (MAC per pixel): below it the
#: network is memory-bound and torch channels_last was faster on every CPU measured, so
#: the export (about 50 s) would buy nothing (see the module docstring).
ONNX_MIN_MACS_PER_PIXEL = 150_000
#: Largest accepted max |variant - eager fp32| as a fraction of the eager output's range:
#: fp32 variants only reorder sums; fp16 keeps 11 significant bits, bf16 8, and int8
#: (8-bit activations between calibrated bounds) is only guarded here against a broken
#: graph: whether its quality suffices is the PSNR budget's question.
TOLERANCE: dict[str, float] = {
    "eager": 0.0,
    "channels_last": 1e-3,
    "compile": 1e-3,
    "onnxruntime": 1e-3,
    "fp16": 1e-2,
    "cuda_graphs": 1e-2,
    "bf16": 5e-2,
    "int8": 0.25,
}
#: The ONNX graph each ONNX Runtime variant runs (cached per model).
GRAPHS: dict[str, str] = {"onnxruntime": "fp32", "int8": "int8"}
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
    """What ``mode="auto"`` runs on ``device`` when nothing was measured
    (:data:`DEFAULT_VARIANT`): float32, and on a CPU without an export to wait for."""
    return DEFAULT_VARIANT[torch.device(device).type]


def onnx_worth_measuring(model: nn.Module) -> bool:
    """Whether ``auto`` should export ``model`` to time ONNX Runtime: only where it is
    installed and the network is compute-bound (:data:`ONNX_MIN_MACS_PER_PIXEL`)."""
    return onnxruntime_available() and cached_macs_per_pixel(model) >= ONNX_MIN_MACS_PER_PIXEL


def fp32_baseline(device: str | torch.device, onnx: bool = False) -> str:
    """The float32 variant reduced precision is measured against: ONNX Runtime where it is
    measured (``onnx``), else torch channels_last on a CPU and eager fp32 elsewhere."""
    if torch.device(device).type != "cpu":
        return "eager"
    return "onnxruntime" if onnx else "channels_last"


def cpu_candidates(onnx: bool = False) -> list[str]:
    """CPU variants worth measuring against :func:`fp32_baseline` here: with ``onnx``,
    torch fp32 in channels_last (ONNX Runtime is not the faster fp32 on every CPU) and
    int8 with ONNX Runtime; bf16 where the CPU computes it in hardware."""
    names = ["channels_last", "int8"] if onnx else []
    return names + (["bf16"] if cpu_has_native_bf16() else [])


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


def _session_predictor(graph: Path) -> Predictor:
    """ONNX Runtime on CPU, with as many threads as torch uses (same budget, fair test).

    Without ONNX Runtime's memory arena: the arena never shrinks, so after a tile that
    did not fit it would keep what that tile grew it to and starve the smaller tiles the
    caller retries with (big buffers come from the system allocator either way).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    # idle ORT threads spin by default, stealing the cores torch needs between calls
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(x: Tensor) -> Tensor:
        (y,) = session.run(None, {name: x.detach().cpu().numpy()})
        return torch.from_numpy(y).to(x.device)

    return predict


def onnx_graph(model: nn.Module, variant: str, store: ModelCache | None = None) -> Path:
    """The cached, verified ONNX graph of ``model`` that ``variant`` runs: exported once
    (fp32), quantised once from that (int8), rebuilt when damaged."""
    store = store or ModelCache(model)
    if GRAPHS[variant] != "fp32" and (ready := store.verified_graph(GRAPHS[variant])):
        return ready  # the fp32 graph it was made from is not needed

    def export(path: Path) -> None:
        log.info("exporting the model to ONNX (once per model: cached in %s)", store.folder)
        convert.export_onnx(copy.deepcopy(model).cpu().eval(), path)

    fp32 = store.graph("fp32", export)
    if GRAPHS[variant] == "fp32":
        return fp32
    def int8(path: Path) -> None:
        inputs = quantize.calibration_inputs(guide=network_guide(model))
        quantize.quantize_int8(fp32, path, inputs)

    return store.graph(GRAPHS[variant], int8)


def build_variant(model: nn.Module, device: str | torch.device, name: str,
                  store: ModelCache | None = None) -> Predictor:
    """A predictor running a copy of ``model`` on ``device`` the ``name`` way.

    The copy is converted (layout, compilation), so the caller's model is left as it was;
    ONNX Runtime variants run the model's cached graph (``store``, default its entry).
    """
    device = torch.device(device)
    if name not in variants_for(device):
        raise ValueError(f"variant {name!r} does not run on {device.type} "
                         f"(choose from {', '.join(variants_for(device))})")
    if name in GRAPHS:
        return _session_predictor(onnx_graph(model, name, store))
    model = copy.deepcopy(model).to(device).eval()
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


class Prepared:
    """A predictor and the name of the variant it runs (what ``auto`` chose)."""

    def __init__(self, predict: Predictor, variant: str) -> None:
        self.predict = predict
        self.variant = variant

    def __call__(self, x: Tensor) -> Tensor:
        return self.predict(x)

    def __repr__(self) -> str:
        return f"Prepared({self.variant!r})"


def _cached_choice(store: ModelCache, device: torch.device) -> str | None:
    """The variant measured best for this model, if its graph is still the measured one."""
    choice = store.check("choice")
    if not isinstance(choice, dict) or choice.get("variant") not in variants_for(device):
        return None
    graph = GRAPHS.get(choice["variant"])
    if graph is not None and store.verified_graph(graph) is None:
        return None
    return str(choice["variant"])


def measured_variant(model: nn.Module, device: torch.device, store: ModelCache) -> str | None:
    """The fastest CPU variant within the quality budget (:mod:`refocus.inference.budget`),
    measured once per model and cached; None where nothing can be cached (measuring at
    every start would cost more than it saves) or there is only the fp32 baseline to run."""
    cached = _cached_choice(store, device)
    if cached is not None or not store.persistent:
        return cached
    onnx = onnx_worth_measuring(model)
    baseline = fp32_baseline(device, onnx)
    names = [baseline, *cpu_candidates(onnx)]
    if len(names) == 1:
        return None  # nothing to compare it with: the default, probe-checked
    log.info("preparing this model for this computer, once: timing %s on the shipped "
             "fields (a minute or two; the choice is cached)", ", ".join(names),
             extra={"notice": True})  # shown by the command line (refocus.cli.notices)
    predictors = {}
    for name in names:
        try:
            predictors[name] = build_variant(model, device, name, store)
        except Exception as exc:  # noqa: BLE001 (an exotic graph must not stop prediction)
            if name == baseline:
                raise
            warnings.warn(f"{name} could not be prepared ({type(exc).__name__}: {exc}); "
                          "not using it", stacklevel=3)
    report = budget.choose_variant(baseline, predictors, guide=network_guide(model))
    store.remember_check("choice", report)
    log.info("fastest within the quality budget: %s", report["variant"])
    return str(report["variant"])


def _probe_agrees(model: nn.Module, device: torch.device, name: str, fast: Predictor,
                  store: ModelCache | None) -> bool:
    """Whether ``fast`` matches eager fp32 on the probe image within :data:`TOLERANCE`
    (remembered for cached graphs: they cannot change unseen)."""
    key = f"probe:{name}"
    if store is not None and isinstance(error := store.check(key), float):
        known = error
    else:
        probe = probe_image(device, channels=input_channels(model))
        eager = _torch_predictor(model, device, channels_last=False, dtype=None)
        known = relative_error(fast(probe), eager(probe))
        if store is not None and name in GRAPHS:
            store.remember_check(key, known)
    if known > TOLERANCE[name]:
        warnings.warn(f"{name} prediction differs from fp32 by {known:.2g} of the output range "
                      f"(tolerance {TOLERANCE[name]:.0e}); using eager fp32", stacklevel=3)
        return False
    return True


def prepare_for_inference(
    model: nn.Module, device: str | torch.device, mode: str = "auto"
) -> Prepared:
    """The fastest measured way to run ``model`` on ``device``, checked against eager fp32.

    ``mode="auto"`` on a CPU takes the variant measured fastest within the PSNR budget
    for this model (:func:`measured_variant`; measured at its first preparation, then
    cached), elsewhere :func:`default_variant`; any name from :func:`variants_for` forces
    that variant. A variant not measured on the quality fields whose probe prediction
    differs from eager fp32 by more than :data:`TOLERANCE` (a broken kernel, an overflow
    in fp16) is refused with a warning and eager fp32 is used instead.
    """
    device = torch.device(device)
    if mode != "auto" and mode not in variants_for(device):
        raise ValueError(f"variant {mode!r} does not run on {device.type} "
                         f"(choose from auto, {', '.join(variants_for(device))})")
    model = model.to(device).eval()
    cpu = device.type == "cpu"
    if cpu and mode == "bf16" and not cpu_has_native_bf16():
        warnings.warn("bf16 on this CPU is emulated in software (no AVX512-BF16 or AMX): it is "
                      "slower than float32 here, often many times; mode='auto' never picks it "
                      "on such a CPU", stacklevel=2)
    store = ModelCache(model) if cpu and (mode == "auto" or mode in GRAPHS) else None
    measured = None
    if store is not None and mode == "auto":
        measured = measured_variant(model, device, store)
    name = measured or (default_variant(device) if mode == "auto" else mode)
    if name == "eager":
        return Prepared(_torch_predictor(model, device, channels_last=False, dtype=None),
                        "eager")
    if name in GRAPHS and store is None:
        store = ModelCache(model)
    fast = build_variant(model, device, name, store)
    if measured is None and not _probe_agrees(model, device, name, fast, store):
        return Prepared(_torch_predictor(model, device, channels_last=False, dtype=None),
                        "eager")
    return Prepared(fast, name)
