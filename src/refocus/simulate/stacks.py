"""Write simulated z-stacks: one 3-D OME-TIFF (Z, Y, X) per in-focus field.

The z-stack training path (:mod:`refocus.data.zstacks`) needs whole stacks with their
z spacing, as a microscope saves them; BBBC006 only has loose planes. Each plane is the
very plane ``simulate_bbbc006`` writes for the same seed (same plan, generators and
manifest: :mod:`refocus.simulate.layout`), stacked in z order; the OME-XML carries the
pixel size (PhysicalSizeX/Y), the plane spacing (PhysicalSizeZ, the optics' nominal
``z_step_um`` times the step between the planes asked for) and each plane's nominal stage
position (Plane PositionZ = z * z_step_um).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from refocus.errors import RefocusError
from refocus.images import write_tiff
from refocus.simulate.camera import BBBC006_CAMERA, Camera
from refocus.simulate.layout import (
    plan_simulation,
    remove_stale,
    simulated_planes,
    stack_path,
    write_manifest,
)
from refocus.simulate.optics import BBBC006_OPTICS, Optics


def stack_step(z_values: Sequence[int]) -> int:
    """The step between the (sorted) planes of a stack; uneven planes have no one
    PhysicalSizeZ, so they are refused."""
    steps = {b - a for a, b in zip(z_values, z_values[1:], strict=False)}
    if len(steps) != 1:
        shown = ", ".join(map(str, z_values))
        raise RefocusError("--z", f"a z-stack needs two or more evenly spaced planes (the "
                                  f"in-focus one included), got z={shown}; e.g. --z 0-33")
    return steps.pop()


def ome_metadata(name: str, channel: str, z_values: Sequence[int], optics: Optics) -> dict:
    """tifffile's OME metadata for one simulated stack (axes ZYX, sizes in um)."""
    step = stack_step(z_values)
    return {
        "axes": "ZYX", "Name": name,
        "PhysicalSizeX": optics.pixel_um, "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": optics.pixel_um, "PhysicalSizeYUnit": "µm",
        "PhysicalSizeZ": step * optics.z_step_um, "PhysicalSizeZUnit": "µm",
        "Channel": {"Name": [channel]},
        "Plane": {"PositionZ": [z * optics.z_step_um for z in z_values],
                  "PositionZUnit": ["µm"] * len(z_values)},
    }


def simulate_stacks(
    in_focus: str | Path,
    out: str | Path,
    z_values: Sequence[int],
    *,
    channel: str = "w1",
    seed: int = 0,
    optics: Optics = BBBC006_OPTICS,
    camera: Camera = BBBC006_CAMERA,
    overwrite: bool = False,
    on_plane: Callable[[int], None] | None = None,
) -> list[Path]:
    """Simulate planes ``z_values`` (plus the in-focus one) of every field as one OME-TIFF
    z-stack per field, ``out/<well>_s<site>_<channel>.ome.tif``.

    The planes must be evenly spaced (``0-33``, or ``0 2 4 ... 32``). ``on_plane(z)`` is
    called after each simulated plane. Writes ``out/simulation.json`` like
    :func:`refocus.simulate.simulate_bbbc006`; returns the stack files.
    """
    out = Path(out)
    plan = plan_simulation(in_focus, out, z_values, channel=channel, seed=seed,
                           focus_z=optics.focus_z, overwrite=overwrite)
    stack_step(plan.z_values)
    written: list[Path] = []
    for plane in plan.fields:
        planes = []
        for z, _uuid, simulated in simulated_planes(plane, plan.z_values, channel, seed,
                                                    optics, camera):
            planes.append(simulated)
            if on_plane is not None:
                on_plane(z)
        path = stack_path(out, plane.field, channel)
        metadata = ome_metadata(str(plane.field), channel, plan.z_values, optics)
        write_tiff(path, np.stack(planes), overwrite=overwrite, photometric="minisblack",
                   ome=True, metadata=metadata)
        written.append(path)
    if overwrite:
        remove_stale(out, set(written))
    settings = {"layout": "stacks", "channel": channel, "seed": seed,
                "optics": asdict(optics), "camera": asdict(camera)}
    write_manifest(out, in_focus, plan, settings, overwrite)
    return written
