"""Why the shipped model trails Richardson-Lucy on simulated data: three candidate causes,
each measured on the model's held-out wells.

    python benchmarks/bench_gap.py [--model FILE (default: the shipped model)]
        [--sites 2] [--out benchmarks/results/gap.md]

1. **Which side of focus** (the PSF's shape): at +-13 um, once with the calibrated optics
   (plate-bottom aberration: one side's PSF keeps a sharp core, the other is a smooth
   disc) and once without that aberration (both sides nearly the same disc). If the model
   tracks the PSF's core while RL does not, the gap is deconvolving a disc, not the side.
2. **Aberration variant**: the model trained on three (300/375/450 um mismatch); the data
   here use each of them in turn.
3. **Brightness scale**: each 64-px tile of the model's output refitted by its own gain
   (an upper bound on what fixing spatially varying gain errors could give).

RL is handed the exact PSF (an oracle) with its iterations chosen on the validation
well; PSNR as everywhere (:func:`refocus.metrics.psnr`). Fields are the held-out wells'
in-focus fields, each with ``--sites`` noise draws.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_pretrained import ROOT, machine, split_wells
from bench_trust import held_out_paths

from refocus.baselines import choose_rl_iterations, richardson_lucy
from refocus.images import read_plane
from refocus.inference.refocuser import Refocuser
from refocus.metrics import fit_to_target, psnr
from refocus.simulate import (
    BBBC006_OPTICS,
    Optics,
    defocus_psf,
    plane_defocus_um,
    simulate_plane,
)
from refocus.zoo import resolve_model

Z_SIDES = (10, 13, 19, 22)  # -13, -6.5, +6.5, +13 um
RL_CANDIDATES = (10, 20, 40, 80)
TILE = 64


def fields_of(wells: Sequence[str]) -> list[np.ndarray]:
    """The shipped in-focus fields of ``wells``."""
    return [read_plane(p) for p in held_out_paths(list(wells))]


def tile_gain_psnr(target: np.ndarray, prediction: np.ndarray) -> float:
    """PSNR after refitting each tile's gain on its own (the brightness-scale ceiling)."""
    ref, fit = fit_to_target(target, prediction)
    out = fit.copy()
    for i in range(0, ref.shape[0], TILE):
        for j in range(0, ref.shape[1], TILE):
            a, b = fit[i : i + TILE, j : j + TILE], ref[i : i + TILE, j : j + TILE]
            out[i : i + TILE, j : j + TILE] = a * (a * b).sum() / max((a * a).sum(), 1e-12)
    return float(10 * np.log10(1 / np.mean((out - ref) ** 2)))


def planes(fields: Sequence[np.ndarray], z: int, optics: Optics, sites: int
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(in-focus truth, simulated plane z) per field and noise draw."""
    return [(f, simulate_plane(f, z, optics, rng=100 * i + s))
            for i, f in enumerate(fields) for s in range(sites)]


def row(model: Refocuser, val: Sequence[np.ndarray], test: Sequence[np.ndarray], z: int,
        optics: Optics, sites: int) -> dict[str, float]:
    """Identity, RL exact (iterations from the validation fields) and the model at z."""
    psf = defocus_psf(plane_defocus_um(z, optics), optics)
    tune = planes(val, z, optics, 1)
    iterations, _ = choose_rl_iterations([x for _, x in tune], [t for t, _ in tune], psf,
                                         RL_CANDIDATES)
    pairs = planes(test, z, optics, sites)
    outputs = [model.predict_plane(x) for _, x in pairs]
    return {
        "identity": float(np.mean([psnr(t, x) for t, x in pairs])),
        "rl": float(np.mean([psnr(t, richardson_lucy(x, psf, iterations)) for t, x in pairs])),
        "model": float(np.mean([psnr(t, y) for (t, _), y in zip(pairs, outputs, strict=True)])),
        "tile_gain": float(np.mean([tile_gain_psnr(t, y)
                                    for (t, _), y in zip(pairs, outputs, strict=True)])),
        "psf_peak": float(psf.max()),
    }


def table(title: str, rows: dict[tuple[str, int], dict[str, float]]) -> list[str]:
    lines = [f"### {title}", "", "| optics | z | defocus um | PSF peak | identity | RL exact | "
             "model | model, tile gains refitted | model - RL |", "|" + " --- |" * 9]
    for (label, z), r in rows.items():
        lines.append(f"| {label} | {z} | {plane_defocus_um(z):+.1f} | {r['psf_peak']:.4f} | "
                     f"{r['identity']:.2f} | {r['rl']:.2f} | {r['model']:.2f} | "
                     f"{r['tile_gain']:.2f} | {r['model'] - r['rl']:+.2f} |")
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--sites", type=int, default=2, help="noise draws per field")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gap.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = args.model or resolve_model(None)
    split = split_wells(path)
    model = Refocuser.from_file(path, "cpu", mode="eager")
    val, test = fields_of(split["val"]), fields_of(split["test"])
    sides = {(f"{label} ({m:.0f} um)", z): row(model, val, test, z,
                                              replace(BBBC006_OPTICS, bottom_mismatch_um=m),
                                              args.sites)
             for label, m in (("calibrated", BBBC006_OPTICS.bottom_mismatch_um),
                              ("no plate aberration", 0.0))
             for z in Z_SIDES}
    variants = {(f"mismatch {m:.0f} um", 22): row(model, val, test, 22,
                                                 replace(BBBC006_OPTICS, bottom_mismatch_um=m),
                                                 args.sites)
                for m in (300.0, 450.0)}
    text = "\n".join([
        f"# Where the gap to Richardson-Lucy comes from ({path.name})", "",
        f"Command: `python benchmarks/bench_gap.py {' '.join(argv or sys.argv[1:])}` (wall time "
        f"{(time.perf_counter() - start) / 60:.1f} min). Machine: {machine()}.", "",
        f"Held-out wells {', '.join(split['test'])} x {args.sites} noise draws; RL iterations "
        f"chosen on {', '.join(split['val'])}; the model in eager float32.", "",
        *table("1 and 3: side of focus, PSF shape, tile gains", sides),
        *table("2: the other aberration variants the model trained on (z = 22)", variants),
    ])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
