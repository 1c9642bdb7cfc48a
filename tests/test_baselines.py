"""Blind Richardson-Lucy: the PSF chosen from the image alone, on real pixels."""

from __future__ import annotations

import numpy as np
import pytest

from refocus import baselines
from refocus.errors import RefocusError
from refocus.evaluate import Deconvolution, EvalField, baseline_methods
from refocus.metrics import psnr
from refocus.simulate import BBBC006_OPTICS, defocus_psf, plane_defocus_um, simulate_plane

CROP = 256


@pytest.fixture(scope="module")
def field(in_focus_images: list[np.ndarray]) -> np.ndarray:
    """A real in-focus field (well a02), cut to keep deconvolution quick."""
    return in_focus_images[0][:CROP, :CROP]


@pytest.mark.parametrize("z", [13, 27])  # near focus (side from the residual), far (estimated)
def test_blind_psf_lands_near_the_true_defocus(field: np.ndarray, z: int) -> None:
    true = plane_defocus_um(z, BBBC006_OPTICS)  # -6.5 and +24 um
    blurred = simulate_plane(field, z, BBBC006_OPTICS, rng=z)
    chosen = baselines.blind_psf(blurred)
    assert np.sign(chosen.defocus_um) == np.sign(true)
    # within 10%, or 1 um near focus (half a plane step; the spectra differ little there)
    assert chosen.defocus_um == pytest.approx(true, abs=max(0.1 * abs(true), 1.0))
    np.testing.assert_array_equal(chosen.psf, defocus_psf(chosen.defocus_um, BBBC006_OPTICS))
    if chosen.residuals:  # the side was chosen by re-blurring: the true side explains better
        assert chosen.side_from == "re-blur residual"
        assert min(chosen.residuals, key=lambda d: chosen.residuals[d]) == chosen.defocus_um
    restored = baselines.richardson_lucy_blind(blurred, 20)
    assert restored.shape == blurred.shape and restored.dtype == np.float32
    assert psnr(field, restored) > psnr(field, blurred) + 3.0


def test_reblur_residual_prefers_the_true_side(field: np.ndarray) -> None:
    blurred = simulate_plane(field, 27, BBBC006_OPTICS, rng=1)
    d = plane_defocus_um(27, BBBC006_OPTICS)
    right = baselines.reblur_residual(blurred, defocus_psf(d, BBBC006_OPTICS))
    wrong = baselines.reblur_residual(blurred, defocus_psf(-d, BBBC006_OPTICS))
    assert 0 < right < wrong / 2


def test_choose_rl_iterations_takes_one_psf_per_input(field: np.ndarray) -> None:
    psf = defocus_psf(plane_defocus_um(27, BBBC006_OPTICS), BBBC006_OPTICS)
    blurred = simulate_plane(field, 27, BBBC006_OPTICS, rng=2)
    shared = baselines.choose_rl_iterations([blurred], [field], psf, (5, 30))
    assert baselines.choose_rl_iterations([blurred], [field], [psf], (5, 30)) == shared
    assert shared[0] == 30  # +24 um needs more than 5 iterations
    with pytest.raises(ValueError, match="2 PSFs for 1 inputs"):
        baselines.choose_rl_iterations([blurred], [field], [psf, psf], (5,))


def test_deconvolution_tunes_and_registers_blind_rl(field: np.ndarray) -> None:
    deconv = Deconvolution()
    methods = baseline_methods(deconv)
    assert list(methods) == ["identity", "richardson_lucy", "richardson_lucy_blind", "wiener"]
    blurred = simulate_plane(field, 27, BBBC006_OPTICS, rng=3)
    with pytest.raises(RefocusError, match="blind Richardson-Lucy has no tuned"):
        methods["richardson_lucy_blind"](blurred, 27)
    deconv.tune([EvalField("val", 27, blurred, field)], candidates=(5, 30))
    (distance, n), = deconv.blind_iterations.items()
    assert distance == pytest.approx(plane_defocus_um(27, BBBC006_OPTICS), rel=0.1)
    assert n == 30 and set(deconv.blind_tuning[27]) == {5, 30}
    other = simulate_plane(field, 27, BBBC006_OPTICS, rng=4)
    restored = methods["richardson_lucy_blind"](other, None)  # never needs z
    assert restored is not None and psnr(field, restored) > psnr(field, other) + 3.0
