"""``refocus focus``: how far from focus each image (and each tile) is; plate heat map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from refocus.cli.app import app, console, err_console

if TYPE_CHECKING:
    from refocus.focus.results import FileResult


@app.command("focus")
def focus_cmd(
    inputs: list[Path] = typer.Argument(
        ..., help="Image files (TIFF, PNG) or folders (searched below, e.g. a plate)."
    ),
    out: Path = typer.Option(Path("focus-qc"), "--out", help="Folder for the CSV, PNG, HTML."),
    tile: int = typer.Option(
        128, "--tile", help="Tile size of the map in pixels (64, 96 or 128: the calibrated ones)."
    ),
    well_pattern: str | None = typer.Option(
        None,
        "--well-pattern",
        help="Regex finding the well in a file name, with a (?P<well>...) group or "
        "(?P<row>...)(?P<col>...) groups (default: BBBC006 names).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace earlier outputs."),
) -> None:
    """Focus QC: distance from focus (um) and focus score per image and per tile.

    Writes focus.csv, focus_tiles.csv, plate.png (when wells are named) and focus.html.
    Exit code: 0 all judged, 1 some file failed, 2 bad input or option.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from refocus.errors import RefocusError
    from refocus.focus.plate import WellParser
    from refocus.focus.report import prepare_outputs, write_report
    from refocus.focus.results import find_inputs, measure_files
    from refocus.focus.templates import shipped_templates

    tiles = sorted(shipped_templates().signal)
    if tile not in tiles:
        raise RefocusError(None, f"--tile must be one of {', '.join(map(str, tiles))}")
    wells = WellParser(well_pattern)
    paths = find_inputs(inputs, exclude=out)
    prepare_outputs(out, overwrite)

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=len(paths) < 4,
    ) as progress:
        task = progress.add_task("judging focus", total=len(paths))

        def done(result: FileResult) -> None:
            if not result.ok:
                err_console.print(f"[red]failed[/] {result.error}", highlight=False, soft_wrap=True)
            progress.advance(task)

        results = measure_files(paths, wells, tile, on_file=done)
    written = write_report(results, out, overwrite)
    failed = _print_summary(results, out, written.note)
    if failed:
        raise SystemExit(1)


def _print_summary(results: list[FileResult], out: Path, note: str) -> int:
    """Each file's distance (for a few files), the heat-map note, the count; returns the
    number of files that failed."""
    judged = [r for r in results if r.ok]
    if len(results) <= 10:
        for row in (r.row() for r in judged):
            side = f" ({row['side']} side)" if row["side"] else ""
            console.print(
                f"{Path(row['file']).name}: {row['distance_um'] or '?'} um from focus{side}, "
                f"score {row['score']}",
                highlight=False,
                soft_wrap=True,
            )
    if note:
        console.print(note, highlight=False)
    failed = len(results) - len(judged)
    console.print(
        f"{len(judged)} of {len(results)} files judged -> {out}"
        + (f"; {failed} failed (listed above)" if failed else ""),
        highlight=False,
        soft_wrap=True,
    )
    return failed
