"""A real out-of-focus field to try the widget on without any data of one's own."""

from __future__ import annotations

from typing import Any

from refocus.images import read_plane
from refocus.samples import z00_paths


def defocused_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """One shipped BBBC006 field about 32 um from focus (U2OS nuclei, Hoechst)."""
    path = z00_paths()[0]
    return [(read_plane(path), {"name": "BBBC006 z=00"}, "image")]
