"""Z-stacks for training: whole stacks read from disk, and the (input, target) planes in them.

BBBC006 pairs planes by file name; a lab's own data comes as z-stacks, which hold every
plane of a field and their spacing, so any plane within a defocus range can be paired with
the stack's best-focus plane. Accepted sources (:func:`read_zstack`):

- a 3-D TIFF (Z, Y, X): the z spacing must be given (``z_step_um``, ``--z-step-um``);
- an OME-TIFF or ImageJ hyperstack: z spacing from PhysicalSizeZ (ImageJ: ``spacing``),
  else ``z_step_um``;
- an OME-Zarr image (:mod:`refocus.images.omezarr`): z spacing from the level-0 scale of
  the z axis when its unit is a length, else ``z_step_um``;
- a folder of single planes with the plane number at the end of each name:
  ``cell_z07.tif``, ``cell-z7.png``, ``z07.tif``, ``cell_z=07.tif`` (``z`` or ``Z``, an
  optional ``_``, ``-`` or ``=``, then digits), or one plane per subfolder named the same
  way (``z_07/plane.tif``, ``Z07/...``). Plane number times ``z_step_um`` is the position;
  the numbers must be evenly spaced (gaps of 2 mean planes 2 steps apart).

A multi-channel stack needs ``channel``: a channel name (OME/ImageJ/OME-Zarr labels) or
an index. Best focus is not found here: :func:`stack_pairs` takes the focus plane (or a
function of the stack that finds it, e.g. a focus estimator).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from refocus.errors import RefocusError
from refocus.images import READERS, TIFF_SUFFIXES, is_zarr, open_ome_zarr, read_image

#: A plane number at the end of a file stem or folder name: ``..._z07``, ``z7``, ``Z=07``.
PLANE_NUMBER_RE = re.compile(r"(?:^|[_\-. ])z[_\-=]?(?P<z>\d+)$", re.IGNORECASE)
#: Length units as OME-XML, OME-Zarr and ImageJ write them, in micrometres.
UM_PER_UNIT = {
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "m": 1e6, "meter": 1e6, "metre": 1e6,
}
#: Axis letters a stack's planes may run along (tifffile names plain TIFF pages Q or I).
_STACK_AXES = "ZQI"


@dataclass(frozen=True)
class ZStack:
    """One field's planes in z order, raw intensities as float32 (Z, Y, X)."""

    name: str
    planes: np.ndarray
    z_step_um: float
    source: Path

    @property
    def n_planes(self) -> int:
        return int(self.planes.shape[0])


#: The focus plane of a stack, or how to find it.
FocusPlane = int | Callable[[ZStack], int]


def _um(value: Any, unit: Any) -> float | None:
    """``value`` in ``unit`` as micrometres; None for no value or an unknown unit."""
    factor = UM_PER_UNIT.get(str(unit).strip().lower() if unit is not None else "")
    if value is None or factor is None:
        return None
    return float(value) * factor


def _channel_index(where: Path, channel: str | int | None, n: int,
                   names: Sequence[str] | None) -> int:
    """The index of ``channel`` (a name or an index) among ``n`` channels."""
    shown = ", ".join(names) if names else f"0..{n - 1}"
    if channel is None:
        if n == 1:
            return 0
        raise RefocusError(where, f"{n} channels ({shown}): pick one with --channel")
    if names and str(channel) in names:
        return list(names).index(str(channel))
    if isinstance(channel, int) or str(channel).isdigit():
        if 0 <= int(channel) < n:
            return int(channel)
    raise RefocusError(where, f"no channel {channel!r} (the stack has {shown})")


