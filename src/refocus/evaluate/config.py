"""What an evaluation run scores, on which split, and how: one object checked when built.

In the style of CAREamics' configurations: a bad value or an unknown key is refused when
the :class:`EvalConfig` is made, with one line naming the option, so a run never starts
(or half-finishes) on a setting it cannot use. The command line builds it from one mapping
(:meth:`EvalConfig.from_mapping`); the demo and library callers build it directly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from refocus.baselines import RL_CANDIDATES
from refocus.data.bbbc006 import BEST_FOCUS_Z, check_z
from refocus.data.pairs import LAYOUTS
from refocus.data.split import SPLITS
from refocus.errors import RefocusError
from refocus.inference.backends import DEVICE_VARIANTS
from refocus.inference.trust import FLIP_CHOICES
from refocus.simulate import Optics

#: The method's planes: trained-side z = 1, 5, 10 and, never trained on, z = 32.
DEFAULT_INPUT_Z = (1, 5, 10, 32)
#: ``all`` scores every pair, the others one seeded split by well.
SPLIT_CHOICES = (*SPLITS, "all")


#: Settings ``refocus evaluate`` has an option for; errors name that option, as a user types it.
COMMAND_LINE = ("data", "layout", "input_z", "target_z", "split", "out", "second_model",
                "unpaired", "max_fields", "seed", "device", "trust_flips", "overwrite")


def _where(name: str) -> str:
    """The option an error names: the command line's spelling where there is one."""
    return "--" + name.replace("_", "-") if name in COMMAND_LINE else name


