"""Throughput of a batch: the 24 real z=00 fields through ``run_jobs``, files overlapped
(the next read and the previous written while one is computed) against one after another.

    python benchmarks/bench_batch.py [--model NAME|FILE] [--repeats 3] [--json out.json]

One process, the model loaded and prepared once (as ``refocus predict`` does), then the
24 shipped LZW-compressed 520x696 TIFFs refocused into a fresh folder per run, the two ways
interleaved so drift hits both alike; wall seconds per batch, medians, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchlib import describe_machine

from refocus.images import read_plane
from refocus.inference.files import plan_jobs, run_jobs
from refocus.inference.refocuser import Refocuser
from refocus.samples import z00_paths

WAYS = {"one after another": False, "overlapped": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Name or file (default: the shipped one).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    refocuser = Refocuser.pretrained(args.model, device="cpu")
    sources = z00_paths()
    refocuser.predict(read_plane(sources[0]))  # prepared before the clock runs
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="refocus-bench-batch-") as tmp:
        for rep in range(args.repeats):
            for way, flag in WAYS.items():
                out = Path(tmp) / "out"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                outcomes = run_jobs(refocuser, plan_jobs(sources, out), overlap_files=flag)
                times[way].append(time.perf_counter() - start)
                assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
                print(f"  run {rep + 1} {way}: {times[way][-1]:.1f} s", flush=True)
    medians = {way: statistics.median(t) for way, t in times.items()}
    print(f"model {refocuser.source.name}; {len(sources)} fields")
    print("| way | batch s (median) | s per field | fields/s |")
    print("| --- | --- | --- | --- |")
    for way, seconds in medians.items():
        print(f"| {way} | {seconds:.1f} | {seconds / len(sources):.2f} | "
              f"{len(sources) / seconds:.1f} |")
    print(f"overlapped is {medians['one after another'] / medians['overlapped']:.2f}x "
          f"the throughput of one after another")
    print(f"machine: {describe_machine(torch.device('cpu'))}")
    if args.json:
        args.json.write_text(json.dumps({"times": times, "model": str(refocuser.source)},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
