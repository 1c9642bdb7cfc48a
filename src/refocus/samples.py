"""Paths of the real BBBC006 sample shipped inside the package (see sample/README.md).

The demo and the tests run on these, so refocus works out of the box without a download.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_dir() -> Path:
    """Folder holding ``in-focus/`` (8 best-focus PNGs) and ``z00/`` (24 real z=00 TIFFs)."""
    return Path(str(resources.files("refocus") / "sample"))


def in_focus_paths() -> list[Path]:
    """The 8 best-focus fields (wells a02..a09, site 1, channel w1), 696x520 uint16."""
    return sorted((sample_dir() / "in-focus").glob("*.png"))


def z00_paths() -> list[Path]:
    """The 24 real strongly defocused fields (z=00, about 32 um from focus)."""
    return sorted((sample_dir() / "z00").glob("*.tif"))
