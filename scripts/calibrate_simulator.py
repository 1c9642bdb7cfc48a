"""Calibrate the defocus simulator against the 24 real z=00 BBBC006 fields.

The real z=00 fields and the 8 real in-focus fields are different fields, so nothing is
compared pixel by pixel. What is compared does not depend on which nuclei are where:

1. camera: photon-transfer curve (noise variance against local mean) of the real z=00
   planes -> gain (slope) and bias/read noise (intercept);
2. defocus: the radial power spectrum. A defocused widefield PSF is a soft disk whose
   transfer function has zeros; the real z=00 spectra show them at the same frequencies
   in every field, a ruler for the blur size. Model spectrum = A * in-focus spectrum *
   |OTF|^2 + noise floor (A absorbs the different cell density), fitted on a grid of
   (defocus scale, plate-bottom mismatch);
3. shape: the radial profile of isolated blobs (single nuclei) at z=00 against in-focus
   nuclei blurred alone, which picks between aberrations that fit the spectrum alike;
4. checks on simulated z=00 planes: noise against mean, background, intensity histogram.

Writes docs/figures/calibration.png and docs/figures/calibration.json (the numbers that
docs/simulator.md quotes). Takes 5-8 minutes on 2 busy CPU cores.
Run: .venv/bin/python scripts/calibrate_simulator.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from scipy import ndimage
from skimage import filters, measure

from refocus.images import read_plane
from refocus.samples import in_focus_paths, z00_paths
from refocus.simulate import Camera, Optics, blur, defocus_psf, plane_defocus_um, simulate_plane

READ_NOISE_ADU = 2.0  # assumed: ~6 e- of a cooled interline CCD at the fitted gain
SCALES = np.round(np.arange(0.85, 1.1501, 0.01), 3)
MISMATCHES = np.arange(-500.0, 501.0, 25.0)
FIT_BAND = (0.012, 0.10)  # cycles/pixel: where the OTF zeros are and signal beats noise
SPECTRAL_TOLERANCE = 1.1  # "fits the spectrum about as well": log-rms within 10% of best
BLOB_R = 70
N_MODEL_NUCLEI = 150
Z_REAL = 0

# ---------------------------------------------------------------- camera


def local_noise(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(local mean, noise variance estimate) per pixel from the 4-neighbour residual.

    The residual x - mean(4 neighbours) of white noise has 1.25x its variance; the z=00
    planes are smooth enough that signal curvature adds almost nothing.
    """
    a = image.astype(np.float64)
    resid = a[1:-1, 1:-1] - (a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:]) / 4
    mean = ndimage.uniform_filter(a, 9)[1:-1, 1:-1]
    return mean.ravel(), resid.ravel() ** 2 / 1.25


def photon_transfer(images: list[np.ndarray], lo: float = 110, hi: float = 700, step: float = 20):
    """Binned (mean, variance) over all images, and the weighted line variance = g*mean + c."""
    means, variances = zip(*(local_noise(a) for a in images), strict=True)
    m, v = np.concatenate(means), np.concatenate(variances)
    edges = np.arange(lo, hi + step, step)
    idx = np.digitize(m, edges)
    xs, ys, ns = [], [], []
    for i in range(1, len(edges)):
        sel = idx == i
        if sel.sum() > 2000:
            xs.append(m[sel].mean())
            ys.append(v[sel].mean())
            ns.append(sel.sum())
    xs, ys, ns = map(np.asarray, (xs, ys, ns))
    slope, intercept = np.polyfit(xs, ys, 1, w=np.sqrt(ns))
    return xs, ys, float(slope), float(intercept)


# ---------------------------------------------------------------- spectra


