"""Pretrained refocus models, in the style of torchvision's weights enums.

Each model is one module in this package registering one :class:`PretrainedModel`: its
name, architecture, where its weights are (a file inside the package, or a URL + sha256
downloaded once into the user cache), the data and recipe that made it, what it measured
and its licence. ``refocus models`` lists them; ``refocus predict`` without ``--model``
uses the default one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refocus.errors import RefocusError
from refocus.fetch import fetch_verified, sha256_of
from refocus.registry import Registry

CACHE_ENV = "REFOCUS_CACHE_DIR"
OFFLINE_HINT = ("Download it on a connected machine (`refocus models --fetch NAME`) and copy "
                "the cache folder, or pass a model file with --model FILE.")


@dataclass(frozen=True)
class PretrainedModel:
    """A registered model: where its weights are and everything a user should know."""

    name: str
    summary: str
    arch: str
    sha256: str
    file: str | None = None  # beside this module, inside the package
    url: str | None = None  # downloaded once into the cache
    default: bool = False
    training_data: str = ""
    recipe: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    limits: str = ""
    licence: str = "BSD-3-Clause"
    card: str = ""  # docs/models/<name>.md

    def __post_init__(self) -> None:
        if (self.file is None) == (self.url is None):
            raise ValueError(f"pretrained model {self.name!r}: give exactly one of file, url")

    def path(self) -> Path:
        """The verified weights file (downloading it first if it is not cached)."""
        if self.url is not None:
            target = cache_dir() / f"{self.name}-{self.sha256[:12]}.pt"
            return fetch_verified(self.url, target, self.sha256, OFFLINE_HINT)
        path = Path(__file__).parent / str(self.file)
        if not path.is_file() or sha256_of(path) != self.sha256:
            raise RefocusError(path, f"pretrained model {self.name!r} is missing or damaged in "
                                     "this installation (reinstall refocus)")
        return path


MODELS: Registry[PretrainedModel] = Registry("pretrained model", package=__name__)


def cache_dir() -> Path:
    """Where downloaded models live: ``$REFOCUS_CACHE_DIR``, else the user cache folder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("refocus")) / "models"


def default_model() -> PretrainedModel:
    defaults = [m for _, m in MODELS.items() if m.default]
    if len(defaults) != 1:
        raise RefocusError(None, "no default pretrained model is installed; pass --model FILE")
    return defaults[0]


def resolve_model(model: str | os.PathLike[str] | None) -> Path:
    """A model file from ``--model``: a file, a registered name, or (None) the default."""
    if model is None:
        return default_model().path()
    path = Path(model)
    if path.is_file():
        return path
    if str(model) not in MODELS and (path.suffix == ".pt" or os.sep in str(model)):
        raise RefocusError(path, "model file not found")
    return MODELS.get(str(model), "--model").path()  # an unknown name lists the known ones
