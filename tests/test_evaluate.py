"""Baselines, the evaluation run (library and CLI) and the report it writes."""

from __future__ import annotations

import base64
import csv
import dataclasses
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import tifffile

from refocus import baselines
from refocus.errors import RefocusError
from refocus.evaluate import (
    CSV_COLUMNS,
    Deconvolution,
    EvalConfig,
    EvalField,
    baseline_methods,
    data_optics,
    evaluate,
    evaluate_fields,
    model_method,
)
from refocus.images import read_plane
from refocus.inference.refocuser import Refocuser
from refocus.metrics import psnr, score_field, ssim
from refocus.simulate import Optics, defocus_psf, plane_defocus_um, simulate_plane

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}
CROP = 256


@pytest.fixture(scope="module")
def crops(in_focus_images: list[np.ndarray]) -> list[np.ndarray]:
    """Real in-focus fields cut to where the nuclei are (keeps deconvolution quick)."""
    return [im[:CROP, :CROP] for im in in_focus_images]


def simulated(image: np.ndarray, z: int, seed: int) -> np.ndarray:
    return simulate_plane(image, z, Optics(), rng=seed)


def test_richardson_lucy_improves_a_simulated_real_field(crops: list[np.ndarray]) -> None:
    z = 5  # 22 um below focus
    psf = defocus_psf(plane_defocus_um(z, Optics()), Optics())
    val_in, val_target = simulated(crops[1], z, 1), crops[1]
    n, means = baselines.choose_rl_iterations([val_in], [val_target], psf, (5, 20, 60))
    assert n == max(means, key=means.get) and set(means) == {5, 20, 60}
    blurred, target = simulated(crops[0], z, 0), crops[0]
    restored = baselines.richardson_lucy(blurred, psf, n)
    assert restored.shape == blurred.shape and restored.dtype == np.float32
    assert psnr(target, restored) > psnr(target, blurred) + 2.0
    assert ssim(target, restored) > ssim(target, blurred) + 0.2
    # deconvolution moves light, it does not make or lose it
    assert restored.mean() == pytest.approx(blurred.mean(), rel=0.02)


@pytest.mark.parametrize("method", ["rl", "wiener"])
def test_deconvolution_subtracts_and_restores_the_background(
    crops: list[np.ndarray], method: str
) -> None:
    psf = defocus_psf(plane_defocus_um(10, Optics()), Optics())
    image = simulated(crops[2], 10, 2).astype(np.float64)

    def run(x: np.ndarray) -> np.ndarray:
        if method == "rl":
            return baselines.richardson_lucy(x, psf, 20)
        return baselines.wiener(x, psf)

    # A brighter camera offset must only shift the result, not change what is restored.
    np.testing.assert_allclose(run(image + 500.0) - 500.0, run(image), atol=0.05)
    out = run(image)
    assert np.isfinite(out).all()
    assert out.mean() == pytest.approx(image.mean(), rel=0.02)


class _Html(HTMLParser):
    """Collects <img> sources and checks that non-void tags close in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_report(out: Path) -> str:
    """Validate report.html: tags balanced, every <img> a PNG, every figure file in place.

    Returns the page's text for content checks.
    """
    html_path = out / "report.html"
    parser = _Html()
    parser.feed(html_path.read_text(encoding="utf-8"))
    assert parser.errors == [] and parser.stack == []
    assert parser.images
    for src in parser.images:
        if src.startswith("data:image/png;base64,"):
            data = base64.b64decode(src.split(",", 1)[1], validate=True)
        else:
            data = (out / src).read_bytes()  # relative reference
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    figures = sorted((out / "figures").glob("*.png"))
    assert len(figures) == len(parser.images)
    text = "".join(parser.text)
    for fig in figures:
        assert fig.stat().st_size > 5000
        assert fig.read_bytes() in {
            base64.b64decode(s.split(",", 1)[1]) for s in parser.images}
        assert f"figures/{fig.name}" in text
    return text


def screenshot(html_path: Path, png: Path) -> bool:
    """Headless Chromium screenshot of the page; False when Chromium is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return False
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
         "--window-size=1400,9000", html_path.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    return True


