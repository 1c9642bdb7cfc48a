"""On-the-fly simulated training pairs: reproducible, physical (the simulator's blur and
whole-plane normalisation), both sides of focus, in focus = unchanged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from refocus.data.normalize import PercentileNormalizer
from refocus.data.synthetic import CropSpec, SyntheticConfig, SyntheticPairs
from refocus.errors import RefocusError
from refocus.metrics import focus_score
from refocus.samples import in_focus_paths
from refocus.simulate import BBBC006_CAMERA, blur, defocus_psf, simulate_plane


@pytest.fixture(scope="module")
def pairs() -> SyntheticPairs:
    return SyntheticPairs(in_focus_paths()[:2], crops_per_field=50, seed=3)


def busy_spec(ds: SyntheticPairs) -> CropSpec:
    """A drawn crop moved onto the field's window with the most structure (nuclei)."""
    field = ds.fields[0].image
    best = max(((t, left) for t in range(0, 520 - 128, 32) for left in range(0, 696 - 128, 32)),
               key=lambda p: field[p[0] : p[0] + 128, p[1] : p[1] + 128].std())
    return replace(ds.draw(0), field=0, top=best[0], left=best[1], rotation=0, flip=False,
                   camera=BBBC006_CAMERA, background=0.0, brightness=1.0, variant=1)


def test_items_are_reproducible_per_seed_index_and_epoch(pairs: SyntheticPairs) -> None:
    x, y = pairs[7]
    assert x.shape == y.shape == (1, 128, 128) and x.dtype == y.dtype == torch.float32
    again = SyntheticPairs(in_focus_paths()[:2], crops_per_field=50, seed=3)
    assert torch.equal(again[7][0], x) and torch.equal(again[7][1], y)
    other_seed = SyntheticPairs(in_focus_paths()[:2], crops_per_field=50, seed=4)
    assert not torch.equal(other_seed[7][0], x)
    again.set_epoch(1)
    assert again.draw(7) != pairs.draw(7)
    fixed = SyntheticPairs(in_focus_paths()[:2], crops_per_field=50, seed=3, augment=False)
    first = fixed.draw(7)
    fixed.set_epoch(5)
    assert fixed.draw(7) == first and first.rotation == 0 and not first.flip
    assert len(pairs) == 100 and pairs.draw(60).field == 1


def test_in_focus_crop_is_its_target(pairs: SyntheticPairs) -> None:
    spec = replace(busy_spec(pairs), defocus_um=0.0, rotation=3, flip=True)
    x, y = pairs.render(spec)
    assert np.array_equal(x, y)
    window = pairs.fields[0].image[spec.top : spec.top + 128, spec.left : spec.left + 128]
    # target: the real plane normalised by its whole-plane percentiles, posed
    expected = PercentileNormalizer()(pairs.fields[0].image)[
        spec.top : spec.top + 128, spec.left : spec.left + 128]
    np.testing.assert_allclose(y, np.rot90(expected, 3)[:, ::-1], atol=1e-6)
    assert window.std() > 0


def test_near_focus_differs_from_target_by_camera_noise_only(pairs: SyntheticPairs) -> None:
    spec = replace(busy_spec(pairs), defocus_um=0.05)
    x, y = pairs.render(spec)
    lo, hi = pairs.fields[0].percentiles
    noise_sd = np.sqrt(BBBC006_CAMERA.gain * max(np.median(y) * (hi - lo), 0) + 4) / (hi - lo)
    residual = x - y
    assert abs(residual.mean()) < 3 * noise_sd
    assert residual.std() < 3 * noise_sd + 0.02


def test_defocus_lowers_sharpness_on_both_sides(pairs: SyntheticPairs) -> None:
    spec = busy_spec(pairs)
    for sign in (-1, 1):
        scores = [focus_score(pairs.render(replace(spec, defocus_um=sign * d))[0])
                  for d in (0.0, 4.0, 12.0, 30.0)]
        assert scores == sorted(scores, reverse=True), (sign, scores)
        assert scores[-1] < scores[0] / 5


