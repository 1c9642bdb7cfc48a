"""Write simulated z-planes in the Broad's exact BBBC006 layout, reproducibly.

Training on simulated planes then runs the same code as training on the real z-stacks:
``BBBC006_v1_images_z_XX/mcf-z-stacks-03212011_<well>_s<site>_w1<uuid>.tif``. The uuids
and the noise are drawn from (seed, field, channel, z), so a rerun gives identical files
whatever the order or the set of planes asked for, and a field's plane is the same pixels
in this layout and in its z-stack (:mod:`refocus.simulate.stacks`, which shares the plan,
the per-plane generators and the manifest defined here).
"""

from __future__ import annotations

import json
import re
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from refocus.data.bbbc006 import (
    BEST_FOCUS_Z,
    PLATE_PREFIX,
    Field,
    Plane,
    check_z,
    plane_folder_name,
    plane_from_path,
    scan_bbbc006,
)
from refocus.errors import RefocusError
from refocus.images import atomic_output, read_plane, refuse_used_folder, write_tiff
from refocus.simulate.camera import BBBC006_CAMERA, Camera, simulate_plane
from refocus.simulate.optics import BBBC006_OPTICS, Optics

MANIFEST = "simulation.json"
#: The z-stack of one field (``simulate --stack``): ``<well>_s<site>_<channel>.ome.tif``.
STACK_RE = re.compile(r"^[a-p]\d{2}_s\d+_w\d\.ome\.tif$")


def in_focus_planes(
    folder: str | Path, channel: str = "w1", focus_z: int = BEST_FOCUS_Z
) -> list[Plane]:
    """The best-focus planes under ``folder``: the sample's aligned PNGs or a z=16 folder."""
    index = scan_bbbc006(folder)
    planes = [p for (_, ch, z), p in sorted(index.planes.items()) if ch == channel and z == focus_z]
    if not planes:
        raise RefocusError(
            folder,
            f"no in-focus (z={focus_z}) {channel} planes (found channels "
            f"{', '.join(index.channels)} at z={', '.join(map(str, index.z_values))})",
        )
    return planes


def plane_path(root: Path, fld: Field, channel: str, z: int, file_uuid: uuid.UUID) -> Path:
    """Where the Broad would store this plane."""
    name = f"{PLATE_PREFIX}_{fld.well}_s{fld.site}_{channel}{file_uuid}.tif"
    return root / plane_folder_name(z) / name


def stack_path(root: Path, fld: Field, channel: str) -> Path:
    """Where ``simulate --stack`` stores the field's z-stack."""
    return root / f"{fld}_{channel}.ome.tif"


def plane_rngs(
    seed: int, fld: Field, channel: str, z: int
) -> tuple[uuid.UUID, np.random.Generator]:
    """(file uuid, noise generator) for one plane, independent of every other plane."""
    key = zlib.crc32(f"{fld}_{channel}".encode())
    name_seq, noise_seq = np.random.SeedSequence([seed, key, z]).spawn(2)
    file_uuid = uuid.UUID(bytes=np.random.default_rng(name_seq).bytes(16), version=4)
    return file_uuid, np.random.default_rng(noise_seq)


@dataclass(frozen=True)
class SimulationPlan:
    """What a run will write: checked before anything is touched."""

    fields: list[Plane]
    z_values: list[int]

    @property
    def n_files(self) -> int:
        return len(self.fields) * len(self.z_values)


def plan_simulation(
    in_focus: str | Path,
    out: str | Path,
    z_values: Iterable[int],
    *,
    channel: str = "w1",
    seed: int = 0,
    focus_z: int = BEST_FOCUS_Z,
    overwrite: bool = False,
) -> SimulationPlan:
    """Check inputs and output folder; the planes always include the in-focus one."""
    source, out = Path(in_focus), Path(out)
    planes = sorted({*z_values, focus_z})
    for z in planes:  # sorted: the lowest bad plane is named
        check_z(None, z)
    if seed < 0:
        raise RefocusError(None, f"seed must be 0 or more, got {seed}")
    src, dst = source.resolve(), out.resolve()
    if src == dst or dst in src.parents or src in dst.parents:
        raise RefocusError(out, f"output folder overlaps the input folder {source}")
    refuse_used_folder(out, overwrite)
    return SimulationPlan(in_focus_planes(source, channel, focus_z), planes)


def remove_stale(out: Path, keep: set[Path]) -> None:
    """Drop planes and stacks an earlier run left (other uuids, fields or z): they would be
    duplicates."""
    for path in [*out.glob("BBBC006_v1_images_z_*/*.tif"), *out.glob("*.ome.tif")]:
        if path in keep:
            continue
        if plane_from_path(path) is not None or STACK_RE.match(path.name):
            path.unlink()


def simulated_planes(
    plane: Plane, z_values: Sequence[int], channel: str, seed: int, optics: Optics,
    camera: Camera,
) -> Iterator[tuple[int, uuid.UUID, np.ndarray]]:
    """(z, file uuid, uint16 plane) for each of ``z_values`` of one in-focus field, each
    drawn from its own generator (:func:`plane_rngs`)."""
    image = read_plane(plane.path)
    for z in z_values:
        file_uuid, rng = plane_rngs(seed, plane.field, channel, z)
        try:
            simulated = simulate_plane(image, z, optics, camera, rng)
        except RefocusError as exc:
            raise RefocusError(plane.path, exc.problem) from exc
        yield z, file_uuid, simulated


def write_manifest(
    out: Path, in_focus: str | Path, plan: SimulationPlan, settings: dict[str, object],
    overwrite: bool,
) -> None:
    """``out/simulation.json``: the source, fields, planes and ``settings`` (channel, seed,
    optics, camera...), so the data set can be regenerated and evaluated."""
    manifest = {
        "source": str(Path(in_focus).resolve()),
        "fields": [str(p.field) for p in plan.fields],
        "z": plan.z_values,
        **settings,
    }
    with atomic_output(out / MANIFEST, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")


def simulate_bbbc006(
    in_focus: str | Path,
    out: str | Path,
    z_values: Sequence[int],
    *,
    channel: str = "w1",
    seed: int = 0,
    optics: Optics = BBBC006_OPTICS,
    camera: Camera = BBBC006_CAMERA,
    overwrite: bool = False,
    on_plane: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Simulate planes ``z_values`` (plus the in-focus plane itself) of every field.

    Refuses a non-empty ``out`` unless ``overwrite``; writes ``out/simulation.json`` with
    the settings so the data set can be regenerated. Returns the written plane files.
    """
    out = Path(out)
    plan = plan_simulation(in_focus, out, z_values, channel=channel, seed=seed,
                           focus_z=optics.focus_z, overwrite=overwrite)
    written: list[Path] = []
    for plane in plan.fields:
        for z, file_uuid, simulated in simulated_planes(plane, plan.z_values, channel, seed,
                                                        optics, camera):
            path = plane_path(out, plane.field, channel, z, file_uuid)
            write_tiff(path, simulated, overwrite=overwrite)
            written.append(path)
            if on_plane is not None:
                on_plane(path)
    if overwrite:
        remove_stale(out, set(written))
    settings = {"channel": channel, "seed": seed, "optics": asdict(optics),
                "camera": asdict(camera)}
    write_manifest(out, in_focus, plan, settings, overwrite)
    return written
