"""The evaluation report as one self-contained HTML page: run details, tables, figures.

Figures are written to ``figures/`` (:mod:`refocus.report.figures`) and also embedded in
``report.html`` as base64, so the page can be mailed or moved on its own while the PNGs
stay usable in slides and papers.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from refocus.data.bbbc006 import BEST_FOCUS_Z
from refocus.images import atomic_output
from refocus.report.figures import (
    METRIC_LABELS,
    Panel,
    plot_focus,
    plot_metrics_vs_z,
    plot_panels,
)


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
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<title>refocus evaluation</title><style>{CSS}</style></head><body>",
             "<h1>refocus evaluation</h1>", _meta_list(meta)]
    if summary.get("paired"):
        parts += _paired_section(summary, panels, figures, overwrite)
    if summary.get("trust"):
        parts += _trust_section(summary)
    if summary.get("unpaired"):
        parts += _unpaired_section(summary, unpaired_panels, figures, overwrite)
    parts.append("</body></html>")
    path = out / "report.html"
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path


METRICS_NOTE = (
    "<p class=note>PSNR and SSIM follow the CARE convention: the target is "
    "percentile-normalised (0.1–99.9%) and every output is affinely fitted to it by "
    "least squares first. SSIM on nuclei averages the SSIM map over the target's "
    "nuclei mask. Nuclei: Otsu + watershed on output and target; F1 counts one-to-one "
    "matches with IoU ≥ 0.5; count error is output minus target. Brackets: 95% "
    "bootstrap interval over fields. Bold: best of its row group.</p>")


def _deconvolution_note(meta: Mapping[str, Any]) -> str:
    """Which PSF the baselines got: on simulated data it is the exact blur (an upper bound)."""
    return ("<p class=note>Richardson–Lucy and Wiener deconvolve with the simulator's PSF "
            "for each plane (optics: "
            f"{html.escape(str(meta.get('psf_optics', 'refocus.simulate defaults')))}; "
            "RL iterations per z, chosen on validation fields: "
            f"{html.escape(str(meta.get('rl_iterations', '?')))}). On data simulated "
            "with those optics the PSF is exactly the blur applied, an advantage real "
            "data never gives them.</p>")


def _paired_section(summary: Mapping[str, Any], panels: Mapping[int | None, Sequence[Panel]],
                    figures: Path, overwrite: bool) -> list[str]:
    """Scores with a target: the notes, metrics vs z, the tables (each side of focus apart)
    and the example panels."""
    meta = summary.get("meta", {})
    target_z = int(meta.get("target_z", BEST_FOCUS_Z))
    records = summary["paired"]
    near = [r for r in records if r["z"] is None or r["z"] < target_z]
    far = [r for r in records if r["z"] is not None and r["z"] > target_z]
    parts = [METRICS_NOTE]
    if "richardson_lucy" in summary.get("methods", []):
        parts.append(_deconvolution_note(meta))
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
        trust = "; trust (0-1) below the error" if any(p.trust for p in group) else ""
        parts.append(_img(fig, "Fields" + ("" if z is None else f" at z={z}")
                          + ": outputs fitted to the target; |error| below each" + trust))
    return parts


TRUST_NOTE = (
    "<p class=note>Trust (0–1, higher = more trustworthy) combines two signals "
    "(<code>refocus.inference.trust</code>): whether the output, blurred with the PSF "
    "that explains the input, gives back the input within the camera's noise, and how "
    "much the model's answers to the rotated and flipped input disagree "
    "({flips}). Tile ρ: Spearman correlation, per image, of per-tile (32×32) distrust "
    "with the tile's mean absolute error (median over images); image ρ: Spearman over all "
    "scored images of distrust (1 − score) with the mean absolute error over the "
    "target's range. 1 = trust ranks the errors perfectly. The trust maps are under the "
    "error maps in the example fields.</p>")


def _trust_section(summary: Mapping[str, Any]) -> list[str]:
    """How well the trust maps predicted the errors: per method, then per z."""
    flips = summary.get("meta", {}).get("trust_flips")
    said = f"{flips} prediction(s) per image" if flips else "see the run details"
    rows = ["<table><thead><tr><th>method</th><th>images</th><th>mean trust</th>"
            "<th>tile ρ (median)</th><th>image ρ</th><th>unpaired trust</th></tr></thead>"
            "<tbody>"]
    for method, r in summary["trust"].items():
        cells = [html.escape(method), str(r.get("images", 0))]
        cells += [_num(r.get(k)) for k in ("trust", "tile_rho", "image_rho", "unpaired_trust")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rows.append("</tbody></table>")
    per_z = ["<table><thead><tr><th>z</th><th>method</th><th>trust</th><th>tile ρ</th>"
             "</tr></thead><tbody>"]
    for r in summary.get("paired", []):
        if "trust" in r:
            z = "–" if r["z"] is None else str(r["z"])
            per_z.append(f"<tr><td>{z}</td><td>{html.escape(r['method'])}</td>"
                         f"<td>{_fmt(r['trust'])}</td><td>{_fmt(r.get('trust_tile_rho'), 2)}"
                         "</td></tr>")
    per_z.append("</tbody></table>")
    return ["<h2>Trust: does it say where the output is wrong?</h2>",
            TRUST_NOTE.format(flips=html.escape(said)), "".join(rows), "".join(per_z)]


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _unpaired_section(summary: Mapping[str, Any], unpaired_panels: Sequence[Panel],
                      figures: Path, overwrite: bool) -> list[str]:
    """Images without a target: only whether outputs got sharper, never whether right."""
    focus = summary["unpaired"]
    reference = summary.get("target_focus")
    parts = ["<h2>Unpaired images: no-reference focus score</h2>",
             "<p class=note>Variance of the Laplacian over the image variance (after a "
             "1-pixel Gaussian); higher is sharper. No target exists, so this says "
             "whether an output is sharp, not whether it is right.</p>",
             _focus_table(focus, reference),
             _img(plot_focus(focus, figures / "focus_unpaired.png", reference, overwrite),
                  "Focus score before and after")]
    if unpaired_panels:
        parts.append(_img(plot_panels(unpaired_panels, figures / "panels_unpaired.png",
                                      overwrite),
                          "Unpaired images (each percentile-normalised on its own)"))
    return parts


def _meta_list(meta: Mapping[str, Any]) -> str:
    """Run details; the per-candidate RL tuning scores stay in metrics.json."""
    items = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>"
                    for k, v in meta.items() if k != "rl_tuning_psnr")
    return f"<dl>{items}</dl>"
