"""Refocus whole images and stacks with a trained model, in the input's own units.

Intensity rule (why the output can be measured like the input): the network sees each
plane percentile-normalised with the model's :class:`PercentileNormalizer`
(``x_n = (x - lo) / (hi - lo)``, ``lo``/``hi`` the plane's low/high percentiles), and it was
trained to map that to the in-focus plane normalised the same way, so its output ``y_n``
has the background at 0 but an arbitrary brightness scale. Defocus only moves photons, so
the scale is fixed by conserving the total flux above background::

    y = lo + g * y_n,    g = sum(x - lo) / sum(y_n)

which makes ``sum(y - lo) == sum(x - lo)`` exactly (before rounding): integrated nuclear
intensities stay comparable between raw and refocused images. ``lo`` (the low percentile)
is the background level on both sides. When the sums cannot define a gain (a blank plane,
or a prediction with no positive flux), ``g = hi - lo`` (plain de-normalisation) is used.
The result is rounded and clipped (never wrapped) to the input's integer dtype; float
input stays float. Each plane of a stack is normalised and rescaled on its own.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from refocus.archs.padding import MULTIPLE, grid_pads, pad_to_multiple, reflect_fits
from refocus.data.normalize import PercentileNormalizer
from refocus.device import select_device
from refocus.errors import RefocusError
from refocus.images import check_pixels
from refocus.inference.tiling import choose_tile, min_tile, overlap_for_halo, predict_tiled

log = logging.getLogger(__name__)

#: The U-Net's total stride: tiles start on this grid so they pool like the whole image.
ALIGN = MULTIPLE
#: Gradient mass (of one output pixel w.r.t. the input) that the halo must contain.
RECEPTIVE_MASS = 0.99
#: Side of the probe image the receptive field is measured on (caps the halo at half).
PROBE_SIZE = 256


def flux_gain(image: np.ndarray, prediction: np.ndarray, lo: float, hi: float) -> float:
    """The ``g`` of the module's intensity rule for one plane (float64 sums)."""
    above = float(np.sum(np.asarray(image, dtype=np.float64) - lo))
    predicted = float(np.sum(prediction, dtype=np.float64))
    return gain_from_sums(above, predicted, lo, hi)


def gain_from_sums(above: float, predicted: float, lo: float, hi: float) -> float:
    """``sum(x - lo) / sum(y_n)``, or ``hi - lo`` when that is undefined (see module doc)."""
    if above > 0 and predicted > 0 and np.isfinite(above / predicted):
        return above / predicted
    return max(hi - lo, 0.0) or 1.0


def grid_padding(n: int) -> tuple[int, int]:
    """Padding before/after an axis of length ``n`` up to the 32-px grid: the network's own
    split (:func:`refocus.model.grid_pads`), which chunk-wise prediction must repeat."""
    return grid_pads(n, ALIGN)


def grid_padding_fits(height: int, width: int) -> bool:
    """Whether that padding reflects (as the network does) or, on tiny images, repeats
    (:func:`refocus.model.reflect_fits`)."""
    return reflect_fits(height, width, ALIGN)


def to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to an integer ``dtype`` (never wrap around); cast to a float one."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return np.asarray(values).astype(dtype)


def activation_bytes_per_pixel(model: nn.Module, device: torch.device, size: int = 64) -> float:
    """Bytes of activations per input pixel: the sum over every layer's output (float32).

    An upper bound on what inference keeps alive at once, measured with forward hooks on
    a small probe, so tile sizes follow the architecture rather than a guess.
    """
    total = [0]

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 1, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
    return 4.0 * total[0] / (size * size)


