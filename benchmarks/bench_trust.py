"""Does the trust map (``refocus.inference.trust``) say where, and how much, a refocused
image is wrong? And what does it cost?

    python benchmarks/bench_trust.py [--model FILE] [--step 2] [--json out.json]

Held out: the shipped in-focus fields of the model's test wells (read from its model file:
a03 and a07 for the shipped model), simulated at z = 0..32 (``--step``, both sides of
focus) by the calibrated simulator; the truth is the in-focus field. Per image, the
Spearman correlation between per-tile (32x32) distrust (1 - mean trust) and the tile's
mean absolute error; across images, between the per-image distrust (1 - score) and the
image's mean absolute error over its signal range. Out of distribution, simulated at z =
6, 12, 20, 26 and compared with the held-out fields at the same z: a field 3 held-out
fields dense, one 6x brighter, a filament network (no nuclei), and a mosaic of 4x down-
sampled fields. Real: the 8 shipped in-focus fields as inputs against the 24 real z = 00
fields (``--z00`` of them). Each with 8 flips, and the cheaper settings (2 flips, physical
only) from the same predictions. Cost: seconds per 520x696 field, plain prediction against
each setting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from refocus.images import read_plane
from refocus.inference import consistency as C
from refocus.inference import trust as T
from refocus.inference.refocuser import Refocuser
from refocus.modelfile import read_model_file
from refocus.samples import in_focus_paths, z00_paths
from refocus.simulate import BBBC006_CAMERA, simulate_plane

OOD_Z = (6, 12, 20, 26)
SETTINGS = (8, 2, 1)
OFFSET = BBBC006_CAMERA.offset


def assess(model: Refocuser, image: np.ndarray, output: np.ndarray) -> dict[int, T.Trust]:
    """Trust of one output for every flip setting, from one set of 8 predictions."""
    physical, defocus, chi2 = C.physical_consistency(image, output)
    answers = T.flip_answers(model, image, output, max(SETTINGS))
    scale = T.signal_range(output)
    out = {}
    for flips in SETTINGS:
        spread = T.spread_of(answers[:flips]) if flips > 1 else None
        trust, score = T.combine(physical, spread, scale)
        out[flips] = T.Trust(trust, score, physical, spread, defocus, chi2, flips)
    return out


def test_wells(model: Refocuser) -> list[str]:
    """The wells the model's own split held out for testing (its model file says)."""
    return list(read_model_file(model.source)["provenance"]["groups"]["test"])


def held_out_paths(wells: list[str]) -> list[Path]:
    return [p for p in in_focus_paths() if any(f"__{w}__" in p.name for w in wells)]


def held_out(model: Refocuser, step: int, wells: list[str]) -> list[dict]:
    """Per image: z, per-tile Spearman, image error and scores, per setting."""
    rows = []
    for path in held_out_paths(wells):
        truth = read_plane(path).astype(np.float64)
        for z in range(0, 33, step):
            image = simulate_plane(truth, z, rng=np.random.default_rng([z, len(rows)]))
            output = model.predict(image).astype(np.float64)
            error = np.abs(output - truth)
            tiles = T.tile_means(error)
            row = {"field": path.name.split("__")[1], "z": z,
                   "error": float(error.mean() / T.signal_range(truth))}
            for flips, trust in assess(model, image, output).items():
                row[f"tile_rho_{flips}"] = T.spearman(1 - T.tile_means(trust.map), tiles)
                row[f"score_{flips}"] = trust.score
            row["defocus_um"] = trust.defocus_um
            rows.append(row)
            print(f"  {row['field']} z={z:2d} error {row['error']:.4f}  score "
                  f"{row['score_8']:.3f}  tile rho {row['tile_rho_8']:.2f} "
                  f"(2 flips {row['tile_rho_2']:.2f}, physical {row['tile_rho_1']:.2f})",
                  flush=True)
    return rows


def _fields(paths: list[Path] | None = None) -> list[np.ndarray]:
    return [read_plane(p).astype(np.float64) for p in (paths or in_focus_paths())]


def dense(held: list[np.ndarray]) -> np.ndarray:
    """Three held-out fields' photons on one plane (overlapping nuclei)."""
    photons = (held[0] - OFFSET) + (held[1] - OFFSET)[::-1] + (held[0] - OFFSET)[:, ::-1]
    return np.clip(photons + OFFSET, 0, BBBC006_CAMERA.max_value)


def bright(held: list[np.ndarray]) -> np.ndarray:
    """A held-out field with 6 times the photons (training saw 0.5-2x)."""
    return np.clip(6 * (held[1] - OFFSET) + OFFSET, 0, BBBC006_CAMERA.max_value)


