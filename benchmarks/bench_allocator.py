"""What :mod:`refocus.allocator` saves: training steps and one 2048^2 network pass, each in
fresh processes with glibc's malloc tuned by refocus and left as it is.

    python benchmarks/bench_allocator.py [--repeats 3] [--steps 12]

Every measurement runs in its own process (the setting is process-wide and cannot be
undone), interleaved tuned/untouched so drift on a shared machine hits both alike.
"Untouched" sets ``MALLOC_TOP_PAD_`` to glibc's default, which refocus reads as the user's
own tuning and leaves alone. Medians over ``--repeats``; the ratio is untouched / tuned.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

import torch
from benchlib import describe_machine
from rich.console import Console
from rich.table import Table

from refocus.allocator import GLIBC_UNTOUCHED

WORKLOADS = {
    # median seconds of one step of the shipped recipe's shape: 8 x 128^2 crops, AdamW, L1
    "train step (8 x 128^2)": """
import statistics, time, torch
from refocus.allocator import retain_freed_memory
from refocus.modelfile import load_model
from refocus.zoo import resolve_model
retain_freed_memory()
torch.manual_seed(0)
model = load_model(resolve_model(None)).model.train()
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x, y = torch.rand(8, model.intro.in_channels, 128, 128), torch.rand(8, 1, 128, 128)
times = []
for _ in range({steps}):
    start = time.perf_counter()
    loss = (model(x) - y).abs().mean()
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - start)
print(statistics.median(times[2:]))
""",
    # one forward pass of the default network on a whole 2048^2 frame (after a warm-up)
    "predict 2048^2 (network)": """
import time, torch
from refocus.allocator import retain_freed_memory
from refocus.modelfile import load_model
from refocus.zoo import resolve_model
retain_freed_memory()
model = load_model(resolve_model(None)).model.eval()
x = torch.rand(1, model.intro.in_channels, 2048, 2048)
with torch.inference_mode():
    model(x[..., :256, :256])
    start = time.perf_counter()
    model(x)
print(time.perf_counter() - start)
""",
}


def run(code: str, untouched: bool) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(GLIBC_UNTOUCHED if untouched else {})
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)
    return float(proc.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args(argv)
    console = Console()
    table = Table(title="refocus.allocator (medians, seconds)", title_justify="left")
    for name in ("workload", "tuned s", "untouched s", "untouched/tuned", "runs"):
        table.add_column(name, justify="left" if name == "workload" else "right")
    for workload, code in WORKLOADS.items():
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for untouched in (False, True):
                times[untouched].append(run(code.format(steps=args.steps), untouched))
                console.print(f"  {workload} {'untouched' if untouched else 'tuned'}: "
                              f"{times[untouched][-1]:.2f} s", highlight=False)
        tuned, plain = (statistics.median(times[k]) for k in (False, True))
        table.add_row(workload, f"{tuned:.2f}", f"{plain:.2f}", f"{plain / tuned:.2f}x",
                      str(args.repeats))
    console.print(table)
    console.print(f"machine: {describe_machine(torch.device('cpu'))}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
