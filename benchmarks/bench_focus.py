"""Accuracy and speed of ``refocus focus`` (distance from focus) on real and simulated fields.

    python benchmarks/bench_focus.py [--tile 128] [--seed 0] [--step 1]

Real: the 8 in-focus fields, each judged with the templates of the other 7 (leave one
field out: the templates are built from these very fields), and the 24 real z=00 fields
(about 32 um from focus; other fields than the templates'). Simulated: every in-focus
field at planes z=0..33 (``--step``) by the calibrated simulator (``simulate_plane``:
PSF + camera noise), judged with the other 7 fields' templates. Prints error per distance,
a confusion table of 4-um distance bins, side calls, per-tile errors, the focus score per
distance, and fields per second on one core.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np

from refocus.focus import estimate_focus
from refocus.focus.templates import shipped_templates
from refocus.images import read_plane
from refocus.samples import in_focus_paths, z00_paths
from refocus.simulate import BBBC006_OPTICS, simulate_plane

BIN_EDGE_UM = 3.0  # first bin 0-3 um, then 4 um wide


def nominal_um(z: int) -> float:
    """Signed stage distance of plane z as BBBC006 counts it (2 um per plane)."""
    return (z - BBBC006_OPTICS.focus_z) * BBBC006_OPTICS.z_step_um


def simulated(images: list[np.ndarray], zs: list[int], tile: int, seed: int) -> list[dict]:
    """Leave-one-field-out estimates of every field's simulated planes."""
    templates = shipped_templates()
    rows = []
    for i, image in enumerate(images):
        held_out = templates.leave_out(i)
        for z in zs:
            plane = simulate_plane(image, z, rng=np.random.default_rng([seed, i, z]))
            est = estimate_focus(plane, tile, held_out)
            true = nominal_um(z)
            tiles = est.tile_distance_um[np.isfinite(est.tile_distance_um)]
            rows.append({
                "field": i, "z": z, "true": true, "est": est.distance_um, "side": est.side,
                "score": est.score,
                "tile_err": float(np.median(np.abs(tiles - abs(true)))) if tiles.size else math.nan,
            })
    return rows


def print_per_distance(rows: list[dict]) -> None:
    print("\nSimulated fields (leave one field out): error per distance, um")
    print(f"{'z':>3} {'true':>6} {'mean est':>8} {'bias':>6} {'MAE':>5} {'max|err|':>8} "
          f"{'side ok/wrong/none':>18} {'tile MedAE':>10} {'score':>7}")
    for z in sorted({r["z"] for r in rows}):
        group = [r for r in rows if r["z"] == z]
        true = group[0]["true"]
        err = np.array([r["est"] - abs(true) for r in group])
        sign = np.sign(true)
        ok = sum(1 for r in group if r["side"] is not None and r["side"] == sign)
        wrong = sum(1 for r in group if r["side"] is not None and r["side"] != sign)
        none = len(group) - ok - wrong
        print(f"{z:>3} {true:>6.0f} {np.mean([r['est'] for r in group]):>8.1f} "
              f"{err.mean():>6.2f} {np.abs(err).mean():>5.2f} {np.abs(err).max():>8.1f} "
              f"{f'{ok}/{wrong}/{none}':>18} {np.nanmean([r['tile_err'] for r in group]):>10.2f} "
              f"{np.mean([r['score'] for r in group]):>7.4f}")
    err = np.array([r["est"] - abs(r["true"]) for r in rows])
    far = [r for r in rows if abs(r["true"]) >= 8]
    side_ok = sum(1 for r in far if r["side"] == np.sign(r["true"]))
    side_wrong = sum(1 for r in far if r["side"] is not None and r["side"] != np.sign(r["true"]))
    print(f"all: MAE {np.abs(err).mean():.2f} um, median |err| {np.median(np.abs(err)):.2f}, "
          f"|err|>4 um in {(np.abs(err) > 4).sum()} of {len(err)}; side at >=8 um: "
          f"{side_ok} right, {side_wrong} wrong, {len(far) - side_ok - side_wrong} not named")


