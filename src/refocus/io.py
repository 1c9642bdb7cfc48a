"""Reading and writing image files, with one clear error per bad file.

Microscopy images are 16-bit TIFFs (often LZW-compressed, hence ``imagecodecs``) or PNGs.
Every writer goes through :func:`atomic_output` so an interrupted run never leaves a
half-written file under the final name, and nothing is overwritten unless asked.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from refocus.errors import RefocusError

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
IMAGE_SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES


def _read_any(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return tifffile.imread(path)
    if suffix in PNG_SUFFIXES:
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    raise RefocusError(path, f"unsupported file type {suffix!r} (expected TIFF or PNG)")


def read_plane(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one 2-D grey plane, refusing RGB, stacks and unreadable files with one line."""
    path = Path(path)
    if not path.is_file():
        raise RefocusError(path, "file not found")
    try:
        array = _read_any(path)
    except RefocusError:
        raise
    except Exception as exc:  # tifffile/imagecodecs raise many types for damaged files
        raise RefocusError(path, f"cannot read image ({type(exc).__name__}: {exc})") from exc
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        raise RefocusError(path, f"RGB image {array.shape} where a grey plane is expected")
    squeezed = np.squeeze(array)
    if squeezed.ndim != 2:
        raise RefocusError(
            path, f"{array.ndim}-D image {array.shape} where a 2-D plane is expected"
        )
    if not (
        np.issubdtype(squeezed.dtype, np.integer) or np.issubdtype(squeezed.dtype, np.floating)
    ):
        raise RefocusError(path, f"unsupported pixel type {squeezed.dtype}")
    return squeezed


def prepare_destination(path: Path, overwrite: bool) -> Path:
    """Refuse an existing ``path`` unless ``overwrite``; make sure its folder exists and is
    writable (before any work is spent on the result). Returns that folder."""
    if path.exists() and not overwrite:
        raise RefocusError(path, "exists already (use --overwrite to replace it)")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RefocusError(parent, f"cannot create output folder ({exc.strerror})") from exc
    if not os.access(parent, os.W_OK):
        raise RefocusError(parent, "output folder is not writable")
    return parent


def refuse_used_folder(folder: Path, overwrite: bool) -> None:
    """A command that fills a whole folder refuses one already holding files unless
    ``overwrite`` (before any work), so an earlier run's results are never mixed or lost."""
    if folder.exists() and not folder.is_dir():
        raise RefocusError(folder, "exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise RefocusError(folder, "folder is not empty (use --overwrite to replace its contents)")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success.

    Refuses an existing ``path`` unless ``overwrite`` so no result is lost by accident.
    """
    path = Path(path)
    parent = prepare_destination(path, overwrite)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
