"""A full disk while writing a training checkpoint: one clear line, and the previous
checkpoint is kept so that ``--resume`` continues from it (issue 17, case 9)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_bbbc006_layout
from rich.console import Console

from refocus.errors import RefocusError
from refocus.modelfile import read_model_file
from refocus.train import TrainConfig, last_path, train


def test_full_disk_keeps_the_previous_checkpoint(
    tmp_path: Path, in_focus_images: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    images = [im[:128, :128] for im in in_focus_images]
    data = write_bbbc006_layout(tmp_path / "data", images, [f"c{i + 2:02d}" for i in range(8)])
    settings = dict(data=str(data), out=str(tmp_path / "m.pt"), arch="resnet18", weights=None,
                    loss="l1", size=64, batch=4, epochs=2, input_z=[5], crops_per_pair=1,
                    val_crops=1)
    real_save = torch.save
    saves: list[str] = []

    def disk_fills_up(obj: object, f: object, *args: object, **kwargs: object) -> None:
        saves.append(str(f))
        if len(saves) > 2:  # the first epoch's best and last files fit, then the disk is full
            Path(f).write_bytes(b"PK\x03\x04 half a zip")
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos "
                               "4096 vs 4000")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_up)
    with pytest.raises(RefocusError, match="could not be written") as err:
        train(TrainConfig(**settings), Console(quiet=True))
    assert "\n" not in str(err.value) and "previous file" in str(err.value)
    checkpoint = read_model_file(last_path(tmp_path / "m.pt"))  # whole, readable
    assert checkpoint["training_state"]["epoch"] == 1
    assert not list(tmp_path.glob(".*.part"))  # no half-written file left behind

    monkeypatch.setattr(torch, "save", real_save)
    result = train(TrainConfig(**settings, resume=True), Console(quiet=True))
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
