"""Focus QC of many files: the inputs, one row per file, and the CSV files.

A plate is hundreds of files; a damaged one is recorded with its one-line reason and the
others go on. Outputs are checked before any work (existing ones refused unless
``overwrite``) and written atomically, so an interrupted run never leaves a half CSV.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refocus.errors import RefocusError
from refocus.focus.estimate import FocusEstimate, estimate_focus
from refocus.focus.plate import WellParser
from refocus.images import IMAGE_SUFFIXES, atomic_output, prepare_destination, read_plane

FIELDS_CSV = "focus.csv"
TILES_CSV = "focus_tiles.csv"
FIELD_COLUMNS = ("file", "well", "distance_um", "side", "score", "fit_rms", "tiles", "error")
TILE_COLUMNS = ("file", "well", "row", "col", "y0", "x0", "size", "distance_um", "side", "score")


@dataclass(frozen=True)
class FileResult:
    """One input: its estimate, or ``error`` (one line) when it could not be judged."""

    path: Path
    well: str | None
    estimate: FocusEstimate | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.estimate is not None

    def row(self) -> dict[str, str]:
        """The file's line in focus.csv (empty cells where nothing was measured)."""
        e = self.estimate
        values: dict[str, object] = {"file": self.path, "well": self.well or "", "error": ""}
        if e is None:
            values["error"] = self.error or "failed"
        else:
            values |= {
                "distance_um": _num(e.distance_um, 2),
                "side": _side(e.side),
                "score": _num(e.score, 5),
                "fit_rms": _num(e.fit_rms, 4),
                "tiles": int(np.isfinite(e.tile_distance_um).sum()),
            }
        return {c: str(values.get(c, "")) for c in FIELD_COLUMNS}

    def tile_rows(self) -> Iterator[dict[str, str]]:
        """The file's lines in focus_tiles.csv, one per tile of the map."""
        e = self.estimate
        if e is None:
            return
        rows, cols = e.tile_distance_um.shape
        for i in range(rows):
            for j in range(cols):
                yield {
                    "file": str(self.path),
                    "well": self.well or "",
                    "row": str(i),
                    "col": str(j),
                    "y0": str(e.origin[0] + i * e.tile),
                    "x0": str(e.origin[1] + j * e.tile),
                    "size": str(e.tile),
                    "distance_um": _num(e.tile_distance_um[i, j], 2),
                    "side": _side(int(e.tile_side[i, j]) or None),
                    "score": _num(e.tile_score[i, j], 5),
                }


def _num(value: float, digits: int) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}f}"


def _side(side: int | None) -> str:
    return {-1: "-", 1: "+"}.get(side, "") if side is not None else ""


def find_inputs(
    inputs: Sequence[str | os.PathLike[str]], exclude: Path | None = None
) -> list[Path]:
    """Files as given, folders as every TIFF/PNG below them (a plate's nested layout),
    leaving out anything under ``exclude`` (the output folder: its heat map is no input).

    A missing input or a folder without images is an error before any work, so a typo is
    never taken for an empty plate.
    """
    skip = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            images = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and (skip is None or skip not in p.resolve().parents)
            )
            if not images:
                raise RefocusError(path, "folder holds no TIFF or PNG images")
            found.extend(images)
        else:
            raise RefocusError(path, "no such file or folder")
    if not found:
        raise RefocusError(None, "no input images given")
    return list(dict.fromkeys(p.resolve() for p in found))


def measure_file(path: Path, wells: WellParser, tile: int) -> FileResult:
    """Estimate one file; any failure becomes its one-line reason."""
    well = wells.well(path)
    try:
        estimate = estimate_focus(read_plane(path), tile)
    except RefocusError as exc:
        return FileResult(path, well, None, f"{path}: {exc.problem}".splitlines()[0])
    except Exception as exc:  # one odd file must not stop the plate
        return FileResult(path, well, None, f"{path}: failed ({type(exc).__name__}: {exc})")
    return FileResult(path, well, estimate)


def measure_files(
    paths: Sequence[Path],
    wells: WellParser,
    tile: int = 128,
    on_file: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """:func:`measure_file` for each path, in order; ``on_file`` hears of each result."""
    results = []
    for path in paths:
        result = measure_file(path, wells, tile)
        results.append(result)
        if on_file is not None:
            on_file(result)
    return results


def check_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse existing outputs (unless ``overwrite``) and unwritable folders, before work."""
    for path in paths:
        prepare_destination(path, overwrite)


def write_csv(
    path: Path, columns: Sequence[str], rows: Iterator[dict[str, str]], overwrite: bool
) -> Path:
    """Write rows as CSV atomically; returns the path."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)
    return path


def write_tables(results: Sequence[FileResult], out: Path, overwrite: bool) -> list[Path]:
    """focus.csv (one row per file) and focus_tiles.csv (one row per tile) in ``out``."""
    return [
        write_csv(out / FIELDS_CSV, FIELD_COLUMNS, (r.row() for r in results), overwrite),
        write_csv(
            out / TILES_CSV, TILE_COLUMNS, (t for r in results for t in r.tile_rows()), overwrite
        ),
    ]
