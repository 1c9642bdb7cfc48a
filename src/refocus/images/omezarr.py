"""OME-Zarr images: open one, make an empty copy of its layout, rebuild its pyramid.

A refocused OME-Zarr replaces its input, so :func:`create_like` copies the group attributes
(multiscales, omero) and each level's shape, chunks, dtype and compression, and
:func:`build_pyramid` refills the lower levels from the new full-resolution one. Zarr
folders are written through :func:`refocus.images.output.atomic_output_dir`, so nothing
half-written carries a final name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refocus.errors import RefocusError
from refocus.images.planes import check_pixels

ZARR_SUFFIXES = (".zarr",)
#: OME-Zarr axis types/names to the single letters used everywhere else.
_OME_AXIS = {"time": "T", "channel": "C", "t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


def is_zarr(path: str | os.PathLike[str]) -> bool:
    """True for a Zarr folder (by suffix or by its metadata files)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return path.suffix.lower() in ZARR_SUFFIXES or any(
        (path / name).is_file() for name in ("zarr.json", ".zgroup", ".zattrs")
    )


@dataclass
class OmeZarr:
    """An OME-Zarr image (NGFF 0.4 on Zarr v2, or 0.5 on Zarr v3): its pyramid and axes."""

    path: Path
    attrs: dict[str, Any]
    zarr_format: int
    axes: str
    level_paths: list[str]
    channel_names: tuple[str, ...] | None

    def level(self, index: int = 0) -> Any:
        """The zarr array of pyramid level ``index`` (0 = full resolution), read-only."""
        import zarr

        return zarr.open_array(self.path / self.level_paths[index], mode="r")

    def scales(self, index: int = 0) -> dict[str, tuple[float, str | None]]:
        """Each axis's (pixel spacing, unit) at pyramid level ``index``: the level's scale
        transformation times the image's own, units as the metadata names them (None when
        it names none); axes without a scale are left out."""
        first = _ome_attrs(self.attrs)["multiscales"][0]
        axes = first.get("axes") or []
        units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
        scale = [1.0] * len(self.axes)
        found = False
        for transforms in (first.get("coordinateTransformations") or [],
                           first["datasets"][index].get("coordinateTransformations") or []):
            for t in transforms:
                if t.get("type") == "scale" and len(t.get("scale", [])) == len(scale):
                    scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=True)]
                    found = True
        if not found:
            return {}
        return {letter: (value, units[i] if i < len(units) else None)
                for i, (letter, value) in enumerate(zip(self.axes, scale, strict=True))}


def _ome_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """NGFF 0.5 nests everything under ``ome``; 0.4 keeps it at the top."""
    return attrs["ome"] if isinstance(attrs.get("ome"), dict) else attrs


def _axis_letter(axis: Any) -> str:
    if isinstance(axis, str):  # NGFF 0.3: plain names
        return _OME_AXIS.get(axis.lower(), "Q")
    name, kind = str(axis.get("name", "")).lower(), str(axis.get("type", "")).lower()
    return _OME_AXIS.get(name) or _OME_AXIS.get(kind) or "Q"


def open_ome_zarr(path: str | os.PathLike[str]) -> OmeZarr:
    """Open an OME-Zarr image folder; a clear error when it is not one."""
    import zarr

    path = Path(path)
    try:
        group = zarr.open_group(path, mode="r")
        attrs = group.attrs.asdict()
        zarr_format = group.metadata.zarr_format
    except Exception as exc:
        raise RefocusError(path, f"cannot open as Zarr ({type(exc).__name__}: {exc})") from exc
    ome = _ome_attrs(attrs)
    multiscales = ome.get("multiscales")
    if not multiscales:
        raise RefocusError(path, "Zarr group without OME 'multiscales' metadata "
                                 "(a plate or a plain array is not an OME-Zarr image)")
    first = multiscales[0]
    level_paths = [str(d["path"]) for d in first["datasets"]]
    try:
        level0 = zarr.open_array(path / level_paths[0], mode="r")
    except Exception as exc:
        raise RefocusError(path, f"cannot open level {level_paths[0]!r} "
                                 f"({type(exc).__name__}: {exc})") from exc
    axes_meta = first.get("axes")
    if axes_meta:
        axes = "".join(_axis_letter(a) for a in axes_meta)
    else:  # NGFF 0.1/0.2: always 5-D
        axes = "TCZYX"[5 - level0.ndim:]
    if len(axes) != level0.ndim:
        raise RefocusError(path, f"metadata names {len(axes)} axes for a {level0.ndim}-D array")
    check_pixels(path, level0.shape, level0.dtype, axes)
    channels = (ome.get("omero") or {}).get("channels") or []
    names = tuple(str(c.get("label", "")) for c in channels)
    return OmeZarr(path, attrs, zarr_format, axes, level_paths,
                   names if names and all(names) else None)


def create_like(source: OmeZarr, path: Path) -> Any:
    """A new OME-Zarr group at ``path`` with ``source``'s attributes and empty levels.

    Levels keep their shape, chunks, dtype, compression and chunk-key layout, so tools
    that read the input read the output the same way.
    """
    import zarr

    group = zarr.open_group(path, mode="w", zarr_format=source.zarr_format)
    group.attrs.update(source.attrs)
    for name in source.level_paths:
        src = source.level(source.level_paths.index(name))
        extra: dict[str, Any] = {}
        if source.zarr_format == 3:
            extra.update(chunk_key_encoding=src.metadata.chunk_key_encoding,
                         dimension_names=src.metadata.dimension_names, shards=src.shards)
        else:
            extra.update(chunk_key_encoding={"name": "v2",
                                             "separator": src.metadata.dimension_separator})
        group.create_array(name, shape=src.shape, chunks=src.chunks, dtype=src.dtype,
                           compressors=src.compressors, fill_value=src.fill_value, **extra)
    return group


def build_pyramid(path: Path, source: OmeZarr, scheduler: Any = None) -> None:
    """Fill levels 1.. of ``path`` from level 0 by nearest-neighbour decimation.

    Nearest (as ome-zarr-py's default scaler does) keeps the dtype and the values;
    each level is built from the one above, so memory stays at a few chunks.
    """
    import dask.array as da
    import zarr

    for above, name in zip(source.level_paths, source.level_paths[1:], strict=False):
        upper = da.from_zarr(zarr.open_array(path / above, mode="r"))
        target = zarr.open_array(path / name, mode="r+")
        lower = upper
        for axis, (n_up, n_low) in enumerate(zip(upper.shape, target.shape, strict=True)):
            if n_up != n_low:
                lower = lower[(slice(None),) * axis + ((np.arange(n_low) * n_up) // n_low,)]
        lower = lower.rechunk(target.chunks)
        da.store(lower, target, lock=False, compute=True, scheduler=scheduler)
