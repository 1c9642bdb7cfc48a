"""Watch mode at the microscope: how long after a frame lands is its refocused image there?

    python benchmarks/bench_watch.py [--model NAME|FILE] [--interval 3] [--frames 24]
                                     [--settle 0.5] [--json out.json]

``refocus watch`` runs as a command in its own process with the given model (default: the
shipped default model). A warm-up frame is written first and its output awaited, so the
model is loaded and prepared (as at a real session's start) before the clock runs. Then
the shipped real z=00 fields (520x696 uint16 TIFF) are written into the watched folder one
every ``--interval`` seconds, as an acquisition would. Latency is measured from outside:
from the moment a frame's file is completely written to the moment its refocused output
exists (outputs are written to a temporary name and renamed, so existence means complete).
It includes ``--settle`` (the time a file's size must stay unchanged before it counts as
written), the polling, reading, refocusing and writing. The watcher's own per-frame times
are parsed from its output for the split.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import describe_machine

from refocus.samples import z00_paths
from refocus.zoo import resolve_model

OUTPUT_POLL_S = 0.01


def start_watcher(model: Path, folder: Path, out: Path, settle: float, log: Path
                  ) -> subprocess.Popen:
    command = [sys.executable, "-m", "refocus", "watch", str(folder), "--out", str(out),
               "--model", str(model), "--settle", str(settle)]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)


class OutputClock:
    """Notes when each file first appears in a folder (a thread polling every 10 ms), so a
    latency is read off when the output landed, not when someone looked."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.seen, self._stop = folder, {}, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            if self.folder.is_dir():
                for path in self.folder.iterdir():
                    self.seen.setdefault(path.name, time.perf_counter())
            time.sleep(OUTPUT_POLL_S)

    def when(self, name: str, timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        while name not in self.seen:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no output {name} after {timeout:.0f} s")
            time.sleep(OUTPUT_POLL_S)
        return self.seen[name]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run(model: Path, frames: int, interval: float, settle: float, work: Path) -> dict:
    """Write the frames on schedule; each frame's latency (s) and the watcher's log."""
    folder, out, log = work / "acquisition", work / "refocused", work / "watch.log"
    folder.mkdir()
    sources = z00_paths()
    clock = OutputClock(out)
    watcher = start_watcher(model, folder, out, settle, log)
    try:
        started = time.perf_counter()
        shutil.copy(sources[0], folder / "warmup.tif")
        ready_s = clock.when("warmup.tif", timeout=900) - started
        written = {}
        tick = time.perf_counter()
        for i in range(frames):
            name = f"frame_{i:03d}.tif"
            shutil.copy(sources[i % len(sources)], folder / name)
            written[name] = time.perf_counter()
            tick += interval
            time.sleep(max(tick - time.perf_counter(), 0.0))
        latency = [clock.when(name, timeout=600) - t for name, t in written.items()]
    finally:
        clock.stop()
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=120)
    return {"ready_s": ready_s, "latency_s": latency, "log": log.read_text()}


def watcher_times(log: str) -> list[float]:
    """The watcher's own 'refocus N ms' per frame (read + refocus + write)."""
    return [float(m) / 1000 for m in re.findall(r"frame_\d+\.tif -> .*?refocus (\d+) ms", log)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Name or file (default: the shipped one).")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    model = resolve_model(args.model)
    with tempfile.TemporaryDirectory(prefix="refocus-bench-watch-") as tmp:
        result = run(model, args.frames, args.interval, args.settle, Path(tmp))
    latency = result["latency_s"]
    process = watcher_times(result["log"])
    print(f"model {model.name}; {args.frames} frames of 520x696, one every {args.interval} s; "
          f"settle {args.settle} s; ready after the warm-up frame: {result['ready_s']:.1f} s")
    print("| latency p50 s | p95 s | max s | watcher's read+refocus+write, median s | frames |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {np.percentile(latency, 50):.2f} | {np.percentile(latency, 95):.2f} | "
          f"{max(latency):.2f} | {statistics.median(process) if process else float('nan'):.2f} | "
          f"{len(latency)} |")
    print(f"machine: {describe_machine(torch.device('cpu'))}")
    if args.json:
        args.json.write_text(json.dumps({**result, "args": vars(args) | {"json": str(args.json)},
                                         "model": str(model)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
