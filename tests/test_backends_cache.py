"""Set-up is paid once per model: the ONNX graph, the int8 graph and the measured choice of
variant are cached, verified on load, rebuilt when damaged, and a faster variant becomes
the default only within the PSNR budget."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from refocus import convert
from refocus.archs import build_network
from refocus.inference import backends, budget, graphcache, quantize
from refocus.inference.budget import Measurement, QualityFields, verdict
from refocus.inference.graphcache import (
    ModelCache,
    cached_peak_bytes_per_pixel,
    cached_receptive_radius,
    model_key,
)
from refocus.inference.receptive import probe_image
from refocus.inference.refocuser import Refocuser


def small_net(seed: int = 0) -> torch.nn.Module:
    """A real registered architecture, small enough to export in seconds."""
    torch.manual_seed(seed)
    return build_network({"arch": "care", "first_filters": 4, "depth": 2}).eval()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("REFOCUS_NO_CACHE", raising=False)
    return tmp_path / "cache" / "onnx"


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every ONNX export (one entry per call)."""
    calls: list[int] = []
    real = convert.export_onnx

    def counted(model: torch.nn.Module, out: object) -> int:
        calls.append(1)
        return real(model, out)  # type: ignore[arg-type]

    monkeypatch.setattr(convert, "export_onnx", counted)
    return calls


@pytest.fixture
def quick_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two 128-px quality fields and a small calibration set: the logic, not the numbers."""
    monkeypatch.setattr(budget, "FIELDS", QualityFields(count=2, crop=128))
    monkeypatch.setattr(quantize, "CALIBRATION_FIELDS", 2)


@pytest.fixture
def heavy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Treat the small test network as compute-bound, so auto times ONNX Runtime for it."""
    monkeypatch.setattr(backends, "ONNX_MIN_MACS_PER_PIXEL", 0)


def entry(cache: Path, model: torch.nn.Module) -> dict:
    return json.loads((cache / model_key(model)[:32] / "entry.json").read_text())


def test_second_preparation_does_not_export(cache: Path, exports: list[int]) -> None:
    model = small_net()
    x = probe_image("cpu", (80, 112))
    first = backends.prepare_for_inference(model, "cpu", mode="onnxruntime")
    second = backends.prepare_for_inference(model, "cpu", mode="onnxruntime")
    assert len(exports) == 1
    assert first.variant == second.variant == "onnxruntime"
    assert torch.equal(first(x), second(x))
    stored = entry(cache, model)
    assert stored["graphs"]["fp32"]["sha256"] == graphcache.sha256_of(
        cache / model_key(model)[:32] / "fp32.onnx")
    assert isinstance(stored["checks"]["probe:onnxruntime"], float)


def test_a_damaged_graph_or_entry_is_rebuilt_not_trusted(cache: Path, exports: list[int]) -> None:
    model = small_net()
    x = probe_image("cpu", (64, 96))
    expected = backends.prepare_for_inference(model, "cpu", mode="onnxruntime")(x)
    folder = cache / model_key(model)[:32]
    graph = folder / "fp32.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, the size unchanged
    graph.write_bytes(bytes(data))
    rebuilt = backends.prepare_for_inference(model, "cpu", mode="onnxruntime")
    assert len(exports) == 2
    assert torch.equal(rebuilt(x), expected)
    (folder / "entry.json").write_text("{not json")
    backends.prepare_for_inference(model, "cpu", mode="onnxruntime")
    assert len(exports) == 3
    assert entry(cache, model)["key"] == model_key(model)


def test_a_different_model_gets_another_entry(cache: Path, exports: list[int]) -> None:
    one, other = small_net(0), small_net(1)
    backends.prepare_for_inference(one, "cpu", mode="onnxruntime")
    backends.prepare_for_inference(other, "cpu", mode="onnxruntime")
    assert len(exports) == 2
    assert model_key(one) != model_key(other)
    assert len(list(cache.glob("*/fp32.onnx"))) == 2


