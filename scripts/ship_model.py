"""Ship a trained model file inside the package: float16 weights, checked on real pixels.

    python scripts/ship_model.py runs/v2/nuclei-widefield-v2.pt \\
        src/refocus/zoo/nuclei-widefield-v2.pt --keep-below 10000

Writes the half-precision copy (:func:`refocus.modelfile.save_half_precision`), refocuses
every shipped real z = 00 field with both files (eager float32 compute) and refuses the
copy if any normalised output pixel moves by more than 1e-3; prints the copy's size and
sha256 for the registry entry (:mod:`refocus.zoo`).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from refocus.images import read_plane
from refocus.inference.refocuser import Refocuser
from refocus.modelfile import save_half_precision
from refocus.samples import z00_paths

TOLERANCE = 1e-3


def largest_change(full: Path, half: Path) -> float:
    """Max |difference| of the two files' network outputs (normalised units) on the
    shipped z = 00 fields, each whole plane in one tile."""
    a, b = (Refocuser.from_file(p, device="cpu", mode="eager") for p in (full, half))
    worst = 0.0
    for path in z00_paths():
        plane = read_plane(path)
        lo, hi = a.normalizer.percentiles(plane)
        x = a.network_input(plane, lo, hi)
        ya, yb = (r.predict_normalised(x, tile=1024) for r in (a, b))
        worst = max(worst, float(np.abs(ya - yb).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--keep-below", type=int, default=0,
                        help="tensors of fewer values than this stay float32")
    args = parser.parse_args()
    save_half_precision(args.model, args.out, overwrite=args.overwrite,
                        keep_below=args.keep_below)
    change = largest_change(args.model, args.out)
    if not change <= TOLERANCE:
        args.out.unlink()
        raise SystemExit(f"{args.out}: float16 weights move the output by {change:.2g} "
                         f"(tolerance {TOLERANCE:g}); not kept")
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    size = args.out.stat().st_size / 2**20
    print(f"{args.out}: {size:.1f} MB, sha256 {digest}, largest output change {change:.2g}")


if __name__ == "__main__":
    main()
