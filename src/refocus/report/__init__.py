"""The evaluation report: figures (:mod:`refocus.report.figures`) and the self-contained
HTML page (:mod:`refocus.report.html`)."""

from refocus.report.figures import (
    METRIC_LABELS,
    Panel,
    method_color,
    plot_focus,
    plot_metrics_vs_z,
    plot_panels,
)
from refocus.report.html import render_report

__all__ = [
    "METRIC_LABELS",
    "Panel",
    "method_color",
    "plot_focus",
    "plot_metrics_vs_z",
    "plot_panels",
    "render_report",
]
