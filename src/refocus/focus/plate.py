"""Wells of a plate: names from file names, a heat map of focus by well, one HTML page.

BBBC006 names (``mcf-z-stacks-03212011_<well>_s<site>_w<ch><uuid>.tif`` and the sample's
``BBBC006_z_aligned__<well>__...png``) are understood as they are; other plates give a
regular expression with a ``well`` group (``B03``) or ``row`` and ``col`` groups. The heat
map shows each well's median distance from focus over its fields on the smallest standard
plate (6 .. 1536 wells) that holds every well found.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refocus.data.bbbc006 import ALIGNED_RE, PLANE_RE
from refocus.errors import RefocusError
from refocus.images import atomic_output

#: Standard plates as (rows, columns), smallest first.
PLATES = ((2, 3), (3, 4), (4, 6), (6, 8), (8, 12), (16, 24), (32, 48))
_WELL_RE = re.compile(r"^(?P<row>[A-Za-z]{1,2})0*(?P<col>\d{1,2})$")


def _row_index(letters: str) -> int:
    """A -> 0 ... Z -> 25, AA -> 26 ... (1536-well plates run to AF)."""
    index = 0
    for ch in letters.upper():
        index = index * 26 + ord(ch) - ord("A") + 1
    return index - 1


def _row_name(index: int) -> str:
    return chr(ord("A") + index) if index < 26 else "A" + chr(ord("A") + index - 26)


@dataclass(frozen=True)
class Well:
    """A well by position: ``row`` 0 = A, ``col`` 0 = column 1."""

    row: int
    col: int

    def __str__(self) -> str:
        return f"{_row_name(self.row)}{self.col + 1:02d}"


def parse_well(name: str) -> Well | None:
    """``a02``, ``B3``, ``AF48`` -> Well; anything else -> None."""
    match = _WELL_RE.match(name.strip())
    if match is None or int(match["col"]) < 1:
        return None
    return Well(_row_index(match["row"]), int(match["col"]) - 1)


class WellParser:
    """Finds the well in a file name: BBBC006 names, or a user's regular expression."""

    def __init__(self, pattern: str | None = None) -> None:
        if pattern is None:
            self.patterns = (PLANE_RE, ALIGNED_RE)
            return
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise RefocusError(
                None, f"--well-pattern {pattern!r} is not a valid regex ({exc})"
            ) from exc
        groups = set(compiled.groupindex)
        if "well" not in groups and not {"row", "col"} <= groups:
            raise RefocusError(
                None,
                f"--well-pattern {pattern!r} needs a (?P<well>...) group or (?P<row>...) "
                "and (?P<col>...) groups",
            )
        self.patterns = (compiled,)

    def well(self, path: str | Path) -> str | None:
        """The well of ``path`` as ``A02`` (from the file name), or None if none is found."""
        name = Path(path).name
        for pattern in self.patterns:
            match = pattern.search(name)
            if match is None:
                continue
            groups = match.groupdict()
            text = groups.get("well") or f"{groups.get('row') or ''}{groups.get('col') or ''}"
            well = parse_well(text)
            if well is not None:
                return str(well)
        return None


@dataclass(frozen=True)
class WellSummary:
    """The fields of one well: how many were judged, their median and worst distance."""

    well: str
    fields: int
    median_um: float
    max_um: float


def summarize_wells(measured: Sequence[tuple[str | None, float]]) -> list[WellSummary]:
    """One summary per named well from (well, distance) pairs (NaN: not judged), in plate
    order (A01, A02, ... B01, ...)."""
    by_well: dict[str, list[float]] = {}
    for well, distance in measured:
        if well is None:
            continue
        values = by_well.setdefault(well, [])
        if math.isfinite(distance):
            values.append(distance)
    positions = {w: parse_well(w) for w in by_well}
    order = sorted(by_well, key=lambda w: (positions[w].row, positions[w].col))  # type: ignore[union-attr]
    return [
        WellSummary(
            w,
            len(by_well[w]),
            float(np.median(by_well[w])) if by_well[w] else math.nan,
            float(np.max(by_well[w])) if by_well[w] else math.nan,
        )
        for w in order
    ]


def plate_shape(wells: Sequence[Well]) -> tuple[int, int]:
    """The smallest standard plate holding every well (rows, columns)."""
    rows = max(w.row for w in wells) + 1
    cols = max(w.col for w in wells) + 1
    for shape in PLATES:
        if rows <= shape[0] and cols <= shape[1]:
            return shape
    raise RefocusError(None, f"well {_row_name(rows - 1)}{cols:02d} lies outside a 1536-well plate")


def heat_map_png(summaries: Sequence[WellSummary], title: str = "") -> bytes:
    """PNG of the plate: each well's median distance from focus; empty wells grey."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    wells = [parse_well(s.well) for s in summaries]
    n_rows, n_cols = plate_shape([w for w in wells if w is not None])
    grid = np.full((n_rows, n_cols), np.nan)
    for s, w in zip(summaries, wells, strict=True):
        if w is not None:
            grid[w.row, w.col] = s.median_um
    fig, ax = plt.subplots(figsize=(max(4.0, 0.42 * n_cols + 2), max(2.5, 0.42 * n_rows + 1)))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    top = max(8.0, float(np.nanmax(grid)) if np.isfinite(grid).any() else 8.0)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=top)
    if n_rows * n_cols <= 384:
        for (i, j), value in np.ndenumerate(grid):
            if math.isfinite(value):
                shade = "white" if value < 0.6 * top else "black"
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color=shade)
    ax.set_xticks(range(n_cols), [str(c + 1) for c in range(n_cols)], fontsize=7)
    ax.set_yticks(range(n_rows), [_row_name(r) for r in range(n_rows)], fontsize=7)
    ax.tick_params(length=0)
    fig.colorbar(image, ax=ax, label="distance from focus (µm, well median)", shrink=0.9)
    ax.set_title(title or "Distance from focus by well", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def write_png(path: Path, png: bytes, overwrite: bool) -> Path:
    """Write PNG bytes atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(png)
    return path


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}"
    "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
)


def html_page(
    rows: Sequence[dict[str, str]],
    wells: Sequence[WellSummary],
    png: bytes | None,
    note: str = "",
) -> str:
    """One self-contained page: heat map (embedded PNG), a table per well and per file
    (``rows`` as in focus.csv)."""
    judged = [float(r["distance_um"]) for r in rows if r["distance_um"]]
    failed = sum(1 for r in rows if r["error"])
    summary = f"{len(rows)} files, {len(rows) - failed} judged, {failed} failed; " + (
        f"median distance {np.median(judged):.1f} µm" if judged else "no distances"
    )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Focus QC</title>",
        f"<style>{_STYLE}</style></head><body><h1>Focus QC</h1><p>{html.escape(summary)}</p>",
    ]
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    if png is not None:
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(f"<img alt='focus by well' src='data:image/png;base64,{encoded}'>")
    if wells:
        parts.append("<h2>Wells</h2>")
        parts.append(
            _table(
                ("well", "fields", "median distance (µm)", "max distance (µm)"),
                [(w.well, w.fields, f"{w.median_um:.1f}", f"{w.max_um:.1f}") for w in wells],
            )
        )
    columns = ("file", "well", "distance_um", "side", "score", "fit_rms", "error")
    parts.append("<h2>Files</h2>")
    parts.append(
        _table(
            ("file", "well", "distance (µm)", "side", "score", "fit rms", "error"),
            [[Path(r["file"]).name] + [r[c] for c in columns[1:]] for r in rows],
        )
    )
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html(path: Path, page: str, overwrite: bool) -> Path:
    """Write the page atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
