"""The report's PNG figures (matplotlib, Agg): metrics against z, image panels, focus bars.

Restored images are shown as the metrics see them: fitted to the normalised target on one
grey scale, so a brighter or darker method does not look better or worse than it scores.
The figures stand on their own (slides, papers); :mod:`refocus.report.html` embeds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refocus.images import atomic_output
from refocus.metrics import affine_fit, normalize_target

METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "fg_ssim": "SSIM on nuclei",
    "nuclei_f1": "nuclei F1 (IoU≥0.5)",
    "count_error": "nuclei count error",
}
PLOTTED_METRICS = ("psnr", "ssim", "fg_ssim", "nuclei_f1")
METHOD_COLORS = {
    "identity": "#7f7f7f",
    "richardson_lucy": "#1f77b4",
    "wiener": "#2ca02c",
    "model": "#d62728",
}
EXTRA_COLORS = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
CROP = 192


@dataclass
class Panel:
    """One field's images for the side-by-side figure: its input, target and each method's
    output (``target`` is ``None`` for an unpaired image), and the trust map of each
    method that gives one."""

    name: str
    z: int | None
    input: np.ndarray
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    target: np.ndarray | None = None
    trust: dict[str, np.ndarray] = field(default_factory=dict)


def method_color(method: str, methods: Sequence[str]) -> str:
    """A stable colour per method; extra models take the spare colours in order."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    extras = [m for m in methods if m not in METHOD_COLORS]
    return EXTRA_COLORS[extras.index(method) % len(EXTRA_COLORS)] if method in extras else "k"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, overwrite: bool) -> Path:
    plt = _pyplot()
    with atomic_output(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _side(z: int, target_z: int) -> str:
    return "below" if z < target_z else "above"


def plot_metrics_vs_z(records: Sequence[Mapping[str, Any]], path: Path, target_z: int,
                      overwrite: bool = False) -> Path:
    """Mean and 95% interval of each metric against input z, one line per method.

    Points on the two sides of focus are not joined: the far side (z > target) is a separate
    test of generalisation, shaded, not a continuation of the near side's curve.
    """
    plt = _pyplot()
    methods = list(dict.fromkeys(r["method"] for r in records))
    zs = sorted({r["z"] for r in records})
    fig, grid = plt.subplots(2, 2, figsize=(10, 7.2))
    axes = grid.ravel()
    offsets = np.linspace(-0.3, 0.3, len(methods)) if len(methods) > 1 else [0.0]
    for ax, metric in zip(axes, PLOTTED_METRICS, strict=True):
        if any(z > target_z for z in zs):
            ax.axvspan(target_z, max(zs) + 1.5, color="0.93", zorder=0)
        ax.axvline(target_z, color="0.5", ls=":", lw=1)
        for method, dx in zip(methods, offsets, strict=True):
            rows = sorted((r for r in records if r["method"] == method), key=lambda r: r["z"])
            color = method_color(method, methods)
            label: str | None = method
            for side in ("below", "above"):
                pts = [r for r in rows if _side(r["z"], target_z) == side]
                if not pts:
                    continue
                x = np.array([r["z"] for r in pts]) + dx
                mean = np.array([r[metric]["mean"] for r in pts])
                err = np.array([[r[metric]["mean"] - r[metric]["low"] for r in pts],
                                [r[metric]["high"] - r[metric]["mean"] for r in pts]])
                ax.errorbar(x, mean, yerr=err, color=color, marker="o", ms=4, capsize=2,
                            lw=1.5, label=label)
                label = None
        ax.set_xlabel(f"input plane z (focus at z={target_z})")
        ax.set_title(METRIC_LABELS[metric])
        ax.set_xlim(min(zs) - 1.5, max(max(zs), target_z) + 1.5)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(methods), fontsize=9,
               frameon=False)
    if any(z > target_z for z in zs):
        for ax in axes:  # at the shaded band's left edge, clear of the far-side points
            ax.text(target_z + 0.7, 0.97, "other side\nof focus", ha="left", va="top",
                    transform=ax.get_xaxis_transform(), fontsize=8, color="0.35")
    fig.suptitle("Restoration quality vs defocus (mean and 95% bootstrap interval over fields)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path, overwrite)


def _crop_window(reference: np.ndarray, size: int = CROP) -> tuple[slice, slice]:
    """The size x size window holding the most foreground, so panels show nuclei, not void."""
    h, w = reference.shape
    ch, cw = min(size, h), min(size, w)
    norm = normalize_target(reference)
    fg = (norm > 0.3).astype(np.float64)
    integral = np.pad(fg.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (integral[ch:, cw:] - integral[:-ch, cw:] - integral[ch:, :-cw]
            + integral[:-ch, :-cw])
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return slice(y, y + ch), slice(x, x + cw)


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else f"{name[:limit - 9]}…{name[-8:]}"


def plot_panels(panels: Sequence[Panel], path: Path, overwrite: bool = False,
                crop: int = CROP) -> Path:
    """Per field: input | each method | target on one grey scale, each one's |error|, and
    the trust map of each method that has one, beneath its error.

    Every image is fitted to the normalised target exactly as the metrics fit it; errors share
    one colour scale so columns can be compared at a glance, trust maps another (0..1).
    """
    plt = _pyplot()
    paired = all(p.target is not None for p in panels)
    methods = [m for m in panels[0].outputs if m != "identity"]
    cols = ["input", *methods] + (["target"] if paired else [])
    trusted = any(p.trust for p in panels)
    rows_per = (2 if paired else 1) + trusted
    fig, axes = plt.subplots(rows_per * len(panels), len(cols),
                             figsize=(2.3 * len(cols), 2.45 * rows_per * len(panels)),
                             squeeze=False)
    for i, panel in enumerate(panels):
        window = _crop_window(panel.target if paired else panel.input, crop)
        images = {"input": panel.input, **{m: panel.outputs[m] for m in methods}}
        ref = normalize_target(panel.target) if paired else None  # once per panel
        for j, col in enumerate(cols):
            ax = axes[rows_per * i, j]
            if paired:
                shown = ref if col == "target" else affine_fit(images[col], ref)
            else:
                shown = normalize_target(images[col], 1.0, 99.8)
            ax.imshow(shown[window], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            title = col if i == 0 else ""
            ax.set_title(title, fontsize=9)
            if j == 0:
                z = "" if panel.z is None else f"\nz={panel.z}"
                ax.set_ylabel(f"{_short(panel.name)}{z}", fontsize=8)
            if paired:
                eax = axes[rows_per * i + 1, j]
                if col == "target":
                    eax.axis("off")
                    cax = eax.inset_axes((0.05, 0.05, 0.1, 0.9))
                else:
                    err_im = eax.imshow(np.abs(shown - ref)[window], cmap="magma", vmin=0,
                                        vmax=0.5, interpolation="nearest")
                    if j == 0:
                        eax.set_ylabel("|error|", fontsize=8)
        if paired:  # the empty slot under the target holds the error scale
            fig.colorbar(err_im, cax=cax).set_label("|error|", fontsize=8)
            cax.tick_params(labelsize=7)
        if trusted:
            _trust_row(fig, axes[rows_per * (i + 1) - 1], panel, cols, window)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return _save(fig, path, overwrite)


def _trust_row(fig: Any, row: Sequence[Any], panel: Panel, cols: Sequence[str],
               window: tuple[slice, slice]) -> None:
    """The trust maps of one panel under their methods' columns (viridis, 0..1: bright =
    trusted), the scale in the last empty slot."""
    shown = None
    for ax, col in zip(row, cols, strict=True):
        if col in panel.trust:
            shown = ax.imshow(panel.trust[col][window], cmap="viridis", vmin=0, vmax=1,
                              interpolation="nearest")
        elif ax is row[0]:
            ax.set_frame_on(False)  # keeps the row's label
        else:
            ax.axis("off")
    row[0].set_ylabel("trust", fontsize=8)
    if shown is None:
        return
    if cols[-1] in panel.trust:
        bar = fig.colorbar(shown, ax=row[-1], fraction=0.046)
    else:
        cax = row[-1].inset_axes((0.05, 0.05, 0.1, 0.9))
        bar = fig.colorbar(shown, cax=cax)
    bar.set_label("trust", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def plot_focus(records: Sequence[Mapping[str, Any]], path: Path,
               reference: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Bar chart of the no-reference focus score per method for unpaired images."""
    plt = _pyplot()
    methods = [r["method"] for r in records]
    fig, ax = plt.subplots(figsize=(1.3 * len(methods) + 2.5, 3.4))
    means = [r["focus"]["mean"] for r in records]
    err = [[r["focus"]["mean"] - r["focus"]["low"] for r in records],
           [r["focus"]["high"] - r["focus"]["mean"] for r in records]]
    ax.bar(methods, means, yerr=err, capsize=3,
           color=[method_color(m, methods) for m in methods])
    if reference is not None:
        ax.axhline(reference["mean"], color="k", ls="--", lw=1,
                   label=f"in-focus targets ({reference['n']} fields)")
        ax.legend(fontsize=8)
    ax.set_ylabel("focus score (var. of Laplacian / var.)")
    n = records[0]["focus"]["n"] if records else 0
    ax.set_title(f"Unpaired images: sharpness before and after ({n} images)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, overwrite)