def test_blur_is_the_simulators_blur_of_the_whole_plane(pairs: SyntheticPairs) -> None:
    spec = replace(busy_spec(pairs), defocus_um=-23.0, top=0, left=568)  # at a corner
    photons = pairs.fields[0].image.astype(np.float64) - BBBC006_CAMERA.offset
    whole = blur(photons, defocus_psf(-23.0, pairs.bank.variants[1]))
    np.testing.assert_allclose(pairs.photons(spec), whole[:128, 568:], atol=0.05)
    # between grid points: the blend of the neighbouring kernels, still normalised
    kernel = pairs.bank.kernel(1, -22.5)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-5)


def test_input_normalised_like_its_whole_plane(pairs: SyntheticPairs) -> None:
    """The input is scaled by the percentiles its whole simulated plane would have."""
    spec = replace(busy_spec(pairs), noise_seed=11)
    norm = PercentileNormalizer()
    for z in (4, 27):
        defocus = (z - 16) * 2 * pairs.optics.defocus_scale
        lo, hi = pairs._input_percentiles(replace(spec, defocus_um=defocus))
        plane = simulate_plane(pairs.fields[0].image, z, pairs.bank.variants[1], rng=0)
        real_lo, real_hi = norm.percentiles(plane)
        assert abs(lo - real_lo) < 1.5 and abs(hi - real_hi) < 0.01 * (real_hi - real_lo)


def test_draws_cover_both_sides_and_focus() -> None:
    ds = SyntheticPairs(in_focus_paths()[:1], crops_per_field=400)
    d = np.array([ds.draw(i).defocus_um for i in range(400)])
    assert (d < -20).any() and (d > 20).any()
    assert 0.05 < np.mean(d == 0) < 0.16  # in_focus_fraction 0.1
    assert np.abs(d).max() <= ds.max_defocus
    specs = [ds.draw(i) for i in range(50)]
    assert len({s.variant for s in specs}) == 3 and len({s.camera.gain for s in specs}) == 50


def test_paper_protocol_stays_on_one_side() -> None:
    ds = SyntheticPairs(in_focus_paths()[:1], SyntheticConfig.paper(), crops_per_field=200)
    d = np.array([ds.draw(i).defocus_um for i in range(200)])
    assert (d < 0).all()
    planes = np.round(16 + d / (2 * 1.09)).astype(int)  # scale 0.97-1.21 spreads them
    assert set(np.unique(planes)) <= {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
    assert ds.max_defocus == pytest.approx(15 * 2 * 1.21)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(RefocusError, match="in_focus_fraction"):
        SyntheticConfig(in_focus_fraction=1.5)
    with pytest.raises(RefocusError, match="z_range"):
        SyntheticConfig(z_range=(20.0, 10.0))
    with pytest.raises(RefocusError, match="positive"):
        SyntheticConfig(gain=(0.0, 0.3))
    with pytest.raises(RefocusError, match="variant"):
        SyntheticConfig(bottom_mismatch_um=())
    with pytest.raises(RefocusError, match="guide_jitter"):
        SyntheticConfig(guide_jitter=-0.1)
    with pytest.raises(RefocusError, match=r"field 0: .*its guide's context \(256 px\)"):
        SyntheticPairs([np.full((200, 300), 500, np.uint16)], size=128, guide="wiener")
    with pytest.raises(RefocusError, match="smaller than crop"):
        SyntheticPairs([np.full((100, 300), 500, np.uint16)], size=128)
    with pytest.raises(RefocusError, match="no in-focus fields"):
        SyntheticPairs([])


def test_psf_step_must_put_whole_um_on_the_grid() -> None:
    assert SyntheticConfig(psf_step_um=0.5).psf_step_um == 0.5
    for step in (0.0, 0.3, 2.0):
        with pytest.raises(RefocusError, match="psf_step_um"):
            SyntheticConfig(psf_step_um=step)
