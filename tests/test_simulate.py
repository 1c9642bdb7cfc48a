"""The defocus simulator: PSF physics, camera statistics, BBBC006 layout, CLI and errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from refocus.cli import main
from refocus.data import build_pairs, scan_bbbc006
from refocus.data.bbbc006 import PLANE_RE
from refocus.errors import RefocusError
from refocus.images import read_plane
from refocus.samples import in_focus_paths
from refocus.simulate import (
    Camera,
    Optics,
    blur,
    defocus_psf,
    plane_defocus_um,
    simulate_bbbc006,
    simulate_plane,
    simulate_stacks,
)
from refocus.simulate.psf import _optical_path_um, best_focus_um

FITTED = Optics()
UNABERRATED = dataclasses.replace(FITTED, bottom_mismatch_um=0.0)


def rms_radius(kernel: np.ndarray) -> float:
    n = kernel.shape[0] // 2
    y, x = np.mgrid[-n : n + 1, -n : n + 1]
    return float(np.sqrt((kernel * (x * x + y * y)).sum()))


@pytest.mark.parametrize("defocus", [-33.0, -12.0, -2.0, 0.0, 2.0, 12.0, 33.0])
def test_psf_sums_to_one_and_is_centred(defocus):
    kernel = defocus_psf(defocus, FITTED)
    n = kernel.shape[0]
    assert kernel.ndim == 2 and n == kernel.shape[1] and n % 2 == 1
    assert kernel.dtype == np.float64 and kernel.min() >= 0
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    y, x = np.mgrid[:n, :n] - n // 2
    assert abs((kernel * x).sum()) < 1e-9 and abs((kernel * y).sum()) < 1e-9
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-15)  # rotationally symmetric
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-15)


@pytest.mark.parametrize("optics", [FITTED, UNABERRATED], ids=["fitted", "unaberrated"])
def test_psf_widens_monotonically_with_defocus(optics):
    steps = [2.0, 4.0, 8.0, 16.0, 32.0]
    for sign in (1, -1):
        radii = [rms_radius(defocus_psf(sign * d, optics)) for d in steps]
        assert all(b > a for a, b in zip(radii, radii[1:], strict=False)), radii
    # geometric optics: at 32 um the blur disk radius is 32 um * tan(asin 0.45) = 25 px
    assert 14 < rms_radius(defocus_psf(32.0, UNABERRATED)) < 20
    # without aberration the narrowest PSF is at focus; with spherical aberration the
    # second moment can dip just beside it (the caustic side), which is why 0 is left out
    assert rms_radius(defocus_psf(0.0, UNABERRATED)) < rms_radius(defocus_psf(2.0, UNABERRATED))


def test_psf_differs_above_and_below_focus():
    above, below = defocus_psf(32.0, FITTED), defocus_psf(-32.0, FITTED)
    assert np.abs(above - below).sum() > 0.5  # L1 distance between two unit-sum kernels
    assert rms_radius(below) > 1.1 * rms_radius(above)
    # the sample's refractive-index mismatch alone (NA 0.45, nuclei 4 um deep) is small
    # but present
    plain = np.abs(defocus_psf(32.0, UNABERRATED) - defocus_psf(-32.0, UNABERRATED)).sum()
    assert 1e-3 < plain < 0.1
    index_matched = dataclasses.replace(UNABERRATED, ns=UNABERRATED.ni)
    same = np.abs(defocus_psf(32.0, index_matched) - defocus_psf(-32.0, index_matched)).sum()
    assert same < 1e-6


def test_psf_matches_direct_fft_of_the_pupil():
    """The Hankel-transform PSF equals |FFT(pupil)|^2 computed independently on a grid."""
    optics, defocus, over, grid = FITTED, 12.0, 3, 2048
    kernel = defocus_psf(defocus, optics)
    sub = optics.pixel_um / over
    f = np.fft.fftfreq(grid, d=sub)
    rho = np.hypot(*np.meshgrid(f, f, indexing="ij")) * optics.emission_um / optics.na
    stage = best_focus_um(optics) + defocus
    phase = 2 * np.pi / optics.emission_um * _optical_path_um(np.minimum(rho, 1), stage, optics)
    pupil = np.where(rho <= 1, np.exp(1j * phase), 0)
    psf = np.fft.fftshift(np.abs(np.fft.ifft2(pupil)) ** 2)
    n = kernel.shape[0]
    start = grid // 2 - n * over // 2
    fine = psf[start : start + n * over, start : start + n * over]
    direct = fine.reshape(n, over, n, over).sum(axis=(1, 3))
    direct /= direct.sum()
    assert np.abs(direct - kernel).max() < 0.02 * kernel.max()


def test_psf_is_cached_and_read_only():
    first = defocus_psf(-20.0)
    assert defocus_psf(-20.0) is first
    with pytest.raises(ValueError):
        first[0, 0] = 1.0


def test_plane_defocus_follows_bbbc006_spacing():
    nominal = dataclasses.replace(FITTED, defocus_scale=1.0)
    assert plane_defocus_um(16, nominal) == 0.0
    assert plane_defocus_um(0, nominal) == -32.0
    assert plane_defocus_um(32, nominal) == 32.0
    assert plane_defocus_um(1, FITTED) == pytest.approx(-15 * 2.0 * FITTED.defocus_scale)


@pytest.mark.parametrize(
    "camera", [Camera(), Camera(offset=100.0, gain=1.5, read_noise=6.0)], ids=["fitted", "other"]
)
@pytest.mark.parametrize("level", [150.0, 900.0])
def test_flat_field_noise_matches_camera(camera, level):
    flat = np.full((256, 256), level)
    expected_var = camera.gain * (level - camera.offset) + camera.read_noise**2 + 1 / 12
    for z in (0, 10):  # blur leaves a flat field flat; only the camera adds noise
        raw = simulate_plane(flat, z, FITTED, camera, np.random.default_rng(7))
        assert raw.dtype == np.uint16
        out = raw.astype(float)
        assert out.mean() == pytest.approx(level, abs=4 * np.sqrt(expected_var / out.size))
        assert out.var() == pytest.approx(expected_var, rel=0.05)


def test_camera_clips_to_12_bits():
    out = Camera().expose(np.array([[5000.0, 50.0]]), np.random.default_rng(0))
    assert out.dtype == np.uint16 and out[0, 0] == 4095 and out[0, 1] < 130


def test_simulated_plane_keeps_photons_and_blurs(in_focus_images):
    image = in_focus_images[0]
    camera = Camera()
    out = simulate_plane(image, 0, FITTED, camera, 1)
    assert out.dtype == np.uint16 and out.shape == image.shape
    signal_in = (image.astype(float) - camera.offset).sum()
    signal_out = (out.astype(float) - camera.offset).sum()
    assert signal_out == pytest.approx(signal_in, rel=0.01)
    # blurred: the bright in-focus nuclei spread out
    assert np.percentile(out, 99.9) < 0.6 * np.percentile(image, 99.9)
    # and what is left after the noise-free blur is the camera's noise, nothing else
    expected = blur(image.astype(float) - camera.offset, defocus_psf(plane_defocus_um(0)))
    residual = out - (expected + camera.offset)
    model_var = camera.gain * expected.clip(0).mean() + camera.read_noise**2 + 1 / 12
    assert abs(residual.mean()) < 0.05
    assert residual.var() == pytest.approx(model_var, rel=0.03)
    assert np.array_equal(simulate_plane(image, 16, FITTED, camera, 1), image)
    assert np.array_equal(out, simulate_plane(image, 0, FITTED, camera, 1))
    assert not np.array_equal(out, simulate_plane(image, 0, FITTED, camera, 2))


def test_blur_keeps_borders_bright():
    flat = np.full((40, 60), 7.0)
    np.testing.assert_allclose(blur(flat, defocus_psf(-33.0)), flat, rtol=1e-12)


@pytest.fixture
def three_fields(tmp_path) -> Path:
    folder = tmp_path / "in-focus"
    folder.mkdir()
    for path in in_focus_paths()[:3]:
        shutil.copy(path, folder / path.name)
    return folder


def test_layout_round_trips_through_the_bbbc006_reader(three_fields, tmp_path):
    out = tmp_path / "sim"
    written = simulate_bbbc006(three_fields, out, [1, 32], seed=4)
    assert len(written) == 9 and all(PLANE_RE.match(p.name) for p in written)
    index = scan_bbbc006(out)
    assert index.z_values == [1, 16, 32] and len(index.fields) == 3
    pairs = build_pairs(out, input_z=(1, 32))
    assert len(pairs) == 6 and {p.z for p in pairs} == {1, 32}
    by_well = {p.stem.split("__")[1]: read_plane(p) for p in three_fields.iterdir()}
    for pair in pairs:
        target = read_plane(pair.target)
        assert target.dtype == np.uint16 and pair.target.parent.name.endswith("_16")
        assert np.array_equal(target, by_well[pair.group])  # z=16 is the real plane itself
        assert pair.input.parent.name == f"BBBC006_v1_images_z_{pair.z:02d}"
        assert read_plane(pair.input).shape == target.shape
    manifest = json.loads((out / "simulation.json").read_text())
    assert manifest["z"] == [1, 16, 32] and manifest["seed"] == 4
    assert manifest["optics"]["bottom_mismatch_um"] == FITTED.bottom_mismatch_um

    again = simulate_bbbc006(three_fields, tmp_path / "again", [32, 1], seed=4)
    assert [p.name for p in again] == [p.name for p in written]
    assert all(
        np.array_equal(read_plane(a), read_plane(b)) for a, b in zip(again, written, strict=True)
    )
    other = simulate_bbbc006(three_fields, tmp_path / "other", [1, 32], seed=5)
    assert not {p.name for p in other} & {p.name for p in written}


def test_a_bbbc006_root_or_z16_folder_is_accepted_as_input(make_bbbc006, tmp_path):
    root = make_bbbc006(z_values=(5, 16), n_fields=2, crop=96)
    for source in (root, root / "BBBC006_v1_images_z_16"):
        out = tmp_path / f"from_{source.name}"
        simulate_bbbc006(source, out, [10])
        index = scan_bbbc006(out)
        assert index.z_values == [10, 16] and [str(f) for f in index.fields] == ["b02_s1", "b03_s1"]


def run_cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err


def test_cli_writes_layout_and_refuses_to_overwrite(three_fields, tmp_path, capsys):
    out = tmp_path / "sim"
    main(["simulate", "--in-focus", str(three_fields), "--out", str(out), "--z", "1", "5", "32"])
    assert "12 planes" in capsys.readouterr().out
    assert scan_bbbc006(out).z_values == [1, 5, 16, 32]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}

    code, err = run_cli(
        capsys, "simulate", "--in-focus", str(three_fields), "--out", str(out), "--z", "1"
    )
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")} == before

    main(
        [
            "simulate",
            "--in-focus",
            str(three_fields),
            "--out",
            str(out),
            "--z",
            "10",
            "--seed",
            "9",
            "--overwrite",
        ]
    )
    index = scan_bbbc006(out)  # earlier planes (other uuids and z) are gone, no duplicates
    assert index.z_values == [10, 16] and len(index.planes) == 6


def test_bad_inputs_give_refocus_errors(three_fields, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RefocusError, match="no BBBC006 images"):
        simulate_bbbc006(empty, tmp_path / "o1", [1])

    rgb_z16 = tmp_path / "rgb" / "BBBC006_v1_images_z_16"
    rgb_z16.mkdir(parents=True)
    tifffile.imwrite(
        rgb_z16 / "mcf-z-stacks-03212011_a02_s1_w10b7e4b34-0d6f-4b5a-9d4e-3f1b2c3d4e5f.tif",
        np.zeros((32, 32, 3), np.uint8),
        photometric="rgb",
    )
    with pytest.raises(RefocusError, match="RGB image"):
        simulate_bbbc006(rgb_z16, tmp_path / "o2", [1])

    with pytest.raises(RefocusError, match="z=40 outside"):
        simulate_bbbc006(three_fields, tmp_path / "o3", [1, 40])
    with pytest.raises(RefocusError, match="overlaps the input"):
        simulate_bbbc006(three_fields, three_fields / "sim", [1])
    with pytest.raises(RefocusError, match="no in-focus .* w2 planes"):
        simulate_bbbc006(three_fields, tmp_path / "o4", [1], channel="w2")
    with pytest.raises(RefocusError, match="2-D plane"):
        simulate_plane(np.zeros((4, 32, 32)), 1)
    with pytest.raises(RefocusError, match="raw camera counts"):
        simulate_plane(np.random.default_rng(0).random((32, 32)), 1)  # a 0..1 float image

    code, err = run_cli(
        capsys, "simulate", "--in-focus", str(empty), "--out", str(tmp_path / "o5"), "--z", "1"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, err = run_cli(
        capsys,
        "simulate",
        "--in-focus",
        str(three_fields),
        "--out",
        str(tmp_path / "o6"),
        "--z",
        "1",
        "x",
    )
    assert code == 2 and "--z takes plane numbers" in err


@pytest.fixture
def one_field(tmp_path) -> Path:
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(in_focus_paths()[0], folder / in_focus_paths()[0].name)
    return folder


def test_cli_stack_writes_one_ome_tiff_z_stack_per_field(one_field, tmp_path, capsys):
    out = tmp_path / "stacks"
    main(["simulate", "--in-focus", str(one_field), "--out", str(out), "--z", "0-33",
          "--stack", "--seed", "3"])
    assert "1 z-stacks of 34 planes (1 fields x z=0-33)" in capsys.readouterr().out
    (path,) = out.glob("*.ome.tif")
    assert path.name == "a02_s1_w1.ome.tif"
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX"
        stack = tif.asarray()
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert stack.shape == (34, 520, 696) and stack.dtype == np.uint16
    assert pixels["PhysicalSizeZ"] == 2.0 and pixels["PhysicalSizeZUnit"] == "µm"
    assert pixels["PhysicalSizeX"] == pixels["PhysicalSizeY"] == FITTED.pixel_um
    positions = [p["PositionZ"] for p in pixels["Plane"]]
    assert positions == [2.0 * z for z in range(34)]
    focus = positions.index(2.0 * 16)
    assert focus == 16
    np.testing.assert_array_equal(stack[focus], read_plane(in_focus_paths()[0]))
    contrast = stack.reshape(34, -1).astype(float).std(axis=1)
    assert int(np.argmax(contrast)) == focus  # planes blur away from focus, on both sides
    assert np.all(np.diff(contrast[: focus + 1]) > 0) and np.all(np.diff(contrast[focus:]) < 0)
    manifest = json.loads((out / "simulation.json").read_text())
    assert manifest["layout"] == "stacks" and manifest["z"] == list(range(34))
    assert manifest["seed"] == 3


def test_stack_planes_are_the_layouts_planes(one_field, tmp_path):
    """Same seed, same plane: a stack is the BBBC006 layout's planes stacked in z order."""
    (stack_file,) = simulate_stacks(one_field, tmp_path / "s", [0, 8, 24, 32], seed=2)
    planes = simulate_bbbc006(one_field, tmp_path / "p", [0, 8, 24, 32], seed=2)
    by_z = {int(p.parent.name[-2:]): read_plane(p) for p in planes}
    with tifffile.TiffFile(stack_file) as tif:
        stack = tif.asarray()
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert pixels["PhysicalSizeZ"] == 16.0  # planes 8 apart, 2 um each
    assert sorted(by_z) == [0, 8, 16, 24, 32]
    for i, z in enumerate(sorted(by_z)):
        np.testing.assert_array_equal(stack[i], by_z[z])


