"""Cost of every registered architecture on this CPU, and of simulating training crops.

    python benchmarks/bench_archs.py [--quick] [--threads 1] [--arch care nafnet] [--json F]

Per architecture (random weights; speed does not depend on them): parameters, multiply-
accumulates per input pixel (torch's FlopCounterMode, 2 flops per MAC), one forward pass
of a 520x696 BBBC006 plane (real pixels, z=00), and one training step (batch 8 of
128x128, L1, AdamW; median of 5). Times are wall seconds and the process's CPU seconds;
with ``--threads 1`` on a shared machine the CPU seconds are what a dedicated core needs.
Then the synthetic training data (:class:`refocus.data.synthetic.SyntheticPairs`): ms per
128x128 crop on first use (PSF bank and percentile table being filled) and warm.
``--quick`` repeats less (medians of 2) and skips resnet50; it still measures real sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from refocus.archs import ARCHITECTURES, build_network
from refocus.data.normalize import PercentileNormalizer
from refocus.data.synthetic import SyntheticPairs
from refocus.images import read_plane
from refocus.inference.cost import macs_per_pixel
from refocus.samples import in_focus_paths, z00_paths

HEAVY = ("resnet50",)  # left out by --quick


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median (wall s, CPU s) of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def bench_arch(name: str, repeats: int) -> dict[str, float | str]:
    torch.manual_seed(0)
    net = build_network({"arch": name})
    plane = PercentileNormalizer()(read_plane(z00_paths()[0]))
    x = torch.from_numpy(plane)[None, None]
    net.eval()
    with torch.no_grad():
        fwd = timed(lambda: net(x), max(repeats - 2, 1))
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    xb, yb = torch.rand(8, 1, 128, 128), torch.rand(8, 1, 128, 128)

    def step() -> None:
        loss = (net(xb) - yb).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train = timed(step, repeats)
    return {"arch": name, "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
            "kmac_per_px": macs_per_pixel(net.eval()) / 1e3,
            "forward_s": fwd[0], "forward_cpu_s": fwd[1],
            "train_step_s": train[0], "train_step_cpu_s": train[1]}


def bench_synthetic(crops: int) -> dict[str, float]:
    """ms per crop (CPU): the first ``crops`` of a fresh data set, then ``crops`` more
    after :meth:`SyntheticPairs.warm_up`, and how long that warm-up took."""
    fresh = SyntheticPairs(in_focus_paths(), crops_per_field=10**4)
    step = len(fresh) // crops
    start = time.process_time()
    for i in range(crops):
        fresh[i * step]
    cold = (time.process_time() - start) / crops
    start = time.process_time()
    fresh.warm_up()
    warm_up = time.process_time() - start
    fresh.set_epoch(1)
    start = time.process_time()
    for i in range(crops):
        fresh[i * step + 1]
    warm = (time.process_time() - start) / crops
    return {"cold_ms_per_crop": cold * 1e3, "warm_ms_per_crop": warm * 1e3,
            "warm_up_s": warm_up}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no resnet50")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--arch", nargs="+", help="architectures (default: all registered)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.arch or [n for n in ARCHITECTURES.names() if not (args.quick and n in HEAVY)]
    repeats = 2 if args.quick else 5
    rows = []
    print(f"threads {args.threads}; forward: 520x696 plane; train step: 8x128x128, L1, AdamW; "
          f"median of {repeats}; wall s (CPU s)")
    print(f"{'arch':10s} {'params M':>9s} {'kMAC/px':>8s} {'forward s':>16s} {'train step s':>16s}")
    for name in names:
        row = bench_arch(name, repeats)
        rows.append(row)
        print(f"{name:10s} {row['params_M']:9.2f} {row['kmac_per_px']:8.1f} "
              f"{row['forward_s']:7.2f} ({row['forward_cpu_s']:5.2f}) "
              f"{row['train_step_s']:7.2f} ({row['train_step_cpu_s']:5.2f})", flush=True)
    synthetic = bench_synthetic(16 if args.quick else 64)
    print(f"synthetic 128x128 crops: {synthetic['cold_ms_per_crop']:.1f} ms/crop on first use, "
          f"{synthetic['warm_ms_per_crop']:.1f} ms/crop warm (CPU); warm_up() "
          f"{synthetic['warm_up_s']:.1f} s for 8 fields")
    if args.json:
        args.json.write_text(json.dumps({"archs": rows, "synthetic": synthetic}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
