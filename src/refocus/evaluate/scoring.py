"""Scores: every method's output against the same target, per field and z, then the mean
and bootstrap 95% interval over fields (:mod:`refocus.metrics` does the measuring).

Paired fields get the full metrics; unpaired images only the no-reference focus score.
The summary also holds each method's paired difference to identity on the same fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from refocus.evaluate.fields import EvalField
from refocus.evaluate.methods import Method, restore_all
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
        rows.append({"field": f.name, "z": f.z, "method": name, **scores.to_dict()})
        if f.name in keep:
            panels.setdefault((f.name, f.z), Panel(f.name, f.z, f.input, target=f.target)
                              ).outputs[name] = output
    by_z: dict[int | None, list[Panel]] = {}
    for (_, z), panel in sorted(panels.items(), key=lambda kv: (kv[0][1] is None, kv[0][1] or 0,
                                                                 kv[0][0])):
        by_z.setdefault(z, []).append(panel)
    return rows, by_z


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
        rows.append({"field": f.name, "z": f.z, "method": name, "focus": focus_score(output)})
        if f.name in keep:
            panels.setdefault(f.name, Panel(f.name, f.z, f.input)).outputs[name] = output
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
            paired.append(record)
    focus = [{"method": m, "focus": _ci([r["focus"] for r in unpaired if r["method"] == m], seed)}
             for m in dict.fromkeys(r["method"] for r in unpaired)]
    summary: dict[str, Any] = {"meta": dict(meta or {}), "methods": methods, "paired": paired,
                               "unpaired": focus}
    if len(target_focus):
        summary["target_focus"] = _ci(target_focus, seed)
    return summary
