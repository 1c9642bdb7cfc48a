"""Whole images in and out, metadata kept: one reader and one writer per file suffix.

A refocused image replaces its input in someone's analysis, so it is written in the same
format with the same axes, dtype, pixel size and metadata: OME-XML is copied verbatim,
ImageJ hyperstack settings and TIFF resolution tags are passed back. Formats live in
:data:`READERS` and :data:`WRITERS` by suffix, so a new format is one reader (and writer)
function plus its registration; :func:`read_image`, :func:`read_plane` and
:func:`write_like` only dispatch. OME-Zarr folders are :mod:`refocus.images.omezarr`'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from refocus.images.omezarr import is_zarr
from refocus.images.output import atomic_output
from refocus.images.planes import (
    check_image_size,
    check_pixels,
    check_plane,
    read_or_raise,
    write_tiff,
)
from refocus.registry import Registry

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
#: The suffixes of the built-in formats (:data:`READERS` also has any added since).
IMAGE_SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES
#: The axes of one plane: rows, columns.
SPATIAL = "YX"
#: ImageJ metadata keys tifffile writes itself from the array's shape.
_IMAGEJ_AUTOMATIC = {"ImageJ", "images", "channels", "slices", "frames", "hyperstack", "axes"}


@dataclass
class Image:
    """Pixels of one image file, their axes, and what it takes to write them back."""

    path: Path
    data: np.ndarray
    axes: str
    kind: str  # "tiff", "ome-tiff", "imagej-tiff", "png", or an added format's
    channel_names: tuple[str, ...] | None = None
    tiff_kwargs: dict[str, Any] = field(default_factory=dict)


#: ``reader(path) -> Image``; failures become one line through :func:`read_or_raise`.
ImageReader = Callable[[Path], Image]
#: ``writer(image, data, path, overwrite) -> path``: ``data`` in ``image``'s format.
ImageWriter = Callable[[Image, np.ndarray, Path, bool], Path]
#: Image readers by lower-case file suffix.
READERS: Registry[ImageReader] = Registry("image file type")
#: Image writers by the lower-case suffix of the file the image was read from.
WRITERS: Registry[ImageWriter] = Registry("image file type to write")


def _channel_names_from_ome(xml: str) -> tuple[str, ...] | None:
    pixels = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    if isinstance(pixels, list):
        pixels = pixels[0]
    channels = pixels.get("Pixels", {}).get("Channel", [])
    if isinstance(channels, dict):
        channels = [channels]
    names = tuple(str(c.get("Name", "")) for c in channels)
    return names if names and all(names) else None


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


def _read_tiff(path: Path) -> Image:
    """Series 0 of a plain, OME or ImageJ TIFF, with what it takes to write it back."""
    with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        check_image_size(path, series.shape, series.dtype)
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


def _write_tiff(image: Image, data: np.ndarray, path: Path, overwrite: bool) -> Path:
    bigtiff = data.nbytes > 2**31
    return write_tiff(path, data, overwrite=overwrite, bigtiff=bigtiff, **image.tiff_kwargs)


#: PNG colour types (IHDR) to samples per pixel: grey, RGB, palette, grey+alpha, RGBA.
_PNG_BANDS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and pixel type from the header, nothing decoded: the IHDR chunk of a PNG, the
    first series of a TIFF saved as ``.png`` (the BBBC006 aligned images are); None for
    anything else (the decoder then says what is wrong)."""
    with path.open("rb") as f:
        head = f.read(26)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            return tif.series[0].shape, tif.series[0].dtype
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    bands = _PNG_BANDS.get(head[25], 1)
    shape = (height, width, bands) if bands > 1 else (height, width)
    return shape, np.dtype(np.uint16 if head[24] == 16 else np.uint8)


def _read_png(path: Path) -> Image:
    """One grey plane (8 or 16 bit): PNG has no axes to keep. The header is checked
    against the size limit before decoding (beyond it, Pillow also refuses images over
    ~179 M pixels as decompression bombs)."""
    import imageio.v3 as iio

    header = _png_header(path)
    if header is not None:
        check_image_size(path, *header)
    return Image(path, check_plane(path, np.asarray(iio.imread(path))), SPATIAL, "png")


def _write_png(image: Image, data: np.ndarray, path: Path, overwrite: bool) -> Path:
    import imageio.v3 as iio

    with atomic_output(path, overwrite=overwrite) as tmp:
        iio.imwrite(tmp, data, extension=".png")
    return path


for _suffix in TIFF_SUFFIXES:
    READERS.register(_suffix, _read_tiff)
    WRITERS.register(_suffix, _write_tiff)
READERS.register(".png", _read_png)
WRITERS.register(".png", _write_png)


def _read(path: Path) -> Image:
    """The file as its suffix's reader sees it, any failure as one line."""
    return read_or_raise(path, READERS.get(path.suffix.lower(), path))


def read_image(path: str | os.PathLike[str]) -> Image:
    """Read a TIFF (any axes) or PNG (one grey plane), refusing RGB and damaged files."""
    path = Path(path)
    image = _read(path)
    check_pixels(path, image.data.shape, image.data.dtype, image.axes)
    return image


def read_plane(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one 2-D grey plane, refusing RGB, stacks and unreadable files with one line."""
    path = Path(path)
    return check_plane(path, _read(path).data)


def write_like(
    image: Image, data: np.ndarray, path: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write ``data`` (same shape as ``image.data``) to ``path`` in ``image``'s format."""
    path = Path(path)
    if data.shape != image.data.shape:
        raise ValueError(f"shape {data.shape} differs from the input's {image.data.shape}")
    writer = WRITERS.get(image.path.suffix.lower(), image.path)
    return writer(image, data, path, overwrite)


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True for the files and folders :func:`read_image` / :func:`open_ome_zarr` accept."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in READERS
    return is_zarr(path)
