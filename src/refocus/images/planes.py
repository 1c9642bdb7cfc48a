"""Reading and writing image files, with one clear error per bad file.

Microscopy images are 16-bit TIFFs (often LZW-compressed, hence ``imagecodecs``) or PNGs.
Every writer goes through :func:`atomic_output` so an interrupted run never leaves a
half-written file under the final name, and nothing is overwritten unless asked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import tifffile

from refocus.errors import RefocusError
from refocus.images.output import atomic_output

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
IMAGE_SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES

T = TypeVar("T")


def _read_any(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return tifffile.imread(path)
    if suffix in PNG_SUFFIXES:
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    raise RefocusError(path, f"unsupported file type {suffix!r} (expected TIFF or PNG)")


def read_or_raise(path: Path, reader: Callable[[Path], T]) -> T:
    """``reader(path)`` for an existing file, any decoding failure as one line: tifffile and
    imagecodecs raise many types for damaged files."""
    if not path.is_file():
        raise RefocusError(path, "file not found")
    try:
        return reader(path)
    except RefocusError:
        raise
    except Exception as exc:
        raise RefocusError(path, f"cannot read image ({type(exc).__name__}: {exc})") from exc


def check_pixel_type(where: str | os.PathLike[str] | None, dtype: np.dtype) -> None:
    """Refuse pixels that are not numbers (bool, complex, ...): the network needs intensities."""
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise RefocusError(where, f"unsupported pixel type {dtype}")


def read_plane(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one 2-D grey plane, refusing RGB, stacks and unreadable files with one line."""
    path = Path(path)
    array = np.asarray(read_or_raise(path, _read_any))
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        raise RefocusError(path, f"RGB image {array.shape} where a grey plane is expected")
    squeezed = np.squeeze(array)
    if squeezed.ndim != 2:
        raise RefocusError(
            path, f"{array.ndim}-D image {array.shape} where a 2-D plane is expected"
        )
    check_pixel_type(path, squeezed.dtype)
    return squeezed


def write_tiff(
    path: str | os.PathLike[str],
    array: np.ndarray,
    overwrite: bool = False,
    **tiff_kwargs: object,
) -> Path:
    """Write ``array`` as a (zlib-compressed) TIFF atomically; returns the final path."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, array, compression="zlib", **tiff_kwargs)
    return Path(path)
