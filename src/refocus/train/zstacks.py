"""A run's data from raw z-stacks through focus: each stack's focus plane, found and shown,
then every other plane within ``--max-defocus-um`` paired with it, split by stack.

Nobody has to make pairs by hand: the best-focus plane of each stack is the one the focus
estimator (:func:`refocus.focus.best_focus_plane`) reads as closest to focus, printed with
every plane's estimated distance so a wrong pick is seen before training starts
(``--focus-plane`` overrides it). A stack that cannot be used (a 2-D image, one plane,
planes of different sizes, no z spacing, no plane in focus) costs one line and is skipped;
the run goes on while two stacks remain, one to train on and one to choose the epoch by.
Planes of one stack share every cell, so the split is by stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from refocus.data.split import SPLITS, split_groups
from refocus.data.stack_dataset import StackPair, pairs_of_stack
from refocus.data.zstacks import ZStack, find_zstacks, read_zstack
from refocus.errors import RefocusError
from refocus.focus.estimate import FIELD_TILE, best_focus_plane
from refocus.train.config import TrainConfig

#: The closest plane of a stack must be estimated within this many um of focus (or one z
#: step, when the planes are further apart): else the focus curve has no peak in the stack.
IN_FOCUS_UM = 3.0


@dataclass(frozen=True)
class FocusedStack:
    """One usable stack, its focus plane (and how it was chosen), and its pairs."""

    stack: ZStack
    focus_plane: int
    estimated_um: list[float] | None  # per plane; None when given by --focus-plane
    pairs: list[StackPair]

    def line(self, max_defocus_um: float) -> str:
        """What is printed for the stack: the plane, and every plane's estimated distance."""
        s = self.stack
        head = f"{s.name}: {'focus' if self.estimated_um is None else 'best focus'} plane " \
               f"{self.focus_plane} of {s.n_planes} ({s.z_step_um:g} um apart), " \
               f"{len(self.pairs)} pairs within {max_defocus_um:g} um"
        if self.estimated_um is None:
            return f"{head} (--focus-plane)"
        shown = " ".join("-" if math.isnan(d) else f"{d:.0f}" for d in self.estimated_um)
        return f"{head}; estimated um from focus, plane 0 on: {shown}"

    def record(self, split: str) -> dict[str, Any]:
        """The stack's entry in the model file's provenance (plain data)."""
        s = self.stack
        estimated = None if self.estimated_um is None else [
            None if math.isnan(d) else round(d, 2) for d in self.estimated_um]
        return {
            "name": s.name, "source": str(s.source), "split": split, "n_planes": s.n_planes,
            "shape": list(s.planes.shape[1:]), "z_step_um": s.z_step_um,
            "focus_plane": self.focus_plane,
            "focus_from": "--focus-plane" if estimated is None else "estimated",
            "estimated_um": estimated, "n_pairs": len(self.pairs),
        }


def focus_of(stack: ZStack) -> tuple[int, list[float]]:
    """The best-focus plane of ``stack`` and every plane's estimated distance from focus;
    refused when even the closest plane is out of focus (focus lies outside the stack)."""
    try:
        best, estimates = best_focus_plane(stack.planes, tile=FIELD_TILE)
    except RefocusError as exc:
        raise RefocusError(stack.source, exc.problem) from exc
    distances = [e.distance_um for e in estimates]
    if not distances[best] <= max(IN_FOCUS_UM, stack.z_step_um):
        n = stack.n_planes
        end = {0: "first", n - 1: "last"}.get(best)
        beyond = f"; the distances fall towards the {end} plane: focus lies beyond it" \
            if end else ""
        raise RefocusError(stack.source, f"no plane in focus: the focus curve has no peak "
                                         f"(the closest plane, {best} of {n}, is estimated "
                                         f"{distances[best]:.1f} um from focus{beyond})")
    return best, distances


def _stack_paths(roots: list[str], skip: Callable[[str, str], None]) -> Iterator[Path]:
    """The stacks at each ``--zstacks`` path, each once; a path without any is skipped."""
    seen: set[Path] = set()
    for root in roots:
        try:
            found = find_zstacks(root)
        except RefocusError as exc:
            skip(exc.where or root, exc.problem)
            continue
        for path in found:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                yield path


def _focused(config: TrainConfig, path: Path) -> FocusedStack:
    """One stack read, checked, its focus plane found (or given) and its pairs made."""
    stack = read_zstack(path, config.z_step_um, config.channel)
    if min(stack.planes.shape[1:]) < config.size:
        raise RefocusError(path, f"planes {stack.planes.shape[1:]} smaller than the crop size "
                                 f"{config.size} (--size)")
    if config.focus_plane is not None:
        focus, estimated = config.focus_plane, None
    else:
        focus, estimated = focus_of(stack)
    return FocusedStack(stack, focus, estimated,
                        pairs_of_stack(stack, focus, config.max_defocus_um))


def load_stacks(config: TrainConfig, console: Console
                ) -> tuple[list[FocusedStack], list[dict[str, str]]]:
    """Every usable stack of ``config.zstacks`` (one printed line each) and the skipped
    ones with their problem (one printed line each); refused below two usable stacks."""
    usable: list[FocusedStack] = []
    skipped: list[dict[str, str]] = []

    def skip(source: str | Path, problem: str) -> None:
        skipped.append({"source": str(source), "problem": problem})
        console.print(f"skipped {source}: {problem}", highlight=False, soft_wrap=True)

    for path in _stack_paths(list(config.zstacks), skip):
        try:
            usable.append(_focused(config, path))
        except RefocusError as exc:
            skip(exc.where or path, exc.problem)  # the very file, for a folder of planes
            continue
        console.print(usable[-1].line(config.max_defocus_um), highlight=False, soft_wrap=True)
    if len(usable) < 2:
        n = len(usable) + len(skipped)
        reasons = "; ".join(f"{s['source']}: {s['problem']}" for s in skipped)
        raise RefocusError(None, f"{len(usable)} usable z-stack(s) of {n}: training needs "
                                 "at least two (one is held out for validation)"
                                 + (f"; skipped {reasons}" if reasons else ""))
    return usable, skipped


def split_stacks(config: TrainConfig, console: Console
                 ) -> tuple[dict[str, list[StackPair]], dict[str, Any]]:
    """The seeded split by stack and the provenance the model file records: every stack
    with its split, focus plane (and how it was chosen), z step and estimated distances."""
    stacks, skipped = load_stacks(config, console)
    fractions = tuple(float(f) for f in config.fractions)
    groups = [str(s.stack.source) for s in stacks]
    assignment = split_groups(groups, fractions, config.seed)  # type: ignore[arg-type]
    splits: dict[str, list[StackPair]] = {name: [] for name in SPLITS}
    names: dict[str, list[str]] = {name: [] for name in SPLITS}
    for s in stacks:
        splits[assignment[str(s.stack.source)]].extend(s.pairs)
        names[assignment[str(s.stack.source)]].append(s.stack.name)
    console.print("split by stack: " + "; ".join(
        f"{k} {', '.join(v)}" for k, v in names.items() if v), highlight=False, soft_wrap=True)
    provenance: dict[str, Any] = {
        "data": None, "layout": "zstacks", "channel": config.channel,
        "max_defocus_um": config.max_defocus_um, "split_seed": config.seed,
        "fractions": list(fractions),
        "groups": {k: sorted(str(p) for p in {p.group for p in v}) for k, v in splits.items()},
        "n_pairs": {k: len(v) for k, v in splits.items()},
        "zstacks": [s.record(assignment[str(s.stack.source)]) for s in stacks],
        "skipped": skipped,
    }
    return splits, provenance