def test_stack_refuses_uneven_planes_and_replaces_an_earlier_run(one_field, tmp_path, capsys):
    with pytest.raises(RefocusError, match=r"--z: a z-stack needs .* evenly spaced planes .* "
                                           r"got z=1, 5, 16"):
        simulate_stacks(one_field, tmp_path / "s", [1, 5])
    assert not (tmp_path / "s").exists()
    code, err = run_cli(capsys, "simulate", "--in-focus", str(one_field), "--out",
                        str(tmp_path / "s"), "--z", "1", "5", "--stack")
    assert code == 2 and "evenly spaced" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "mixed"
    simulate_bbbc006(one_field, out, [10])
    simulate_stacks(one_field, out, [14, 15, 17, 18], overwrite=True)
    assert sorted(p.name for p in out.rglob("*.tif")) == ["a02_s1_w1.ome.tif"]


def test_convolve_valid_is_scipys_valid_fftconvolve_on_a_real_field() -> None:
    from scipy import signal

    from refocus.simulate.psf import convolve_valid

    field = read_plane(in_focus_paths()[0]).astype(np.float64)[:300, :333]
    kernel = defocus_psf(8.0)
    expected = signal.fftconvolve(field, kernel, mode="valid")
    got = convolve_valid(field, kernel)
    assert got.shape == expected.shape == (300 - kernel.shape[0] + 1, 333 - kernel.shape[1] + 1)
    assert np.abs(got - expected).max() < 1e-9 * np.abs(expected).max()
