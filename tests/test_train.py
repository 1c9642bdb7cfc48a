"""Training on real sample pixels: it learns, it resumes exactly, it refuses to clobber."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_bbbc006_layout
from rich.console import Console

import refocus.train.loop as loop_module
from refocus.archs import ARCHITECTURES
from refocus.cli import main
from refocus.device import select_device
from refocus.errors import RefocusError
from refocus.modelfile import load_model, read_model_file
from refocus.train import TrainConfig, autocast_dtype, last_path, train

QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, in_focus_images: list[np.ndarray]) -> Path:
    """8 wells of real nuclei (192x192 of each sample field) at z 5, 10 and 16."""
    root = tmp_path_factory.mktemp("train-data")
    images = [im[:192, :192] for im in in_focus_images]
    wells = [f"d{i + 2:02d}" for i in range(8)]
    return write_bbbc006_layout(root, images, wells, z_values=(5, 10, 16))


def _tiny(data: Path, out: Path, **overrides: object) -> TrainConfig:
    """3 steps per epoch of 2 crops of 32x32 (6 training wells x z=5)."""
    settings: dict = {
        "data": str(data), "out": str(out), "arch": "resnet18", "weights": None,
        "loss": "l1", "size": 32, "batch": 2, "epochs": 2, "frozen_epochs": 1,
        "input_z": [5], "crops_per_pair": 1, "val_crops": 1,
    }
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def uninterrupted(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    config = _tiny(data_root, tmp_path_factory.mktemp("run-a") / "model.pt")
    return config, train(config, QUIET)


def test_training_lowers_validation_l1(data_root: Path, tmp_path: Path) -> None:
    config = _tiny(data_root, tmp_path / "model.pt", batch=4, epochs=2, frozen_epochs=0,
                   input_z=[5, 10], crops_per_pair=4, val_crops=4)
    result = train(config, QUIET)
    history = result.history
    assert [h["epoch"] for h in history] == [0, 1, 2]
    start, end = history[0]["val_l1"], min(h["val_l1"] for h in history[1:])
    assert end < 0.5 * start, history
    assert history[0]["input_l1"] > 0  # the do-nothing baseline is recorded beside it
    best = load_model(result.out)
    assert best.history == history  # the best file ends up with the whole run's history
    assert best.history[result.best_epoch]["val_psnr"] == max(h["val_psnr"] for h in history)


def test_model_file_says_where_it_came_from(uninterrupted) -> None:
    config, result = uninterrupted
    loaded = load_model(result.out)
    assert loaded.arch == {"arch": "resnet18", "self_attention": False}
    groups = loaded.provenance["groups"]
    assert len(groups["train"]) == 6 and len(groups["val"]) == 1 and len(groups["test"]) == 1
    assert not set(groups["train"]) & set(groups["val"] + groups["test"])
    assert loaded.provenance["input_z"] == [5] and loaded.provenance["channel"] == "w1"
    assert loaded.train_config["loss"] == "l1" and loaded.train_config["frozen_epochs"] == 1
    assert loaded.train_config["runtime"]["device"] == "cpu"
    assert [h.get("stage") for h in loaded.history] == [None, "frozen", "unfrozen"]
    assert {"train_loss", "train_l1", "val_l1", "val_psnr", "val_ssim"} <= set(loaded.history[1])
    state = read_model_file(result.last)["training_state"]
    assert (state["epoch"], state["step"], state["stage"]) == (2, 0, 1)


def test_resume_after_ctrl_c_reproduces_the_uninterrupted_run(
    uninterrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT during step 5 (epoch 2, step 2 of 3, unfrozen stage)."""
    config_a, result_a = uninterrupted
    config = dataclasses.replace(config_a, out=str(tmp_path / "model.pt"))
    real_step = loop_module.train_step  # patched where the loop looks it up
    calls = []

    def step_then_ctrl_c(*args: object):
        out = real_step(*args)
        calls.append(1)
        if len(calls) == 5:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(loop_module, "train_step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train(config, QUIET)
    assert len(calls) == 5  # it stopped after the interrupted step, not during it
    state = read_model_file(last_path(config.out))["training_state"]
    assert (state["epoch"], state["step"], state["stage"]) == (1, 2, 1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    monkeypatch.setattr(loop_module, "train_step", real_step)
    result = train(dataclasses.replace(config, resume=True), QUIET)
    expected = read_model_file(result_a.last)
    resumed = read_model_file(result.last)
    for key, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], tensor), key
    exp_opt = expected["training_state"]["optimizer"]["state"]
    res_opt = resumed["training_state"]["optimizer"]["state"]
    assert all(torch.equal(res_opt[i]["exp_avg_sq"], exp_opt[i]["exp_avg_sq"]) for i in exp_opt)
    timeless = [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]
    assert timeless == [{k: v for k, v in h.items() if k != "seconds"} for h in result_a.history]


def test_an_earlier_run_is_never_clobbered(uninterrupted) -> None:
    config, result = uninterrupted
    stamp = result.out.stat().st_mtime_ns
    with pytest.raises(RefocusError, match="--resume to continue, --overwrite"):
        train(config, QUIET)
    with pytest.raises(RefocusError, match="lr was 0.001 and is now 0.002"):
        train(dataclasses.replace(config, resume=True, lr=2e-3), QUIET)
    assert result.out.stat().st_mtime_ns == stamp
    again = train(dataclasses.replace(config, resume=True), QUIET)  # complete: nothing to do
    assert again.history == result.history and result.out.stat().st_mtime_ns == stamp


def test_resume_without_a_checkpoint_is_a_clear_error(data_root: Path, tmp_path: Path) -> None:
    config = _tiny(data_root, tmp_path / "model.pt", resume=True)
    with pytest.raises(RefocusError, match="no checkpoint to resume from"):
        train(config, QUIET)