def test_the_key_follows_the_weights_not_the_object() -> None:
    model = small_net()
    key = model_key(model)
    assert model_key(small_net()) == key  # same weights, another object
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)  # in place: same storage, new version
    assert model_key(model) != key


def test_receptive_radius_is_measured_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = graphcache.receptive_radius

    def counted(model: torch.nn.Module, device: torch.device) -> int:
        calls.append(1)
        return real(model, device)

    monkeypatch.setattr(graphcache, "receptive_radius", counted)
    model = small_net()
    first = cached_receptive_radius(model, torch.device("cpu"))
    assert cached_receptive_radius(small_net(), torch.device("cpu")) == first > 0
    assert len(calls) == 1
    # and what prediction uses: a new Refocuser of the same weights measures nothing
    assert Refocuser(small_net(), device="cpu", mode="eager").halo == first
    assert len(calls) == 1


def test_peak_bytes_are_measured_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measuring them imports torch's compiler stack (seconds): once per model, not per start."""
    calls = []
    real = graphcache.peak_bytes_per_pixel
    monkeypatch.setattr(graphcache, "peak_bytes_per_pixel",
                        lambda model, device: calls.append(1) or real(model, device))
    first = cached_peak_bytes_per_pixel(small_net(), torch.device("cpu"))
    assert cached_peak_bytes_per_pixel(small_net(), torch.device("cpu")) == first > 0
    assert Refocuser(small_net(), device="cpu", mode="eager").auto_tile() >= 64
    assert len(calls) == 1


def test_no_cache_writes_nothing_and_measures_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch, exports: list[int]
) -> None:
    monkeypatch.setenv("REFOCUS_NO_CACHE", "1")
    monkeypatch.setattr(budget, "choose_variant", lambda *a, **k: pytest.fail("measured"))
    prepared = backends.prepare_for_inference(small_net(), "cpu")
    assert prepared.variant == backends.default_variant("cpu")
    assert not cache.exists() or not any(cache.iterdir())


