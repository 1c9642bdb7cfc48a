"""Shared pieces of the benchmarks: run settings, result rows, timing and memory
measurement, the machine's description, real-pixel inputs and the result table.

Imported by ``bench.py`` and ``bench_predict.py`` (run as scripts from this folder).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from refocus.data.normalize import PercentileNormalizer
from refocus.data.pairs import Pair
from refocus.images import read_plane
from refocus.samples import in_focus_paths, z00_paths


@dataclass(frozen=True)
class Settings:
    """Sizes and repeats of one run (full by hand, quick in CI)."""

    images: dict[str, tuple[int, int]]
    tile: int
    overlap: int
    repeats: int
    repeats_large: int  # for images above 2 Mpix, which take a minute each on 2 cores;
    # they get no warm-up call: the variant was warmed up on the small image already
    warmup: int
    batch: int
    crop: int
    train_steps: int
    loader_batches: int
    matmul_n: int


FULL = Settings(
    images={"520x696": (520, 696), "2048x2048": (2048, 2048)},
    tile=512, overlap=96, repeats=3, repeats_large=2, warmup=1,
    batch=8, crop=128, train_steps=5, loader_batches=50, matmul_n=2048,
)
# quick checks that every variant runs and agrees, not speed: no warm-up, small images
# (bf16 is emulated on CPUs without AVX512-BF16, ~20 s for one 128² call on 2 cores)
QUICK = Settings(
    images={"64x96": (64, 96), "96x96": (96, 96)},
    tile=64, overlap=16, repeats=2, repeats_large=2, warmup=0,
    batch=2, crop=32, train_steps=2, loader_batches=4, matmul_n=256,
)
TASKS = ("predict", "train", "loader")
TRAIN_VARIANTS = ("eager", "bf16")  # training runs under autocast or not; layouts are inference


@dataclass
class Row:
    """One line of the table (and of ``--json``)."""

    arch: str
    task: str
    variant: str
    seconds: float  # median time of one call (image, training step or batch)
    mpix_s: float  # input megapixels per second
    peak_fraction: float | None  # useful MAC/s over the measured matmul peak
    memory_mib: float  # peak RSS (CPU) or peak allocated (CUDA) during the measurement
    max_abs_diff: float | None = None  # against eager fp32 on the same input
    relative_diff: float | None = None  # the same over eager's output range (backends.TOLERANCE)
    setup_s: float | None = None  # compile / export / first call
    times: list[float] = field(default_factory=list)  # wall seconds of every repeat
    cpu_seconds: float | None = None  # median process CPU time of one call


# ---------------------------------------------------------------- measurement helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int,
          repeats: int) -> tuple[list[float], list[float], object]:
    """Wall and process CPU times of ``repeats`` calls after ``warmup`` untimed ones
    (caches, autotuning), and the last call's result (checking it costs no extra call).

    On a shared machine wall time includes waiting for a core; with one thread, CPU time
    is what a dedicated core would have needed.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times, cpu, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return times, cpu, result


def _rss_high_water_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[list[float]]:
    """Yield a list that receives the peak memory (MiB) used inside the block.

    CPU: the process's RSS high-water mark, reset on entry (Linux ``clear_refs``), so it
    includes the loaded libraries and model; CUDA: the allocator's peak of live tensors.
    """
    out: list[float] = []
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
    yield out
    if device.type == "cuda":
        out.append(torch.cuda.max_memory_allocated(device) / 2**20)
    else:
        out.append(_rss_high_water_mib())


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Best multiply-accumulates per second of an n x n matmul: what the hardware gives a
    perfectly shaped problem (best, not median: a peak is the least disturbed run)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    # cuDNN runs float32 convolutions in TF32 by default: measure matmul the same way
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        times, _, _ = timed(lambda: a @ b, device, warmup=2, repeats=repeats)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return n**3 / min(times)


def describe_machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = names[0] if names else cpu
    text = (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


# ---------------------------------------------------------------- inputs


def real_image(shape: tuple[int, int]) -> np.ndarray:
    """A normalised image of ``shape`` made of the real z=00 sample fields (mosaic)."""
    normalizer = PercentileNormalizer()
    fields = [normalizer(read_plane(p)) for p in z00_paths()]
    fh, fw = fields[0].shape
    rows, cols = math.ceil(shape[0] / fh), math.ceil(shape[1] / fw)
    mosaic = np.block([[fields[(r * cols + c) % len(fields)] for c in range(cols)]
                       for r in range(rows)])
    return np.ascontiguousarray(mosaic[: shape[0], : shape[1]], dtype=np.float32)


def sample_pairs() -> list[Pair]:
    """Real defocused inputs with real in-focus targets; which field goes with which does
    not matter for throughput, only the decoding and cropping work."""
    targets = in_focus_paths()
    return [Pair(p, targets[i % len(targets)], p.stem, p.stem, 0, "w1")
            for i, p in enumerate(z00_paths())]


# ---------------------------------------------------------------- output


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def make_table(rows: list[Row], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("arch", "measurement", "variant", "median s", "CPU s", "Mpix/s", "% peak",
                 "peak MiB", "max |Δ| vs fp32", "setup s"):
        table.add_column(name, justify="left" if name in ("arch", "measurement", "variant")
                         else "right")
    for r in rows:
        table.add_row(r.arch, r.task, r.variant, _fmt(r.seconds, ".4g"),
                      _fmt(r.cpu_seconds, ".4g"), _fmt(r.mpix_s, ".3g"),
                      _fmt(None if r.peak_fraction is None else 100 * r.peak_fraction, ".1f"),
                      _fmt(r.memory_mib, ".0f"), _fmt(r.max_abs_diff, ".1e"),
                      _fmt(r.setup_s, ".1f"))
    return table


