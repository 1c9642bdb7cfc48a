"""The BBBC006 layout exactly as the Broad publishes it (and the sample's renamed copies).

Real layout: ``BBBC006_v1_images_z_XX/mcf-z-stacks-03212011_<well>_s<site>_w<ch><uuid>.tif``.
The uuid differs between planes of one field, so planes are keyed by
(well, site, channel, z) and never matched by file name.

Two other namings of the same images are understood, because the shipped sample uses them:
``<zz>_mcf-z-stacks-03212011_...tif`` (z in the prefix) and the focus-aligned
``BBBC006_z_aligned__<well>__s<site>__w<ch>_<index>.png``, which holds the best-focus plane.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from refocus.errors import RefocusError

BEST_FOCUS_Z = 16
#: The defocused planes the method trains on by default.
TRAIN_Z = (1, 5, 10)
N_PLANES = 34
CHANNELS = {"w1": "Hoechst 33342 (nuclei)", "w2": "phalloidin (actin)"}
PLATE_PREFIX = "mcf-z-stacks-03212011"
BROAD_URL = "https://data.broadinstitute.org/bbbc/BBBC006/BBBC006_v1_images_z_{z:02d}.zip"

Z_FOLDER_RE = re.compile(r"^BBBC006_v1_images_z_(?P<z>\d{2})$")
PLANE_RE = re.compile(
    r"^(?:(?P<zprefix>\d{2})_)?mcf-z-stacks-03212011_(?P<well>[a-pA-P]\d{2})_s(?P<site>\d+)"
    r"_w(?P<channel>\d)(?P<uuid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
    r"[0-9A-Fa-f]{12})\.tiff?$"
)
ALIGNED_RE = re.compile(
    r"^BBBC006_z_aligned__(?P<well>[a-pA-P]\d{2})__s(?P<site>\d+)__w(?P<channel>\d)_\d+\.png$"
)


def plane_folder_name(z: int) -> str:
    """The Broad's folder (and zip) name for plane ``z``, the inverse of Z_FOLDER_RE."""
    return f"BBBC006_v1_images_z_{z:02d}"


def check_channel(where: str | Path | None, channel: str) -> None:
    """Refuse a channel BBBC006 does not have, naming the ones it does."""
    if channel not in CHANNELS:
        raise RefocusError(
            where, f"unknown channel {channel!r} (BBBC006 has {', '.join(CHANNELS)})"
        )


def check_z(where: str | Path | None, z: int) -> None:
    """Refuse a plane number outside the stack, naming its range."""
    if not 0 <= z < N_PLANES:
        raise RefocusError(where, f"z={z} outside BBBC006's planes 0..{N_PLANES - 1}")


@dataclass(frozen=True, order=True)
class Field:
    """One imaged site of one well: the unit that pairs planes across z."""

    well: str
    site: int

    def __str__(self) -> str:
        return f"{self.well}_s{self.site}"


@dataclass(frozen=True)
class Plane:
    """One file on disk: a field's image in one channel at one z."""

    field: Field
    channel: str
    z: int
    path: Path


def plane_from_path(path: Path) -> Plane | None:
    """Recognise a BBBC006 plane from its name and folder; ``None`` for unrelated files."""
    m = PLANE_RE.match(path.name)
    if m:
        if m["zprefix"] is not None:
            z = int(m["zprefix"])
        else:
            folder = Z_FOLDER_RE.match(path.parent.name)
            if folder is None:
                raise RefocusError(
                    path, "BBBC006 file outside a BBBC006_v1_images_z_XX folder: its z is unknown"
                )
            z = int(folder["z"])
    else:
        m = ALIGNED_RE.match(path.name)
        if m is None:
            return None
        z = BEST_FOCUS_Z
    channel = f"w{m['channel']}"
    check_channel(path, channel)
    check_z(path, z)
    return Plane(Field(m["well"].lower(), int(m["site"])), channel, z, path)


@dataclass
class Bbbc006Index:
    """Every plane found under a root, keyed by (field, channel, z)."""

    root: Path
    planes: dict[tuple[Field, str, int], Plane] = field(default_factory=dict)

    @property
    def fields(self) -> list[Field]:
        return sorted({key[0] for key in self.planes})

    @property
    def channels(self) -> list[str]:
        return sorted({key[1] for key in self.planes})

    @property
    def z_values(self) -> list[int]:
        return sorted({key[2] for key in self.planes})

    def get(self, fld: Field, channel: str, z: int) -> Plane | None:
        return self.planes.get((fld, channel, z))

    def fields_per_z(self, channel: str) -> dict[int, int]:
        counts: dict[int, int] = defaultdict(int)
        for _fld, ch, z in self.planes:
            if ch == channel:
                counts[z] += 1
        return dict(sorted(counts.items()))

    def missing(self, z_values: Iterable[int], channel: str) -> list[tuple[Field, int]]:
        """(field, z) combinations absent for fields that have this channel at all."""
        have = {fld for fld, ch, _ in self.planes if ch == channel}
        return [
            (fld, z)
            for fld in sorted(have)
            for z in z_values
            if (fld, channel, z) not in self.planes
        ]


def scan_bbbc006(root: str | Path) -> Bbbc006Index:
    """Index every BBBC006 plane under ``root`` (searched recursively).

    Raises one ``RefocusError`` for the first duplicate (two files for one field, channel
    and plane) or unknown channel, naming both files.
    """
    root = Path(root)
    if not root.is_dir():
        raise RefocusError(root, "data folder not found")
    index = Bbbc006Index(root)
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        plane = plane_from_path(path)
        if plane is None:
            continue
        key = (plane.field, plane.channel, plane.z)
        if key in index.planes:
            raise RefocusError(
                path,
                f"second file for field {plane.field} {plane.channel} z={plane.z} "
                f"(first: {index.planes[key].path})",
            )
        index.planes[key] = plane
    if not index.planes:
        raise RefocusError(
            root, "no BBBC006 images found (expected BBBC006_v1_images_z_XX folders)"
        )
    return index