def _path(name: str, value: Any) -> Path:
    if not isinstance(value, (str, PathLike)) or not str(value):
        raise RefocusError(_where(name), f"must be a file or folder path, got {value!r}")
    return Path(value)


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, value: None if value is None else check(name, value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RefocusError(_where(name), f"must be true or false, got {value!r}")
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise RefocusError(_where(name), f"must be a non-empty string, got {value!r}")
    return value


def _whole(minimum: int | None) -> Callable[[str, Any], int]:
    bound = "" if minimum is None else f" >= {minimum}"

    def check(name: str, value: Any) -> int:
        if (isinstance(value, bool) or not isinstance(value, int)
                or (minimum is not None and value < minimum)):
            raise RefocusError(_where(name), f"must be a whole number{bound}, got {value!r}")
        return int(value)

    return check


def _wholes(minimum: int) -> Callable[[str, Any], tuple[int, ...]]:
    """A non-empty list of distinct whole numbers (planes, iteration counts)."""
    one = _whole(minimum)

    def check(name: str, value: Any) -> tuple[int, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
            raise RefocusError(_where(name), f"must be a non-empty list of whole numbers, "
                                             f"got {value!r}")
        numbers = tuple(one(name, v) for v in value)
        if len(set(numbers)) != len(numbers):
            raise RefocusError(_where(name), f"lists a number twice: {list(numbers)}")
        return numbers

    return check


def _choice(choices: Callable[[], Sequence[str]], kind: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if value not in choices():
            raise RefocusError(_where(name), f"unknown {kind} {value!r} "
                                             f"(choose from {', '.join(choices())})")
        return value

    return check


def _choice_int(choices: Sequence[int]) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or value not in choices:
            raise RefocusError(_where(name), f"must be one of "
                                             f"{', '.join(map(str, choices))}, got {value!r}")
        return int(value)

    return check


def _fractions(name: str, value: Any) -> tuple[float, float, float]:
    ok = (not isinstance(value, (str, bytes)) and isinstance(value, Sequence) and len(value) == 3
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                  for v in value))
    if not ok or not math.isclose(sum(value), 1.0, abs_tol=1e-6):
        raise RefocusError(_where(name), "must be three non-negative train/val/test fractions "
                                         f"summing to 1, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _channels(name: str, value: Any) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else value
    if not isinstance(values, Sequence) or not values:
        raise RefocusError(_where(name), f"must name at least one channel, got {value!r}")
    return tuple(_text(name, v) for v in values)


def _unpaired(name: str, value: Any) -> Path | tuple[Path, ...]:
    """A folder of images, or a list of image files."""
    if isinstance(value, (str, PathLike)):
        return _path(name, value)
    if not isinstance(value, Sequence):
        raise RefocusError(_where(name), f"must be a folder or a list of files, got {value!r}")
    return tuple(_path(name, v) for v in value)


def _optics(name: str, value: Any) -> Optics:
    if isinstance(value, Optics):
        return value
    try:
        return Optics(**value)
    except (TypeError, ValueError) as exc:
        raise RefocusError(_where(name), f"not simulator optics ({exc})") from exc


@dataclass(frozen=True)
class EvalConfig:
    """Everything an evaluation run needs (:func:`~refocus.evaluate.run.evaluate`), checked
    when built.

    ``fractions``, ``seed`` and ``channels`` left ``None`` are read from the model file, so
    the test split holds only wells the model never saw; ``optics`` left ``None`` are those
    of the folder's ``simulation.json``, else the calibrated defaults. ``max_fields`` caps
    the evaluated fields and the unpaired images (quick looks); RL's iteration count is
    chosen among ``rl_candidates`` on up to ``max_val_fields`` validation fields. Each
    model output gets a trust map from ``trust_flips`` predictions
    (:mod:`refocus.inference.trust`; 8 = all rotations and flips, 1 = physical consistency
    only, 0 = none): 2 by default, which doubles the model's time. ``variant`` is how both
    models run (:func:`~refocus.inference.backends.prepare_for_inference`): ``"auto"``
    measures the fastest on first use, minutes on a CPU that a quick look may not repay.
    """

    model: Path
    data: Path
    layout: str = "bbbc006"
    input_z: tuple[int, ...] = DEFAULT_INPUT_Z
    target_z: int = BEST_FOCUS_Z
    split: str = "test"
    out: Path = Path("evaluation")
    second_model: Path | None = None
    unpaired: Path | tuple[Path, ...] | None = None
    channels: tuple[str, ...] | None = None
    fractions: tuple[float, float, float] | None = None
    seed: int | None = None
    max_fields: int | None = None
    max_val_fields: int = 3
    rl_candidates: tuple[int, ...] = RL_CANDIDATES
    optics: Optics | None = None
    device: str | None = None
    n_panels: int = 3
    trust_flips: int = 2
    variant: str = "auto"
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name, check in CHECKS.items():
            object.__setattr__(self, name, check(name, getattr(self, name)))
        if self.layout == "bbbc006":  # a layout of z-stacks: planes must exist in one
            for z in (*self.input_z, self.target_z):
                check_z(_where("input_z" if z in self.input_z else "target_z"), z)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> EvalConfig:
        """A config from plain data (command line, a settings file); unknown keys refused."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                raise RefocusError(None, f"unknown evaluate option {key!r} "
                                         f"(known: {', '.join(known)})")
        for key in ("model", "data"):
            if key not in values:
                raise RefocusError(None, f"evaluation needs the {key!r} setting")
        return cls(**values)


#: How each option is checked and normalised (lists become tuples, strings paths).
CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "model": _path,
    "data": _path,
    "layout": _choice(LAYOUTS.names, "data layout"),
    "input_z": _wholes(0),
    "target_z": _whole(0),
    "split": _choice(lambda: SPLIT_CHOICES, "split"),
    "out": _path,
    "second_model": _optional(_path),
    "unpaired": _optional(_unpaired),
    "channels": _optional(_channels),
    "fractions": _optional(_fractions),
    "seed": _optional(_whole(None)),
    "max_fields": _optional(_whole(1)),
    "max_val_fields": _whole(1),
    "rl_candidates": _wholes(1),
    "optics": _optional(_optics),
    "device": _optional(_text),
    "n_panels": _whole(0),
    "trust_flips": _choice_int((0, *FLIP_CHOICES)),
    "variant": _choice(lambda: ("auto", *dict.fromkeys(sum(DEVICE_VARIANTS.values(), ()))),
                       "inference variant"),
    "overwrite": _flag,
    "progress": _flag,
}
