"""The evaluation report: PNG figures (matplotlib, Agg) and one self-contained HTML page.

Figures are written to ``figures/`` and also embedded in ``report.html`` as base64, so the
page can be mailed or moved on its own while the PNGs stay usable in slides and papers.
Restored images are shown as the metrics see them: fitted to the normalised target on one
grey scale, so a brighter or darker method does not look better or worse than it scores.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refocus.data.bbbc006 import BEST_FOCUS_Z
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
    output (``target`` is ``None`` for an unpaired image)."""

    name: str
    z: int | None
    input: np.ndarray
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    target: np.ndarray | None = None


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
    """Per field: input | each method | target on one grey scale, and each one's |error|.

    Every image is fitted to the normalised target exactly as the metrics fit it; errors share
    one colour scale so columns can be compared at a glance.
    """
    plt = _pyplot()
    paired = all(p.target is not None for p in panels)
    methods = [m for m in panels[0].outputs if m != "identity"]
    cols = ["input", *methods] + (["target"] if paired else [])
    rows_per = 2 if paired else 1
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
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return _save(fig, path, overwrite)


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


def _fmt(stat: Mapping[str, Any] | None, digits: int = 3) -> str:
    if stat is None or stat.get("n", 0) == 0:
        return "–"
    mean, low, high = stat["mean"], stat["low"], stat["high"]
    if stat["n"] == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} <span class=ci>[{low:.{digits}f}, {high:.{digits}f}]</span>"


_DIGITS = {"psnr": 2, "ssim": 3, "fg_ssim": 3, "nuclei_f1": 3, "count_error": 1}


def _table(records: Sequence[Mapping[str, Any]]) -> str:
    """One row per (z, method); the best mean of each z and metric in bold."""
    metrics = [m for m in METRIC_LABELS if any(m in r for r in records)]
    head = ["z", "method", "fields", *[METRIC_LABELS[m] for m in metrics], "ΔPSNR vs identity"]
    out = ["<table><thead><tr>", *[f"<th>{html.escape(h)}</th>" for h in head],
           "</tr></thead><tbody>"]
    for z in sorted({r["z"] for r in records}, key=lambda v: (v is None, v)):
        group = [r for r in records if r["z"] == z]
        best = {}
        for m in metrics:
            vals = [(abs(r[m]["mean"]) if m == "count_error" else -r[m]["mean"], i)
                    for i, r in enumerate(group) if r[m]["n"]]
            best[m] = min(vals)[1] if vals else None
        for i, r in enumerate(group):
            cells = ["–" if z is None else str(z), html.escape(r["method"]),
                     str(r["psnr"]["n"])]
            for m in metrics:
                text = _fmt(r[m], _DIGITS[m])
                cells.append(f"<b>{text}</b>" if best[m] == i else text)
            delta = r.get("delta_vs_identity", {}).get("psnr")
            cells.append("" if r["method"] == "identity" else _fmt(delta, 2))
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _focus_table(records: Sequence[Mapping[str, Any]],
                 reference: Mapping[str, Any] | None) -> str:
    rows = ["<table><thead><tr><th>method</th><th>images</th><th>focus score</th></tr></thead>"
            "<tbody>"]
    for r in records:
        rows.append(f"<tr><td>{html.escape(r['method'])}</td><td>{r['focus']['n']}</td>"
                    f"<td>{_fmt(r['focus'], 4)}</td></tr>")
    if reference is not None:
        rows.append(f"<tr><td><i>in-focus targets</i></td><td>{reference['n']}</td>"
                    f"<td>{_fmt(reference, 4)}</td></tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(alt)} (<code>figures/{html.escape(path.name)}</code>)"
            "</figcaption></figure>")


CSS = """
body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td:nth-child(2){text-align:left}
.ci{color:#777;font-size:0.85em} img{max-width:100%} figure{margin:1em 0}
figcaption{color:#555;font-size:0.85em} .note{color:#555}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 1em} dt{font-weight:bold}
"""