def _select(where: Path, data: Any, axes: str, names: Sequence[str] | None,
            channel: str | int | None, stack: bool = True) -> np.ndarray:
    """``data`` (axes ``axes``; NumPy or Zarr) as (Z, Y, X), or (Y, X) when not ``stack``:
    one channel picked, length-1 axes dropped, anything else refused in one line."""
    index: list[Any] = []
    kept = []
    for letter, n in zip(axes, data.shape, strict=True):
        if letter == "C":
            index.append(_channel_index(where, channel, n, names))
        elif letter in "YX" or n > 1:
            index.append(slice(None))
            if letter not in "YX":
                kept.append(letter)
        else:
            index.append(0)
    shape = tuple(data.shape)
    if not stack and kept:
        raise RefocusError(where, f"{len(shape)}-D image {shape} (axes {axes}) where one "
                                  "plane of a folder of planes is expected")
    if stack and not kept:
        if any(a in _STACK_AXES for a in axes):
            raise RefocusError(where, f"a z-stack of one plane {shape}; training pairs "
                                      "need two or more planes")
        raise RefocusError(where, f"2-D image {shape} where a z-stack (Z, Y, X) is expected")
    if stack and (len(kept) > 1 or kept[0] not in _STACK_AXES):
        raise RefocusError(where, f"image with axes {axes} {shape}: a z-stack has one axis "
                                  "besides Y and X, Z (pick a time point or position first)")
    planes = np.asarray(data[tuple(index)])
    if stack:
        letters = [a for a, i in zip(axes, index, strict=True) if not isinstance(i, int)]
        planes = np.moveaxis(planes, letters.index(kept[0]), 0)
    return planes


def _tiff_z_step(path: Path) -> float | None:
    """PhysicalSizeZ of an OME-TIFF, ``spacing`` of an ImageJ hyperstack (header only)."""
    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            image = tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image", {})
            pixels = (image[0] if isinstance(image, list) else image).get("Pixels", {})
            return _um(pixels.get("PhysicalSizeZ"), pixels.get("PhysicalSizeZUnit", "µm"))
        meta = tif.imagej_metadata or {}
        return _um(meta.get("spacing"), meta.get("unit"))


def _stack_name(path: Path) -> str:
    name = path.name
    for suffix in (*(f".ome{s}" for s in TIFF_SUFFIXES), path.suffix):
        if suffix and name.lower().endswith(suffix.lower()):
            return name[: -len(suffix)]
    return name


def _z_step(where: Path, found: float | None, given: float | None, what: str) -> float:
    """The file's own spacing, else the one given; refused when neither is known."""
    step = found if found is not None else given
    if step is None:
        raise RefocusError(where, f"no z spacing ({what}); give it with --z-step-um")
    if not step > 0:
        raise RefocusError(where, f"z spacing must be positive, got {step} um")
    return float(step)


def plane_files(folder: Path) -> dict[int, Path]:
    """The planes of a folder of single planes by plane number (see the module docstring);
    empty when ``folder`` is not one."""
    found: dict[int, Path] = {}
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not is_zarr(child):
            m = PLANE_NUMBER_RE.search(child.name)
            images = [p for p in sorted(child.iterdir()) if p.suffix.lower() in READERS]
            if m is None or not images:
                continue
            if len(images) > 1:
                raise RefocusError(child, f"{len(images)} images in one plane's folder "
                                          f"({images[0].name}, {images[1].name}, ...); it "
                                          "holds one plane of the stack")
            z, path = int(m["z"]), images[0]
        else:
            m = PLANE_NUMBER_RE.search(_stack_name(child))
            if m is None or child.suffix.lower() not in READERS:
                continue
            z, path = int(m["z"]), child
        if z in found:
            raise RefocusError(path, f"second file for plane z={z} (first: {found[z]})")
        found[z] = path
    return found


