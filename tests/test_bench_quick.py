"""The benchmark runs (quick mode) and every inference variant agrees with eager fp32.

Speed is never asserted here: the benchmark script measures it (benchmarks/README.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from refocus.archs import build_network
from refocus.inference.backends import (
    GRAPHS,
    TOLERANCE,
    build_variant,
    default_variant,
    prepare_for_inference,
    relative_error,
    variants_for,
)
from refocus.inference.receptive import probe_image
from refocus.modelfile import load_model

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
QUICK_VARIANTS = [v for v in variants_for("cpu") if v != "compile"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    # one thread: CI and developers share the cores, and contended OpenMP barriers make
    # two-thread runs of tiny images crawl; speed is not what this test checks
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--device", "cpu", "--threads", "1",
         "--model", str(tiny_model_path), "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"stdout": proc.stdout, **json.loads(out.read_text())}


def test_quick_benchmark_prints_the_table_with_every_row(quick_run: dict) -> None:
    assert "refocus benchmark (quick, cpu)" in quick_run["stdout"]
    assert "measured matmul peak" in quick_run["stdout"]
    assert quick_run["errors"] == []
    rows = {(r["arch"], r["task"], r["variant"]): r for r in quick_run["rows"]}
    expected = {("resnet18", f"predict {size} {mode}", v)
                for size in ("64x96", "96x96") for mode in ("whole", "tiled")
                for v in QUICK_VARIANTS}
    expected |= {("resnet18", f"train step {loss} 2x32²", v)
                 for loss in ("l1", "feature") for v in ("eager", "bf16")}
    expected |= {("-", f"loader batch 2x32² ({w} workers)", "CropDataset") for w in (0, 2)}
    assert set(rows) == expected
    for key, row in rows.items():
        assert math.isfinite(row["seconds"]) and row["seconds"] > 0, key
        assert math.isfinite(row["mpix_s"]) and row["mpix_s"] > 0, key
        assert row["memory_mib"] > 100, key  # peak RSS includes torch itself
        assert len(row["times"]) >= 2, key
        if key[1].startswith(("predict", "train")):
            assert 0 < row["peak_fraction"] < 10, key  # MAC counts and peak are sane
    assert quick_run["macs_per_pixel"]["resnet18"] > 1e5  # a ResNet U-Net: ~0.4 MMAC/px
    assert all(v > 1e8 for v in quick_run["matmul_peak_mac_s"].values())


def test_quick_benchmark_variants_match_fp32_through_tiling(quick_run: dict) -> None:
    predict_rows = [r for r in quick_run["rows"] if r["task"].startswith("predict")]
    for row in predict_rows:
        assert row["relative_diff"] <= TOLERANCE[row["variant"]], row
        if row["variant"] == "eager":
            assert row["max_abs_diff"] == 0.0


@pytest.fixture(scope="module")
def tiny_model(tiny_model_path: Path) -> torch.nn.Module:
    return load_model(tiny_model_path).model


# the ONNX Runtime variants are checked by the quick benchmark above (export takes a while)
@pytest.mark.parametrize("variant", [v for v in QUICK_VARIANTS if v not in GRAPHS])
def test_variant_agrees_with_eager_fp32(tiny_model: torch.nn.Module, variant: str) -> None:
    x = probe_image("cpu", (80, 112))  # not a multiple of 32: the padding path too
    eager = build_variant(tiny_model, "cpu", "eager")(x)
    fast = build_variant(tiny_model, "cpu", variant)(x)
    assert fast.shape == x.shape and fast.dtype == torch.float32
    error = relative_error(fast, eager)
    assert error <= TOLERANCE[variant]
    if variant in ("bf16", "fp16"):
        assert error > 0  # it really computed in reduced precision


def test_prepare_for_inference_takes_the_unmeasured_default_without_falling_back(
    tiny_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a cache nothing is measured (test_backends_cache.py covers measuring): the
    static default must still pass its probe check."""
    monkeypatch.setenv("REFOCUS_NO_CACHE", "1")
    x = probe_image("cpu", (64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numerics fallback warns
        fast = prepare_for_inference(tiny_model, "cpu")
    assert fast.variant == default_variant("cpu")
    reference = prepare_for_inference(tiny_model, "cpu", mode="eager")(x)
    assert relative_error(fast(x), reference) <= TOLERANCE[default_variant("cpu")]
    assert not tiny_model.training  # the caller's model is left in eval mode, unconverted
    assert next(tiny_model.parameters()).is_contiguous()


def test_a_variant_that_disagrees_is_refused_for_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    import refocus.inference.backends as backends

    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: True)  # only this warning

    class Broken(torch.nn.Module):
        """Right in fp32, wrong under autocast (as an fp16 overflow would be)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1.0 if torch.is_autocast_enabled("cpu") else x

    with pytest.warns(UserWarning, match="using eager fp32"):
        predictor = prepare_for_inference(Broken(), "cpu", mode="bf16")
    x = probe_image("cpu", (32, 32))
    assert torch.equal(predictor(x), x) and predictor.variant == "eager"


def test_forcing_bf16_on_a_cpu_that_emulates_it_warns(monkeypatch: pytest.MonkeyPatch,
                                                     tiny_model: torch.nn.Module) -> None:
    import refocus.inference.backends as backends

    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated in software"):
        slow = prepare_for_inference(tiny_model, "cpu", mode="bf16")
    assert slow.variant == "bf16"  # asked for, so still given
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepare_for_inference(tiny_model, "cpu", mode="bf16").variant == "bf16"


def test_cuda_is_skipped_cleanly_without_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the full benchmark measures it")
    proc = subprocess.run([sys.executable, str(BENCH), "--device", "cuda", "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    assert "CUDA is not available" in proc.stdout


def test_auto_without_onnxruntime_falls_back_by_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    import refocus.inference.backends as backends

    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    assert default_variant("cpu") == "channels_last"  # float32, nothing to export
    assert not backends.onnx_worth_measuring(build_network({"arch": "resnet34"}))
    assert backends.fp32_baseline("cpu") == "channels_last"  # what bf16 is measured against
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: True)
    assert backends.cpu_candidates() == ["bf16"]
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: False)
    assert backends.cpu_candidates() == []  # emulated bf16 is slower than fp32
