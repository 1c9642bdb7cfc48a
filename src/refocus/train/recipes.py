"""Training recipes: the settings that made a shipped model, as code.

``refocus train --recipe NAME --out model.pt`` reproduces a registered model from the
in-focus fields that ship with refocus (seed and every setting go into the model file);
options given on the command line override the recipe's, which is how the tests run the
same recipe for a few steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from refocus.registry import Registry
from refocus.samples import sample_dir


@dataclass(frozen=True)
class Recipe:
    """A named set of :class:`~refocus.train.TrainConfig` settings."""

    name: str
    summary: str
    settings: Callable[[], dict[str, Any]]


RECIPES: Registry[Recipe] = Registry("recipe")


def _shipped_fields(**overrides: Any) -> dict[str, Any]:
    """The compact network on pairs simulated from the 8 shipped in-focus fields, both
    sides of focus (5 wells train, 1 chooses the checkpoint, 2 are held out)."""
    return {
        "data": str(sample_dir() / "in-focus"), "layout": "in-focus", "synthetic": "both-sides",
        "arch": "nafnet", "weights": None, "loss": "l1", "size": 128, "batch": 8,
        "epochs": 60, "crops_per_pair": 128, "val_crops": 24, "lr": 1e-3,
        "weight_decay": 1e-3, "fractions": [0.625, 0.125, 0.25], "seed": 0, "select_by": "l1",
        **overrides,
    }


def _register(name: str, summary: str, **overrides: Any) -> None:
    RECIPES.register(name, Recipe(name, summary,
                                  lambda: _shipped_fields(recipe=name, **overrides)))


_register("nuclei-widefield", "the shipped default model: nafnet, both sides of focus")
_register("nuclei-widefield-wiener",
          "the same with a Wiener-deconvolved copy of the image as a second input channel, "
          "80 epochs", guide="wiener", epochs=80)
_register("nuclei-widefield-rl",
          "the same with an accelerated Richardson-Lucy copy of the image as the second "
          "channel, 80 epochs", guide="rl", epochs=80)
_register("nuclei-widefield-paper-protocol",
          "the same, trained on z = 1, 5, 10 only (the paper's protocol, for its z = 32 claim)",
          synthetic="paper")