def free_memory_bytes(device: torch.device) -> float:
    """Free memory where the activations will live (GPU memory, or available RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return float(free)
    import psutil

    return float(psutil.virtual_memory().available)


def receptive_radius(model: nn.Module, device: torch.device, size: int = PROBE_SIZE,
                     mass: float = RECEPTIVE_MASS) -> int:
    """Radius (px) of the square around an output pixel holding ``mass`` of its gradient.

    A U-Net's theoretical receptive field spans hundreds of pixels, but almost all of an
    output pixel's dependence is close by; the halo only needs to hold that part.
    """
    from refocus.inference.backends import probe_image

    x = probe_image(device, (size, size)).requires_grad_(True)
    with torch.enable_grad():
        y = model(x)
        c = size // 2
        y[0, 0, c, c].backward()
    grad = x.grad.detach().abs()[0, 0].double().cpu().numpy()
    total = grad.sum()
    if total <= 0:
        return 0
    for r in range(c + 1):
        if grad[c - r : c + r + 1, c - r : c + r + 1].sum() >= mass * total:
            return r
    return c


class Refocuser:
    """A loaded model that refocuses 2-D planes and T/Z/C stacks of any size.

    Load once (:meth:`from_file`), call :meth:`predict` per image. Pickling a file-backed
    refocuser sends only the file name, so Dask workers load the model themselves (once
    per process).
    """

    def __init__(
        self,
        model: nn.Module,
        normalizer: PercentileNormalizer | None = None,
        *,
        device: str | torch.device | None = None,
        channels: Sequence[str] = (),
        mode: str = "auto",
        source: str | os.PathLike[str] | None = None,
    ) -> None:
        self.device_request = None if device is None else str(device)
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.normalizer = normalizer or PercentileNormalizer()
        self.channels = tuple(channels)
        self.mode = mode
        self.source = None if source is None else Path(source).resolve()
        self.tile: int | None = None  # remembered after an automatic choice or a shrink
        self._predictor: Any = None
        self._halo: int | None = None
        self._lock = threading.Lock()  # one tile at a time on the device (CUDA graphs)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], device: str | torch.device | None = None,
                  mode: str = "auto") -> Refocuser:
        """Load a model file (``refocus.modelfile``); ``device=None`` picks the GPU if any.

        ``mode`` is :func:`refocus.accel.prepare_for_inference`'s: ``"auto"`` (fastest
        checked variant) or a variant name such as ``"eager"`` (plain float32).
        """
        from refocus.modelfile import load_model

        loaded = load_model(path, device=select_device(device))
        channels = loaded.train_config.get("channels") or ()
        if isinstance(channels, str):
            channels = (channels,)
        return cls(loaded.model, loaded.normalizer, device=device,
                   channels=[str(c) for c in channels], mode=mode, source=path)

    # --- pickling: the model file travels by name -----------------------------------

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self.source is None:
            return super().__reduce_ex__(protocol)
        return _restore, (str(self.source), self.device_request, self.mode, self._halo)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_predictor", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _predictor=None, _lock=threading.Lock())
        self.device = select_device(self.device_request)
        self.model = self.model.to(self.device).eval()

    # --- sizes ---------------------------------------------------------------------

    @property
    def halo(self) -> int:
        """Context every output pixel needs (measured once, see :func:`receptive_radius`)."""
        if self._halo is None:
            self._halo = receptive_radius(self.model, self.device)
            log.info("receptive radius (%.0f%% of the gradient): %d px",
                     100 * RECEPTIVE_MASS, self._halo)
        return self._halo

    def default_overlap(self) -> int:
        """Tile overlap whose halo holds the receptive field (on the 32-px grid)."""
        return overlap_for_halo(self.halo, ALIGN)

    def tile_and_overlap(self, tile: int | None, overlap: int | None,
                         shape: tuple[int, ...] | None = None) -> tuple[int, int]:
        """The (tile, overlap) to use for an image of ``shape`` (if known).

        The tile defaults to the largest whose activations fit half the free memory (and
        is kept on the 32-px grid); the overlap to :meth:`default_overlap`, measured only
        when more than one tile is needed. An automatic tile grows to hold the overlap;
        a tile the caller chose is kept and the overlap shrinks to fit it instead.
        """
        chosen = tile is not None
        if tile is None:
            if self.tile is None:
                per_pixel = activation_bytes_per_pixel(self.model, self.device)
                self.tile = choose_tile(free_memory_bytes(self.device), per_pixel, align=ALIGN)
            tile = self.tile
        tile = max((int(tile) // ALIGN) * ALIGN, ALIGN)  # on the grid: no padding inside
        if overlap is not None:
            return tile, int(overlap)
        if shape is not None and tile >= max(shape):
            return tile, 0  # one tile: nothing overlaps
        overlap = self.default_overlap()
        if not chosen:
            return max(tile, min_tile(overlap, ALIGN)), overlap
        fitting = ((tile - 1) // 2 // ALIGN) * ALIGN
        if overlap > fitting:
            log.warning("tile %d px leaves room for a %d px overlap, less than the %d px "
                        "the receptive field needs; tiles may not match exactly",
                        tile, fitting, overlap)
            overlap = fitting
        return tile, overlap

    def _remember_tile(self, tile: int) -> None:
        self.tile = tile

    # --- prediction ----------------------------------------------------------------

    def _run(self, tile: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tile))[None, None]
        with self._lock:
            if self._predictor is None:
                from refocus.inference.backends import prepare_for_inference

                self._predictor = prepare_for_inference(self.model, self.device, self.mode)
            return self._predictor(x.to(self.device))[0, 0].float().cpu().numpy()

    def predict_normalised(self, plane: np.ndarray, tile: int | None = None,
                           overlap: int | None = None) -> np.ndarray:
        """Network output (normalised units) for a normalised float32 plane, tiled.

        The plane is first padded to the 32-px grid exactly as the network pads a whole
        image, so every tile pools on the same grid as whole-image prediction would.
        """
        plane = np.asarray(plane, dtype=np.float32)
        h, w = plane.shape
        padded = pad_to_multiple(torch.from_numpy(plane)[None, None], ALIGN)[0, 0].numpy()
        tile, overlap = self.tile_and_overlap(tile, overlap, padded.shape)
        top, left = grid_padding(h)[0], grid_padding(w)[0]
        out = predict_tiled(self._run, padded, tile, overlap, align=ALIGN,
                            on_shrink=self._remember_tile)
        return out[top : top + h, left : left + w]

    def predict_plane(self, plane: np.ndarray, tile: int | None = None,
                      overlap: int | None = None) -> np.ndarray:
        """One 2-D plane in, the refocused plane out (same dtype, flux rule applied)."""
        plane = np.asarray(plane)
        lo, hi = self.normalizer.percentiles(plane)
        y_n = self.predict_normalised(self.normalizer.apply(plane, lo, hi), tile, overlap)
        gain = flux_gain(plane, y_n, lo, hi)
        return to_dtype(lo + gain * y_n.astype(np.float64), plane.dtype)

    def select_channel(self, n_channels: int, channel: int | str | None,
                       names: Sequence[str] | None = None) -> int:
        """Index of the channel to refocus: given by index or name, else the model's own.

        With one channel there is nothing to choose; otherwise the model's training
        channel names are matched against ``names``, and anything else must be explicit.
        """
        names = list(names) if names else []
        listed = f" ({', '.join(names)})" if names else ""
        if isinstance(channel, str) and channel.strip().lstrip("-").isdigit():
            channel = int(channel)
        if isinstance(channel, int):
            if not -n_channels <= channel < n_channels:
                raise RefocusError(None, f"channel {channel} does not exist: the image has "
                                         f"{n_channels} channel(s){listed}, indices 0.."
                                         f"{n_channels - 1}")
            return channel % n_channels
        if isinstance(channel, str):
            if channel not in names:
                raise RefocusError(None, f"channel {channel!r} not found; the image's "
                                         f"channels are{listed or ' unnamed'}")
            return names.index(channel)
        if n_channels == 1:
            return 0
        matches = [names.index(c) for c in self.channels if c in names]
        if matches:
            return matches[0]
        raise RefocusError(None, f"the image has {n_channels} channels{listed}; choose the one "
                                 "to refocus by name or index (--channel)")

    def predict(
        self,
        array: np.ndarray,
        axes: str | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        *,
        channel: int | str | None = None,
        channel_names: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Refocus ``array``; the result has the same shape and dtype.

        ``axes`` names each dimension with T, Z, C, Y, X (any other letter is a plane
        axis too); it may be left out for a 2-D plane. Every Y-X plane is refocused on
        its own; with a C axis only the chosen ``channel`` (index, or a name from
        ``channel_names``) is, and the other channels are copied unchanged. ``tile``
        defaults to the largest that fits free memory, ``overlap`` to three times the
        measured receptive radius (see :mod:`refocus.tiling`).
        """
        array = np.asarray(array)
        if axes is None:
            if array.ndim != 2:
                raise RefocusError(None, f"{array.ndim}-D array {array.shape}: say what its axes "
                                         "are, e.g. axes='ZYX' or 'TCYX'")
            axes = "YX"
        axes = axes.upper()
        if len(axes) != array.ndim or len(set(axes)) != len(axes):
            raise RefocusError(None, f"axes {axes!r} do not fit a {array.ndim}-D array "
                                     f"{array.shape} (one distinct letter per dimension)")
        check_pixels(None, array.shape, array.dtype, axes)
        order = [i for i, a in enumerate(axes) if a not in "YX"]
        order += [axes.index("Y"), axes.index("X")]
        planes = np.transpose(array, order)
        lead = "".join(axes[i] for i in order[:-2])
        chosen = None
        if "C" in lead:
            chosen = self.select_channel(planes.shape[lead.index("C")], channel, channel_names)
        out = planes.copy()
        for index in np.ndindex(planes.shape[:-2]):
            if chosen is not None and index[lead.index("C")] != chosen:
                continue
            out[index] = self.predict_plane(planes[index], tile, overlap)
        return np.transpose(out, np.argsort(order))


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, device: str | None, mode: str) -> Refocuser:
    """One loaded model per (file, device, mode) per process: Dask tasks share it."""
    return Refocuser.from_file(path, device=device, mode=mode)


def _restore(path: str, device: str | None, mode: str, halo: int | None) -> Refocuser:
    """Unpickle a file-backed refocuser as this process's shared copy of it."""
    refocuser = _load_cached(path, device, mode)
    if refocuser._halo is None:
        refocuser._halo = halo
    return refocuser
