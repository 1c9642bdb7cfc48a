"""Named entries at an extension point (architectures, losses, layouts, formats, models).

In the style of torchvision's ``register_model``/``get_model`` and csbdeep's
``register_model``: each extension point owns one :class:`Registry`; an entry is added with
one ``@registry.register("name")`` line in the file that defines it, and the command line
reads its choices from the registry, so adding an entry never means editing a list. A
registry can discover its entries by importing every module of a package (so a new file
in that package is all a new entry needs) and the ``refocus.plugins`` entry points of
installed packages.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from refocus.errors import RefocusError

T = TypeVar("T")
PLUGIN_GROUP = "refocus.plugins"


class Registry(Generic[T]):
    """Entries of one kind by name; unknown names get one line listing the known ones."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._package = package
        self._entries: dict[str, T] = {}
        self._discovered = package is None

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """``registry.register("name", entry)``, or ``@registry.register("name")``."""
        if entry is not None:
            return self._add(name, entry)
        return lambda obj: self._add(name, obj)

    def _add(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove an entry (tests and plugins that add one for a while)."""
        return self._entries.pop(name)

    def get(self, name: str, where: object = None) -> T:
        """The entry called ``name``; ``where`` (a file, an option) goes into the error."""
        self._discover()
        if name not in self._entries:
            known = ", ".join(self._entries) or "none"
            raise RefocusError(where, f"unknown {self.kind} {name!r} (choose from {known})")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        self._discover()
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self._discover()
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def _discover(self) -> None:
        """Import the package's modules (each registers its entries), then plugins."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self._package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self._package}.{info.name}")
        load_plugins()


_plugins_loaded = False


def load_plugins() -> None:
    """Import the modules installed packages declare under ``refocus.plugins`` (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=PLUGIN_GROUP):
        entry.load()