def filaments(held: list[np.ndarray], shape: tuple[int, int] = (520, 696),
              seed: int = 0) -> np.ndarray:
    """A network of thin bright curves (a cytoskeleton-like structure, no nuclei)."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros(shape)
    for _ in range(60):
        t = np.linspace(0, 1, 800)
        start, turn = rng.uniform(0, 1, 2) * shape, rng.uniform(-1, 1, 2) * 300
        end = rng.uniform(0, 1, 2) * shape
        pts = (start[:, None] * (1 - t) ** 2 + 2 * (start + turn)[:, None] * t * (1 - t)
               + end[:, None] * t**2)
        ok = (pts[0] >= 0) & (pts[0] < shape[0]) & (pts[1] >= 0) & (pts[1] < shape[1])
        canvas[pts[0][ok].astype(int), pts[1][ok].astype(int)] += rng.uniform(0.5, 1.5)
    lines = ndimage.gaussian_filter(np.minimum(canvas, 3.0), 1.0)
    return OFFSET + 8 + 900 * lines / lines.max()


def downsampled(held: list[np.ndarray]) -> np.ndarray:
    """A 4x4 mosaic of the 8 fields each 4x down-sampled (4x4 block means)."""
    small = [f[:520, :696].reshape(130, 4, 174, 4).mean(axis=(1, 3)) for f in _fields()]
    rows = [np.hstack([small[(4 * r + c) % 8][:, ::(-1) ** r] for c in range(4)])
            for r in range(4)]
    return np.vstack(rows)


OOD: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
    "dense x3": dense, "bright x6": bright, "filaments": filaments, "down-sampled 4x": downsampled}


def out_of_distribution(model: Refocuser, wells: list[str]) -> list[dict]:
    rows = []
    held = _fields(held_out_paths(wells))
    for name, make in OOD.items():
        truth = make(held)
        for z in OOD_Z:
            image = simulate_plane(truth, z, rng=z)
            output = model.predict(image).astype(np.float64)
            scores = {f"score_{k}": t.score for k, t in assess(model, image, output).items()}
            rows.append({"kind": name, "z": z, **scores})
            print(f"  {name:16s} z={z:2d} score {scores['score_8']:.3f} "
                  f"(2 flips {scores['score_2']:.3f}, physical {scores['score_1']:.3f})",
                  flush=True)
    return rows


def real(model: Refocuser, n_z00: int) -> list[dict]:
    rows = []
    for kind, paths in (("in focus", in_focus_paths()), ("z00", z00_paths()[:n_z00])):
        for path in paths:
            image = read_plane(path)
            output = model.predict(image)
            scores = {f"score_{k}": t.score for k, t in assess(model, image, output).items()}
            rows.append({"kind": kind, "file": path.name, **scores})
            print(f"  {kind:8s} {path.name[:40]:40s} score {scores['score_8']:.3f}", flush=True)
    return rows


def cost(model: Refocuser, repeats: int = 2) -> dict[str, float]:
    """Median wall seconds per 520x696 field: plain prediction, then each trust setting."""
    truth = read_plane(in_focus_paths()[1])
    image = simulate_plane(truth, 6, rng=0)
    model.predict(image)  # warm-up
    times: dict[str, list[float]] = {"predict": []}
    for _ in range(repeats):
        start = time.perf_counter()
        output = model.predict(image)
        times["predict"].append(time.perf_counter() - start)
        for flips in SETTINGS:
            start = time.perf_counter()
            T.trust_map(model, image, output, flips=flips)
            times.setdefault(f"trust_{flips}", []).append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def summarize(held: list[dict], ood: list[dict], reals: list[dict]) -> dict:
    out: dict = {}
    for flips in SETTINGS:
        key = f"score_{flips}"
        tile = [r[f"tile_rho_{flips}"] for r in held]
        images = T.spearman([1 - r[key] for r in held], [r["error"] for r in held])
        by_z = {z: statistics.mean(r[key] for r in held if r["z"] == z) for z in OOD_Z}
        ood_ok = [r[key] < by_z[r["z"]] for r in ood]
        ood_min_ok = [r[key] < min(h[key] for h in held if h["z"] == r["z"]) for r in ood]
        focus = [r[key] for r in reals if r["kind"] == "in focus"]
        z00 = [r[key] for r in reals if r["kind"] == "z00"]
        out[flips] = {
            "tile_rho_median": statistics.median(tile), "tile_rho_min": min(tile),
            "image_rho": images, **{
                f"image_rho_{f}": T.spearman([1 - r[key] for r in held if r["field"] == f],
                                             [r["error"] for r in held if r["field"] == f])
                for f in dict.fromkeys(r["field"] for r in held)},
            "ood_below_mean": f"{sum(ood_ok)}/{len(ood_ok)}",
            "ood_below_every": f"{sum(ood_min_ok)}/{len(ood_min_ok)}",
            "in_focus_mean": statistics.mean(focus) if focus else None,
            "z00_mean": statistics.mean(z00) if z00 else None,
            "in_focus_min_over_z00_max": (min(focus) > max(z00)) if focus and z00 else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="Name or file (default: the shipped default model).")
    parser.add_argument("--step", type=int, default=2)
    parser.add_argument("--z00", type=int, default=12)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    model = Refocuser.pretrained(args.model, device="cpu", mode="eager")
    wells = test_wells(model)
    print(f"model: {model.source}; held-out wells {', '.join(wells)}")
    print("cost (s per 520x696 field):", json.dumps(cost(model)), flush=True)
    print("held-out fields:")
    held = held_out(model, args.step, wells)
    print("out of distribution:")
    ood = out_of_distribution(model, wells)
    print("real fields:")
    reals = real(model, args.z00)
    summary = summarize(held, ood, reals)
    for flips, s in summary.items():
        print(f"flips={flips}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float)
                                             else f"{k} {v}" for k, v in s.items()))
    if args.json:
        args.json.write_text(json.dumps({"model": str(model.source), "wells": wells,
                                         "summary": summary,
                                         "held_out": held, "ood": ood, "real": reals},
                                        indent=1))


if __name__ == "__main__":
    main()
