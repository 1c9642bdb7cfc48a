"""The evaluation report: figures and the self-contained HTML page."""

from refocus.report.html import *  # noqa: F403  (split into modules by issue 12)
