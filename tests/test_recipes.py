"""Training recipes, the in-focus (simulated on the fly) layout and fine-tuning with
``--init``: the shipped model's recipe, run for a few steps, is the same code path as the
release run, and two runs with the same seed give the same weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from refocus.errors import RefocusError
from refocus.modelfile import read_model_file
from refocus.train import TrainConfig
from refocus.train.recipes import RECIPES

SHORT = ("--epochs", "1", "--crops-per-pair", "2", "--size", "64", "--device", "cpu")


def _train(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "refocus", "train", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def recipe_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The shipped recipe, shortened, twice with the same seed."""
    root = tmp_path_factory.mktemp("recipe")
    outs = []
    for name in ("a", "b"):
        out = root / f"{name}.pt"
        result = _train("--recipe", "nuclei-widefield", "--out", out, *SHORT)
        assert result.returncode == 0, result.stderr[-2000:]
        outs.append(out)
    return outs[0], outs[1]


def test_recipe_settings_and_provenance_are_recorded(recipe_models) -> None:
    payload = read_model_file(recipe_models[0])
    config, provenance = payload["train_config"], payload["provenance"]
    recipe = RECIPES.get("nuclei-widefield").settings()
    assert config["recipe"] == "nuclei-widefield" and config["seed"] == recipe["seed"] == 0
    assert config["arch"] == recipe["arch"] and config["layout"] == "in-focus"
    assert config["epochs"] == 1 and config["size"] == 64  # the command line won
    assert payload["arch"]["arch"] == "nafnet"
    groups = provenance["groups"]
    assert len(groups["train"]) == 5 and len(groups["val"]) == 1 and len(groups["test"]) == 2
    assert not set(groups["val"]) & set(groups["test"])  # checkpoints never chosen on test
    assert provenance["synthetic"] == "both-sides"


def test_recipe_is_reproducible(recipe_models) -> None:
    a, b = (read_model_file(p)["state_dict"] for p in recipe_models)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_fine_tunes_a_trained_model(recipe_models, tmp_path: Path) -> None:
    start = recipe_models[0]
    out = tmp_path / "tuned.pt"
    result = _train("--recipe", "nuclei-widefield", "--init", start, "--out", out,
                    "--seed", "3", *SHORT)
    assert result.returncode == 0, result.stderr[-2000:]
    tuned = read_model_file(out)
    initial = read_model_file(start)
    # epoch 0 validates the starting weights: the trained model's, not a fresh network's
    assert tuned["train_config"]["init"] == str(start)
    assert tuned["history"][0]["val_l1"] != tuned["history"][0]["input_l1"]
    changed = [k for k in initial["state_dict"]
               if not torch.equal(initial["state_dict"][k], tuned["state_dict"][k])]
    assert changed  # and training went on from there


def test_init_refuses_another_architecture(recipe_models, tmp_path: Path) -> None:
    result = _train("--recipe", "nuclei-widefield", "--arch", "care", "--init",
                    recipe_models[0], "--out", tmp_path / "x.pt", *SHORT)
    assert result.returncode == 2
    assert "--init: this model is" in result.stderr and "care" in result.stderr


@pytest.mark.parametrize(("settings", "message"), [
    ({"layout": "in-focus", "synthetic": "sideways"}, "unknown synthetic protocol 'sideways'"),
    ({"select_by": "ssim"}, "--select-by: choose psnr or l1"),
])
def test_bad_settings_are_one_line(settings: dict, message: str) -> None:
    with pytest.raises(RefocusError, match=message):
        TrainConfig(data="d", out="o", arch="nafnet", **settings)


def test_unknown_recipe_lists_the_known_ones(tmp_path: Path) -> None:
    result = _train("--recipe", "nope", "--out", tmp_path / "x.pt")
    assert result.returncode == 2 and "nuclei-widefield" in result.stderr


@pytest.mark.parametrize(("recipe", "guide"), [("nuclei-widefield-wiener", "wiener"),
                                               ("nuclei-widefield-rl", "rl")])
def test_guided_recipe_trains_a_two_channel_model(tmp_path: Path, recipe: str,
                                                  guide: str) -> None:
    from refocus.inference.refocuser import Refocuser

    out = tmp_path / "guided.pt"
    result = _train("--recipe", recipe, "--out", out, *SHORT)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = read_model_file(out)
    assert payload["train_config"]["guide"] == guide
    assert payload["arch"]["in_channels"] == 2 and payload["train_config"]["epochs"] == 1
    assert RECIPES.get(recipe).settings()["epochs"] == 80
    assert Refocuser.from_file(out, mode="eager").guide.name == guide
