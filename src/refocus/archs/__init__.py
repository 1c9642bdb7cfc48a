"""Network architectures: one file each in this package, one registration each.

An architecture is a builder ``build(**args) -> nn.Module`` mapping (N, 1, H, W) to
(N, 1, H, W) for any H and W (a guided network takes (N, 1 + guides, H, W) and has an
``in_channels`` attribute, :func:`input_channels`), registered with
:func:`register_architecture`. A model file stores ``{"arch": name, **args}``, so
:func:`build_network` rebuilds exactly the network that was trained. Networks may define
``param_groups()`` (for discriminative learning rates) and ``freeze_pretrained(frozen)``
(to train around a pretrained part); :func:`param_groups` and :func:`freeze_pretrained`
supply the defaults (one group; nothing to freeze).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from refocus.errors import RefocusError
from refocus.registry import Registry

Builder = Callable[..., nn.Module]
#: ``load(network, weights)``: start the pretrained part from ``weights`` ("imagenet", a file).
PretrainedLoader = Callable[[nn.Module, str], None]


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: how to build it and whether it has a pretrained part."""

    name: str
    build: Builder
    summary: str
    load_pretrained: PretrainedLoader | None = None

    def check_args(self, args: Mapping[str, Any], where: object = None) -> dict[str, Any]:
        """Refuse arguments the builder does not take (before any work is spent)."""
        try:
            inspect.signature(self.build).bind(**args)
        except TypeError as exc:
            raise RefocusError(where, f"architecture {self.name!r}: {exc}") from None
        return dict(args)


ARCHITECTURES: Registry[Architecture] = Registry("architecture", package=__name__)


def register_architecture(
    name: str, summary: str, load_pretrained: PretrainedLoader | None = None
) -> Callable[[Builder], Builder]:
    """``@register_architecture("name", "one line")`` on a builder function."""

    def add(build: Builder) -> Builder:
        ARCHITECTURES.register(name, Architecture(name, build, summary, load_pretrained))
        return build

    return add


def get_architecture(name: str, where: object = None) -> Architecture:
    return ARCHITECTURES.get(name, where)


def build_network(spec: Mapping[str, Any], where: object = None) -> nn.Module:
    """The network a model file's ``arch`` entry (``{"arch": name, **args}``) describes."""
    spec = dict(spec)
    arch = get_architecture(str(spec.pop("arch", None)), where)
    return arch.build(**arch.check_args(spec, where))


def input_channels(network: nn.Module) -> int:
    """Channels of the network's input: 1 (the image), or more for a guided network
    (:mod:`refocus.guides`), which says so with an ``in_channels`` attribute."""
    return int(getattr(network, "in_channels", 1))


def param_groups(network: nn.Module) -> list[list[nn.Parameter]]:
    """The network's parameter groups, early layers first (one group if it defines none)."""
    groups = getattr(network, "param_groups", None)
    return groups() if callable(groups) else [list(network.parameters())]


def freeze_pretrained(network: nn.Module, frozen: bool) -> None:
    """Freeze (or free) the network's pretrained part; networks without one are unchanged."""
    freeze = getattr(network, "freeze_pretrained", None)
    if callable(freeze):
        freeze(frozen)
