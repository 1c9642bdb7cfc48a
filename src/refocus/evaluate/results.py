"""An evaluation's files: ``metrics.csv``, ``unpaired.csv``, ``metrics.json``, then the
report (:mod:`refocus.report`); and the refusal to overwrite an earlier run's, made
before any work."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refocus.errors import RefocusError
from refocus.images import atomic_output
from refocus.report import Panel, render_report

CSV_COLUMNS = ("field", "z", "method", "psnr", "ssim", "fg_ssim", "nuclei_target",
               "nuclei_pred", "count_error", "nuclei_f1", "focus", "rel_mae", "trust",
               "trust_tile_rho")
UNPAIRED_COLUMNS = ("field", "z", "method", "focus", "trust")
OUTPUT_NAMES = ("metrics.csv", "unpaired.csv", "metrics.json", "report.html")


@dataclass
class Evaluation:
    """What a run produced: one row per field x z x method, the summary, and the files."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    unpaired_rows: list[dict[str, Any]] = field(default_factory=list)


def _clean(value: Any) -> Any:
    """JSON without NaN/Infinity (not valid JSON): non-finite numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return _clean(value.item())
    return value


def check_outputs(out: str | Path, overwrite: bool) -> Path:
    """Refuse an output folder holding an earlier run unless ``overwrite`` (before any work)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RefocusError(out, "exists and is not a folder")
    if not overwrite:
        for name in OUTPUT_NAMES:
            if (out / name).exists():
                raise RefocusError(out / name, "exists already (use --overwrite to replace it)")
    return out


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
              overwrite: bool = False) -> Path:
    """Rows as CSV (missing values empty), written atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    return path


def write_results(out: str | Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                  panels: Mapping[int | None, Sequence[Panel]],
                  unpaired_rows: Sequence[Mapping[str, Any]] = (),
                  unpaired_panels: Sequence[Panel] = (), overwrite: bool = False
                  ) -> dict[str, Path]:
    """metrics.csv, unpaired.csv (if any), metrics.json, then the report and its figures."""
    out = check_outputs(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": write_csv(out / "metrics.csv", rows, CSV_COLUMNS, overwrite)}
    if unpaired_rows:
        files["unpaired_csv"] = write_csv(out / "unpaired.csv", unpaired_rows, UNPAIRED_COLUMNS,
                                          overwrite)
    else:  # an overwritten run must not leave the previous run's focus scores behind
        (out / "unpaired.csv").unlink(missing_ok=True)
    files["json"] = out / "metrics.json"
    with atomic_output(files["json"], overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(_clean(summary), indent=2), encoding="utf-8")
    files["report"] = render_report(out, summary, panels, unpaired_panels, overwrite=overwrite)
    files["figures"] = out / "figures"
    return files