def print_confusion(rows: list[dict]) -> None:
    """True vs estimated |distance| in bins two planes wide whose edges (3, 7, 11 ... um)
    never coincide with a true distance (multiples of 2 um)."""
    edges = np.array([0.0, *np.arange(BIN_EDGE_UM, max(abs(r["true"]) for r in rows) + 4, 4)])
    labels = [f"{a:.0f}-{b:.0f}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    n_bins = len(labels)
    table = np.zeros((n_bins, n_bins + 1), dtype=int)  # last column: beyond the range
    for r in rows:
        t = int(np.searchsorted(edges, abs(r["true"]), side="right")) - 1
        e = n_bins
        if math.isfinite(r["est"]):
            e = int(np.searchsorted(edges, r["est"], side="right")) - 1
        table[t, min(e, n_bins)] += 1
    print("\nConfusion, |distance| bins in um (rows true, columns estimated; both sides)")
    print(f"{'':>7}" + "".join(f"{lab:>7}" for lab in labels) + f"{'more':>7}")
    for b, lab in enumerate(labels):
        print(f"{lab:>7}" + "".join(f"{v:>7}" for v in table[b]))
    near = sum(table[b, max(0, b - 1) : b + 2].sum() for b in range(n_bins))
    print(f"diagonal {np.trace(table[:, :n_bins]) / table.sum():.1%}, within one bin "
          f"{near / table.sum():.1%}")


def print_real(in_focus: list[np.ndarray], z00: list[np.ndarray], tile: int) -> None:
    templates = shipped_templates()
    cv = [estimate_focus(im, tile, templates.leave_out(i)) for i, im in enumerate(in_focus)]
    fit = [estimate_focus(im, tile, templates) for im in in_focus]
    print("\nReal in-focus fields (z=16), um: leave-one-out / with all templates")
    pairs = zip(cv, fit, strict=True)
    print("  " + "  ".join(f"{a.distance_um:.2f}/{b.distance_um:.2f}" for a, b in pairs))
    print(f"  max {max(e.distance_um for e in cv):.2f} (CV), all < 4 um: "
          f"{all(e.distance_um < 4 for e in cv)}")
    far = [estimate_focus(im, tile, templates) for im in z00]
    d = np.array([e.distance_um for e in far])
    sides = [e.side for e in far]
    print("Real z=00 fields (nominal 32 um below focus), um:")
    print("  " + " ".join(f"{v:.1f}" for v in d))
    print(f"  min {d.min():.1f} median {np.median(d):.1f} max {d.max():.1f}; within 32+-8: "
          f"{int(((d >= 24) & (d <= 40)).sum())}/24; side '-' {sides.count(-1)}, "
          f"'+' {sides.count(1)}, none {sides.count(None)}")


def print_speed(paths: list, tile: int) -> None:
    images = [read_plane(p) for p in paths]
    estimate_focus(images[0], tile)  # templates loaded, caches filled
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        for im in images:
            estimate_focus(im, tile)
        timings.append((time.perf_counter() - start) / len(images))
    start = time.perf_counter()
    for p in paths:
        estimate_focus(read_plane(p), tile)
    with_io = (time.perf_counter() - start) / len(paths)
    per = statistics.median(timings)
    print(f"\nSpeed (696x520, one process, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}): "
          f"{1 / per:.0f} fields/s estimate only ({per * 1e3:.0f} ms), "
          f"{1 / with_io:.0f} fields/s with file reading")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=int, default=1, help="simulate every step-th plane")
    args = parser.parse_args()
    in_focus = [read_plane(p) for p in in_focus_paths()]
    z00 = [read_plane(p) for p in z00_paths()]
    print(f"tile {args.tile} px; distances in nominal stage um (BBBC006: 2 um per plane); "
          "side '-' = z<16 (below the focal plane), '+' = z>16")
    print_real(in_focus, z00, args.tile)
    start = time.perf_counter()
    rows = simulated(in_focus, list(range(0, 34, args.step)), args.tile, args.seed)
    print_per_distance(rows)
    print_confusion(rows)
    print(f"({len(rows)} simulated fields in {time.perf_counter() - start:.0f} s)")
    print_speed(z00_paths(), args.tile)


if __name__ == "__main__":
    main()