def test_a_variant_outside_the_psnr_budget_falls_back_with_a_warning(
    cache: Path, exports: list[int], quick_budget: None, heavy: None,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "PSNR_BUDGET_DB", 0.0)  # no change at all is allowed
    model = small_net()
    with pytest.warns(UserWarning, match="changes PSNR by .* dB on the shipped fields"):
        prepared = backends.prepare_for_inference(model, "cpu")
    assert prepared.variant == backends.fp32_baseline("cpu", onnx=True) == "onnxruntime"
    report = entry(cache, model)["checks"]["choice"]
    assert report["variant"] == "onnxruntime"
    assert set(report["refused"]) == set(backends.cpu_candidates(onnx=True))
    # the verdict is cached with the graphs: no second measurement, no second warning
    monkeypatch.setattr(budget, "choose_variant", lambda *a, **k: pytest.fail("measured"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.prepare_for_inference(model, "cpu").variant == "onnxruntime"
    assert len(exports) == 1


def test_a_faster_variant_within_the_budget_becomes_the_default(
    cache: Path, exports: list[int], quick_budget: None, heavy: None,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "PSNR_BUDGET_DB", math.inf)
    monkeypatch.setattr(budget, "SPEED_MARGIN", math.inf)  # any candidate counts as faster
    model = small_net()
    prepared = backends.prepare_for_inference(model, "cpu")
    assert prepared.variant in backends.cpu_candidates(onnx=True)
    report = entry(cache, model)["checks"]["choice"]
    assert report["refused"] == {}
    assert {m["variant"] for m in report["measurements"]} == {
        "onnxruntime", *backends.cpu_candidates(onnx=True)}
    assert all(len(m["psnr_db"]) == 2 for m in report["measurements"])
    calls = []
    monkeypatch.setattr(quantize, "quantize_int8", lambda *a: calls.append(a))
    again = backends.prepare_for_inference(model, "cpu")
    assert again.variant == prepared.variant and calls == [] and len(exports) == 1
    x = probe_image("cpu", (64, 64))
    reference = backends.prepare_for_inference(model, "cpu", mode="eager")(x)
    assert backends.relative_error(again(x), reference) <= backends.TOLERANCE[again.variant]


def test_only_compute_bound_networks_are_exported_to_time_onnx_runtime(cache: Path) -> None:
    """MACs per pixel as counted on the real architectures: CSBDeep's CARE defaults and the
    shipped nafnet are memory-bound (torch channels_last was the faster fp32 on every CPU
    measured), the paper's resnet34 is not."""
    light = [build_network({"arch": "care"}), build_network({"arch": "nafnet"})]
    heavy = build_network({"arch": "resnet34"})
    for model in light:
        assert graphcache.cached_macs_per_pixel(model) < backends.ONNX_MIN_MACS_PER_PIXEL
    assert graphcache.cached_macs_per_pixel(heavy) > 3 * backends.ONNX_MIN_MACS_PER_PIXEL


def test_a_light_network_is_timed_without_any_export(
    cache: Path, exports: list[int], quick_budget: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(budget, "PSNR_BUDGET_DB", math.inf)
    monkeypatch.setattr(budget, "SPEED_MARGIN", math.inf)
    model = small_net()
    prepared = backends.prepare_for_inference(model, "cpu")
    report = entry(cache, model)["checks"]["choice"]
    assert [m["variant"] for m in report["measurements"]] == ["channels_last", "bf16"]
    assert prepared.variant == "bf16" and exports == []
    assert set(entry(cache, model)["graphs"]) == set()


def test_with_nothing_to_compare_nothing_is_timed(
    cache: Path, exports: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A light network on a CPU without hardware bf16 (the AVX2-only EPYC): the first
    prediction starts as fast as every later one."""
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(budget, "choose_variant", lambda *a, **k: pytest.fail("measured"))
    model = small_net()
    prepared = backends.prepare_for_inference(model, "cpu")
    assert prepared.variant == "channels_last" and exports == []
    x = probe_image("cpu", (64, 64))
    reference = backends.prepare_for_inference(model, "cpu", mode="eager")(x)
    assert backends.relative_error(prepared(x), reference) <= backends.TOLERANCE["channels_last"]


def test_the_int8_graph_is_cached_beside_the_fp32_one(cache: Path, exports: list[int],
                                                      quick_budget: None) -> None:
    model = small_net()
    prepared = backends.prepare_for_inference(model, "cpu", mode="int8")
    assert prepared.variant == "int8"
    graphs = entry(cache, model)["graphs"]
    assert set(graphs) == {"fp32", "int8"}
    store = ModelCache(model)
    assert store.verified_graph("int8") is not None
    x = probe_image("cpu", (64, 64))
    error = backends.relative_error(prepared(x), backends.build_variant(model, "cpu", "eager")(x))
    assert 0 < error <= backends.TOLERANCE["int8"]  # really quantised, still the same image


def test_verdict_weighs_quality_before_speed() -> None:
    base = Measurement("onnxruntime", 1.0, (30.0, 25.0))
    assert verdict(Measurement("int8", 0.5, (29.95, 25.05)), base) is None
    assert "PSNR by 0.200 dB" in str(verdict(Measurement("int8", 0.5, (29.8, 25.0)), base))
    assert "not faster" in str(verdict(Measurement("bf16", 0.95, (30.0, 25.0)), base))


def test_the_command_line_says_once_that_it_is_measuring(
        cache: Path, quick_budget: None, heavy: None, tiny_model_path: Path,
        z00_files: list[Path],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first `refocus predict` of a model times its variants (a minute or two on a
    slow CPU): a status line says so rather than a silent pause; later runs are quiet."""
    from test_cli_predict import run_cli

    outputs = []
    for run in ("first", "second"):
        code, out, err = run_cli(capsys, "predict", z00_files[0], "--model", tiny_model_path,
                                 "--out", tmp_path / run)
        assert code == 0, err
        outputs.append(out)
    assert "preparing this model for this computer, once" in outputs[0]
    assert "preparing this model" not in outputs[1]