def test_same_seed_same_weights_on_cpu(uninterrupted, tmp_path: Path) -> None:
    config, result = uninterrupted
    first = read_model_file(result.last)["state_dict"]
    again = train(dataclasses.replace(config, out=str(tmp_path / "m.pt"), epochs=1), QUIET)
    one_epoch = read_model_file(again.last)["state_dict"]
    other_seed = train(
        dataclasses.replace(config, out=str(tmp_path / "s.pt"), epochs=1, seed=1), QUIET
    )
    assert not torch.equal(first["head.0.bias"], one_epoch["head.0.bias"])  # 1 vs 2 epochs
    assert not torch.equal(
        one_epoch["head.0.bias"], read_model_file(other_seed.last)["state_dict"]["head.0.bias"]
    )
    repeat = train(
        dataclasses.replace(config, out=str(tmp_path / "r.pt"), epochs=1), QUIET
    )
    repeated = read_model_file(repeat.last)["state_dict"]
    assert all(torch.equal(repeated[k], v) for k, v in one_epoch.items())


def test_feature_loss_logs_every_term(data_root: Path, tmp_path: Path) -> None:
    config = _tiny(data_root, tmp_path / "model.pt", loss="feature", vgg_weights=None, epochs=1,
                   frozen_epochs=0)
    history = train(config, QUIET).history
    terms = ["pixel", "feat_0", "feat_1", "feat_2", "gram_0", "gram_1", "gram_2"]
    entry = history[1]
    assert all(entry[f"train_{t}"] > 0 for t in terms)
    assert entry["train_loss"] == pytest.approx(sum(entry[f"train_{t}"] for t in terms), rel=1e-5)


def test_an_architecture_without_pretrained_part_trains_from_scratch(
    data_root: Path, tmp_path: Path
) -> None:
    """The default weights ("imagenet") mean "from scratch" there: no frozen stage, one
    learning rate, and the model file rebuilds it from its arch entry."""
    name = next(n for n, a in ARCHITECTURES.items() if a.load_pretrained is None)
    config = _tiny(data_root, tmp_path / "model.pt", arch=name, weights="imagenet",
                   frozen_epochs=None, epochs=1)
    result = train(config, QUIET)
    loaded = load_model(result.out)
    assert loaded.arch == config.network_spec() and loaded.arch["arch"] == name
    assert loaded.train_config["weights"] is None and loaded.train_config["frozen_epochs"] == 0
    assert [h.get("stage") for h in loaded.history] == [None, "unfrozen"]
    with torch.no_grad():  # load_model rebuilt it from that entry and loaded its weights
        assert loaded.model(torch.zeros(1, 1, 40, 40)).shape == (1, 1, 40, 40)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "--epochs must be at least 1"),
        ({"frozen_epochs": 3}, "--frozen-epochs must be within 0..2"),
        ({"batch": 1}, "--batch 1 needs --size 64"),
        ({"arch": "resnet101"}, "--arch: unknown architecture 'resnet101'"),
        ({"crops_per_pair": 0}, "--crops-per-pair must be at least 1"),
        ({"batch": 8}, "only 6 training crops for --batch 8"),
        ({"channel": "w2"}, "channel 'w2' not in this folder"),
    ],
)
def test_bad_settings_are_clear_errors(
    data_root: Path, tmp_path: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(RefocusError, match=message):
        train(_tiny(data_root, tmp_path / "model.pt", **overrides), QUIET)
    assert not list(tmp_path.iterdir())


def test_one_well_cannot_be_split_for_validation(in_focus_images, tmp_path: Path) -> None:
    root = write_bbbc006_layout(tmp_path / "one", [in_focus_images[0][:64, :64]], ["e02"], (5, 16))
    with pytest.raises(RefocusError, match="at least two wells"):
        train(_tiny(root, tmp_path / "model.pt"), QUIET)


def test_device_selection_on_a_cpu_machine() -> None:
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator")
    assert select_device() == torch.device("cpu")
    assert autocast_dtype(torch.device("cpu")) is None
    with pytest.raises(RefocusError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(RefocusError, match="unknown device"):
        select_device("tpu9")


def test_cli_trains_with_the_documented_options(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli" / "model.pt"
    main([
        "train", "--data", str(data_root), "--out", str(out), "--arch", "resnet18",
        "--no-pretrained", "--loss", "l1", "--size", "32", "--batch", "4", "--epochs", "1",
        "--input-z", "5", "10", "--target-z", "16", "--channel", "w1", "--lr", "1e-3",
        "--crops-per-pair", "1", "--self-attention",
    ])
    loaded = load_model(out)
    assert loaded.arch == {"arch": "resnet18", "self_attention": True}
    assert loaded.provenance["input_z"] == [5, 10]
    assert loaded.train_config["weights"] is None and loaded.train_config["size"] == 32
    assert "best epoch 1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(data_root), "--out", str(out), "--no-pretrained"])
    assert exit_info.value.code == 2
    assert "exists already" in capsys.readouterr().err


def test_cli_offline_error_is_one_line_naming_both_ways_out(
    data_root: Path, tmp_path: Path, offline: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(data_root), "--out", str(tmp_path / "m.pt"), "--loss", "l1",
              "--arch", "resnet18", "--input-z", "5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--no-pretrained" in err and "--weights FILE" in err
    assert len(err.splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["train", "--data", str(data_root), "--out", str(tmp_path / "m.pt"),
              "--no-pretrained", "--weights", str(tmp_path / "w.pth")])
    assert "exclude each other" in capsys.readouterr().err
