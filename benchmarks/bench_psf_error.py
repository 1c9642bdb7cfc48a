"""What a wrong PSF estimate costs a guided model: its guide made at the true defocus x scale.

    python benchmarks/bench_psf_error.py --models src/refocus/zoo/nuclei-widefield-v2.pt \\
        runs/v3/nuclei-widefield-rl.pt [--scales 0.9 0.95 1 1.05 1.1] [--z 5 13 22 27 32] \\
        [--out benchmarks/results/psf-error.md]

A guided model computes its second channel with the PSF that blind deconvolution picks
(:func:`refocus.guides.estimate_psf`): on BBBC006's own optics within 0.8 um of the truth
(``bench_pretrained.py``), on another microscope or a misjudged distance further off. Both
deconvolutions degrade with a wrong PSF, Richardson-Lucy faster than Wiener
(``guides.md``: 5.5-8 dB for 11 % at z = 22-32), so a network that leans on an RL guide may
lean on a wrong one. Here the models' common held-out wells (from their files) are
simulated with the nominal optics (:func:`refocus.simulate.simulate_plane`, noise seeded
by z and field), each guide is made with the nominal PSF at the plane's defocus x
``scale``, and each model's output is scored (PSNR after the affine fit,
:func:`refocus.metrics.psnr`) against the in-focus field: the ``1.0`` column is the model
with a perfect estimate, the others what a 5 or 10 % error costs it; the guide alone
says how much the network adds to (or takes from) its deconvolved copy.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from bench_pretrained import machine, split_wells
from bench_trust import held_out_paths

from refocus.images import read_plane
from refocus.inference.refocuser import Refocuser
from refocus.metrics import psnr
from refocus.simulate import plane_defocus_um, simulate_plane
from refocus.simulate.psf import defocus_psf
from refocus.zoo import resolve_model

SCALES = (0.9, 0.95, 1.0, 1.05, 1.1)
Z_VALUES = (5, 13, 19, 22, 27, 32)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True,
                        help="guided model files or pretrained names with the same test wells")
    parser.add_argument("--scales", nargs="+", type=float, default=list(SCALES))
    parser.add_argument("--z", nargs="+", type=int, default=list(Z_VALUES))
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    return parser.parse_args(argv)


def common_test_wells(models: Sequence[Path]) -> list[str]:
    """The held-out wells every model shares; refuses models held out on other wells."""
    wells = [split_wells(m)["test"] for m in models]
    if any(w != wells[0] for w in wells):
        sys.exit(f"the models hold out different wells ({wells}): no common held-out score")
    return wells[0]


def score(refocuser: Refocuser, field: np.ndarray, plane: np.ndarray, psf: np.ndarray
          ) -> tuple[float, float]:
    """PSNR of the model's output when its guide is made with ``psf``, and of that guide."""
    x = refocuser.guide.stack(refocuser.normalizer(plane), psf)
    return psnr(field, refocuser.predict_normalised(x, tile=1024)), psnr(field, x[1])


def rows_for(models: dict[str, Refocuser], fields: list[np.ndarray], z_values: Sequence[int],
             scales: Sequence[float]) -> list[dict[str, object]]:
    """One row per (z, model): the input's PSNR and the model's at each guide scale."""
    rows = []
    for z in z_values:
        planes = [simulate_plane(f, z, rng=[z, i]).astype(np.float32)
                  for i, f in enumerate(fields)]
        psfs = {s: defocus_psf(plane_defocus_um(z) * s).astype(np.float32) for s in scales}
        for name, refocuser in models.items():
            row: dict[str, object] = {"z": z, "model": name, "input": np.mean(
                [psnr(f, p) for f, p in zip(fields, planes, strict=True)])}
            for s in scales:
                model, guide = np.mean([score(refocuser, f, p, psfs[s])
                                        for f, p in zip(fields, planes, strict=True)], axis=0)
                row[s], row[f"guide {s:g}"] = model, guide
            print({k: v if isinstance(v, (int, str)) else round(float(v), 2)
                   for k, v in row.items()}, flush=True)
            rows.append(row)
    return rows


def table(rows: list[dict[str, object]], scales: Sequence[float]) -> list[str]:
    head = ["z", "defocus um", "model", "input", *[f"guide PSF x{s:g}" for s in scales],
            "worst - x1", *[f"guide alone x{s:g}" for s in scales]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [float(r[s]) for s in scales]
        exact = float(r[1.0]) if 1.0 in scales else float("nan")
        lines.append("| " + " | ".join([
            str(r["z"]), f"{plane_defocus_um(int(r['z'])):+.1f}", str(r["model"]),
            f"{float(r['input']):.2f}", *[f"{c:.2f}" for c in cells],
            f"{min(cells) - exact:+.2f}", *[f"{float(r[f'guide {s:g}']):.2f}" for s in scales],
        ]) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.time()
    paths = [resolve_model(m) for m in args.models]
    wells = common_test_wells(paths)
    models = {}
    for name, path in zip(args.models, paths, strict=True):
        refocuser = Refocuser.from_file(path, device="cpu", mode="eager")
        if refocuser.guide is None:
            sys.exit(f"{path}: not a guided model (no guide channel to mislead)")
        models[f"{Path(name).stem} ({refocuser.guide.name} guide)"] = refocuser
    fields = [read_plane(p).astype(np.float32) for p in held_out_paths(wells)]
    rows = rows_for(models, fields, args.z, args.scales)
    text = "\n".join([
        "# What a wrong PSF estimate costs each guided model",
        "",
        f"Command: `python benchmarks/bench_psf_error.py --models {' '.join(args.models)} "
        f"--scales {' '.join(f'{s:g}' for s in args.scales)} "
        f"--z {' '.join(map(str, args.z))}` (wall time {(time.time() - start) / 60:.1f} min)",
        "",
        f"Machine: {machine()}.",
        "",
        f"Held-out wells {', '.join(wells)} (one field each, whole 696x520 planes, nominal "
        "optics); PSNR (dB) of each model with its guide made at the true defocus x the "
        "column's scale, the worst scale's loss against the exact PSF, and the PSNR of "
        "the guide channel itself (the deconvolution alone) at each scale.",
        "",
        *table(rows, args.scales),
        ""])
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
