"""What defines a training run, refused when it is built if it cannot run.

Every check that needs no data happens in :meth:`TrainConfig.__post_init__` (as CAREamics
validates its configurations), so a bad value costs no image reads, no download and no
file, and its one-line error names the command-line option to change.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from refocus.archs import ARCHITECTURES, Architecture
from refocus.archs.padding import MULTIPLE
from refocus.data.bbbc006 import BEST_FOCUS_Z, TRAIN_Z, check_z
from refocus.data.in_focus import NAME as IN_FOCUS
from refocus.data.in_focus import PROTOCOLS
from refocus.data.pairs import LAYOUTS
from refocus.errors import RefocusError
from refocus.guides import get_guide
from refocus.loss import LOSSES

#: Fields that only say how to run (a resumed run may change them).
RUNTIME_FIELDS = ("device", "workers", "overwrite", "resume")
#: What ``--select-by`` may choose the best epoch by, and its worst value (PSNR: higher is
#: better, pooled over crops by :func:`refocus.metrics.pooled_psnr`; L1: lower).
SELECT = {"val_psnr": -float("inf"), "val_l1": float("inf")}
#: The default ``weights``: the architecture's own pretrained part, where it has one.
PRETRAINED = "imagenet"
#: The BBBC006 channel file layouts use when ``channel`` is not given (nuclei).
DEFAULT_CHANNEL = "w1"
#: Planes at most this far from a z-stack's focus plane are training inputs by default: the
#: range the shipped model was trained on (BBBC006 z=0..32, 2 um apart, focus at z=16).
MAX_DEFOCUS_UM = 32.0
#: Settings that only z-stack training (``zstacks``) reads.
ZSTACK_FIELDS = ("z_step_um", "focus_plane")


def _option(name: str) -> str:
    """The command-line option of a field, as errors name it."""
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    """Everything that defines a training run (``RUNTIME_FIELDS`` only say how to run it).

    ``arch`` is any name in :data:`refocus.archs.ARCHITECTURES` and ``arch_args`` its
    builder's keyword arguments (``{"self_attention": True}`` for the ResNet U-Nets).
    ``synthetic`` is the simulation protocol of the ``in-focus`` layout (pairs made on the
    fly from in-focus fields); ``recipe`` names the recipe the settings came from;
    ``init`` is a refocus model (file or pretrained name) of the same architecture to
    fine-tune, instead of starting from ``weights``. ``guide`` names a guide channel
    (:mod:`refocus.guides`) the network sees beside the image: its input then has two
    channels, the guide made as at inference (on pairs of files or z-stack planes, from the
    PSF estimated on each whole input plane; simulated crops, from their own defocus).

    ``zstacks`` (instead of ``data``): z-stack files or folders of them
    (:mod:`refocus.train.zstacks`); each stack's best-focus plane (or ``focus_plane``) is
    the target of every plane within ``max_defocus_um``; ``z_step_um`` is used where a
    stack states no z spacing. ``channel``: the BBBC006 channel (default ``w1``), or a
    multi-channel stack's channel (name or index; None for single-channel stacks).
    """

    data: str | None = None
    out: str = field(kw_only=True)
    layout: str = "bbbc006"
    input_z: list[int] = field(default_factory=lambda: list(TRAIN_Z))
    target_z: int = BEST_FOCUS_Z
    channel: str | None = None
    zstacks: list[str] = field(default_factory=list)
    z_step_um: float | None = None
    focus_plane: int | None = None
    max_defocus_um: float = MAX_DEFOCUS_UM
    arch: str = "resnet34"
    arch_args: dict[str, Any] = field(default_factory=dict)
    synthetic: str = "both-sides"
    recipe: str | None = None
    init: str | None = None
    guide: str | None = None
    select_by: str = "psnr"
    weights: str | None = PRETRAINED
    loss: str = "feature"
    vgg_weights: str | None = "imagenet"
    size: int = 128
    batch: int = 8
    epochs: int = 10
    frozen_epochs: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-3
    crops_per_pair: int = 8
    val_crops: int = 4
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 0
    device: str | None = None
    workers: int | None = None
    overwrite: bool = False
    resume: bool = False

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> TrainConfig:
        """A config from plain data (a command's options, a saved file), refusing keys that
        are no setting, since a misspelt key would otherwise be silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise RefocusError(
                None,
                f"unknown training setting(s) {', '.join(unknown)} "
                f"(known: {', '.join(f.name for f in fields(cls))})",
            )
        if "out" not in settings:
            raise RefocusError(None, "training needs --out")
        return cls(**settings)

    def __post_init__(self) -> None:
        self._check_network()
        self._check_counts()
        self._check_rates()
        self._check_data()
        LOSSES.get(self.loss, "--loss")

    def _check_counts(self) -> None:
        for name in ("batch", "epochs", "crops_per_pair", "val_crops"):
            if getattr(self, name) < 1:
                raise RefocusError(
                    None, f"{_option(name)} must be at least 1, got {getattr(self, name)}"
                )
        if not 0 <= self.n_frozen <= self.epochs:
            raise RefocusError(None, f"--frozen-epochs must be within 0..{self.epochs}")
        if self.size < MULTIPLE:
            raise RefocusError(None, f"--size must be at least {MULTIPLE}, got {self.size}")
        if self.batch * (self.size // MULTIPLE) ** 2 < 2:
            raise RefocusError(
                None, "--batch 1 needs --size 64 or more (BatchNorm needs two values per channel)"
            )
        if self.workers is not None and self.workers < 0:
            raise RefocusError(None, f"--workers must be 0 or more, got {self.workers}")
        if not 0 <= self.seed < 2**32:  # numpy's seed range
            raise RefocusError(None, f"--seed must be within 0..2**32-1, got {self.seed}")

    def _check_rates(self) -> None:
        if not self.lr > 0:
            raise RefocusError(None, f"--lr must be positive, got {self.lr}")
        if not self.weight_decay >= 0:
            raise RefocusError(None, f"--weight-decay must be 0 or more, got {self.weight_decay}")
        f = list(self.fractions)
        if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-6:
            raise RefocusError(
                None, f"fractions must be three numbers >= 0 summing to 1 (train, val, test): {f}"
            )

    def _check_data(self) -> None:
        if self.zstacks:
            self._check_zstacks()
            return
        if self.data is None:
            raise RefocusError(None, "training needs --data (or --zstacks, --recipe)")
        for name in ZSTACK_FIELDS:
            if getattr(self, name) is not None:
                raise RefocusError(None, f"{_option(name)} applies to --zstacks only")
        if self.channel is None:
            self.channel = DEFAULT_CHANNEL
        LAYOUTS.get(self.layout, "--layout")
        if self.layout == IN_FOCUS:
            PROTOCOLS.get(self.synthetic, "--synthetic")
        if f"val_{self.select_by}" not in SELECT:
            raise RefocusError(None, f"--select-by: choose psnr or l1, not {self.select_by!r}")
        if self.layout == "bbbc006":
            if not self.input_z:
                raise RefocusError(None, "--input-z needs at least one plane")
            for z in self.input_z:
                check_z("--input-z", z)
            check_z("--target-z", self.target_z)

    def _check_zstacks(self) -> None:
        if self.data is not None:
            raise RefocusError(None, "--data and --zstacks exclude each other (the z-stacks "
                                     "are the data)")
        if self.layout != "bbbc006":  # the default: the layout was not asked for
            raise RefocusError(None, f"--layout {self.layout} does not apply to --zstacks")
        if self.z_step_um is not None and not self.z_step_um > 0:
            raise RefocusError(None, f"--z-step-um must be positive, got {self.z_step_um}")
        if self.focus_plane is not None and self.focus_plane < 0:
            raise RefocusError(None, f"--focus-plane must be 0 or more, got {self.focus_plane}")
        if not self.max_defocus_um > 0:
            raise RefocusError(None, f"--max-defocus-um must be positive, got "
                                     f"{self.max_defocus_um}")

    def _check_network(self) -> None:
        arch = self.architecture
        if self.guide is not None:
            get_guide(self.guide, "--guide")
            if "in_channels" not in inspect.signature(arch.build).parameters:
                raise RefocusError(None, f"--guide: architecture {self.arch!r} takes one input "
                                         "channel only (use --arch nafnet)")
        self.network_spec()  # refuses arguments the builder does not take
        if arch.load_pretrained is None and self.weights not in (None, PRETRAINED):
            raise RefocusError(
                None,
                f"--weights: architecture {self.arch!r} has no pretrained part to load "
                f"{self.weights} into (train it from scratch with --no-pretrained)",
            )

    @property
    def architecture(self) -> Architecture:
        return ARCHITECTURES.get(self.arch, "--arch")

    @property
    def pretrained(self) -> bool:
        """Whether the network starts from pretrained weights (an architecture without a
        pretrained part trains from scratch even with the default ``weights``)."""
        if self.init is not None:
            return False  # fine-tuning a whole trained network: nothing to protect by freezing
        return self.weights is not None and self.architecture.load_pretrained is not None

    @property
    def n_frozen(self) -> int:
        """Frozen-encoder epochs: half the run with a pretrained encoder, none from scratch
        (a random encoder has nothing worth protecting)."""
        if self.frozen_epochs is not None:
            return self.frozen_epochs
        return self.epochs // 2 if self.pretrained else 0

    def network_spec(self) -> dict[str, Any]:
        """The model file's ``arch`` entry: the name and *every* builder argument, defaults
        included, so a later change of a default never changes what a model file rebuilds."""
        arch = self.architecture
        args = arch.check_args({**self.arch_args, **({"in_channels": 2} if self.guide else {})})
        signature = inspect.signature(arch.build)
        bound = signature.bind(**args)
        bound.apply_defaults()
        spec: dict[str, Any] = {"arch": self.arch}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                spec.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                spec[name] = value
        # lists, as a model file or JSON gives them back (a resumed run compares them)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}

    def run_settings(self) -> dict[str, Any]:
        """The settings a resumed run must share with the interrupted one (plain data)."""
        d = asdict(self)
        for key in RUNTIME_FIELDS:
            d.pop(key)
        d["data"] = None if self.data is None else str(Path(self.data).resolve())
        if self.zstacks:
            d["zstacks"] = [str(Path(p).resolve()) for p in self.zstacks]
        else:  # a file layout's settings stay those of runs from before z-stacks (resume)
            for name in ("zstacks", "max_defocus_um", *ZSTACK_FIELDS):
                d.pop(name)
        d["out"] = str(Path(self.out).resolve())
        d["input_z"] = [int(z) for z in self.input_z]
        d["fractions"] = [float(f) for f in self.fractions]
        d["arch_args"] = {k: v for k, v in self.network_spec().items() if k != "arch"}
        d["weights"] = self.weights if self.pretrained else None
        d["frozen_epochs"] = self.n_frozen
        # what prediction picks from multi-channel input
        d["channels"] = [self.channel] if self.channel is not None else []
        return d
