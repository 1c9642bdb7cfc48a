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
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from benchlib import (
    FULL,
    QUICK,
    TASKS,
    TRAIN_VARIANTS,
    Row,
    Settings,
    describe_machine,
    make_table,
    matmul_peak,
    peak_memory,
    real_image,
    sample_pairs,
    sync,
    timed,
)
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from refocus.archs import build_network
from refocus.archs.padding import MULTIPLE
from refocus.data.dataset import CropDataset
from refocus.inference.backends import COMPUTE_DTYPE, relative_error, variants_for
from refocus.inference.cost import macs_per_pixel
from refocus.inference.refocuser import Refocuser
from refocus.loss import build_loss
from refocus.modelfile import load_model

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
                             "2048x2048; quick: 64x96 96x96)")
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
    # a fresh graph cache (removed at exit), so "setup s" is a model's first preparation
    cache = None if "REFOCUS_CACHE_DIR" in os.environ else tempfile.TemporaryDirectory()
    if cache is not None:
        os.environ["REFOCUS_CACHE_DIR"] = cache.name
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
