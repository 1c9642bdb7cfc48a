"""End-to-end speed of ``refocus predict`` as a command: what a user waits for.

    python benchmarks/bench_predict.py [--repeats 3] [--arch shipped resnet34 nafnet]
                                       [--workloads frame2048 field batch24] [--json out.json]

``shipped`` is the default pretrained model's own file (its trained weights decide whether
int8 passes the quality budget), a registered pretrained name that model's; any other
name is that architecture with random weights (:func:`refocus.modelfile.save_model`; its
speed does not depend on training). Workloads:
``frame2048``, one 2048x2048 uint16 frame (a mosaic of the shipped z=00 fields); ``field``,
one 520x696 shipped field; ``batch24``, the 24 shipped z=00 fields in one call. Every
command runs in a fresh process, three ways:

- ``old``: ``REFOCUS_NO_CACHE=1``: nothing cached, nothing measured (before the graph
  cache this exported the ONNX graph at every start; now it runs the unmeasured default,
  torch channels_last);
- ``cold``: an empty cache: the speed/quality measurement (:mod:`refocus.inference.budget`;
  for networks heavy enough to time ONNX Runtime, its export and int8 calibration too)
  once, then prediction: a model's first run;
- ``warm``: the cache an earlier run filled: every later run;
- ``glibc``: ``warm`` with glibc's malloc left as it is (``MALLOC_TOP_PAD_`` set to its
  default, which refocus takes as the user's own tuning): what :mod:`refocus.allocator`
  saves;
- ``before`` (with ``--before SRC``): ``warm`` running the refocus package in another
  checkout's ``src`` folder (e.g. a ``git worktree`` of an older commit), its own cache
  filled by one untimed run: the old code against the new in the same run.

Times are wall seconds of the whole command (interpreter start, imports, model load,
preparation, reading, refocusing, writing), medians over ``--repeats`` runs interleaved
old/cold/warm so drift on a shared machine hits all three alike; ratios are old over
the other path within the same run (``before`` over ``warm`` for the code change).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from benchlib import describe_machine, real_image
from rich.console import Console
from rich.table import Table

from refocus.allocator import GLIBC_UNTOUCHED
from refocus.archs import ARCHITECTURES, build_network
from refocus.data.normalize import PercentileNormalizer
from refocus.images import read_plane
from refocus.modelfile import save_model
from refocus.samples import z00_paths
from refocus.zoo import MODELS, resolve_model

PATHS = ("old", "cold", "warm", "glibc", "before")
SHIPPED = "shipped"
WORKLOADS = ("frame2048", "field", "batch24")


def make_model(folder: Path, arch: str) -> Path:
    """A model file of ``arch`` with random weights (seeded), or the shipped model's (or
    that of any registered pretrained model, by name)."""
    if arch == SHIPPED or arch in MODELS:
        return Path(shutil.copy(resolve_model(None if arch == SHIPPED else arch),
                                folder / f"{arch}.pt"))
    torch.manual_seed(0)
    spec = {"arch": arch}
    return save_model(folder / f"{arch}.pt", build_network(spec), arch=spec,
                      normalizer=PercentileNormalizer(), train_config={},
                      provenance={"made_by": "benchmarks/bench_predict.py"}, history=[],
                      overwrite=True)


def make_inputs(folder: Path) -> dict[str, list[str]]:
    """The command-line inputs of every workload."""
    frame = folder / "frame2048.tif"
    normalised = real_image((2048, 2048))  # the z=00 mosaic, 0..1
    tifffile.imwrite(frame, np.clip(100 + normalised * 3000, 0, 65535).astype(np.uint16))
    field = folder / "field" / z00_paths()[0].name
    field.parent.mkdir()
    shutil.copy(z00_paths()[0], field)
    assert read_plane(field).shape == (520, 696)
    return {"frame2048": [str(frame)], "field": [str(field)],
            "batch24": [str(z00_paths()[0].parent)]}


def run_command(model: Path, inputs: list[str], out: Path, env: dict[str, str]) -> float:
    """Wall seconds of one ``refocus predict`` in a fresh process."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "refocus", "predict", *inputs, "--model", str(model),
               "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stdout[-2000:]}"
                           f"{proc.stderr[-3000:]}")
    return seconds


