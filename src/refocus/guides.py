"""Guide channels: what a network sees beside the image, computed from it and its PSF.

Far from focus the PSF is a wide smooth disc, and inverting it takes its radius: a network
handed only the image gains 1-4 dB at z = 22 where Richardson-Lucy with the exact PSF gains
10-15. A Wiener-deconvolved copy of the image as a second input channel closes most of
that gap (benchmarks/results/guides.md): the network then corrects an explicit inversion
instead of inventing one. A guide is computed on the whole *normalised* plane before it is
tiled, from a PSF: in training the simulated crop's own (jittered, so the network learns
to live with a wrong radius), at inference the one :func:`refocus.baselines.blind_psf`
estimates from the plane (:func:`guide_input`). A model file names its guide in its
``train_config``; the network's input has ``1 + channels`` channels, the image first.

Wiener is linear: where the wide disc's transfer function is near zero it can only give
up, and it leaves 6-9 dB to Richardson-Lucy from 13 um beyond focus on. The ``rl`` guide is
accelerated Richardson-Lucy (:func:`richardson_lucy_accelerated`), whose positivity
recovers what Wiener gives up, at 15 iterations' cost; a network trained on it was not
better enough to ship (docs/models/nuclei-widefield-v2.md, "A successor tried").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import fft

from refocus.baselines import blind_psf, estimate_background
from refocus.errors import RefocusError
from refocus.registry import Registry
from refocus.simulate.psf import defocus_psf, kernel_spectrum

log = logging.getLogger(__name__)

#: Wiener noise-to-signal ratio: 3e-3 and 1e-2 sharpened every plane tried on the shipped
#: fields with the exact PSF; 1e-3 left one field worse than its input at z = 22.
WIENER_LAMBDA = 3e-3
#: Pixels of image around a training crop that its guide is computed with (so the crop
#: sees no border the whole plane would not have).
CONTEXT = 64
#: Iterations of the ``rl`` guide (accelerated RL): on the shipped held-out fields 12 were
#: 1 dB sharper than 15 at 6.5 um from focus and 0.8-0.9 dB blurrier at 24-35 um.
RL_GUIDE_ITERATIONS = 15
#: Smallest re-blurred value RL divides by (the plane is scaled to a peak of 1).
_RL_FLOOR = 1e-6
#: Largest extrapolation length: 1 would let the estimate run away on a stalled step.
_MAX_STEP = 0.99
#: Padded planes from this size on split the RL guide's FFTs over every core (a whole frame
#: at inference); a training crop's are too small to gain (same bits either way).
_THREADED_PIXELS = 1024 * 1024

#: ``make(normalised plane, psf) -> guide plane`` (float32).
GuideFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Guide:
    """A registered guide: how to compute its channel from a plane and its PSF."""

    name: str
    summary: str
    make: GuideFn

    def stack(self, normalised: np.ndarray, psf: np.ndarray) -> np.ndarray:
        """(2, H, W) float32: the normalised plane, then its guide."""
        plane = np.asarray(normalised, dtype=np.float32)
        return np.stack([plane, self.make(plane, psf).astype(np.float32)])


GUIDES: Registry[Guide] = Registry("guide")


def register_guide(name: str, summary: str) -> Callable[[GuideFn], GuideFn]:
    """``@register_guide("name", "one line")`` on a guide function."""

    def add(make: GuideFn) -> GuideFn:
        GUIDES.register(name, Guide(name, summary, make))
        return make

    return add


def get_guide(name: str | None, where: object = None) -> Guide | None:
    """The guide a model file or a ``--guide`` option names (None: no guide)."""
    return None if name is None else GUIDES.get(name, where)


@dataclass(frozen=True)
class _Mirrored:
    """A plane less its background (:func:`~refocus.baselines.estimate_background`, kept
    out of every inversion), mirrored by the PSF's width on each side, and the FFT frame."""

    padded: np.ndarray
    background: float
    margin: int
    shape: tuple[int, int]

    @classmethod
    def of(cls, image: np.ndarray, psf: np.ndarray) -> _Mirrored:
        bg = estimate_background(image)
        m = psf.shape[0]
        padded = np.pad(np.asarray(image, np.float32) - bg, m, mode="reflect")
        shape = tuple(fft.next_fast_len(n, real=True) for n in padded.shape)
        return cls(padded, bg, m, shape)

    def restore(self, out: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """``out`` (in the padded frame) cut back to the plane, background added back."""
        m = self.margin
        h, w = (n - 2 * m for n in self.padded.shape)
        return (out[m : m + h, m : m + w] * scale + self.background).astype(np.float32)


def wiener_filter(image: np.ndarray, psf: np.ndarray, lam: float = WIENER_LAMBDA) -> np.ndarray:
    """Wiener deconvolution (constant noise-to-signal ``lam``) with mirrored borders, the
    background kept out of the inversion: one FFT pair, under a second for a 2048^2 frame."""
    plane = _Mirrored.of(image, psf)
    kernel = kernel_spectrum(psf, plane.shape)
    spectrum = fft.rfft2(plane.padded, plane.shape, workers=1)
    out = fft.irfft2(spectrum * np.conj(kernel) / (np.abs(kernel) ** 2 + lam), plane.shape,
                     workers=1)
    return plane.restore(out)


def richardson_lucy_accelerated(image: np.ndarray, psf: np.ndarray,
                                iterations: int = RL_GUIDE_ITERATIONS) -> np.ndarray:
    """Richardson-Lucy with Biggs & Andrews' (1997) first-order extrapolation, mirrored
    borders, background kept out: 15 iterations come within 1.5 dB of plain RL's best at
    24-35 um from focus (where plain RL needs 80-160), at two FFT pairs each."""
    plane = _Mirrored.of(image, psf)
    observed = np.clip(plane.padded, 0, None)
    scale = float(observed.max()) or 1.0
    observed /= scale
    kernel = kernel_spectrum(psf, plane.shape)
    adjoint = np.conj(kernel)  # the flipped PSF's spectrum, once for every iteration
    frame = observed.shape
    workers = -1 if observed.size >= _THREADED_PIXELS else 1

    def blur(u: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
        out = fft.irfft2(fft.rfft2(u, plane.shape, workers=workers) * spectrum, plane.shape,
                         workers=workers)
        return out[: frame[0], : frame[1]]

    estimate, previous, steps = observed, observed, []
    for _ in range(int(iterations)):
        y = estimate if len(steps) < 2 else np.maximum(
            estimate + _step_length(*steps[-2:]) * (estimate - previous), 0)
        ratio = observed / np.maximum(blur(y, kernel), _RL_FLOOR)
        previous, estimate = estimate, y * blur(ratio, adjoint)
        steps = [*steps[-1:], estimate - y]
    return plane.restore(estimate, scale)


def _step_length(older: np.ndarray, newer: np.ndarray) -> float:
    """Biggs-Andrews' extrapolation length from the last two RL steps, in [0, 1)."""
    alpha = float(np.vdot(newer, older)) / (float(np.vdot(older, older)) or 1.0)
    return min(max(alpha, 0.0), _MAX_STEP)


@register_guide("wiener", "the plane Wiener-deconvolved with its (estimated) PSF")
def wiener_guide(normalised: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Also in focus, with the in-focus PSF: a guide that changed nature at zero defocus
    would meet near-focus estimates (never exactly 0) it was not trained on."""
    return wiener_filter(normalised, psf)


@register_guide("rl", f"the plane deconvolved by {RL_GUIDE_ITERATIONS} iterations of "
                      "accelerated Richardson-Lucy with its (estimated) PSF")
def rl_guide(normalised: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """In focus too, like the Wiener guide."""
    return richardson_lucy_accelerated(normalised, psf)


def network_guide(network: object) -> Guide | None:
    """The guide a loaded network's input needs (:func:`refocus.modelfile.load_model` sets
    it), so that code given only the network (speed and int8 calibration measurements)
    feeds it what prediction will."""
    return getattr(network, "guide", None)


def estimate_psf(raw: np.ndarray) -> np.ndarray:
    """The PSF of a plane of unknown defocus, estimated blind with the nominal optics
    (:func:`refocus.baselines.blind_psf`); the in-focus PSF where no estimate can be made
    (a plane smaller than the focus estimator's tile), as for a plane found in focus."""
    try:
        return blind_psf(np.asarray(raw, dtype=np.float32)).psf.astype(np.float32)
    except RefocusError as exc:
        log.info("no focus estimate (%s): the guide assumes focus", exc)
        return defocus_psf(0.0).astype(np.float32)


def guide_input(guide: Guide | None, normalised: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """(C, H, W) float32: what a network with ``guide`` (None: no guide) is given for one
    plane: the normalised plane, and with a guide :meth:`Guide.stack` with the PSF
    estimated from the whole ``raw`` plane (:func:`estimate_psf`)."""
    plane = np.asarray(normalised, dtype=np.float32)
    return plane[None] if guide is None else guide.stack(plane, estimate_psf(raw))