def test_report_from_arrays_renders(crops: list[np.ndarray], tmp_path: Path,
                                    z00_files: list[Path]) -> None:
    zs = (5, 32)
    fields = [EvalField(f"f{i}", z, simulated(crops[i], z, 10 * i + z), crops[i])
              for i in (0, 3, 4) for z in zs]
    deconv = Deconvolution()
    deconv.tune([EvalField("val", z, simulated(crops[1], z, 99 + z), crops[1]) for z in zs],
                candidates=(10, 40))
    methods = baseline_methods(deconv)
    model = Refocuser.pretrained(device="cpu", mode="eager")  # the shipped model
    methods["model"] = model_method(model, trust_flips=2)
    unpaired = [EvalField(p.stem, 0, read_plane(p)[:CROP, :CROP]) for p in z00_files[:2]]
    result = evaluate_fields(fields, methods, tmp_path / "eval", unpaired,
                             meta={"target_z": 16, "note": "arrays", "trust_flips": 2},
                             n_panels=2)

    rows = list(csv.DictReader((tmp_path / "eval" / "metrics.csv").open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 3 * len(zs) * len(methods)
    row = next(r for r in rows if (r["field"], r["z"], r["method"]) == ("f3", "32", "wiener"))
    f3 = next(f for f in fields if f.name == "f3" and f.z == 32)
    expected = score_field(f3.target, methods["wiener"](f3.input, 32))
    assert float(row["psnr"]) == pytest.approx(expected.psnr, abs=1e-6)
    assert float(row["fg_ssim"]) == pytest.approx(expected.fg_ssim, abs=1e-6)
    assert int(row["nuclei_pred"]) == expected.nuclei_pred

    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rl = next(r for r in summary["paired"] if r["z"] == 5 and r["method"] == "richardson_lucy")
    values = [float(r["psnr"]) for r in rows if r["z"] == "5" and r["method"] == "richardson_lucy"]
    assert rl["psnr"]["mean"] == pytest.approx(np.mean(values))
    assert rl["psnr"]["low"] <= rl["psnr"]["mean"] <= rl["psnr"]["high"] and rl["psnr"]["n"] == 3
    assert rl["delta_vs_identity"]["psnr"]["mean"] > 0  # RL helps on every simulated field
    assert {r["method"] for r in summary["unpaired"]} == set(methods)
    assert summary["target_focus"]["n"] == 3
    assert result.summary["paired"] == summary["paired"]
    check_trust(rows, summary, fields, model)

    text = check_report(tmp_path / "eval")
    names = {p.name for p in (tmp_path / "eval" / "figures").glob("*.png")}
    assert names == {"metrics_vs_z.png", "panels_z05.png", "panels_z32.png",
                     "focus_unpaired.png", "panels_unpaired.png"}
    assert "The other side of focus (z > 16)" in text
    assert "Trust: does it say where the output is wrong?" in text
    for name in ("panels_z05.png", "panels_z32.png", "panels_unpaired.png"):  # trust rows
        assert viridis_pixels(read_plane_rgb(tmp_path / "eval" / "figures" / name)) > 2000
    shot = tmp_path / "shot.png"
    if screenshot(tmp_path / "eval" / "report.html", shot):
        assert shot.read_bytes().startswith(PNG_MAGIC)
        pixels = read_plane_rgb(shot)
        assert pixels.std() > 10  # the page drew something besides white
        assert viridis_pixels(pixels) > 2000  # and the browser shows the trust maps

    with pytest.raises(RefocusError, match="exists already"):
        evaluate_fields(fields[:1], {"identity": methods["identity"]}, tmp_path / "eval")


def check_trust(rows: list[dict], summary: dict, fields: list[EvalField],
                model: Refocuser) -> None:
    """The model's rows carry its trust, recomputed here from the same pixels; the
    summary says how well trust ranked the errors."""
    from refocus.inference import trust as T

    model_rows = [r for r in rows if r["method"] == "model"]
    assert all(0 < float(r["trust"]) < 1 for r in model_rows)
    assert all(r["trust"] == "" for r in rows if r["method"] != "model")
    f = fields[0]
    row = next(r for r in model_rows if r["field"] == f.name and int(r["z"]) == f.z)
    output = model.predict(f.input)
    trust = T.trust_map(model, f.input, output, flips=2)
    assert float(row["trust"]) == pytest.approx(trust.score, rel=1e-6)
    error = np.abs(output.astype(np.float64) - f.target)
    assert float(row["trust_tile_rho"]) == pytest.approx(
        T.spearman(1 - T.tile_means(trust.map), T.tile_means(error)), abs=1e-9)
    record = summary["trust"]["model"]
    assert record["images"] == len(model_rows) and -1 <= record["image_rho"] <= 1
    assert record["tile_rho"] == pytest.approx(
        np.median([float(r["trust_tile_rho"]) for r in model_rows]))
    assert 0 < record["unpaired_trust"] < 1


def viridis_pixels(rgb: np.ndarray) -> int:
    """How many pixels have a colour of the viridis map (the trust maps' colours; the
    error maps' magma, greys and the plots' lines have none of them)."""
    from matplotlib import colormaps

    table = colormaps["viridis"](np.linspace(0, 1, 64))[:, :3] * 255
    pixels = rgb[..., :3].reshape(-1, 3)
    pixels = pixels[np.ptp(pixels, axis=1) > 40]  # not grey
    near = np.min(np.linalg.norm(pixels[:, None, :] - table[None], axis=2), axis=1)
    return int(np.count_nonzero(near < 12))


def read_plane_rgb(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(path), dtype=np.float64)


def test_evaluate_from_files_with_two_models(
    make_bbbc006, tiny_model_path: Path, tmp_path: Path, z00_files: list[Path]
) -> None:
    root = make_bbbc006(z_values=(1, 10, 16, 32), crop=192)
    second = tmp_path / "l1.pt"
    shutil.copy(tiny_model_path, second)
    unpaired = tmp_path / "unpaired"
    unpaired.mkdir()
    tifffile.imwrite(unpaired / z00_files[0].name, read_plane(z00_files[0])[:192, :192])
    config = EvalConfig(model=tiny_model_path, data=root, input_z=(1, 10, 32), split="test",
                        out=tmp_path / "out", second_model=second, unpaired=unpaired,
                        rl_candidates=(10, 40), progress=False)
    result = evaluate(config)
    methods = ["identity", "richardson_lucy", "richardson_lucy_blind", "wiener", "model", "l1"]
    assert result.summary["methods"] == methods
    rows = result.rows
    n_fields = len({r["field"] for r in rows})
    assert n_fields >= 1 and len(rows) == n_fields * 3 * len(methods)
    # the identity row is the raw input scored against the raw target, straight from disk
    row = next(r for r in rows if r["method"] == "identity" and r["z"] == 10)
    well = row["field"].split("_")[0]
    inp = next((root / "BBBC006_v1_images_z_10").glob(f"*_{well}_s1_w1*.tif"))
    tgt = next((root / "BBBC006_v1_images_z_16").glob(f"*_{well}_s1_w1*.tif"))
    assert row["psnr"] == pytest.approx(psnr(read_plane(tgt), read_plane(inp)), abs=1e-9)
    # the two identical model files give identical scores
    for z in (1, 10, 32):
        a = [r["psnr"] for r in rows if r["method"] == "model" and r["z"] == z]
        b = [r["psnr"] for r in rows if r["method"] == "l1" and r["z"] == z]
        assert a == pytest.approx(b)
    assert set(result.summary["meta"]["rl_iterations"]) == {1, 10, 32}
    assert result.summary["unpaired"][0]["focus"]["n"] == 1
    # the unpaired z=00 plane is named by its field and z, and deconvolved at z=0
    assert {(r["field"], r["z"], r["method"]) for r in result.unpaired_rows} == {
        ("a19_s2_w1_z00", 0, m) for m in methods}
    focus_rows = list(csv.DictReader((tmp_path / "out" / "unpaired.csv").open()))
    assert [float(r["focus"]) for r in focus_rows] == pytest.approx(
        [r["focus"] for r in result.unpaired_rows])
    check_report(tmp_path / "out")
    with pytest.raises(RefocusError, match="exists already"):
        evaluate(dataclasses.replace(config, input_z=(10,), second_model=None))
    with pytest.raises(ValueError, match="not from config.model"):  # scores named honestly
        evaluate(dataclasses.replace(config, model=second, overwrite=True),
                 Refocuser.from_file(tiny_model_path, device="cpu"))


def test_cli_evaluate(make_bbbc006, tiny_model_path: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    from refocus.cli import main

    root = make_bbbc006(z_values=(10, 16), crop=160)
    out = tmp_path / "cli"
    args = ["evaluate", str(tiny_model_path), "--data", str(root), "--input-z", "10",
            "--out", str(out)]
    main(args)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["method"] for r in rows} == {"identity", "richardson_lucy", "richardson_lucy_blind",
                                           "wiener", "model"}
    assert "report.html" in capsys.readouterr().out
    (model_row,) = [r for r in rows if r["method"] == "model"]
    assert 0 < float(model_row["trust"]) < 1  # trust maps by default (2 flips)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "exists already" in err and len(err.strip().splitlines()) == 1
    main([*args, "--overwrite", "--trust-flips", "0"])
    assert (out / "report.html").stat().st_size > 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert not any(r.get("trust") for r in rows)  # switched off
    with pytest.raises(SystemExit) as exc:
        main([*args, "--overwrite", "--trust-flips", "3"])
    assert exc.value.code == 2
    assert "--trust-flips" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # refused by EvalConfig before any work
        main([*args, "--overwrite", "--split", "tset"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--split: unknown split 'tset' (choose from train, val, test, all)" in err


@pytest.mark.parametrize(("setting", "message"), [
    ({"split": "tset"}, "--split: unknown split 'tset' (choose from train, val, test, all)"),
    ({"layout": "zarr"},
     "--layout: unknown data layout 'zarr' (choose from bbbc006, pairs, in-focus)"),
    ({"input_z": []}, "--input-z: must be a non-empty list of whole numbers"),
    ({"input_z": [1, 40]}, "--input-z: z=40 outside BBBC006's planes 0..33"),
    ({"target_z": 34}, "--target-z: z=34 outside BBBC006's planes 0..33"),
    ({"rl_candidates": [10, 0]}, "rl_candidates: must be a whole number >= 1, got 0"),
    ({"rl_candidates": [10, 10]}, "rl_candidates: lists a number twice"),
    ({"max_fields": 0}, "--max-fields: must be a whole number >= 1, got 0"),
    ({"fractions": (0.8, 0.1, 0.2)}, "fractions: must be three non-negative"),
    ({"overwrite": "yes"}, "--overwrite: must be true or false, got 'yes'"),
    ({"optics": {"na": 0.45, "bogus": 1}}, "optics: not simulator optics"),
    ({"variant": "fp8"}, "variant: unknown inference variant 'fp8' (choose from auto, eager,"),
    ({"splitt": "val"}, "unknown evaluate option 'splitt' (known: model, data, layout,"),
])
def test_eval_config_refuses_bad_settings_in_one_line(setting: dict, message: str) -> None:
    with pytest.raises(RefocusError) as exc:
        EvalConfig.from_mapping({"model": "model.pt", "data": "data", **setting})
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_eval_config_normalises_plain_data() -> None:
    config = EvalConfig.from_mapping({"model": "m.pt", "data": "d", "input_z": [10, 1],
                                      "unpaired": ["a.tif", "b.tif"], "channels": "w2",
                                      "optics": {"na": 0.3}, "layout": "pairs"})
    assert config.model == Path("m.pt") and config.input_z == (10, 1)
    assert config.unpaired == (Path("a.tif"), Path("b.tif")) and config.channels == ("w2",)
    assert config.optics == Optics(na=0.3) and config.split == "test"
    assert EvalConfig(Path("m.pt"), Path("d")).rl_candidates == baselines.RL_CANDIDATES
    with pytest.raises(RefocusError, match="evaluation needs the 'data' setting"):
        EvalConfig.from_mapping({"model": "m.pt"})


def test_deconvolution_uses_the_optics_a_folder_was_simulated_with(tmp_path: Path) -> None:
    optics, source = data_optics(tmp_path)
    assert optics == Optics() and "defaults" in source
    recorded = Optics(bottom_mismatch_um=-123.0, defocus_scale=1.2)
    manifest = {"seed": 0, "optics": dataclasses.asdict(recorded)}
    (tmp_path / "simulation.json").write_text(json.dumps(manifest))
    optics, source = data_optics(tmp_path)
    assert optics == recorded and "simulation.json" in source
    (tmp_path / "simulation.json").write_text(json.dumps({"optics": {"na": 0.45, "bogus": 1}}))
    with pytest.raises(RefocusError, match="unreadable simulation settings"):
        data_optics(tmp_path)
