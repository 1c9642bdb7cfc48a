"""Refocus inside acquisition software, frame by frame, before the image is saved.

pycro-manager calls ``image_process_fn(image, metadata)`` for every camera frame and saves
and shows whatever it returns: one ``(image, metadata)`` pair, or a list of them. So::

    from pycromanager import Acquisition
    from refocus.inference.acquisition import make_image_process_fn
    from refocus.inference.refocuser import Refocuser

    refocuser = Refocuser.from_file("model.pt")  # load once, not per frame
    with Acquisition(directory="D:/data", name="run",
                     image_process_fn=make_image_process_fn(refocuser, keep_original=True)):
        ...

Nothing here imports pycro-manager: any software that hands over a 2-D array and a dict
can use the same function.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from refocus.inference.refocuser import Refocuser

Metadata = dict[str, Any]
ProcessorResult = tuple[np.ndarray, Metadata] | list[tuple[np.ndarray, Metadata]]

#: Metadata keys added to refocused frames, so a saved file says how it was made.
MODEL_KEY = "RefocusModel"
LATENCY_KEY = "RefocusLatencyMs"


def _refocused_channel(metadata: Metadata, suffix: str) -> Metadata:
    """Metadata naming a new channel, so pycro-manager stores it beside the original."""
    out = copy.deepcopy(metadata)
    axes = out.setdefault("Axes", {})
    original = axes.get("channel", out.get("Channel"))
    name = suffix if original in (None, "") else f"{original}-{suffix}"
    axes["channel"] = name
    if "Channel" in out:
        out["Channel"] = name
    return out


def make_image_process_fn(
    refocuser: Refocuser,
    *,
    keep_original: bool = False,
    tile: int | None = None,
    overlap: int | None = None,
    model_name: str = "refocus",
    channel_suffix: str = "refocused",
) -> Callable[[np.ndarray, Metadata], ProcessorResult]:
    """An ``image_process_fn(image, metadata)`` that refocuses each frame with ``refocuser``.

    The refocused frame keeps the camera frame's shape and dtype. Its metadata is a copy
    (the caller's dict is not changed) with :data:`MODEL_KEY` and :data:`LATENCY_KEY`
    added. With ``keep_original`` the raw frame is returned too, and the refocused one is
    filed under a new channel (``<channel>-refocused``) so both are saved.
    """

    def image_process_fn(image: np.ndarray, metadata: Metadata) -> ProcessorResult:
        start = time.perf_counter()
        refocused = refocuser.predict(np.asarray(image), tile=tile, overlap=overlap)
        latency_ms = (time.perf_counter() - start) * 1000.0
        if keep_original:
            meta = _refocused_channel(metadata, channel_suffix)
        else:
            meta = copy.deepcopy(metadata)
        meta[MODEL_KEY] = model_name
        meta[LATENCY_KEY] = round(latency_ms, 2)
        if keep_original:
            return [(image, metadata), (refocused, meta)]
        return refocused, meta

    return image_process_fn
