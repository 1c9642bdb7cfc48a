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


def wiener_filter(image: np.ndarray, psf: np.ndarray, lam: float = WIENER_LAMBDA) -> np.ndarray:
    """Wiener deconvolution (constant noise-to-signal ``lam``) with mirrored borders, the
    background (:func:`~refocus.baselines.estimate_background`) kept out of the inversion:
    one FFT pair, under a second for a 2048^2 frame."""
    bg = estimate_background(image)
    m, (h, w) = psf.shape[0], image.shape
    padded = np.pad(np.asarray(image, np.float32) - bg, m, mode="reflect")
    shape = tuple(fft.next_fast_len(n, real=True) for n in padded.shape)
    kernel = kernel_spectrum(psf, shape)
    spectrum = fft.rfft2(padded, shape, workers=1)
    out = fft.irfft2(spectrum * np.conj(kernel) / (np.abs(kernel) ** 2 + lam), shape, workers=1)
    return (out[m : m + h, m : m + w] + bg).astype(np.float32)


@register_guide("wiener", "the plane Wiener-deconvolved with its (estimated) PSF")
def wiener_guide(normalised: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Also in focus, with the in-focus PSF: a guide that changed nature at zero defocus
    would meet near-focus estimates (never exactly 0) it was not trained on."""
    return wiener_filter(normalised, psf)


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
