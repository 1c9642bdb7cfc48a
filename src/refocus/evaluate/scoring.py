"""Scores: every method's output against the same target, per field and z, then the mean
and bootstrap 95% interval over fields (:mod:`refocus.metrics` does the measuring).

Paired fields get the full metrics; unpaired images only the no-reference focus score.
The summary also holds each method's paired difference to identity on the same fields.
Methods that can say how far their output can be trusted (the model,
:class:`~refocus.evaluate.methods.ModelMethod`) also get each output's trust score, the
Spearman correlation of its per-tile (32x32) distrust with the per-tile absolute error,
and, over all its outputs, how well the scores rank the images by their error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from refocus.evaluate.fields import EvalField
from refocus.evaluate.methods import Method, restore_all
from refocus.inference.trust import TILE, signal_range, spearman, tile_means
from refocus.metrics import bootstrap_ci, focus_score, score_field, segment_nuclei
from refocus.report import Panel

SUMMARY_METRICS = ("psnr", "ssim", "fg_ssim", "nuclei_f1", "count_error")


def score_fields(fields: Sequence[EvalField], methods: Mapping[str, Method],
                 panel_names: Iterable[str] = (), progress: bool = False
                 ) -> tuple[list[dict[str, Any]], dict[int | None, list[Panel]]]:
    """Run every method on every paired field and score it: (csv rows, panels by z).

    Fields named in ``panel_names`` keep their images for the report's panels.
    """
    missing = [f.name for f in fields if f.target is None]
    if missing:
        raise ValueError(f"fields without a target: {missing}; score them with focus_rows")
    keep = set(panel_names)
    rows: list[dict[str, Any]] = []
    panels: dict[tuple[str, int | None], Panel] = {}
    labels: dict[int, np.ndarray] = {}  # fields at several z share one target array
    for f, name, output in restore_all(fields, methods, progress, "scoring"):
        if id(f.target) not in labels:
            labels[id(f.target)] = segment_nuclei(f.target)
        scores = score_field(f.target, output, labels[id(f.target)])
        row = {"field": f.name, "z": f.z, "method": name, **scores.to_dict()}
        trust = _trust(methods[name], f, output, row)
        rows.append(row)
        if f.name in keep:
            panel = panels.setdefault((f.name, f.z), Panel(f.name, f.z, f.input,
                                                           target=f.target))
            panel.outputs[name] = output
            if trust is not None:
                panel.trust[name] = trust
    by_z: dict[int | None, list[Panel]] = {}
    for (_, z), panel in sorted(panels.items(), key=lambda kv: (kv[0][1] is None, kv[0][1] or 0,
                                                                 kv[0][0])):
        by_z.setdefault(z, []).append(panel)
    return rows, by_z


def _trust(method: Method, f: EvalField, output: np.ndarray, row: dict[str, Any]
           ) -> np.ndarray | None:
    """Add the output's trust score (and, with a target, the per-tile rank correlation of
    distrust with error and the relative error) to ``row``; returns the trust map."""
    assess = getattr(method, "trust", None)
    trust = assess(f.input, output) if assess is not None else None
    if trust is None:
        return None
    row["trust"] = trust.score
    if f.target is not None:
        error = np.abs(np.asarray(output, np.float64) - f.target)
        row["trust_tile_rho"] = spearman(1 - tile_means(trust.map, TILE),
                                         tile_means(error, TILE))
        row["rel_mae"] = float(error.mean() / signal_range(f.target))
    return trust.map


#: Hears every (field, method name, output) of the unpaired images, e.g. to save them.
OutputSink = Callable[[EvalField, str, np.ndarray], None]


def focus_rows(fields: Sequence[EvalField], methods: Mapping[str, Method],
               panel_names: Iterable[str] = (), progress: bool = False,
               on_output: OutputSink | None = None
               ) -> tuple[list[dict[str, Any]], list[Panel]]:
    """No-reference focus score of every method's output for unpaired fields."""
    keep = set(panel_names)
    rows: list[dict[str, Any]] = []
    panels: dict[str, Panel] = {}
    for f, name, output in restore_all(fields, methods, progress, "unpaired"):
        if on_output is not None:
            on_output(f, name, output)
        row = {"field": f.name, "z": f.z, "method": name, "focus": focus_score(output)}
        trust = _trust(methods[name], f, output, row)
        rows.append(row)
        if f.name in keep:
            panel = panels.setdefault(f.name, Panel(f.name, f.z, f.input))
            panel.outputs[name] = output
            if trust is not None:
                panel.trust[name] = trust
    return rows, list(panels.values())


