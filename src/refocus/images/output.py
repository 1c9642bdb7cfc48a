"""Output policy: nothing is overwritten without ``--overwrite``, nothing half-written
ever carries a final name, and a bad output folder is reported before any work is spent."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from refocus.errors import RefocusError


def prepare_destination(path: Path, overwrite: bool, must_be_file: bool = False) -> Path:
    """Refuse an existing ``path`` unless ``overwrite`` (and a folder where a file is to be
    written, even with ``overwrite``); make sure its folder exists and is writable, before
    any work is spent on the result. Returns that folder."""
    if must_be_file and path.is_dir():
        raise RefocusError(path, "is a folder; give the name of a file to write")
    if path.exists() and not overwrite:
        raise RefocusError(path, "exists already (use --overwrite to replace it)")
    return ensure_writable_folder(path.parent)


def ensure_writable_folder(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` if needed and make sure files can be made in it, so a bad output
    folder is reported before any work is spent. Returns it as a Path."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RefocusError(folder, f"cannot create output folder ({exc.strerror})") from exc
    if not os.access(folder, os.W_OK | os.X_OK):  # X: a folder must be enterable too
        raise RefocusError(folder, "output folder is not writable")
    return folder


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
    parent = prepare_destination(path, overwrite, must_be_file=True)
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


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Like :func:`atomic_output`, for a folder (a Zarr store).

    Yields an empty temporary folder beside ``path``; on success it takes the final name
    (an existing ``path`` is replaced only with ``overwrite``, and removed only after the
    new one is in place). On failure the temporary folder is removed.
    """
    path = Path(path)
    parent = prepare_destination(path, overwrite)
    tmp = parent / f".{path.name}.{uuid.uuid4().hex[:12]}.part"
    tmp.mkdir(mode=0o777)  # the umask applies, as for any folder the user makes
    old = parent / f"{tmp.name}.old"
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
