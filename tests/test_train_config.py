"""A training configuration refuses what cannot run when it is built, in one line naming
the option; the schedule follows the method (no data, no training: these run in ms)."""

from __future__ import annotations

import pytest

from refocus.archs import ARCHITECTURES
from refocus.cli import main
from refocus.errors import RefocusError
from refocus.train import TrainConfig
from refocus.train.schedule import DISCRIMINATIVE, FROZEN_LR_FACTOR, Stage, max_lrs, stages


def _config(**overrides: object) -> TrainConfig:
    return TrainConfig(**{"data": "data", "out": "model.pt", **overrides})  # type: ignore[arg-type]


def _scratch_arch() -> str:
    """A registered architecture without a pretrained part."""
    return next(n for n, a in ARCHITECTURES.items() if a.load_pretrained is None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch": 0}, "--batch must be at least 1, got 0"),
        ({"epochs": 0}, "--epochs must be at least 1, got 0"),
        ({"crops_per_pair": -1}, "--crops-per-pair must be at least 1, got -1"),
        ({"val_crops": 0}, "--val-crops must be at least 1, got 0"),
        ({"epochs": 4, "frozen_epochs": 5}, "--frozen-epochs must be within 0..4"),
        ({"size": 16}, "--size must be at least 32, got 16"),
        ({"batch": 1, "size": 32}, "--batch 1 needs --size 64 or more"),
        ({"lr": 0.0}, "--lr must be positive, got 0.0"),
        ({"lr": float("nan")}, "--lr must be positive, got nan"),
        ({"weight_decay": -1e-3}, "--weight-decay must be 0 or more"),
        ({"fractions": [0.8, 0.2]}, r"fractions must be three numbers >= 0 summing to 1"),
        ({"fractions": [0.5, 0.2, 0.2]}, r"fractions must be three numbers"),
        ({"seed": -1}, "--seed must be within 0..2"),
        ({"workers": -2}, "--workers must be 0 or more, got -2"),
        ({"input_z": []}, "--input-z needs at least one plane"),
        ({"input_z": [5, 34]}, "--input-z: z=34 outside BBBC006's planes 0..33"),
        ({"target_z": -1}, "--target-z: z=-1 outside"),
        ({"arch": "resnet101"}, r"--arch: unknown architecture 'resnet101' \(choose .*resnet34"),
        ({"loss": "l3"}, r"--loss: unknown loss 'l3' \(choose from feature, l1"),
        ({"layout": "zarr"}, r"--layout: unknown data layout 'zarr' \(choose from bbbc006, pairs"),
        ({"arch_args": {"depth": 3}}, "architecture 'resnet34': .*'depth'"),
    ],
)
def test_bad_values_are_refused_when_built(overrides: dict, message: str) -> None:
    with pytest.raises(RefocusError, match=message) as info:
        _config(**overrides)
    assert len(str(info.value).splitlines()) == 1


def test_a_pairs_folder_needs_no_planes() -> None:
    assert _config(layout="pairs", input_z=[]).input_z == []


def test_from_mapping_refuses_unknown_and_missing_keys() -> None:
    config = TrainConfig.from_mapping({"data": "d", "out": "m.pt", "batch": 2})
    assert config == _config(data="d", out="m.pt", batch=2)
    with pytest.raises(RefocusError, match=r"unknown training setting\(s\) batchsize, lr_max "):
        TrainConfig.from_mapping({"data": "d", "out": "m.pt", "lr_max": 1, "batchsize": 2})
    with pytest.raises(RefocusError, match="training needs --out$"):
        TrainConfig.from_mapping({"data": "d"})


def test_the_model_file_arch_entry_holds_every_builder_argument() -> None:
    assert _config(arch="resnet18").network_spec() == {"arch": "resnet18", "self_attention": False}
    spec = _config(arch_args={"self_attention": True}).network_spec()
    assert spec == {"arch": "resnet34", "self_attention": True}
    settings = _config(arch="resnet18").run_settings()
    assert settings["arch"] == "resnet18" and settings["arch_args"] == {"self_attention": False}
    scratch = _config(arch=_scratch_arch()).network_spec()
    assert not any(isinstance(v, tuple) for v in scratch.values())  # lists, as files give back


def test_an_architecture_without_pretrained_part_trains_from_scratch() -> None:
    name = _scratch_arch()
    config = _config(arch=name, epochs=4)  # the default weights, "imagenet"
    assert not config.pretrained and config.n_frozen == 0
    assert config.run_settings()["weights"] is None
    with pytest.raises(RefocusError, match=f"--weights: architecture '{name}' has no pretrained"):
        _config(arch=name, weights="resnet34.pth")
    pretrained = _config(epochs=4)
    assert pretrained.pretrained and pretrained.n_frozen == 2


def test_stages_and_learning_rates_follow_the_method() -> None:
    config = _config(epochs=5, frozen_epochs=2, lr=1e-3)
    frozen, unfrozen = stages(config)
    assert (frozen, unfrozen) == (Stage(0, 0, 2, True), Stage(1, 2, 5, False))
    assert max_lrs(config, frozen, 3) == [1e-3 * FROZEN_LR_FACTOR] * 3
    assert max_lrs(config, unfrozen, 3) == pytest.approx([1e-3 * f for f in DISCRIMINATIVE])
    assert max_lrs(config, unfrozen, 1) == [1e-3]  # one group: one rate
    scratch = _config(epochs=5, weights=None, lr=1e-3)
    assert stages(scratch) == [Stage(0, 0, 5, False)]
    assert max_lrs(scratch, stages(scratch)[0], 3) == [1e-3] * 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "0"], "--batch must be at least 1, got 0"),
        (["--arch", "resnet101"], "--arch: unknown architecture 'resnet101' (choose from"),
        (["--loss", "l3"], "--loss: unknown loss 'l3' (choose from"),
        (["--layout", "zarr"], "--layout: unknown data layout 'zarr' (choose from"),
        (["--arch", _scratch_arch(), "--weights", "w.pth"], "has no pretrained part"),
        (["--no-pretrained", "--weights", "w.pth"], "--no-pretrained and --weights exclude"),
    ],
)
def test_cli_exits_2_with_the_config_line(
    args: list[str], message: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_cli_help_lists_the_registered_choices(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # so that rich does not wrap a long list of choices
    main(["train", "--help"])
    text = capsys.readouterr().out
    assert "[" + "|".join(ARCHITECTURES.names()) + "]" in text
    assert "[bbbc006|pairs|in-focus]" in text and "[feature|l1|mse|ssim]" in text
