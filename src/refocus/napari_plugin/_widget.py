"""The *Refocus* dock widget: model file + image layer in, refocused layer out.

With no model file chosen, the default pretrained model (:mod:`refocus.zoo`) is used when
one is registered, so a first try needs no trained model of one's own. Prediction runs in
a worker thread (napari's ``thread_worker``) so the viewer stays responsive; the worker
reports progress plane by plane and the result arrives as a new layer beside the
original, with the same scale and position. With *Trust map* ticked, each plane's trust
map (:mod:`refocus.inference.trust`: 0..1, higher = more trustworthy) arrives as a second
layer, ``<layer> trust``, and the status line gives the image's trust score.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)

if TYPE_CHECKING:
    import napari

    from refocus.inference.refocuser import Refocuser

Progress = tuple[int, int]
#: Predictions per plane of the widget's trust map (identity and a flip: about 2x).
WIDGET_TRUST_FLIPS = 2


def refocus_planes(
    refocuser: Refocuser, data: np.ndarray, tile: int, name: str | None = None,
    trust: int = 0,
) -> Generator[Progress, None, Any]:
    """Refocus every 2-D plane of ``data`` (last two axes Y, X), yielding (done, total).

    Plane by plane keeps memory flat for long stacks and gives the progress bar real steps;
    each plane is predicted in ``tile``-pixel tiles. Returns an array shaped like ``data``;
    ``name`` (the layer's) names it in warnings. ``trust`` (a flip count, 0 = none)
    returns (refocused, trust map) instead.
    """
    data = np.asarray(data)
    if data.ndim < 2:
        raise ValueError(f"layer data of shape {data.shape} has no Y and X axes")
    out = np.empty_like(data)
    maps = np.empty(data.shape, np.float32) if trust else None
    leading = list(np.ndindex(data.shape[:-2]))
    yield 0, len(leading)
    for done, index in enumerate(leading, start=1):
        if maps is None:
            out[index] = refocuser.predict(data[index], tile=tile, where=name)
        else:
            out[index], maps[index] = refocuser.predict(data[index], tile=tile, where=name,
                                                        trust=trust)
        yield done, len(leading)
    return out if maps is None else (out, maps)


def default_model_name() -> str | None:
    """The registered default pretrained model's name, None when there is none."""
    from refocus.errors import RefocusError
    from refocus.zoo import default_model

    try:
        return default_model().name
    except RefocusError:
        return None


class RefocusWidget(Container):
    """Choose a model file (or keep the default model) and an image layer; *Refocus* adds
    ``<layer> refocused``."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self._loaded: tuple[tuple[object, ...], Refocuser] | None = None
        default = default_model_name()
        self.model_file = FileEdit(label="Model file", mode="r", filter="*.pt", tooltip=(
            f"Empty: the default pretrained model {default!r}." if default else
            "A trained model file (model.pt)."))
        # napari calls reset_choices when layers change; the list comes from our viewer
        self.image_layer = ComboBox(label="Image", choices=self._image_layers)
        self.tile = SpinBox(label="Tile (px)", value=512, min=64, max=4096, step=32,
                            tooltip="Tile size; smaller tiles use less memory.")
        self.trust = CheckBox(label="Trust map", value=False, tooltip=(
            "Also add where the output can be trusted (0..1); takes about 2x as long "
            "(2 flips)."))
        self.run_button = PushButton(text="Refocus")
        self.progress = ProgressBar(label="Progress", value=0, min=0, max=1)
        self.status = Label(value=f"Choose an image layer (model: {default!r}, or a file)."
                            if default else "Choose a model file and an image layer.")
        super().__init__(widgets=[self.model_file, self.image_layer, self.tile, self.trust,
                                  self.run_button, self.progress, self.status])
        self.run_button.changed.connect(self.start)
        self.worker: Any = None

    def _image_layers(self, _widget: object = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _refocuser(self, model: Path | str) -> Refocuser:
        """Load the model once per file version (or pretrained name); reloading costs
        seconds per click."""
        from refocus.inference.refocuser import Refocuser

        if isinstance(model, str):
            key: tuple[object, ...] = ("pretrained", model)
        else:
            key = (model.resolve(), model.stat().st_mtime_ns)
        if self._loaded is None or self._loaded[0] != key:
            loaded = (Refocuser.pretrained(model) if isinstance(model, str)
                      else Refocuser.from_file(model))
            self._loaded = (key, loaded)
        return self._loaded[1]

    def _chosen_model(self) -> Path | str | None:
        """The chosen model file, else the default pretrained model's name, else None."""
        path = self.model_file.value
        if path and str(path) not in ("", ".") and Path(path).is_file():
            return Path(path)
        if path and str(path) not in ("", "."):
            return None  # a file was named but is not there: never fall back silently
        return default_model_name()

    def start(self) -> None:
        """Refocus the chosen layer in a worker thread (the button's action)."""
        from napari.qt.threading import thread_worker

        layer = self.image_layer.value
        model = self._chosen_model()
        if layer is None or model is None:
            self.status.value = "Choose an existing model file and an image layer first."
            return
        if layer.rgb or layer.multiscale:
            kind = "RGB" if layer.rgb else "multiscale"
            self.status.value = f"{layer.name} is {kind}; refocus needs a single grey image."
            return
        tile = self.tile.value  # read widgets here, in the GUI thread
        trust = WIDGET_TRUST_FLIPS if self.trust.value else 0

        def job() -> Generator[Progress, None, Any]:
            refocuser = self._refocuser(model)
            return (yield from refocus_planes(refocuser, np.asarray(layer.data), tile,
                                              layer.name, trust))

        self.run_button.enabled = False
        self.status.value = f"Refocusing {layer.name}..."
        worker = thread_worker(job, start_thread=False)()
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda data: self._on_done(layer, data))
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda: setattr(self.run_button, "enabled", True))
        self.worker = worker
        worker.start()

    def _on_progress(self, progress: Progress) -> None:
        done, total = progress
        # one plane has no steps to show: a busy bar (max 0) until it is done
        self.progress.max = 0 if total == 1 and done == 0 else max(total, 1)
        self.progress.value = done

    def _on_done(self, layer: napari.layers.Image, result: Any) -> None:
        data, trust = result if isinstance(result, tuple) else (result, None)
        self._viewer.add_image(
            data, name=f"{layer.name} refocused", scale=layer.scale, translate=layer.translate,
            colormap=layer.colormap,
        )
        self.status.value = f"Done: added '{layer.name} refocused'."
        if trust is not None:
            from refocus.inference.trust import image_score

            self._viewer.add_image(trust, name=f"{layer.name} trust", scale=layer.scale,
                                   translate=layer.translate, colormap="viridis",
                                   contrast_limits=(0.0, 1.0))
            self.status.value = (f"Done: added '{layer.name} refocused' and '{layer.name} "
                                 f"trust' (score {image_score(trust):.3f}).")

    def _on_error(self, exc: Exception) -> None:
        self.status.value = f"Failed: {exc}"
