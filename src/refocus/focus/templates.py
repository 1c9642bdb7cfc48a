"""Defocus templates: what a field's spectrum looks like at each distance from focus.

A defocused field's spectrum is its in-focus spectrum times the PSF's |OTF|^2 plus noise.
The in-focus spectrum of an unknown field is not known, so the templates are the signal-
to-noise spectra of the 8 real in-focus BBBC006 fields, each blurred by the calibrated
simulator at stage defocus -40..40 um (:mod:`refocus.focus.calibrate`); an image is matched
against each field's set with a free brightness (:mod:`refocus.focus.estimate`).
``scripts/calibrate_focus.py`` builds the shipped ``bbbc006_templates.npz`` (77 kB).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import numpy as np

from refocus.errors import RefocusError

SHIPPED = "bbbc006_templates.npz"
#: Stage defocus of the shipped templates (um, signed; - is BBBC006's z<16 side): 1 um
#: steps near focus, 2 um beyond 12 um (the spectra change slowly there; log-interpolated).
STAGE_UM = np.concatenate(
    [np.arange(-40.0, -12, 2), np.arange(-12.0, 12.5), np.arange(14.0, 41, 2)]
)
TILES = (64, 96, 128)
#: Rings whose in-focus level every field is scaled to before storing.
_LEVEL_RINGS = slice(1, 4)


@dataclass(frozen=True, eq=False)  # compared by identity: it keys a cache
class Templates:
    """Signal-to-noise spectra ``signal[tile]`` (field, stage defocus, ring) of a sample.

    One set per calibration field, each scaled to the same in-focus level: an image is
    matched against every field's set and takes the field whose sample explains it best.
    ``stage_um`` counts as the microscope's z drive does (nominal, BBBC006: 2 um a plane);
    the simulator's defocus is ``stage_um * defocus_scale``.
    """

    stage_um: np.ndarray
    signal: dict[int, np.ndarray]
    defocus_scale: float
    about: str = ""

    def for_tile(self, tile: int) -> np.ndarray:
        if tile not in self.signal:
            raise RefocusError(
                None, f"no focus templates for {tile}-px tiles (have {sorted(self.signal)})"
            )
        return self.signal[tile]

    def leave_out(self, field: int) -> Templates:
        """The templates without calibration field ``field`` (for cross-validation)."""
        keep = {t: np.delete(s, field, axis=0) for t, s in self.signal.items()}
        return Templates(self.stage_um, keep, self.defocus_scale, self.about)


def normalised(per_field: np.ndarray, stage_um: Sequence[float]) -> np.ndarray:
    """(field, defocus, ring) spectra, each field scaled to its in-focus level in the lowest
    rings (brightness is fitted anyway; this keeps the stored numbers comparable)."""
    in_focus = int(np.argmin(np.abs(np.asarray(stage_um))))
    ref = per_field[:, in_focus, _LEVEL_RINGS].mean(axis=1)
    return np.maximum(per_field / ref[:, None, None], 1e-9)


def save_templates(path: str | Path | BinaryIO, templates: Templates) -> None:
    """Write templates as one small .npz (log10 spectra as float16, settings as JSON)."""
    arrays = {f"signal_{t}": np.log10(s).astype(np.float16) for t, s in templates.signal.items()}
    meta = {"defocus_scale": templates.defocus_scale, "about": templates.about}
    np.savez_compressed(
        path, stage_um=templates.stage_um, meta=np.array(json.dumps(meta)), **arrays
    )


def load_templates(path: str | Path) -> Templates:
    """Templates from a file written by :func:`save_templates`."""
    try:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            signal = {
                int(k.split("_")[1]): 10.0 ** data[k].astype(np.float64)
                for k in data.files
                if k.startswith("signal_")
            }
            stage = data["stage_um"].astype(np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise RefocusError(path, f"not a focus template file ({exc})") from exc
    return Templates(stage, signal, float(meta["defocus_scale"]), meta.get("about", ""))


@functools.lru_cache(maxsize=1)
def shipped_templates() -> Templates:
    """The BBBC006 templates that ship with the package."""
    return load_templates(Path(str(resources.files("refocus.focus") / SHIPPED)))
