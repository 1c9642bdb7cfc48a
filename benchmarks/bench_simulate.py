"""Speed of the defocus simulator on one real 696x520 BBBC006 field.

    python benchmarks/bench_simulate.py [--repeats 20]

Reports the PSF computation (first use of a defocus; later uses hit the cache), the FFT
blur, the camera noise, one whole simulated plane (PSF cached, as in a data set), and a
whole ``simulate_bbbc006`` run of the 8 shipped fields at z=1, 5, 10, 32 (+16) with file
reading and writing. Medians of repeats, since other work shares the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from refocus.images import read_plane
from refocus.samples import in_focus_paths, sample_dir
from refocus.simulate import (
    BBBC006_CAMERA,
    BBBC006_OPTICS,
    blur,
    plane_defocus_um,
    simulate_bbbc006,
    simulate_plane,
)
from refocus.simulate.psf import _cached_psf, best_focus_um, defocus_psf


def median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cold_psf(defocus: float) -> None:
    _cached_psf.cache_clear()
    best_focus_um.cache_clear()
    defocus_psf(defocus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    image = read_plane(in_focus_paths()[0])
    rng = np.random.default_rng(0)
    z00 = plane_defocus_um(0)
    kernel = defocus_psf(z00)
    expected = blur(image.astype(np.float64) - BBBC006_CAMERA.offset, kernel)
    rows = {
        "PSF z=00, uncached (incl. best focus)": median_s(lambda: cold_psf(z00), 5),
        f"FFT blur 696x520 with {kernel.shape[0]}x{kernel.shape[0]} PSF": median_s(
            lambda: blur(image, kernel), args.repeats
        ),
        "camera noise (Poisson + read + ADC)": median_s(
            lambda: BBBC006_CAMERA.expose(expected + BBBC006_CAMERA.offset, rng), args.repeats
        ),
    }
    for z in (0, 10):
        simulate_plane(image, z, BBBC006_OPTICS, BBBC006_CAMERA, rng)
        rows[f"simulate_plane z={z:02d} (PSF cached)"] = median_s(
            lambda z=z: simulate_plane(image, z, BBBC006_OPTICS, BBBC006_CAMERA, rng), args.repeats
        )

    def whole_run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            simulate_bbbc006(sample_dir() / "in-focus", Path(tmp) / "sim", [1, 5, 10, 32])

    rows["simulate_bbbc006: 8 fields x 5 planes, with I/O"] = median_s(whole_run, 3)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (others' work slows this)")
    width = max(map(len, rows))
    for name, seconds in rows.items():
        print(f"{name:<{width}}  {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
