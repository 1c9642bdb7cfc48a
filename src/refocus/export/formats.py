"""The export formats: each exporter registers itself with one line in its own file.

The registry lives here rather than in the package ``__init__`` because the exporters
register into it and the ``__init__`` re-exports them: a sibling keeps the import graph
acyclic. ``refocus export --format`` reads its choices from :data:`EXPORT_FORMATS`, and
installed packages can add formats through ``refocus.plugins`` entry points.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from refocus.registry import Registry

if TYPE_CHECKING:
    from refocus.export.check import ExportReport, Reference
    from refocus.modelfile import LoadedModel


class Exporter(Protocol):
    """Write ``loaded`` to ``out``, checked against ``reference``; nothing is left at ``out``
    unless the check passes."""

    def __call__(
        self, loaded: LoadedModel, out: Path, reference: Reference, *, overwrite: bool = False
    ) -> ExportReport: ...


EXPORT_FORMATS: Registry[Exporter] = Registry("export format", package="refocus.export")
