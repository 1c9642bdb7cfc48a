"""Damaged, foreign and hand-edited model files fail once, at load, in one line naming the
file, and never with torch's advice to load with ``weights_only=False`` (issue 17: 7, 8,
the NaN-weights case of 1, and the metadata case of 11)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from refocus.archs.resnet_unet import build_unet
from refocus.errors import RefocusError
from refocus.modelfile import load_model, read_model_file

LEGACY = Path(__file__).parent / "data" / "legacy" / "resnet18-dcad382.pt"


def _one_line(err: pytest.ExceptionInfo[RefocusError], path: Path) -> str:
    text = str(err.value)
    assert "\n" not in text and "weights_only" not in text and str(path) in text
    return text


def _edited(tmp_path: Path, edit) -> Path:  # noqa: ANN001 (a small lambda)
    payload = read_model_file(LEGACY)
    edit(payload)
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


class Boom:
    def __reduce__(self):  # noqa: ANN204
        import os

        return (os.mkdir, ("/tmp/refocus-should-never-exist",))


@pytest.mark.parametrize("kind", ["random", "plain-pickle", "legacy-torch", "code"])
def test_foreign_files_are_refused_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.pt"
    if kind == "random":
        path.write_bytes(bytes(range(256)) * 40)
    elif kind == "plain-pickle":
        path.write_bytes(pickle.dumps({"state_dict": [1.0, 2.0]}))
    elif kind == "legacy-torch":
        torch.save({"w": torch.zeros(3)}, path, _use_new_zipfile_serialization=False)
    else:
        torch.save({"format": "refocus-model", "x": Boom()}, path)
    for load in (load_model, lambda p: build_unet("resnet18", weights=p)):
        with pytest.raises(RefocusError, match="refused") as err:
            load(path)
        _one_line(err, path)
    assert not Path("/tmp/refocus-should-never-exist").exists()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: p["normalizer"].update(median=50.0), "normalizer settings"),
    (lambda p: p["normalizer"].update(low="one"), "must be numbers"),
    (lambda p: p["normalizer"].update(low=99.9, high=1.0), "0 <= low < high <= 100"),
    (lambda p: p["train_config"].update(channels=5), "channels must be a list"),
    (lambda p: p.update(arch="resnet18"), "architecture entry"),
    (lambda p: p["arch"].update(arch="resnet19"), "unknown architecture 'resnet19'"),
    (lambda p: p["arch"].update(depth=3), "unexpected keyword argument 'depth'"),
])
def test_hand_edited_metadata_fails_at_load(tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001
    path = _edited(tmp_path, edit)
    with pytest.raises(RefocusError, match=message) as err:
        load_model(path)
    _one_line(err, path)


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    def poison(payload: dict) -> None:
        key = next(k for k in payload["state_dict"] if k.endswith("weight"))
        payload["state_dict"][key] = payload["state_dict"][key].clone().fill_(float("nan"))

    path = _edited(tmp_path, poison)
    with pytest.raises(RefocusError, match="NaN or infinite") as err:
        load_model(path)
    _one_line(err, path)


def test_out_of_memory_while_loading_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 123456789 bytes.")

    monkeypatch.setattr(torch, "load", no_memory)
    with pytest.raises(RefocusError, match="not enough memory") as err:
        load_model(LEGACY)
    assert "damaged" not in _one_line(err, LEGACY)


def test_out_of_memory_while_filling_weights_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(self: torch.nn.Module, *args: object, **kwargs: object) -> None:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                           "4 bytes.")

    monkeypatch.setattr(torch.nn.Module, "load_state_dict", no_memory)
    with pytest.raises(RefocusError, match="not enough memory") as err:
        load_model(LEGACY)
    assert "weights do not fit" not in _one_line(err, LEGACY)
