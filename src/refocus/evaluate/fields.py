"""What an evaluation scores: fields read into memory, and what the model file and the
data folder say about them (the training split, the optics that blurred them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refocus.data import Pair
from refocus.data.bbbc006 import plane_from_path
from refocus.errors import RefocusError
from refocus.images import IMAGE_SUFFIXES, read_plane
from refocus.simulate import Optics
from refocus.simulate.layout import MANIFEST


@dataclass(frozen=True)
class EvalField:
    """One defocused input plane with its in-focus target (``target`` None when unpaired)
    and the file it was read from, if any."""

    name: str
    z: int | None
    input: np.ndarray
    target: np.ndarray | None = None
    source: Path | None = None


def load_fields(pairs: Sequence[Pair], limit: int | None = None,
                cache: dict[Path, np.ndarray] | None = None) -> list[EvalField]:
    """Read pairs (:class:`refocus.data.Pair`) into arrays, each file read once (also
    across calls sharing ``cache``: a target serves several z, a field both tuning and
    scoring)."""
    reads = {} if cache is None else cache

    def read(path: Path) -> np.ndarray:
        if path not in reads:
            reads[path] = read_plane(path)
        return reads[path]

    fields = []
    by_field = sorted(pairs, key=lambda p: (str(p.target), p.z if p.z is not None else -1))
    keep = sorted({str(p.target) for p in by_field})[:limit] if limit else None
    for p in by_field:
        if keep is not None and str(p.target) not in keep:
            continue
        name = p.name.rsplit("_z", 1)[0] if p.z is not None else p.name  # field_channel
        fields.append(EvalField(name, p.z, read(p.input), read(p.target)))
    return fields


def unpaired_fields(source: str | Path | Sequence[str | Path]) -> list[EvalField]:
    """Images without a target (a folder or a list of files); z taken from BBBC006 names."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise RefocusError(folder, "unpaired-image folder not found")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise RefocusError(folder, "no TIFF or PNG images")
    else:
        paths = [Path(p) for p in source]
    fields = []
    for path in paths:
        plane = plane_from_path(path)
        if plane is None:
            fields.append(EvalField(path.stem, None, read_plane(path), source=path))
        else:  # BBBC006 names carry a uuid; the field, channel and z say it all
            name = f"{plane.field}_{plane.channel}_z{plane.z:02d}"
            fields.append(EvalField(name, plane.z, read_plane(path), source=path))
    return fields


def training_settings(model_path: str | Path) -> dict[str, Any]:
    """Split fractions, split seed, channels and input z the model file was trained with
    (the split must be the training run's, or "test" may hold training wells)."""
    from refocus.modelfile import read_model_file

    payload = read_model_file(model_path)
    prov, config = payload["provenance"], payload["train_config"]
    channel = prov.get("channel") or config.get("channel") or "w1"
    return {
        "fractions": tuple(prov.get("fractions") or config.get("fractions") or (0.8, 0.1, 0.1)),
        "seed": int(prov.get("split_seed", config.get("seed", 0))),
        "channels": (channel,) if isinstance(channel, str) else tuple(channel),
        "input_z": prov.get("input_z") or config.get("input_z"),
    }


def data_optics(data: str | Path) -> tuple[Optics, str]:
    """The optics whose PSF deconvolution should use for a data folder, and why.

    A simulated folder records the optics it was blurred with (``simulation.json``); using
    them gives RL and Wiener the exact PSF. Real data gets the calibrated BBBC006 defaults.
    """
    manifest = Path(data) / MANIFEST
    if manifest.is_file():
        try:
            return Optics(**json.loads(manifest.read_text())["optics"]), f"{manifest} (exact)"
        except (ValueError, KeyError, TypeError) as exc:
            raise RefocusError(manifest, f"unreadable simulation settings ({exc})") from exc
    return Optics(), "refocus.simulate.Optics() defaults (calibrated on real BBBC006 z=00)"
