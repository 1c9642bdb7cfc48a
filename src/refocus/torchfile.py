"""Reading torch files without ever running code from them, with one line per refusal.

``torch.load(weights_only=True)`` refuses pickled objects, but its messages are several
lines long and advise re-running with ``weights_only=False``, which for a file that holds
code is exactly the unsafe thing to do. Every torch file refocus reads (model files, local
ImageNet/VGG weights) goes through :func:`load_tensors`, whose errors say in one line what
the file is and why it was refused.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from refocus.errors import RefocusError


def _unsafe_globals(path: Path) -> list[str]:
    """The classes/functions a ``torch.save`` file would import, read without running any."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a readable torch zip file
        return []


def _refusal(path: Path, exc: BaseException, what: str) -> RefocusError:
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
        return RefocusError(path, f"not enough memory to load this {what} "
                                  f"({path.stat().st_size / 2**20:.0f} MB)")
    if not zipfile.is_zipfile(path):
        return RefocusError(path, f"refused: not a {what} (not a PyTorch zip file: random "
                                  "bytes, a plain pickle or the legacy torch format, which "
                                  "could only be read by running code it contains)")
    unsafe = _unsafe_globals(path)
    if unsafe:
        return RefocusError(path, f"refused: the file holds pickled Python objects "
                                  f"({', '.join(unsafe[:3])}), and a {what} may only hold "
                                  "tensors and plain data (loading it could run code)")
    if isinstance(exc, pickle.UnpicklingError):
        return RefocusError(path, f"refused: not a {what} (it holds objects other than "
                                  "tensors and plain data)")
    return RefocusError(path, f"not a {what} (damaged or truncated: {type(exc).__name__})")


def load_tensors(path: str | Path, what: str) -> Any:
    """The contents of a torch file of tensors and plain data, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise RefocusError(path, f"{what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusals, truncated zips, foreign files, no memory
        raise _refusal(path, exc, what) from exc
