"""The :class:`Refocuser`: a loaded model that refocuses planes and stacks of any size.

Every Y-X plane is percentile-normalised with the model's normaliser, padded to the
network's 32-px grid exactly as the network pads a whole image
(:mod:`refocus.archs.padding`), predicted in blended tiles (:mod:`refocus.inference.tiling`)
whose size follows free memory (:mod:`refocus.inference.memory`) and whose overlap follows
the measured receptive field (:mod:`refocus.inference.receptive`), and brought back to the
input's units and dtype by the flux rule (:mod:`refocus.inference.flux`). NaN and infinite
pixels are refocused around and stay NaN (:mod:`refocus.inference.finite`). With
``trust=True`` each refocused plane also gets its trust map (:mod:`refocus.inference.trust`).
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

from refocus.allocator import retain_freed_memory
from refocus.archs.padding import MULTIPLE, grid_pads, pad_to_multiple
from refocus.data.normalize import PercentileNormalizer
from refocus.device import select_device
from refocus.errors import RefocusError
from refocus.guides import Guide, guide_input, network_guide
from refocus.images import check_pixels
from refocus.inference.backends import prepare_for_inference
from refocus.inference.finite import fill_non_finite, non_finite_mask
from refocus.inference.flux import apply_gain, flux_gain
from refocus.inference.graphcache import cached_peak_bytes_per_pixel, cached_receptive_radius
from refocus.inference.memory import free_memory_bytes
from refocus.inference.receptive import RECEPTIVE_MASS
from refocus.inference.tiling import (
    MIN_TILE,
    choose_tile,
    min_tile,
    overlap_for_halo,
    predict_tiled,
)
from refocus.inference.trust import check_flips, trust_map
from refocus.modelfile import load_model

log = logging.getLogger(__name__)


class Refocuser:
    """A loaded model that refocuses 2-D planes and T/Z/C stacks of any size.

    Load once (:meth:`from_file`, or :meth:`pretrained` for a registered model), call
    :meth:`predict` per image. Pickling a file-backed refocuser sends only the file name,
    so Dask workers load the model themselves (once per process).

    Non-finite pixels (NaN, ±inf) in a float image would turn the whole output NaN, so
    they are refocused around and kept marked: for the network they are replaced by the
    median of their finite neighbours (the plane's low percentile deep inside a large
    hole), percentiles and the flux rule use the finite pixels only, and the output holds
    NaN at exactly those positions. One warning per image gives their count; a plane
    with no finite pixel is refused with one clear error.
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
        guide: Guide | None = None,
    ) -> None:
        retain_freed_memory()  # a frame's layers reuse freed blocks instead of new pages
        self.device_request = None if device is None else str(device)
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.normalizer = normalizer or PercentileNormalizer()
        self.channels = tuple(channels)
        self.mode = mode
        if guide is not None:  # the network carries it, as a loaded model file's does
            self.model.guide = guide
        self.source = None if source is None else Path(source).resolve()
        self.tile: int | None = None  # remembered after an automatic choice or a shrink
        self._predictor: Any = None
        self._halo: int | None = None
        self._lock = threading.Lock()  # one tile at a time on the device (CUDA graphs)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], device: str | torch.device | None = None,
                  mode: str = "auto") -> Refocuser:
        """Load a model file (:mod:`refocus.modelfile`); ``device=None`` picks the GPU if any.

        ``mode`` is :func:`refocus.inference.backends.prepare_for_inference`'s: ``"auto"``
        (fastest checked variant) or a variant name such as ``"eager"`` (plain float32).
        """
        loaded = load_model(path, device=select_device(device))
        channels = loaded.train_config.get("channels") or ()
        if isinstance(channels, str):
            channels = (channels,)
        return cls(loaded.model, loaded.normalizer, device=device,
                   channels=[str(c) for c in channels], mode=mode, source=path)

    @classmethod
    def pretrained(cls, name: str | os.PathLike[str] | None = None,
                   device: str | torch.device | None = None, mode: str = "auto") -> Refocuser:
        """A registered pretrained model (:mod:`refocus.zoo`) by name (or a model file);
        None: the default one.

        Users without a trained model of their own start here; the weights are
        downloaded once into the cache and verified.
        """
        from refocus.zoo import resolve_model

        return cls.from_file(resolve_model(name), device=device, mode=mode)

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

    @property
    def guide(self) -> Guide | None:
        """The guide channel the network takes beside the image (:mod:`refocus.guides`)."""
        return network_guide(self.model)

    # --- sizes ---------------------------------------------------------------------

    @property
    def halo(self) -> int:
        """Context every output pixel needs (measured once per model and cached, see
        :func:`~refocus.inference.receptive.receptive_radius`)."""
        if self._halo is None:
            self._halo = cached_receptive_radius(self.model, self.device)
            log.info("receptive radius (%.0f%% of the gradient): %d px",
                     100 * RECEPTIVE_MASS, self._halo)
        return self._halo

    def default_overlap(self) -> int:
        """Tile overlap whose halo holds the receptive field (on the 32-px grid)."""
        return overlap_for_halo(self.halo, MULTIPLE)

    def auto_tile(self) -> int:
        """The largest tile whose activations fit half the free memory (measured once)."""
        if self.tile is None:
            per_pixel = cached_peak_bytes_per_pixel(self.model, self.device)
            self.tile = choose_tile(free_memory_bytes(self.device), per_pixel, align=MULTIPLE)
        return self.tile

    def tile_and_overlap(self, tile: int | None, overlap: int | None,
                         shape: tuple[int, ...] | None = None) -> tuple[int, int]:
        """The (tile, overlap) to use for an image of ``shape`` (if known).

        The tile defaults to :meth:`auto_tile` and is kept on the 32-px grid; the overlap
        to :meth:`default_overlap`, measured only when more than one tile is needed. An
        automatic tile grows to hold the overlap; a tile the caller chose is kept and the
        overlap shrinks to fit it instead.
        """
        check_tiling(tile, overlap)
        chosen = tile is not None
        tile = int(tile) if chosen else self.auto_tile()
        tile = max((tile // MULTIPLE) * MULTIPLE, MULTIPLE)  # on the grid: no padding inside
        if overlap is not None:
            return tile, int(overlap)
        if shape is not None and tile >= max(shape):
            return tile, 0  # one tile: nothing overlaps
        overlap = self.default_overlap()
        if not chosen:
            return max(tile, min_tile(overlap, MULTIPLE)), overlap
        fitting = ((tile - 1) // 2 // MULTIPLE) * MULTIPLE
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
        x = torch.from_numpy(np.ascontiguousarray(tile))
        x = x[None] if x.ndim == 3 else x[None, None]
        with self._lock:
            if self._predictor is None:
                self._predictor = prepare_for_inference(self.model, self.device, self.mode)
            return self._predictor(x.to(self.device))[0, 0].float().cpu().numpy()

    def predict_normalised(self, plane: np.ndarray, tile: int | None = None,
                           overlap: int | None = None) -> np.ndarray:
        """Network output (normalised units) for a normalised float32 plane, tiled; a
        guided model takes (2, H, W): the plane and its guide (:meth:`network_input`).

        The plane is first padded to the 32-px grid exactly as the network pads a whole
        image, so every tile pools on the same grid as whole-image prediction would.
        """
        plane = np.asarray(plane, dtype=np.float32)
        h, w = plane.shape[-2:]
        stack = torch.from_numpy(plane if plane.ndim == 3 else plane[None])[None]
        padded = pad_to_multiple(stack, MULTIPLE)[0].numpy()
        padded = padded if plane.ndim == 3 else padded[0]
        tile, overlap = self.tile_and_overlap(tile, overlap, padded.shape[-2:])
        top, left = grid_pads(h, MULTIPLE)[0], grid_pads(w, MULTIPLE)[0]
        out = predict_tiled(self._run, padded, tile, overlap, align=MULTIPLE,
                            on_shrink=self._remember_tile)
        return out[top : top + h, left : left + w]

    def predict_plane(self, plane: np.ndarray, tile: int | None = None,
                      overlap: int | None = None) -> np.ndarray:
        """One 2-D plane in, the refocused plane out (same dtype, flux rule applied;
        non-finite pixels come back NaN, see the class doc)."""
        out, bad = self._refocus_plane(np.asarray(plane), tile, overlap)
        _warn_non_finite(None, bad)
        return out

    def _refocus_plane(self, plane: np.ndarray, tile: int | None, overlap: int | None,
                       where: str | None = None) -> tuple[np.ndarray, int]:
        """The refocused plane and how many of its pixels were non-finite."""
        bad = non_finite_mask(plane, where)
        finite = plane if bad is None else plane[~bad]
        lo, hi = self.normalizer.percentiles(finite)
        x = plane if bad is None else fill_non_finite(plane, bad, lo)
        y_n = self.predict_normalised(self.network_input(x, lo, hi), tile, overlap)
        gain = flux_gain(finite, y_n if bad is None else y_n[~bad], lo, hi)
        out = apply_gain(y_n, lo, gain, plane.dtype)
        if bad is None:
            return out, 0
        out[bad] = np.nan  # float input: the output keeps the marks
        return out, int(np.count_nonzero(bad))

    def network_input(self, plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """The normalised plane, and for a guided model its guide channel too (the PSF
        estimated from the whole plane, before tiling: :func:`refocus.guides.guide_input`)."""
        return guide_input(self.guide, self.normalizer.apply(plane, lo, hi), plane)

    def select_channel(self, n_channels: int, channel: int | str | None,
                       names: Sequence[str] | None = None) -> int:
        """Index of the channel to refocus: given by index or name, else the model's own.

        With one channel there is nothing to choose; otherwise the model's training
        channel names are matched against ``names``, and anything else must be explicit.
        """
        names = list(names) if names else []
        if channel is not None:
            return _explicit_channel(n_channels, channel, names)
        if n_channels == 1:
            return 0
        matches = [names.index(c) for c in self.channels if c in names]
        if matches:
            return matches[0]
        raise RefocusError(None, f"the image has {n_channels} channels{_listed(names)}; choose "
                                 "the one to refocus by name or index (--channel)")

    def predict(
        self,
        array: np.ndarray,
        axes: str | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        *,
        channel: int | str | None = None,
        channel_names: Sequence[str] | None = None,
        where: str | os.PathLike[str] | None = None,
        trust: bool | int = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Refocus ``array``; the result has the same shape and dtype.

        ``axes`` names each dimension with T, Z, C, Y, X (any other letter is a plane
        axis too); it may be left out for a 2-D plane. Every Y-X plane is refocused on
        its own; with a C axis only the chosen ``channel`` (index, or a name from
        ``channel_names``) is, and the other channels are copied unchanged. ``tile``
        defaults to the largest that fits free memory, ``overlap`` to three times the
        measured receptive radius (see :mod:`refocus.inference.tiling`). ``where`` (the
        file name) names the image in the warning about non-finite pixels.

        ``trust``: True (all 8 rotations and flips) or a flip count of
        :data:`~refocus.inference.trust.FLIP_CHOICES` returns ``(refocused, trust map)``,
        the map float32 of the same shape, 0..1, higher = more trustworthy, NaN in the
        channels copied unchanged (:mod:`refocus.inference.trust`; its
        :func:`~refocus.inference.trust.image_score` is the image's score).
        """
        flips = check_flips(8 if trust is True else int(trust)) if trust else 0
        array = np.asarray(array)
        where = None if where is None else str(where)
        axes = _checked_axes(array, axes)
        order = [i for i, a in enumerate(axes) if a not in "YX"]
        order += [axes.index("Y"), axes.index("X")]
        planes = np.transpose(array, order)
        lead = "".join(axes[i] for i in order[:-2])
        c = lead.find("C")
        chosen = None if c < 0 else self.select_channel(planes.shape[c], channel, channel_names)
        out = planes.copy()
        maps = np.full(planes.shape, np.nan, np.float32) if flips else None
        bad = 0
        for index in np.ndindex(planes.shape[:-2]):
            if chosen is None or index[c] == chosen:
                label = where if not index else f"{where or 'image'}, plane {index}"
                out[index], n = self._refocus_plane(planes[index], tile, overlap, label)
                bad += n
                if maps is not None:
                    maps[index] = trust_map(self, planes[index], out[index], flips=flips,
                                            tile=tile, overlap=overlap).map
        _warn_non_finite(where, bad)
        back = np.argsort(order)
        if maps is None:
            return np.transpose(out, back)
        return np.transpose(out, back), np.transpose(maps, back)


def check_tiling(tile: int | None, overlap: int | None) -> None:
    """Refuse tile/overlap settings that cannot work, before any image is read: a tile
    under :data:`~refocus.inference.tiling.MIN_TILE` px (hopelessly slow), a negative
    overlap, or an overlap that leaves a tile no stride."""
    if tile is not None and int(tile) < MIN_TILE:
        raise RefocusError(None, f"--tile must be at least {MIN_TILE} px (got {tile})")
    if overlap is not None and int(overlap) < 0:
        raise RefocusError(None, f"--overlap must be 0 or more px (got {overlap})")
    if tile is not None and overlap is not None and int(tile) <= 2 * int(overlap):
        raise RefocusError(None, f"--tile ({tile} px) must be more than twice --overlap "
                                 f"({overlap} px)")


def _warn_non_finite(where: str | None, count: int) -> None:
    """The one warning line per image that says non-finite pixels were worked around."""
    if count:
        log.warning("%s: %d non-finite pixel(s) (NaN or infinite): refocused around them, "
                    "NaN in the output", where or "image", count)


def _checked_axes(array: np.ndarray, axes: str | None) -> str:
    """``axes`` in upper case, refused unless it names each dimension of ``array`` once
    and the pixels can be refocused; a 2-D array may leave it out (``"YX"``)."""
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
    return axes


def _listed(names: Sequence[str]) -> str:
    return f" ({', '.join(names)})" if names else ""


def _explicit_channel(n_channels: int, channel: int | str, names: list[str]) -> int:
    """The index a ``--channel`` value (index, negative index or name) means."""
    if isinstance(channel, str) and channel.strip().lstrip("-").isdigit():
        channel = int(channel)
    if isinstance(channel, int):
        if not -n_channels <= channel < n_channels:
            raise RefocusError(None, f"channel {channel} does not exist: the image has "
                                     f"{n_channels} channel(s){_listed(names)}, indices 0.."
                                     f"{n_channels - 1}")
        return channel % n_channels
    if channel not in names:
        raise RefocusError(None, f"channel {channel!r} not found; the image's channels "
                                 f"are{_listed(names) or ' unnamed'}")
    return names.index(channel)


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