def render_report(out: str | Path, summary: Mapping[str, Any],
                  panels: Mapping[int | None, Sequence[Panel]],
                  unpaired_panels: Sequence[Panel] = (), overwrite: bool = False) -> Path:
    """Write ``figures/*.png`` and ``report.html`` under ``out``; returns the HTML's path.

    ``summary`` is what :func:`refocus.evaluate.summarize` returns (records per z and method,
    unpaired focus records, run details); ``panels`` maps each input z to a few fields.
    """
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    meta = summary.get("meta", {})
    target_z = int(meta.get("target_z", BEST_FOCUS_Z))
    records = summary.get("paired", [])
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<title>refocus evaluation</title><style>{CSS}</style></head><body>",
             "<h1>refocus evaluation</h1>", _meta_list(meta)]
    if records:
        near = [r for r in records if r["z"] is None or r["z"] < target_z]
        far = [r for r in records if r["z"] is not None and r["z"] > target_z]
        parts.append(
            "<p class=note>PSNR and SSIM follow the CARE convention: the target is "
            "percentile-normalised (0.1–99.9%) and every output is affinely fitted to it by "
            "least squares first. SSIM on nuclei averages the SSIM map over the target's "
            "nuclei mask. Nuclei: Otsu + watershed on output and target; F1 counts one-to-one "
            "matches with IoU ≥ 0.5; count error is output minus target. Brackets: 95% "
            "bootstrap interval over fields. Bold: best of its row group.</p>")
        if "richardson_lucy" in summary.get("methods", []):
            parts.append(
                "<p class=note>Richardson–Lucy and Wiener deconvolve with the simulator's PSF "
                "for each plane (optics: "
                f"{html.escape(str(meta.get('psf_optics', 'refocus.simulate defaults')))}; "
                "RL iterations per z, chosen on validation fields: "
                f"{html.escape(str(meta.get('rl_iterations', '?')))}). On data simulated "
                "with those optics the PSF is exactly the blur applied, an advantage real "
                "data never gives them.</p>")
        if any(r["z"] is not None for r in records):
            plot = plot_metrics_vs_z([r for r in records if r["z"] is not None],
                                     figures / "metrics_vs_z.png", target_z, overwrite)
            parts.append(_img(plot, "Metrics vs input plane"))
        if near:
            parts += [f"<h2>Defocused inputs (z &lt; {target_z})</h2>", _table(near)]
        if far:
            trained = meta.get("model_trained_on_z")
            seen = f" (this model was trained on z = {trained})" if trained else ""
            parts += [f"<h2>The other side of focus (z &gt; {target_z})</h2>",
                      "<p class=note>Planes beyond the focus blur differently (the defocus "
                      "sign flips and the aberrations differ); kept apart because a model "
                      f"trained on one side has not seen them{html.escape(seen)}.</p>",
                      _table(far)]
        parts.append("<h2>Example fields</h2>")
        for z, group in panels.items():
            if not group:
                continue
            tag = "pairs" if z is None else f"z{z:02d}"
            fig = plot_panels(group, figures / f"panels_{tag}.png", overwrite)
            parts.append(_img(fig, "Fields" + ("" if z is None else f" at z={z}")
                              + ": outputs fitted to the target; |error| below each"))
    focus = summary.get("unpaired", [])
    if focus:
        reference = summary.get("target_focus")
        parts += ["<h2>Unpaired images: no-reference focus score</h2>",
                  "<p class=note>Variance of the Laplacian over the image variance (after a "
                  "1-pixel Gaussian); higher is sharper. No target exists, so this says "
                  "whether an output is sharp, not whether it is right.</p>",
                  _focus_table(focus, reference)]
        parts.append(_img(plot_focus(focus, figures / "focus_unpaired.png", reference,
                                     overwrite), "Focus score before and after"))
        if unpaired_panels:
            parts.append(_img(plot_panels(unpaired_panels, figures / "panels_unpaired.png",
                                          overwrite), "Unpaired images (each percentile-"
                                                      "normalised on its own)"))
    parts.append("</body></html>")
    path = out / "report.html"
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path


def _meta_list(meta: Mapping[str, Any]) -> str:
    """Run details; the per-candidate RL tuning scores stay in metrics.json."""
    items = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>"
                    for k, v in meta.items() if k != "rl_tuning_psnr")
    return f"<dl>{items}</dl>"
