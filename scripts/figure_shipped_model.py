"""Figure for the shipped model's card: real fields in and out, nothing simulated.

Top rows: real BBBC006 fields acquired 32 um from focus (z = 00) and what the default
model makes of them; bottom row: a real in-focus field (held-out well a03) in and out,
which should look the same. ``python scripts/figure_shipped_model.py OUT.png``.
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refocus.focus import estimate_focus  # noqa: E402
from refocus.images import read_plane  # noqa: E402
from refocus.predict import Refocuser  # noqa: E402
from refocus.samples import in_focus_paths, z00_paths  # noqa: E402
from refocus.zoo import default_model  # noqa: E402


def _show(ax: plt.Axes, image: np.ndarray, title: str) -> None:
    lo, hi = np.percentile(image, (1, 99.8))
    ax.imshow(np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1), cmap="gray")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _busiest(image: np.ndarray, size: int = 256) -> tuple[slice, slice]:
    """The size x size window holding the most signal (nuclei, not empty background)."""
    from scipy import ndimage

    mass = ndimage.uniform_filter(image.astype(np.float64), size)
    h, w = image.shape
    half = size // 2
    inner = mass[half:h - half, half:w - half]
    y, x = np.unravel_index(np.argmax(inner), inner.shape)
    return slice(y, y + size), slice(x, x + size)


def main(out: str) -> None:
    entry = default_model()
    refocuser = Refocuser.from_file(entry.path(), device="cpu")
    fields = [*z00_paths()[:3], next(p for p in in_focus_paths() if "__a03__" in p.name)]
    fig, axes = plt.subplots(len(fields), 2, figsize=(6, 2.3 * len(fields)))
    for row, path in zip(axes, fields, strict=True):
        image = read_plane(path).astype(np.float32)
        out_image = refocuser.predict(image)
        crop = _busiest(out_image)
        d_in, d_out = estimate_focus(image).distance_um, estimate_focus(out_image).distance_um
        name = path.name.split("_")[2] if path.name.startswith("00_") else "a03 (in focus)"
        _show(row[0], image[crop], f"real {name}: input, est. {d_in:.0f} um from focus")
        _show(row[1], out_image[crop], f"{entry.name}: est. {d_out:.0f} um")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1])
