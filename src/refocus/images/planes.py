"""The checks every image reader applies, and the TIFF writer every plane goes out through.

A bad file must give one line naming it and the problem (the CLI prints nothing else), so
decoding failures, RGB, stacks, non-numeric pixels and images too large to hold in memory
are refused here in one wording for all formats. The size limit (:func:`max_image_gib`) is
checked on the header, before any decoding. Every writer goes through
:func:`refocus.images.output.atomic_output` so an interrupted run never leaves a
half-written file under the final name, and nothing is overwritten unless asked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import tifffile

from refocus.errors import RefocusError
from refocus.images.output import atomic_output

T = TypeVar("T")

#: The largest image (decoded, in its own pixel type) read whole into memory, in GiB.
DEFAULT_MAX_IMAGE_GIB = 4.0
#: Environment variable that replaces :data:`DEFAULT_MAX_IMAGE_GIB`.
MAX_IMAGE_GIB_ENV = "REFOCUS_MAX_IMAGE_GIB"
_max_image_gib: float | None = None  # set by set_max_image_gib (a CLI option)


def set_max_image_gib(gib: float | None) -> None:
    """Set the size limit for whole-image reads (``--max-image-gib``); None: back to
    ``$REFOCUS_MAX_IMAGE_GIB`` or the default."""
    global _max_image_gib
    if gib is not None and not gib > 0:
        raise RefocusError("--max-image-gib", f"must be a positive number of GiB, got {gib}")
    _max_image_gib = gib


def max_image_gib() -> float:
    """The limit in force: the one set, else ``$REFOCUS_MAX_IMAGE_GIB``, else 4 GiB."""
    if _max_image_gib is not None:
        return _max_image_gib
    text = os.environ.get(MAX_IMAGE_GIB_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_GIB
    try:
        gib = float(text)
    except ValueError:
        gib = float("nan")
    if not gib > 0:
        raise RefocusError(MAX_IMAGE_GIB_ENV, f"must be a positive number of GiB, got {text!r}")
    return gib


def _gib(value: float) -> str:
    return f"{value:.1f}" if value >= 0.1 else f"{value:.2g}"


def check_image_size(
    where: str | os.PathLike[str] | None, shape: tuple[int, ...], dtype: np.dtype
) -> None:
    """Refuse, from the header alone, an image whose pixels would not fit the limit: a
    damaged or hostile header can claim terabytes in a file of a few bytes."""
    dtype = np.dtype(dtype)
    gib = math.prod(shape) * dtype.itemsize / 2**30
    limit = max_image_gib()
    if gib > limit:
        size = "x".join(str(n) for n in shape)
        raise RefocusError(
            where,
            f"{size} {dtype} image ({_gib(gib)} GiB) is larger than the {_gib(limit)} GiB limit; "
            "use --max-image-gib N or convert it to OME-Zarr, which refocus processes "
            "block by block",
        )


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


def check_pixels(
    where: str | os.PathLike[str] | None, shape: tuple[int, ...], dtype: np.dtype, axes: str
) -> None:
    """One clear line for what the network cannot refocus: RGB, no 2-D plane, odd types."""
    if "S" in axes and shape[axes.index("S")] > 1:
        raise RefocusError(where, f"RGB image {tuple(shape)} where grey planes are expected")
    if not ("Y" in axes and "X" in axes):
        raise RefocusError(where, f"no 2-D plane in an image with axes {axes!r} {tuple(shape)}")
    check_pixel_type(where, dtype)


def check_plane(where: str | os.PathLike[str] | None, array: np.ndarray) -> np.ndarray:
    """``array`` as one 2-D grey plane (length-1 axes dropped); RGB and stacks refused."""
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        raise RefocusError(where, f"RGB image {array.shape} where a grey plane is expected")
    squeezed = np.squeeze(array)
    if squeezed.ndim != 2:
        raise RefocusError(
            where, f"{array.ndim}-D image {array.shape} where a 2-D plane is expected"
        )
    check_pixel_type(where, squeezed.dtype)
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