class Spectra:
    """Radial power spectra on one image shape (Hann window, 0.0025 cycles/px bins)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        fy, fx = np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1])
        f = np.hypot(*np.meshgrid(fy, fx, indexing="ij"))
        edges = np.arange(0, 0.5 + 1e-9, 0.0025)
        self.idx = np.clip(np.digitize(f.ravel(), edges) - 1, 0, len(edges) - 2)
        self.count = np.maximum(np.bincount(self.idx, minlength=len(edges) - 1), 1)
        self.freq = (edges[1:] + edges[:-1]) / 2
        self.window = np.outer(np.hanning(shape[0]), np.hanning(shape[1]))

    def radial(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.idx, values.ravel(), minlength=len(self.freq)) / self.count

    def power(self, image: np.ndarray) -> np.ndarray:
        a = image.astype(np.float64) - image.mean()
        f = np.fft.fft2(a * self.window)
        return self.radial(np.abs(f) ** 2 / (self.window**2).sum())

    def mtf2(self, kernel: np.ndarray) -> np.ndarray:
        """Radially averaged |OTF|^2 of a centred kernel."""
        padded = np.zeros(self.shape)
        n = kernel.shape[0]
        padded[:n, :n] = kernel
        padded = np.roll(padded, (-(n // 2), -(n // 2)), (0, 1))
        return self.radial(np.abs(np.fft.fft2(padded)) ** 2)

    def floor(self, power: np.ndarray) -> float:
        """White-noise level: the spectrum above 0.35 cycles/px holds no signal at z=00."""
        return float(power[self.freq > 0.35].mean())


def spectral_cost(model_signal: np.ndarray, real: np.ndarray, floor: float, band: np.ndarray):
    """Mean squared log difference, amplitude A fitted (cell density differs by field)."""
    log_a = np.linspace(-3, 3, 241)[:, None]
    pred = np.exp(log_a) * model_signal[band][None, :] + floor
    cost = np.mean((np.log(pred) - np.log(real[band])[None, :]) ** 2, axis=1)
    best = int(np.argmin(cost))
    return float(cost[best]), float(np.exp(log_a[best, 0]))


# ---------------------------------------------------------------- blobs

_yy, _xx = np.mgrid[-BLOB_R : BLOB_R + 1, -BLOB_R : BLOB_R + 1]
_RING = np.hypot(_yy, _xx).astype(int)
_INSIDE = _RING < BLOB_R


def radial_profile(patch: np.ndarray) -> np.ndarray:
    return np.bincount(_RING[_INSIDE], patch[_INSIDE]) / np.bincount(_RING[_INSIDE])


def real_blob_profiles(images: list[np.ndarray], min_sep: float = 60) -> list[np.ndarray]:
    """Peak-normalised profiles of isolated z=00 blobs whose surround reaches background."""
    profiles = []
    for a in images:
        sm = ndimage.gaussian_filter(a.astype(np.float64), 2)
        peaks = np.argwhere((sm == ndimage.maximum_filter(sm, 31)) & (sm > np.percentile(sm, 60)))
        h, w = a.shape
        dark = np.percentile(a, 10) + 10
        for p in peaks:
            dist = np.hypot(*(peaks - p).T)
            dist = dist[dist > 0]
            inside = BLOB_R <= p[0] < h - BLOB_R and BLOB_R <= p[1] < w - BLOB_R
            if (dist.size and dist.min() <= min_sep) or not inside:
                continue
            pr = radial_profile(
                sm[p[0] - BLOB_R : p[0] + BLOB_R + 1, p[1] - BLOB_R : p[1] + BLOB_R + 1]
            )
            tail = pr[40:]
            if np.argmin(tail) < 25 and tail.min() < dark:  # background reached around it
                profiles.append((pr - tail.min()) / (pr[:3].mean() - tail.min()))
    return profiles


def isolated_nuclei(images: list[np.ndarray]) -> list[np.ndarray]:
    """Background-free crops of single in-focus nuclei (Otsu, compact, 150-1500 px)."""
    crops = []
    for a in images:
        a = a.astype(np.float64)
        sm = ndimage.gaussian_filter(a, 1)
        labels = measure.label(sm > filters.threshold_otsu(sm))
        bg = np.percentile(a, 5)
        for r in measure.regionprops(labels):
            if 150 < r.area < 1500 and r.eccentricity < 0.9 and r.solidity > 0.9:
                mask = ndimage.binary_dilation(labels == r.label, iterations=3)
                alone = np.where(mask, np.clip(a - bg, 0, None), 0.0)
                cy, cx = (int(round(c)) for c in r.centroid)
                padded = np.pad(alone, BLOB_R)
                crops.append(padded[cy : cy + 2 * BLOB_R + 1, cx : cx + 2 * BLOB_R + 1])
    return crops


def model_blob_profiles(crops: list[np.ndarray], kernel: np.ndarray) -> np.ndarray:
    """Median profile of single nuclei blurred with no neighbours (zero surroundings)."""
    k = kernel.shape[0] // 2
    profiles = []
    for crop in crops:
        blurred = blur(np.pad(crop, k), kernel)[k:-k, k:-k]
        pr = radial_profile(blurred)
        profiles.append(pr / pr[:3].mean())
    return np.median(profiles, axis=0)


def crossing(profile: np.ndarray, level: float) -> int:
    """First radius (px) where a peak-normalised profile falls below ``level``."""
    return int(np.argmax(profile < level))


# ---------------------------------------------------------------- the fit


def fit(out_png: Path, out_json: Path) -> dict:
    start = time.perf_counter()
    real = [read_plane(p).astype(np.float64) for p in z00_paths()]
    in_focus_raw = [read_plane(p) for p in in_focus_paths()]
    in_focus = [a.astype(np.float64) for a in in_focus_raw]

    # 1. camera
    ptc_x, ptc_y, gain, intercept = photon_transfer(real)
    offset = (READ_NOISE_ADU**2 + 1 / 12 - intercept) / gain
    camera = Camera(offset=round(offset, 1), gain=round(gain, 4), read_noise=READ_NOISE_ADU)
    print(
        f"camera: gain {gain:.4f} ADU/e-, variance intercept {intercept:.2f} ADU^2 "
        f"-> offset {offset:.1f} ADU at read noise {READ_NOISE_ADU} ADU"
    )

    # 2. spectra
    spec = Spectra(real[0].shape)
    real_each = np.array([spec.power(a) for a in real])
    real_mean = real_each.mean(axis=0)
    real_floor = spec.floor(real_mean)
    in_mean = np.mean([spec.power(a) for a in in_focus], axis=0)
    in_signal = np.clip(in_mean - spec.floor(in_mean), 0, None)
    band = (spec.freq > FIT_BAND[0]) & (spec.freq < FIT_BAND[1])
    base = Optics(defocus_scale=1.0, bottom_mismatch_um=0.0)  # the nominal optics
    nominal_defocus = plane_defocus_um(Z_REAL, base)  # -32 um
    cost = np.zeros((len(MISMATCHES), len(SCALES)))
    for i, mm in enumerate(MISMATCHES):
        optics = dataclasses.replace(base, bottom_mismatch_um=float(mm))
        for j, s in enumerate(SCALES):
            mtf2 = spec.mtf2(defocus_psf(nominal_defocus * s, optics))
            cost[i, j] = spectral_cost(in_signal * mtf2, real_mean, real_floor, band)[0]
    print(f"spectral grid done ({time.perf_counter() - start:.0f} s)")

    # 3. among models that fit the spectrum about as well as the best one, the isolated-blob
    #    profile picks (the spectrum alone has two basins, see the cost map)
    real_blobs = real_blob_profiles(real)
    real_median = np.median(real_blobs, axis=0)
    crops = isolated_nuclei(in_focus)
    pick = np.linspace(0, len(crops) - 1, min(N_MODEL_NUCLEI, len(crops))).astype(int)
    crops = [crops[i] for i in pick]
    spectral_rms = np.sqrt(cost)
    acceptable = spectral_rms <= SPECTRAL_TOLERANCE * spectral_rms.min()
    blob_rms = np.full(cost.shape, np.nan)
    for i, j in np.argwhere(acceptable):
        optics = dataclasses.replace(base, bottom_mismatch_um=float(MISMATCHES[i]))
        prof = model_blob_profiles(crops, defocus_psf(nominal_defocus * SCALES[j], optics))
        blob_rms[i, j] = np.sqrt(np.mean((prof[:50] - real_median[:50]) ** 2))
    i_best, j_best = np.unravel_index(np.nanargmin(blob_rms), blob_rms.shape)
    near_zero = acceptable & (np.abs(MISMATCHES)[:, None] <= 100)  # the other basin
    unaberrated_blob_rms = (
        round(float(np.nanmin(blob_rms[near_zero])), 4) if near_zero.any() else None
    )
    fitted = dataclasses.replace(
        base, bottom_mismatch_um=float(MISMATCHES[i_best]), defocus_scale=float(SCALES[j_best])
    )
    print(
        f"fitted: defocus_scale {fitted.defocus_scale}, bottom_mismatch_um "
        f"{fitted.bottom_mismatch_um} ({time.perf_counter() - start:.0f} s)"
    )

    candidates = {"nominal (scale 1, no mismatch)": base, "fitted": fitted}
    i_zero = int(np.argmin(np.abs(MISMATCHES)))
    candidates["spectrum only, no mismatch"] = dataclasses.replace(
        base, defocus_scale=float(SCALES[np.argmin(cost[i_zero])])
    )
    summary: dict = {"candidates": {}}
    profiles = {}
    for name, optics in candidates.items():
        kernel = defocus_psf(plane_defocus_um(Z_REAL, optics), optics)
        c, amp = spectral_cost(in_signal * spec.mtf2(kernel), real_mean, real_floor, band)
        prof = model_blob_profiles(crops, kernel)
        profiles[name] = (prof, in_signal * spec.mtf2(kernel) * amp + real_floor)
        summary["candidates"][name] = {
            "defocus_scale": optics.defocus_scale,
            "bottom_mismatch_um": optics.bottom_mismatch_um,
            "spectral_log_rms": round(float(np.sqrt(c)), 3),
            "blob_profile_rms": round(
                float(np.sqrt(np.mean((prof[:50] - real_median[:50]) ** 2))), 4
            ),
            "blob_half_max_px": crossing(prof, 0.5),
            "blob_10pct_px": crossing(prof, 0.1),
        }

    # per-field defocus at the fitted aberration: how much the real fields scatter
    field_scale = []
    for p in real_each:
        costs = [
            spectral_cost(
                in_signal * spec.mtf2(defocus_psf(nominal_defocus * s, fitted)),
                p,
                spec.floor(p),
                band,
            )[0]
            for s in SCALES
        ]
        field_scale.append(float(SCALES[int(np.argmin(costs))]))

    # 4. simulated z=00 planes with the fitted values: noise, background, histogram
    sims = [
        simulate_plane(a, Z_REAL, fitted, camera, np.random.default_rng(i)).astype(np.float64)
        for i, a in enumerate(in_focus_raw)
    ]
    sim_x, sim_y, sim_gain, sim_intercept = photon_transfer(sims)
    sim_mean = np.mean([spec.power(a) for a in sims], axis=0)

    def level_stats(images: list[np.ndarray]) -> dict:
        bg = [float(np.percentile(a, 5)) for a in images]
        noise = []
        for a in images:
            m, v = local_noise(a)
            sel = m < np.percentile(a, 5) + 5
            noise.append(float(np.sqrt(v[sel].mean())))
        pix = np.concatenate([a.ravel() for a in images])
        return {
            "background_p5_median": round(float(np.median(bg)), 1),
            "background_noise_sd": round(float(np.median(noise)), 2),
            "pixel_percentiles_1_50_99": [
                round(float(q), 1) for q in np.percentile(pix, [1, 50, 99])
            ],
            "mean_above_background": round(
                float(np.mean([a.mean() for a in images]) - np.median(bg)), 1
            ),
        }

    real_stats, sim_stats = level_stats(real), level_stats(sims)
    psf_rms = {}
    for z in (0, 32):
        k = defocus_psf(plane_defocus_um(z, fitted), fitted)
        n = k.shape[0] // 2
        y, x = np.mgrid[-n : n + 1, -n : n + 1]
        psf_rms[f"z{z:02d}"] = round(float(np.sqrt((k * (x * x + y * y)).sum())), 2)

    summary.update(
        {
            "camera": {
                "gain_adu_per_e": round(gain, 4),
                "variance_intercept_adu2": round(intercept, 2),
                "read_noise_adu_assumed": READ_NOISE_ADU,
                "offset_adu": round(offset, 1),
                "simulated_gain": round(sim_gain, 4),
                "simulated_intercept": round(sim_intercept, 2),
            },
            "optics": dataclasses.asdict(fitted),
            "selection": {
                "spectral_tolerance": SPECTRAL_TOLERANCE,
                "best_spectral_log_rms": round(float(spectral_rms.min()), 3),
                "n_acceptable_grid_points": int(acceptable.sum()),
                "acceptable_mismatch_um": sorted(
                    {float(MISMATCHES[i]) for i, _ in np.argwhere(acceptable)}
                ),
                "best_blob_rms_without_aberration": unaberrated_blob_rms,
            },
            "per_field_defocus_scale": {
                "mean": round(float(np.mean(field_scale)), 3),
                "sd": round(float(np.std(field_scale)), 3),
                "min": min(field_scale),
                "max": max(field_scale),
            },
            "psf_rms_radius_px": psf_rms,
            "n_real_blobs": len(real_blobs),
            "n_model_nuclei": len(crops),
            "real_z00": real_stats,
            "simulated_z00": sim_stats,
            "seconds": round(time.perf_counter() - start, 1),
        }
    )
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(summary, indent=2) + "\n")

    plot = SimpleNamespace(
        spec=spec,
        real_each=real_each,
        real_mean=real_mean,
        sim_mean=sim_mean,
        profiles=profiles,
        real_blobs=real_blobs,
        real_median=real_median,
        cost=cost,
        acceptable=acceptable,
        fitted=fitted,
        ptc_x=ptc_x,
        ptc_y=ptc_y,
        gain=gain,
        intercept=intercept,
        sim_x=sim_x,
        sim_y=sim_y,
        real=real,
        sims=sims,
        in_focus=in_focus,
        base=base,
    )
    figure(out_png, plot)
    print(json.dumps(summary, indent=2))
    return summary


def figure(out_png: Path, d: SimpleNamespace) -> None:
    """Nine panels: images, spectrum, cost map, blob profiles, PSFs, noise, histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(3, 3, figsize=(16, 14.5))
    lo, hi = np.percentile(np.concatenate([d.real[0].ravel(), d.sims[0].ravel()]), [0.5, 99.8])
    for a, img, title in [
        (ax[0, 0], d.in_focus[0], "real in-focus field (a02, z=16)"),
        (ax[0, 1], d.sims[0], "simulated z=00 of it (fitted)"),
        (ax[0, 2], d.real[1], "a real z=00 field (b01), same grey scale"),
    ]:
        vmin, vmax = np.percentile(img, [0.5, 99.8]) if a is ax[0, 0] else (lo, hi)
        a.imshow(img, cmap="gray", vmin=vmin, vmax=vmax)
        a.set_title(title)
        a.axis("off")

    f = d.spec.freq
    a = ax[1, 0]
    a.fill_between(
        f, *np.percentile(d.real_each, [10, 90], axis=0), color="0.8", label="real z=00, 10-90%"
    )
    a.loglog(f, d.real_mean, "k", lw=2, label="real z=00, mean of 24")
    colors = {
        "nominal (scale 1, no mismatch)": "tab:blue",
        "spectrum only, no mismatch": "tab:green",
        "fitted": "tab:red",
    }
    for name, (_, pred) in d.profiles.items():
        a.loglog(f, pred, color=colors[name], lw=1.2, label=f"model: {name}")
    a.loglog(f, d.sim_mean, "tab:red", ls=":", label="simulated z=00 planes (fitted)")
    a.axvspan(*FIT_BAND, color="y", alpha=0.12, label="fit band")
    a.set_xlim(2e-3, 0.5)
    a.set_ylim(d.real_mean.min() / 3, d.real_mean.max() * 3)
    a.set_xlabel("spatial frequency (cycles/pixel)")
    a.set_ylabel("power (ADU$^2$)")
    a.set_title("radial power spectrum (model amplitude fitted)")
    a.legend(fontsize=7)

    a = ax[1, 1]
    im = a.imshow(
        np.log10(d.cost),
        aspect="auto",
        origin="lower",
        cmap="viridis",
        extent=[SCALES[0], SCALES[-1], MISMATCHES[0], MISMATCHES[-1]],
    )
    a.contour(SCALES, MISMATCHES, d.acceptable.astype(float), levels=[0.5], colors="tab:orange")
    a.plot([], [], color="tab:orange", label=f"log-rms within {SPECTRAL_TOLERANCE:.1f}x best")
    a.plot(d.fitted.defocus_scale, d.fitted.bottom_mismatch_um, "r*", ms=14, label="fitted")
    a.set_xlabel("defocus scale (effective / nominal 2 um steps)")
    a.set_ylabel("plate bottom - collar setting (um of glass)")
    a.set_title("spectral misfit log10(mean sq. log error)")
    a.legend(fontsize=8, loc="lower right")
    fig.colorbar(im, ax=a)

    a = ax[1, 2]
    for q in d.real_blobs:
        a.plot(q, color="0.75", lw=0.8)
    a.plot(
        d.real_median, "k", lw=2, label=f"real isolated z=00 blobs (median of {len(d.real_blobs)})"
    )
    for name, (prof, _) in d.profiles.items():
        a.plot(prof, color=colors[name], label=f"model: {name}")
    a.set_xlabel("radius (pixels)")
    a.set_ylabel("intensity / peak (background 0)")
    a.set_title("radial profile of isolated nuclei at z=00")
    a.set_xlim(0, BLOB_R - 1)
    a.legend(fontsize=7)

    a = ax[2, 0]
    for z, ls in [(0, "-"), (32, "--")]:
        for name, optics in [("nominal", d.base), ("fitted", d.fitted)]:
            k = defocus_psf(plane_defocus_um(z, optics), optics)
            n = k.shape[0] // 2
            a.plot(
                np.arange(n + 1),
                k[n, n:],
                ls=ls,
                color="tab:blue" if name == "nominal" else "tab:red",
                label=f"{name}, z={z:02d}",
            )
    a.set_xlabel("radius (pixels)")
    a.set_ylabel("PSF value (kernel sums to 1)")
    a.set_title("defocus PSF at z=00 and z=32 (opposite sides of focus)")
    a.legend(fontsize=8)

    a = ax[2, 1]
    a.plot(d.ptc_x, d.ptc_y, "ko", ms=4, label="real z=00")
    a.plot(d.sim_x, d.sim_y, "r^", ms=4, label="simulated z=00")
    xs = np.array([d.ptc_x.min(), d.ptc_x.max()])
    a.plot(
        xs,
        d.gain * xs + d.intercept,
        "k-",
        lw=0.8,
        label=f"fit: var = {d.gain:.3f} mean {d.intercept:+.1f}",
    )
    a.set_xlabel("local mean (ADU)")
    a.set_ylabel("noise variance (ADU$^2$)")
    a.set_title("photon transfer (noise vs signal)")
    a.legend(fontsize=8)

    a = ax[2, 2]
    bins = np.arange(100, 1200, 10)
    a.hist(
        np.concatenate([x.ravel() for x in d.real]),
        bins,
        density=True,
        histtype="step",
        color="k",
        label="real z=00 (24 fields)",
    )
    a.hist(
        np.concatenate([x.ravel() for x in d.sims]),
        bins,
        density=True,
        histtype="step",
        color="tab:red",
        label="simulated z=00 (8 fields)",
    )
    a.set_yscale("log")
    a.set_xlabel("pixel value (ADU)")
    a.set_title("intensity histogram (fields differ in cell density)")
    a.legend(fontsize=8)

    fig.suptitle("Defocus simulator vs real BBBC006 z=00 (Ljosa et al. 2012)", fontsize=14)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", type=Path, default=root / "docs/figures/calibration.png")
    parser.add_argument("--json", type=Path, default=root / "docs/figures/calibration.json")
    args = parser.parse_args()
    fit(args.figure, args.json)


if __name__ == "__main__":
    main()