def _ci(values: Sequence[float], seed: int) -> dict[str, float | int]:
    """Mean and bootstrap 95% interval as plain data (for metrics.json)."""
    return bootstrap_ci(values, seed=seed).to_dict()


def summarize(rows: Sequence[Mapping[str, Any]], unpaired: Sequence[Mapping[str, Any]] = (),
              target_focus: Sequence[float] = (), meta: Mapping[str, Any] | None = None,
              seed: int = 0) -> dict[str, Any]:
    """Per (z, method): mean and bootstrap 95% interval of each metric over fields, and the
    paired difference to identity on the same fields (the honest "does it help" number)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    zs = sorted({r["z"] for r in rows}, key=lambda z: (z is None, z))
    by_key = {(r["field"], r["z"], r["method"]): r for r in rows}
    paired = []
    for z in zs:
        for method in methods:
            group = [r for r in rows if r["z"] == z and r["method"] == method]
            if not group:
                continue
            record: dict[str, Any] = {"z": z, "method": method}
            record.update({m: _ci([r[m] for r in group], seed) for m in SUMMARY_METRICS})
            base = [(r, by_key.get((r["field"], z, "identity"))) for r in group]
            base = [(r, b) for r, b in base if b is not None]
            if method != "identity" and base:
                record["delta_vs_identity"] = {
                    m: _ci([r[m] - b[m] for r, b in base], seed) for m in ("psnr", "ssim")}
            for key in ("trust", "trust_tile_rho"):
                if any(key in r for r in group):
                    record[key] = _ci([r[key] for r in group if key in r], seed)
            paired.append(record)
    focus = [{"method": m, "focus": _ci([r["focus"] for r in unpaired if r["method"] == m], seed)}
             for m in dict.fromkeys(r["method"] for r in unpaired)]
    summary: dict[str, Any] = {"meta": dict(meta or {}), "methods": methods, "paired": paired,
                               "unpaired": focus}
    if len(target_focus):
        summary["target_focus"] = _ci(target_focus, seed)
    trust = trust_summary(rows, unpaired)
    if trust:
        summary["trust"] = trust
    return summary


def trust_summary(rows: Sequence[Mapping[str, Any]], unpaired: Sequence[Mapping[str, Any]] = ()
                  ) -> dict[str, dict[str, Any]]:
    """Per method with trust scores: how well trust predicts error. ``tile_rho``: the
    median over images of the per-tile Spearman correlation (distrust vs absolute error);
    ``image_rho``: Spearman over all its scored images of distrust (1 - score) vs relative
    mean absolute error; ``unpaired_trust``: mean score of the unpaired images."""
    out: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r["method"] for r in [*rows, *unpaired] if "trust" in r):
        mine = [r for r in rows if r["method"] == method and "trust" in r]
        record: dict[str, Any] = {"images": len(mine)}
        if mine:
            record["tile_rho"] = float(np.nanmedian([r["trust_tile_rho"] for r in mine]))
            record["image_rho"] = (spearman([1 - r["trust"] for r in mine],
                                            [r["rel_mae"] for r in mine])
                                   if len(mine) > 2 else None)
            record["trust"] = float(np.mean([r["trust"] for r in mine]))
        alone = [r["trust"] for r in unpaired if r["method"] == method and "trust" in r]
        if alone:
            record["unpaired_trust"] = float(np.mean(alone))
        out[method] = record
    return out
