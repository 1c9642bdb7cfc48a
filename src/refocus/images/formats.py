"""Whole images in and out: TIFF (plain, OME, ImageJ), PNG and OME-Zarr, metadata kept.

A refocused image replaces its input in someone's analysis, so it is written in the same
format with the same axes, dtype, pixel size and metadata: OME-XML is copied verbatim,
ImageJ hyperstack settings and TIFF resolution tags are passed back, OME-Zarr group
attributes (multiscales, omero) are copied and the pyramid is rebuilt level by level.
Single planes still go through :func:`refocus.io.read_plane`; files are written through
:func:`refocus.io.atomic_output` / :func:`refocus.io.write_tiff`, and Zarr folders through
:func:`atomic_output_dir`, so nothing half-written ever carries a final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from refocus.errors import RefocusError
from refocus.images.output import atomic_output
from refocus.images.planes import (
    IMAGE_SUFFIXES,
    PNG_SUFFIXES,
    TIFF_SUFFIXES,
    check_pixel_type,
    read_or_raise,
    read_plane,
    write_tiff,
)

ZARR_SUFFIXES = (".zarr",)
#: tifffile's axis letters that are neither channels nor image rows/columns: each index is
#: one plane (I: image sequence, Q: unknown, R: tile, E: lambda, ...). ``S`` means RGB.
SPATIAL = "YX"
#: ImageJ metadata keys tifffile writes itself from the array's shape.
_IMAGEJ_AUTOMATIC = {"ImageJ", "images", "channels", "slices", "frames", "hyperstack", "axes"}
#: OME-Zarr axis types/names to the single letters used everywhere else.
_OME_AXIS = {"time": "T", "channel": "C", "t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


@dataclass
class Image:
    """Pixels of one TIFF or PNG file, their axes, and what it takes to write them back."""

    path: Path
    data: np.ndarray
    axes: str
    kind: str  # "tiff", "ome-tiff", "imagej-tiff" or "png"
    channel_names: tuple[str, ...] | None = None
    tiff_kwargs: dict[str, Any] = field(default_factory=dict)


def is_zarr(path: str | os.PathLike[str]) -> bool:
    """True for a Zarr folder (by suffix or by its metadata files)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return path.suffix.lower() in ZARR_SUFFIXES or any(
        (path / name).is_file() for name in ("zarr.json", ".zgroup", ".zattrs")
    )


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True for the files and folders :func:`read_image` / :func:`open_ome_zarr` accept."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in IMAGE_SUFFIXES
    return is_zarr(path)


def _channel_names_from_ome(xml: str) -> tuple[str, ...] | None:
    pixels = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    if isinstance(pixels, list):
        pixels = pixels[0]
    channels = pixels.get("Pixels", {}).get("Channel", [])
    if isinstance(channels, dict):
        channels = [channels]
    names = tuple(str(c.get("Name", "")) for c in channels)
    return names if names and all(names) else None


def _read_tiff(path: Path) -> Image:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
        page = tif.pages.first
        kwargs: dict[str, Any] = {"photometric": "minisblack", "resolution": page.resolution,
                                  "resolutionunit": page.resolutionunit}
        names = None
        if tif.is_ome and tif.ome_metadata:
            kind = "ome-tiff"
            kwargs.update(description=tif.ome_metadata, metadata=None, ome=False)
            names = _channel_names_from_ome(tif.ome_metadata)
        elif tif.is_imagej:
            kind = "imagej-tiff"
            meta = {k: v for k, v in (tif.imagej_metadata or {}).items()
                    if k not in _IMAGEJ_AUTOMATIC}
            kwargs.update(imagej=True, metadata={**meta, "axes": axes})
            labels = meta.get("Labels")
            if "C" in axes and isinstance(labels, list) and len(labels) == data.shape[
                    axes.index("C")]:
                names = tuple(str(x) for x in labels)
        else:
            kind = "tiff"
            if page.description and not tif.is_shaped:
                kwargs.update(description=page.description, metadata=None)
    return Image(path, data, axes, kind, names, kwargs)


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """tifffile logs damaged structures before raising; the raised error is the one line
    the user sees, so its log lines would only repeat it."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_image(path: str | os.PathLike[str]) -> Image:
    """Read a TIFF (any axes) or PNG (one grey plane), refusing RGB and damaged files."""
    path = Path(path)
    if path.suffix.lower() in PNG_SUFFIXES:
        return Image(path, read_plane(path), SPATIAL, "png")
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise RefocusError(path, f"unsupported file type {path.suffix!r} "
                                 "(expected TIFF, PNG or an OME-Zarr folder)")
    with _quiet_tifffile():
        image = read_or_raise(path, _read_tiff)
    check_pixels(path, image.data.shape, image.data.dtype, image.axes)
    return image


def check_pixels(
    where: str | os.PathLike[str] | None, shape: tuple[int, ...], dtype: np.dtype, axes: str
) -> None:
    """One clear line for what the network cannot refocus: RGB, no 2-D plane, odd types."""
    if "S" in axes and shape[axes.index("S")] > 1:
        raise RefocusError(where, f"RGB image {tuple(shape)} where grey planes are expected")
    if not ("Y" in axes and "X" in axes):
        raise RefocusError(where, f"no 2-D plane in an image with axes {axes!r} {tuple(shape)}")
    check_pixel_type(where, dtype)


def write_like(
    image: Image, data: np.ndarray, path: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write ``data`` (same shape as ``image.data``) to ``path`` in ``image``'s format."""
    path = Path(path)
    if data.shape != image.data.shape:
        raise ValueError(f"shape {data.shape} differs from the input's {image.data.shape}")
    if image.kind == "png":
        import imageio.v3 as iio

        with atomic_output(path, overwrite=overwrite) as tmp:
            iio.imwrite(tmp, data, extension=".png")
        return path
    bigtiff = data.nbytes > 2**31
    return write_tiff(path, data, overwrite=overwrite, bigtiff=bigtiff, **image.tiff_kwargs)


# --- OME-Zarr -------------------------------------------------------------------------


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