def chosen_variant(cache: Path) -> str:
    """What ``auto`` chose in a cache folder (the measured default)."""
    for entry in cache.glob("onnx/*/entry.json"):
        choice = json.loads(entry.read_text()).get("checks", {}).get("choice")
        if choice:
            return str(choice["variant"])
    return "?"


def measure(model: Path, inputs: list[str], work: Path, repeats: int, console: Console,
            paths: tuple[str, ...] = ("old", "cold", "warm"), before: Path | None = None
            ) -> tuple[dict[str, list[float]], str]:
    """Seconds of every run of each path, and the variant the warm runs use."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("REFOCUS_")}
    caches = {name: Path(tempfile.mkdtemp(dir=work, prefix=f"cache-{name}-"))
              for name in ("warm", "before")}  # one per workload
    old_code = {"PYTHONPATH": str(before), "REFOCUS_CACHE_DIR": str(caches["before"])}
    if "before" in paths:  # the old code fills its own cache, untimed
        run_command(model, inputs, work / "out", {**base, **old_code})
    if {"warm", "glibc"} & set(paths) and "cold" not in paths:
        run_command(model, inputs, work / "out", {**base, "REFOCUS_CACHE_DIR": str(caches["warm"])})
    times: dict[str, list[float]] = {p: [] for p in paths}
    for rep in range(repeats):
        for path in paths:
            env = {**base, "REFOCUS_CACHE_DIR": str(caches["warm"])}
            if path == "old":
                env = {**base, "REFOCUS_NO_CACHE": "1"}
            elif path == "cold" and rep > 0:
                env["REFOCUS_CACHE_DIR"] = cold = tempfile.mkdtemp(dir=work)
            elif path == "glibc":
                env.update(GLIBC_UNTOUCHED)
            elif path == "before":
                env.update(old_code)
            seconds = run_command(model, inputs, work / "out", env)
            times[path].append(seconds)
            console.print(f"  {model.stem} {path} run {rep + 1}: {seconds:.1f} s", highlight=False)
            if path == "cold" and rep > 0:
                shutil.rmtree(cold, ignore_errors=True)
    return times, chosen_variant(caches["warm"])


def make_table(results: list[dict], paths: tuple[str, ...]) -> Table:
    table = Table(title="refocus predict, whole command (medians)", title_justify="left")
    ratios = [(a, b) for a, b in (("old", "cold"), ("old", "warm"), ("glibc", "warm"),
                                  ("before", "warm")) if a in paths and b in paths]
    names = ["model", "workload", "auto ->", *(f"{p} s" for p in paths),
             *(f"{a}/{b}" for a, b in ratios), "runs"]
    for name in names:
        table.add_column(name, justify="left" if name in names[:3] else "right")
    for r in results:
        m = {p: statistics.median(r["times"][p]) for p in paths}
        table.add_row(r["arch"], r["workload"], r["variant"], *(f"{m[p]:.1f}" for p in paths),
                      *(f"{m[a] / m[b]:.2f}x" for a, b in ratios),
                      str(max(len(t) for t in r["times"].values())))
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arch", nargs="+", default=[SHIPPED, "resnet34"],
                        help=f"'{SHIPPED}' (the default model's file), pretrained model names "
                             "or architectures.")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=["old", "cold", "warm"],
                        help="which start-up paths to time (warm alone: the cache is "
                             "filled by one untimed run first)")
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout's src folder: time its code too ('before')")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = tuple(p for p in args.paths if p != "before" or args.before)
    console = Console(width=None if sys.stdout.isatty() else 150)
    archs = [a for a in args.arch if a == SHIPPED or a in MODELS or a in ARCHITECTURES]
    for missing in sorted(set(args.arch) - set(archs)):
        console.print(f"{missing!r} is no pretrained model nor architecture here: skipped")
    results = []
    with tempfile.TemporaryDirectory(prefix="refocus-bench-predict-") as tmp:
        work = Path(tmp)
        inputs = make_inputs(work)
        for arch in archs:
            model = make_model(work, arch)
            for workload in args.workloads:
                console.print(f"{arch} {workload}", highlight=False)
                times, variant = measure(model, inputs[workload], work, args.repeats, console,
                                         paths, args.before)
                results.append({"arch": arch, "workload": workload, "variant": variant,
                                "times": times})
    console.print(make_table(results, paths))
    console.print(f"machine: {describe_machine(torch.device('cpu'))}", highlight=False)
    if args.json:
        args.json.write_text(json.dumps({"machine": describe_machine(torch.device("cpu")),
                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
