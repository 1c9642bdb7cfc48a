"""The outputs of one focus QC run: CSV tables, the plate heat map and the HTML page.

All output paths are checked before any file is measured, so a run that would clobber
an earlier result (without ``overwrite``) or cannot write stops before spending time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from refocus.focus.plate import heat_map_png, html_page, summarize_wells, write_html, write_png
from refocus.focus.results import FIELDS_CSV, TILES_CSV, FileResult, check_outputs, write_tables

HEAT_MAP = "plate.png"
PAGE = "focus.html"


@dataclass(frozen=True)
class Written:
    """What a run wrote; ``note`` says why there is no heat map when there is none."""

    paths: list[Path]
    note: str = ""


def output_paths(out: Path) -> list[Path]:
    """Every file a run may write into ``out``."""
    return [out / FIELDS_CSV, out / TILES_CSV, out / HEAT_MAP, out / PAGE]


def prepare_outputs(out: Path, overwrite: bool) -> None:
    """Refuse a run whose outputs exist already (unless ``overwrite``), before any work."""
    check_outputs(output_paths(out), overwrite)


def write_report(results: Sequence[FileResult], out: Path, overwrite: bool) -> Written:
    """focus.csv, focus_tiles.csv, and (when wells are named) plate.png; focus.html always.

    A stale plate.png from an earlier run with wells is removed under ``overwrite`` so the
    folder never shows a heat map of another plate.
    """
    paths = write_tables(results, out, overwrite)
    wells = summarize_wells(
        [(r.well, r.estimate.distance_um if r.estimate else float("nan")) for r in results]
    )
    png, note = None, ""
    if wells:
        png = heat_map_png(wells, f"Distance from focus by well ({len(results)} files)")
        paths.append(write_png(out / HEAT_MAP, png, overwrite))
    else:
        note = "No well names recognised in the file names (see --well-pattern): no heat map."
        (out / HEAT_MAP).unlink(missing_ok=True)
    page = html_page([r.row() for r in results], wells, png, note)
    paths.append(write_html(out / PAGE, page, overwrite))
    return Written(paths, note)
