"""Build the focus templates that ship in refocus/focus/bbbc006_templates.npz.

    python scripts/calibrate_focus.py [--out PATH] [--overwrite]

Blurs each of the 8 real in-focus BBBC006 fields with the calibrated simulator (Gibson-
Lanni PSF and camera model; docs/simulator.md) at every stage defocus of
``refocus.focus.templates.STAGE_UM`` and stores each field's expected signal-to-noise
spectrum per tile size (64, 96, 128 px). Deterministic; about 1 minute on one core.
Accuracy of the estimator built on them: ``benchmarks/bench_focus.py``.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

from refocus.focus.calibrate import build_templates
from refocus.focus.templates import SHIPPED, save_templates
from refocus.images import atomic_output, read_plane
from refocus.samples import in_focus_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(str(resources.files("refocus.focus") / SHIPPED))
    parser.add_argument("--out", type=Path, default=default, help=f"default: {default}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args()
    images = [read_plane(p) for p in in_focus_paths()]
    start = time.perf_counter()

    def progress(i: int) -> None:
        print(f"field {i + 1}/{len(images)}  {time.perf_counter() - start:.0f} s", flush=True)

    templates = build_templates(images, on_field=progress)
    with atomic_output(args.out, overwrite=args.overwrite) as tmp:
        with open(tmp, "wb") as handle:  # np.savez would add .npz to the temporary name
            save_templates(handle, templates)
    print(f"{args.out} ({args.out.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
