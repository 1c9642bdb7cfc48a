"""The pretrained-model registry: package files, URL downloads (a local server), checksums,
offline use, and name-or-file resolution."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from refocus.errors import RefocusError
from refocus.zoo import MODELS, PretrainedModel, resolve_model

LEGACY = Path(__file__).parent / "data" / "legacy" / "resnet18-dcad382.pt"


@pytest.fixture
def served_model(range_server, tmp_path, monkeypatch) -> Iterator[tuple[PretrainedModel, type]]:
    """A registered URL model served from 127.0.0.1, with an empty cache."""
    base, handler = range_server
    data = LEGACY.read_bytes()
    handler.files["/m.pt"] = data
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path / "cache"))
    entry = PretrainedModel("test-url-model", "served in a test", "resnet18",
                            hashlib.sha256(data).hexdigest(), url=f"{base}/m.pt")
    MODELS.register(entry.name, entry)
    try:
        yield entry, handler
    finally:
        MODELS.unregister(entry.name)


def test_url_model_downloads_once_and_verifies(served_model) -> None:
    entry, handler = served_model
    path = resolve_model(entry.name)
    assert path.read_bytes() == LEGACY.read_bytes()
    assert path.parent.name == "cache" and not list(path.parent.glob("*.part"))
    assert resolve_model(entry.name) == path
    assert len(handler.log) == 1  # the second call used the cache


def test_half_download_resumes_with_range(served_model, tmp_path) -> None:
    entry, handler = served_model
    data = LEGACY.read_bytes()
    part = tmp_path / "cache" / f"{entry.name}-{entry.sha256[:12]}.pt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    assert entry.path().read_bytes() == data
    assert handler.log == [("/m.pt", "bytes=1000-")]


def test_checksum_mismatch_removes_the_download(served_model, tmp_path) -> None:
    entry, handler = served_model
    handler.files["/m.pt"] = b"x" + LEGACY.read_bytes()[1:]
    with pytest.raises(RefocusError, match="checksum differs") as err:
        entry.path()
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "cache").iterdir())  # nothing damaged left to be used


def test_damaged_cached_copy_is_fetched_again(served_model) -> None:
    entry, handler = served_model
    path = entry.path()
    path.write_bytes(b"damaged")
    assert entry.path().read_bytes() == LEGACY.read_bytes()
    assert len(handler.log) == 2


def test_offline_is_one_sentence(dead_url, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path))
    entry = PretrainedModel("offline", "unreachable", "resnet18", "0" * 64, url=f"{dead_url}/m.pt")
    with pytest.raises(RefocusError, match="are you offline") as err:
        entry.path()
    assert "--model FILE" in str(err.value) and "\n" not in str(err.value)


def test_package_file_is_verified(tmp_path) -> None:
    entry = PretrainedModel("pkg", "shipped", "resnet18", "0" * 64, file="no-such-file.pt")
    with pytest.raises(RefocusError, match="missing or damaged"):
        entry.path()


def test_resolve_names_files_and_mistakes(tmp_path) -> None:
    assert resolve_model(LEGACY) == LEGACY
    with pytest.raises(RefocusError, match="model file not found"):
        resolve_model(tmp_path / "nope.pt")
    with pytest.raises(RefocusError, match="unknown pretrained model 'nope'"):
        resolve_model("nope")


def test_an_entry_has_exactly_one_location() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        PretrainedModel("x", "y", "resnet18", "0" * 64)


def test_models_lists_every_name_whole_and_prints_a_card(capsys, monkeypatch) -> None:
    """`refocus models` at a narrow terminal: names are what people type, never cut."""
    from test_cli_predict import run_cli

    monkeypatch.setenv("COLUMNS", "60")
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    for name, entry in MODELS.items():
        assert name in out and entry.arch in out
    default = next(entry for _, entry in MODELS.items() if entry.default)
    code, out, _ = run_cli(capsys, "models", default.name)
    assert code == 0
    assert f"sha256: {default.sha256}" in out and f"card: {default.card}" in out
    assert str(default.path()) in out  # inside the package: where the weights are
    code, _, err = run_cli(capsys, "models", "no-such-model")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no-such-model" in err


def test_half_precision_copy_is_smaller_and_predicts_the_same(tiny_model_path, z00_files,
                                                               tmp_path) -> None:
    import numpy as np
    import torch

    from refocus.images import read_plane
    from refocus.inference.refocuser import Refocuser
    from refocus.modelfile import read_model_file, save_half_precision

    half = save_half_precision(tiny_model_path, tmp_path / "half.pt")
    weights = read_model_file(half)["state_dict"]
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    assert half.stat().st_size < 0.6 * Path(tiny_model_path).stat().st_size
    plane = read_plane(z00_files[0])[:256, :256]
    full_out, half_out = (Refocuser.from_file(p, device="cpu", mode="eager").predict(plane)
                          for p in (tiny_model_path, half))
    assert np.abs(full_out.astype(np.int32) - half_out).max() <= 2
    with pytest.raises(RefocusError, match="exists"):
        save_half_precision(tiny_model_path, half)
