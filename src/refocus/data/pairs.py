"""(input plane, target plane) pairs from any registered data layout, and their split.

``bbbc006``: the Broad's z-stack folders; a pair is (field, channel, input z) -> target z.
``pairs``: any folder with ``input/`` and ``target/`` subfolders whose files match by name.
A new layout is one builder registered in :data:`LAYOUTS`; ``--layout`` reads its choices
from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from refocus.data.bbbc006 import BEST_FOCUS_Z, TRAIN_Z, plane_folder_name, scan_bbbc006
from refocus.data.split import split_groups
from refocus.errors import RefocusError
from refocus.images import READERS
from refocus.registry import Registry


@dataclass(frozen=True)
class Pair:
    """One training example: a defocused input file and its in-focus target file.

    ``group`` is what the split is made by (the well for BBBC006, the file name otherwise);
    ``z`` is the input plane (``None`` when the layout has no z).
    """

    input: Path
    target: Path
    group: str
    name: str
    z: int | None = None
    channel: str | None = None


#: A layout's builder: ``(root, input_z, target_z, channels) -> pairs``.
LayoutBuilder = Callable[[str | Path, Iterable[int], int, Sequence[str]], list[Pair]]
#: Data folder layouts by name (``--layout``), each registered next to its builder; the
#: modules of :mod:`refocus.data` are imported on first use, so a layout in a new module
#: (``in_focus.py``) needs no import anywhere, and ``refocus.data`` never imports the
#: simulator (which imports ``refocus.data.bbbc006``) while it is being imported itself.
LAYOUTS: Registry[LayoutBuilder] = Registry("data layout", package="refocus.data")


def build_bbbc006_pairs(
    root: str | Path,
    input_z: Iterable[int],
    target_z: int = BEST_FOCUS_Z,
    channels: Sequence[str] = ("w1",),
) -> list[Pair]:
    """Pair every field's input planes with its target plane; a missing plane is an error."""
    index = scan_bbbc006(root)
    input_z = list(input_z)
    pairs: list[Pair] = []
    for channel in channels:
        if channel not in index.channels:
            raise RefocusError(
                root, f"channel {channel!r} not in this folder (found {', '.join(index.channels)})"
            )
        for fld, z in index.missing([*input_z, target_z], channel):
            raise RefocusError(
                Path(root) / plane_folder_name(z),
                f"missing plane for field {fld} {channel} z={z}",
            )
        for fld in index.fields:
            target = index.get(fld, channel, target_z)
            if target is None:
                continue  # field imaged in another channel only
            for z in input_z:
                plane = index.get(fld, channel, z)
                assert plane is not None  # index.missing() above guarantees it
                pairs.append(
                    Pair(plane.path, target.path, fld.well, f"{fld}_{channel}_z{z:02d}", z, channel)
                )
    return pairs


LAYOUTS.register("bbbc006", build_bbbc006_pairs)


def build_folder_pairs(root: str | Path) -> list[Pair]:
    """Pair ``root/input/NAME`` with ``root/target/NAME`` (same stem, any suffix in
    :data:`refocus.images.READERS`)."""
    root = Path(root)
    inputs, targets = root / "input", root / "target"
    for folder in (inputs, targets):
        if not folder.is_dir():
            raise RefocusError(
                folder, "folder not found (the pairs layout needs input/ and target/)"
            )

    def by_stem(folder: Path) -> dict[str, Path]:
        return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in READERS}

    ins, tgs = by_stem(inputs), by_stem(targets)
    for stem, path in ins.items():
        if stem not in tgs:
            raise RefocusError(path, f"no matching target file in {targets}")
    if not ins:
        raise RefocusError(inputs, f"no images ({', '.join(READERS.names())} files)")
    return [Pair(ins[s], tgs[s], s, s) for s in sorted(ins)]


@LAYOUTS.register("pairs")
def _folder_layout(
    root: str | Path, input_z: Iterable[int], target_z: int, channels: Sequence[str]
) -> list[Pair]:
    """The ``pairs`` layout: files are whole images, so planes and channels do not apply."""
    return build_folder_pairs(root)


def build_pairs(
    root: str | Path,
    layout: str = "bbbc006",
    input_z: Iterable[int] = TRAIN_Z,
    target_z: int = BEST_FOCUS_Z,
    channels: Sequence[str] = ("w1",),
) -> list[Pair]:
    """All pairs of a data folder in the given layout (one of :data:`LAYOUTS`)."""
    return LAYOUTS.get(layout, "--layout")(root, input_z, target_z, channels)


def split_pairs(
    pairs: Sequence[Pair],
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, list[Pair]]:
    """Split pairs by their group (well or file), seeded: {"train": [...], "val": [...], ...}."""
    assignment = split_groups([p.group for p in pairs], fractions, seed)
    out: dict[str, list[Pair]] = {"train": [], "val": [], "test": []}
    for p in pairs:
        out[assignment[p.group]].append(p)
    return out


def load_pairs(
    root: str | Path,
    split: str,
    layout: str = "bbbc006",
    input_z: Iterable[int] = TRAIN_Z,
    target_z: int = BEST_FOCUS_Z,
    channels: Sequence[str] = ("w1",),
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> list[Pair]:
    """The pairs of one split (``train``, ``val``, ``test`` or ``all``)."""
    pairs = build_pairs(root, layout, input_z, target_z, channels)
    if split == "all":
        return pairs
    return split_pairs(pairs, fractions, seed)[split]