def _read_plane_folder(folder: Path, z_step_um: float | None,
                       channel: str | int | None) -> ZStack:
    files = plane_files(folder)
    numbers = sorted(files)
    if len(numbers) < 2:
        raise RefocusError(folder, f"a z-stack of {len(numbers)} plane(s); training pairs "
                                   "need two or more planes")
    steps = {b - a for a, b in zip(numbers, numbers[1:], strict=False)}
    if len(steps) > 1:
        missing = sorted(set(range(numbers[0], numbers[-1] + 1, min(steps))) - set(numbers))
        raise RefocusError(folder, "planes not evenly spaced (missing z="
                                   f"{', '.join(map(str, missing))})")
    planes = []
    for z in numbers:
        image = read_image(files[z])
        plane = _select(files[z], image.data, image.axes, image.channel_names, channel,
                        stack=False)
        if planes and plane.shape != planes[0].shape:
            first = files[numbers[0]]
            raise RefocusError(files[z], f"plane z={z} is {plane.shape}, but z={numbers[0]} "
                                         f"({first.name}) is {planes[0].shape}")
        planes.append(plane)
    step = _z_step(folder, None, z_step_um, "a folder of planes has none")
    return ZStack(folder.name, np.stack(planes).astype(np.float32), steps.pop() * step, folder)


def read_zstack(path: str | Path, z_step_um: float | None = None,
                channel: str | int | None = None) -> ZStack:
    """One z-stack from a TIFF, OME-TIFF, OME-Zarr or folder of planes (module docstring);
    ``z_step_um`` is used where the file states no z spacing."""
    path = Path(path)
    if is_zarr(path):
        image = open_ome_zarr(path)
        planes = _select(path, image.level(0), image.axes, image.channel_names, channel)
        found = _um(*image.scales(0).get("Z", (None, None)))
        step = _z_step(path, found, z_step_um, "no z scale in micrometres in its metadata")
        return ZStack(_stack_name(path), planes.astype(np.float32), step, path)
    if path.is_dir():
        return _read_plane_folder(path, z_step_um, channel)
    image = read_image(path)
    planes = _select(path, image.data, image.axes, image.channel_names, channel)
    found = _tiff_z_step(path) if path.suffix.lower() in TIFF_SUFFIXES else None
    step = _z_step(path, found, z_step_um, "no PhysicalSizeZ in the file")
    return ZStack(_stack_name(path), planes.astype(np.float32), step, path)


def find_zstacks(root: str | Path) -> list[Path]:
    """The z-stacks at ``root``: ``root`` itself when it is one, else every image file,
    OME-Zarr folder and folder of planes directly inside it."""
    root = Path(root)
    if not root.exists():
        raise RefocusError(root, "not found")
    if root.is_file() or is_zarr(root) or plane_files(root):
        return [root]
    stacks = [p for p in sorted(root.iterdir())
              if (p.is_file() and p.suffix.lower() in READERS) or is_zarr(p)
              or (p.is_dir() and plane_files(p))]
    if not stacks:
        raise RefocusError(root, "no z-stacks (3-D TIFF or OME-TIFF files, OME-Zarr "
                                 "folders, or folders of *_zNN planes)")
    return stacks


def read_zstacks(root: str | Path, z_step_um: float | None = None,
                 channel: str | int | None = None) -> list[ZStack]:
    """Every z-stack :func:`find_zstacks` finds at ``root``."""
    return [read_zstack(p, z_step_um, channel) for p in find_zstacks(root)]


def stack_pairs(stack: ZStack, focus_plane: FocusPlane,
                max_defocus_um: float) -> list[tuple[int, int, float]]:
    """(input plane, target plane, defocus um) for every plane within ``max_defocus_um``
    of the focus plane (the target); defocus is negative for planes before it."""
    focus = int(focus_plane(stack) if callable(focus_plane) else focus_plane)
    if not 0 <= focus < stack.n_planes:
        raise RefocusError(stack.source, f"focus plane {focus} outside the stack's "
                                         f"{stack.n_planes} planes (0..{stack.n_planes - 1})")
    if not max_defocus_um > 0:
        raise RefocusError(stack.source, f"maximum defocus must be positive, got "
                                         f"{max_defocus_um} um")
    pairs = [(i, focus, (i - focus) * stack.z_step_um) for i in range(stack.n_planes)
             if i != focus and abs(i - focus) * stack.z_step_um <= max_defocus_um * (1 + 1e-9)]
    if not pairs:
        raise RefocusError(stack.source, f"no plane within {max_defocus_um} um of focus plane "
                                         f"{focus} (planes are {stack.z_step_um} um apart)")
    return pairs
