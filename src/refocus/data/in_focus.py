"""The ``in-focus`` layout: a folder of in-focus fields, trained on through the simulator.

No defocused files are needed: :class:`~refocus.data.synthetic.SyntheticPairs` makes each
training pair on the fly (any defocus, both sides of focus, jittered optics and camera).
A pair here is one field (input and target are the same file); fields are split by well
when their names are BBBC006 names, else by file, like every other layout. The simulation
protocols (``--synthetic``) are registered in :data:`PROTOCOLS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from refocus.data.bbbc006 import plane_from_path
from refocus.data.pairs import LAYOUTS, Pair
from refocus.data.synthetic import SyntheticConfig
from refocus.errors import RefocusError
from refocus.images import READERS
from refocus.registry import Registry

NAME = "in-focus"
#: How the defocus of the simulated pairs is drawn (``--synthetic``).
PROTOCOLS: Registry[Callable[[], SyntheticConfig]] = Registry("synthetic protocol")
PROTOCOLS.register("both-sides", SyntheticConfig)  # any defocus, both sides, in focus too
PROTOCOLS.register("paper", SyntheticConfig.paper)  # z = 1, 5, 10 only, as published


@LAYOUTS.register(NAME)
def build_in_focus_pairs(
    root: str | Path, input_z: Iterable[int], target_z: int, channels: Sequence[str]
) -> list[Pair]:
    """One pair per in-focus image of ``root`` (planes and channels do not apply)."""
    root = Path(root)
    if not root.is_dir():
        raise RefocusError(root, "folder not found (the in-focus layout needs a folder of "
                                 "in-focus fields)")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in READERS)
    if not files:
        raise RefocusError(root, f"no images ({', '.join(READERS.names())} files)")
    pairs = []
    for path in files:
        plane = plane_from_path(path)
        group = plane.field.well if plane is not None else path.stem
        pairs.append(Pair(path, path, group, path.stem))
    return pairs
