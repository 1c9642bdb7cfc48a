"""Speed of refocus on this machine: prediction, training, data loading, per variant.

    python benchmarks/bench.py [--quick] [--device cpu|cuda] [--arch resnet18 resnet34]
                               [--variants ...] [--json results.json]

Every inference variant of :mod:`refocus.inference.backends` runs side by side on the same
real pixels (the shipped BBBC006 z=00 fields; a 2048x2048 mosaic of them), and its output
is compared with eager fp32. Times are medians over repeats after warm-up, because other work shares
the machine; compare variants by their ratios within one run. "% peak" is the useful
multiply-accumulates per second (the model's MACs per pixel times pixels per second, or
the MACs counted in one training step) over the best matmul rate measured here in the
same precision, so it says how much of the hardware the network's shape leaves unused.

``--quick`` runs tiny images, resnet18 and few repeats so CI can check that the benchmark
works and that every variant agrees with fp32; its times mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from refocus.archs import build_network
from refocus.archs.padding import MULTIPLE
from refocus.data.dataset import CropDataset
from refocus.data.normalize import PercentileNormalizer
from refocus.data.pairs import Pair
from refocus.images import read_plane
from refocus.inference.backends import COMPUTE_DTYPE, relative_error, variants_for
from refocus.inference.refocuser import Refocuser
from refocus.loss import build_loss
from refocus.modelfile import load_model
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
QUICK = Settings(
    images={"64x96": (64, 96), "128x128": (128, 128)},
    tile=64, overlap=16, repeats=2, repeats_large=2, warmup=1,
    batch=2, crop=64, train_steps=2, loader_batches=4, matmul_n=256,
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


def macs_per_pixel(model: torch.nn.Module, device: torch.device, side: int = 256) -> float:
    """Multiply-accumulates of one forward pass per input pixel (convolutions and matmuls,
    as counted by torch's FlopCounterMode; 2 flops per MAC)."""
    x = torch.zeros(1, 1, side, side, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # not inference_mode:
        # FlopCounterMode fails on parametrized (weight-normed) modules under it
        model(x)
    return counter.get_total_flops() / 2 / side**2


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


# ---------------------------------------------------------------- the measurements


class Bench:
    """Runs the measurements, collecting rows (and failures, which must not hide the rest)."""

    def __init__(self, device: torch.device, settings: Settings, progress: Progress) -> None:
        self.device = device
        self.s = settings
        self.progress = progress
        self.rows: list[Row] = []
        self.errors: list[str] = []
        self.peaks: dict[str, float] = {}
        self.macs: dict[str, float] = {}
        self.images = {name: real_image(shape) for name, shape in settings.images.items()}

    def add(self, row: Row) -> None:
        """Keep a row and show it at once: a full run takes long on a CPU."""
        self.rows.append(row)
        self.progress.console.print(
            f"{row.arch} {row.task} {row.variant}: {row.seconds:.4g} s "
            f"(CPU {row.cpu_seconds:.4g} s)", highlight=False)

    def peak(self, variant: str) -> float:
        dtype = COMPUTE_DTYPE.get(variant, torch.float32)
        key = str(dtype).removeprefix("torch.")
        if key not in self.peaks:
            self.peaks[key] = matmul_peak(self.device, dtype, self.s.matmul_n)
        return self.peaks[key]

    def predict(self, arch: str, model: torch.nn.Module, variants: list[str]) -> None:
        """Whole and tiled prediction of every image size with every variant."""
        reference = {}
        task = self.progress.add_task(f"{arch} prediction", total=len(variants))
        for variant in variants:
            try:
                self._predict_variant(arch, model, variant, reference)
            except Exception as exc:  # one broken variant must not hide the others
                self.errors.append(f"{arch} {variant}: {type(exc).__name__}: {exc}")
            gc.collect()
            self.progress.advance(task)

    def _predict_variant(self, arch: str, model: torch.nn.Module, variant: str,
                         reference: dict[str, np.ndarray]) -> None:
        """Through :class:`Refocuser` (padding, tiling, transfers: what users get)."""
        refocuser = Refocuser(model, device=self.device, mode=variant)
        first = next(iter(self.images.values()))
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            refocuser.predict_normalised(first, tile=max(first.shape) + MULTIPLE)
        refused = [str(w.message) for w in caught if "using eager fp32" in str(w.message)]
        if refused:  # measuring on would time eager under this variant's name
            raise RuntimeError(refused[0])
        sync(self.device)
        setup: float | None = time.perf_counter() - start
        for size, image in self.images.items():
            large = image.size > 2e6
            repeats = self.s.repeats_large if large else self.s.repeats
            warmup = 0 if large else self.s.warmup
            for mode, tile in (("whole", max(image.shape) + MULTIPLE), ("tiled", self.s.tile)):
                name = f"predict {size} {mode}"

                def call(image: np.ndarray = image, tile: int = tile) -> np.ndarray:
                    return refocuser.predict_normalised(image, tile, self.s.overlap)

                with peak_memory(self.device) as mem:
                    times, cpu, out = timed(call, self.device, warmup, repeats)
                if variant == "eager":
                    reference[name] = out
                ref = torch.from_numpy(reference[name])
                diff = float((torch.from_numpy(out) - ref).abs().max())
                seconds = statistics.median(times)
                mpix_s = image.size / seconds / 1e6
                self.add(Row(
                    arch, name, variant, seconds, mpix_s,
                    self.macs[arch] * mpix_s * 1e6 / self.peak(variant), mem[0], diff,
                    relative_error(torch.from_numpy(out), ref), setup, times,
                    statistics.median(cpu)))
                setup = None

    def train(self, arch: str, variants: list[str]) -> None:
        """Time of one optimiser step (forward, loss, backward, Adam) per loss and precision."""
        task = self.progress.add_task(f"{arch} training", total=2 * len(variants))
        gen = torch.Generator().manual_seed(0)
        shape = (self.s.batch, 1, self.s.crop, self.s.crop)
        x = torch.rand(shape, generator=gen).to(self.device)
        y = torch.rand(shape, generator=gen).to(self.device)
        for loss_name in ("l1", "feature"):
            for variant in variants:
                try:
                    self._train_variant(arch, loss_name, variant, x, y)
                except Exception as exc:
                    self.errors.append(f"{arch} train {loss_name} {variant}: "
                                       f"{type(exc).__name__}: {exc}")
                gc.collect()
                self.progress.advance(task)

    def _train_variant(self, arch: str, loss_name: str, variant: str,
                       x: torch.Tensor, y: torch.Tensor) -> None:
        model = build_network({"arch": arch}).to(self.device).train()
        loss_fn = build_loss(loss_name, vgg_weights=None).to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        dtype = COMPUTE_DTYPE.get(variant)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                loss = sum(loss_fn(model(x), y).values())
            loss.backward()
            optimizer.step()

        with FlopCounterMode(display=False) as counter:
            step()
        macs = counter.get_total_flops() / 2
        with peak_memory(self.device) as mem:
            times, cpu, _ = timed(step, self.device, self.s.warmup, self.s.train_steps)
        seconds = statistics.median(times)
        self.add(Row(
            arch, f"train step {loss_name} {x.shape[0]}x{x.shape[-1]}²", variant, seconds,
            x[:, 0].numel() / seconds / 1e6, macs / seconds / self.peak(variant), mem[0],
            times=times, cpu_seconds=statistics.median(cpu)))

    def loader(self) -> None:
        """Batches per second of CropDataset + DataLoader, after the planes are decoded."""
        dataset = CropDataset(sample_pairs(), size=self.s.crop, crops_per_pair=8)
        for pair in dataset.pairs:  # decode once, before workers fork, as training does
            dataset.planes(pair)
        for workers in (0, 2):
            loader = DataLoader(dataset, batch_size=self.s.batch, shuffle=True,
                                num_workers=workers, persistent_workers=workers > 0)
            batches = iter(_forever(loader))
            next(batches)  # start the workers

            def take(batches: Iterator[object] = batches) -> None:
                for _ in range(self.s.loader_batches):
                    next(batches)

            with peak_memory(torch.device("cpu")) as mem:
                times, cpu, _ = timed(take, torch.device("cpu"), 0, 3)
            seconds = statistics.median(times) / self.s.loader_batches
            self.add(Row(
                "-", f"loader batch {self.s.batch}x{self.s.crop}² ({workers} workers)",
                "CropDataset", seconds, self.s.batch * self.s.crop**2 / seconds / 1e6,
                None, mem[0], times=times,
                cpu_seconds=statistics.median(cpu) / self.s.loader_batches))
            del batches, loader


def _forever(loader: DataLoader) -> Iterator[object]:
    while True:
        yield from loader


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


def summary(bench: Bench) -> list[str]:
    """Winners per measurement and how the loader compares with a training step."""
    lines = []
    for arch in dict.fromkeys(r.arch for r in bench.rows if r.arch != "-"):
        lines.append(f"{arch}: {bench.macs[arch] / 1e3:.1f} kMAC per pixel")
        tasks = dict.fromkeys(r.task for r in bench.rows if r.arch == arch)
        for task in tasks:
            rows = [r for r in bench.rows if r.arch == arch and r.task == task]
            eager = next((r for r in rows if r.variant == "eager"), None)
            best = min(rows, key=lambda r: r.seconds)
            if eager is not None:
                lines.append(f"  {task}: fastest {best.variant} "
                             f"({eager.seconds / best.seconds:.2f}x eager fp32)")
    steps = [r.seconds for r in bench.rows if r.task.startswith("train step")]
    for r in bench.rows:
        if r.task.startswith("loader") and steps:
            lines.append(f"{r.task}: {min(steps) / r.seconds:.0f}x faster than the fastest "
                         "training step")
    return lines


# ---------------------------------------------------------------- main


def _parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    if not (height.isdigit() and width.isdigit()):
        raise SystemExit(f"size {text!r} is not HEIGHTxWIDTH")
    return int(height), int(width)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few repeats (CI: checks it works, times mean nothing)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", nargs="+", default=None,
                        help="encoders (default resnet18 resnet34; resnet18 with --quick)")
    parser.add_argument("--model", type=Path, default=None,
                        help="a trained model file to predict with (default: random weights; "
                             "the numerics then reflect a real network)")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="inference variants (default: all for the device)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch (and ONNX Runtime) threads (default: one per core)")
    parser.add_argument("--sizes", nargs="+", default=None,
                        help="image sizes to predict, HEIGHTxWIDTH (default: 520x696 "
                             "2048x2048; quick: 64x96 128x128)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS),
                        help="what to measure (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    if args.device == "cuda" and not torch.cuda.is_available():
        console.print("CUDA is not available here: nothing to measure on cuda (skipped).")
        return 0
    device = torch.device(args.device)
    settings = QUICK if args.quick else FULL
    if args.sizes:
        settings = replace(settings, images={s: _parse_size(s) for s in args.sizes})
    archs = args.arch or (["resnet18"] if args.quick else ["resnet18", "resnet34"])
    trained = None
    if args.model:
        loaded = load_model(args.model, device=device)
        trained, archs = loaded.model, [str(loaded.arch["arch"])]
    # --quick leaves out compile: inductor takes minutes per image size on 2 cores
    variants = args.variants or [v for v in variants_for(device)
                                 if not (args.quick and v == "compile")]
    unknown = set(variants) - set(variants_for(device))
    if unknown:
        console.print(f"variants {sorted(unknown)} do not run on {device.type}; "
                      f"choose from {', '.join(variants_for(device))}")
        return 2
    if "eager" not in variants:
        variants.insert(0, "eager")  # the reference the others are checked against
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        bench = Bench(device, settings, progress)
        bench.peak("eager")
        for arch in archs:
            model = trained if trained is not None else build_network({"arch": arch})
            bench.macs[arch] = macs_per_pixel(model.eval(), device)
            if "predict" in args.tasks:
                bench.predict(arch, model, variants)
            if "train" in args.tasks:
                bench.train(arch, [v for v in TRAIN_VARIANTS if v in variants_for(device)])
        if "loader" in args.tasks:
            bench.loader()
    machine = describe_machine(device)
    peaks = ", ".join(f"{k} {v / 1e9:.0f} GMAC/s" for k, v in bench.peaks.items())
    console.print(make_table(bench.rows, f"refocus benchmark ({'quick' if args.quick else 'full'}"
                                         f", {device.type})"))
    console.print(f"machine: {machine}\nmeasured matmul peak: {peaks}")
    for line in summary(bench):
        console.print(line, highlight=False)
    for error in bench.errors:
        console.print(f"[red]failed:[/] {error}", highlight=False)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine, "device": device.type, "quick": args.quick,
            "matmul_peak_mac_s": bench.peaks, "macs_per_pixel": bench.macs,
            "rows": [asdict(r) for r in bench.rows], "errors": bench.errors,
        }, indent=1))
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
