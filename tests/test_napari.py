"""napari plugin, headless (Qt offscreen): the manifest is found, the widget refocuses the
chosen layer in a worker thread and adds the result as a new layer."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt application exists

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import test_reliability_inference as reliability  # noqa: E402

from refocus.images import read_plane  # noqa: E402

napari = pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
default_tiny_model = reliability.default_tiny_model  # the fixtures, shared
no_default_model = reliability.no_default_model


@pytest.fixture(scope="module")
def refocuser(tiny_model_path: Path):
    from refocus.inference.refocuser import Refocuser

    return Refocuser.from_file(tiny_model_path, device="cpu")


@pytest.fixture
def viewer(qtbot):
    """napari's viewer model: all of a viewer but the OpenGL canvas, which the offscreen
    Qt platform cannot draw (the widget only talks to the model)."""
    from napari.components import ViewerModel

    return ViewerModel()


def test_manifest_is_installed_and_points_at_real_code(z00_files: list[Path]) -> None:
    from refocus.napari_plugin._widget import RefocusWidget

    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("refocus-microscopy")
    (widget,) = manifest.contributions.widgets
    assert widget.display_name == "Refocus"
    assert pm.commands.get(widget.command) is RefocusWidget
    (sample,) = manifest.contributions.sample_data
    (data, meta, kind), = pm.commands.get(sample.command)()
    assert kind == "image" and meta["name"] == "BBBC006 z=00"
    np.testing.assert_array_equal(data, read_plane(z00_files[0]))


def test_refocus_planes_reports_progress_per_plane(refocuser, z00_files: list[Path]) -> None:
    from refocus.napari_plugin._widget import refocus_planes

    stack = np.stack([read_plane(p)[:96, :128] for p in z00_files[:2]])  # (Z, Y, X)
    steps = refocus_planes(refocuser, stack, tile=128)
    progress = []
    try:
        while True:
            progress.append(next(steps))
    except StopIteration as done:
        out = done.value
    assert progress == [(0, 2), (1, 2), (2, 2)]
    assert out.shape == stack.shape and out.dtype == stack.dtype
    for plane, result in zip(stack, out, strict=True):
        np.testing.assert_array_equal(result, refocuser.predict(plane, tile=128))


def test_widget_refocuses_the_chosen_layer_in_a_worker(
    qtbot, viewer, refocuser, tiny_model_path: Path, z00_files: list[Path], no_default_model
) -> None:
    from napari.qt.threading import GeneratorWorker

    from refocus.napari_plugin._widget import RefocusWidget

    image = read_plane(z00_files[1])[:100, :120]
    viewer.add_image(np.zeros((8, 8), np.uint16), name="other")
    layer = viewer.add_image(image, name="field", scale=(0.65, 0.65))
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="labels")
    widget = RefocusWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.reset_choices()  # what napari does on layer changes
    assert [c.name for c in widget.image_layer.choices] == ["other", "field"]  # images only

    widget.run_button.clicked.emit()  # nothing chosen yet: a hint, no worker
    assert widget.worker is None and "model file" in widget.status.value

    widget.model_file.value = tiny_model_path
    widget.image_layer.value = layer
    widget.tile.value = 128
    widget.run_button.clicked.emit()
    assert isinstance(widget.worker, GeneratorWorker) and not widget.run_button.enabled
    qtbot.waitUntil(lambda: "field refocused" in viewer.layers, timeout=120_000)
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10_000)

    added = viewer.layers["field refocused"]
    assert added.data.dtype == image.dtype
    np.testing.assert_array_equal(added.data, refocuser.predict(image, tile=128))
    np.testing.assert_allclose(added.scale, layer.scale)
    assert widget.progress.value == widget.progress.max == 1
    assert widget.status.value == "Done: added 'field refocused'."


def test_widget_uses_the_default_model_when_no_file_is_chosen(
    qtbot, viewer, default_tiny_model, z00_files: list[Path]
) -> None:
    from refocus.inference.refocuser import Refocuser
    from refocus.napari_plugin._widget import RefocusWidget

    image = read_plane(z00_files[2])[:64, :96]
    layer = viewer.add_image(image, name="field")
    widget = RefocusWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.reset_choices()
    assert default_tiny_model.name in widget.status.value  # says which model it will use
    widget.image_layer.value = layer
    widget.tile.value = 128
    widget.run_button.clicked.emit()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: "field refocused" in viewer.layers, timeout=120_000)
    # made after the widget's, in the same model cache: the same measured variant (a
    # refocuser made under another cache may measure another one, a few counts apart)
    expected = Refocuser.pretrained(default_tiny_model.name).predict(image, tile=128)
    np.testing.assert_array_equal(viewer.layers["field refocused"].data, expected)

    widget.model_file.value = Path(z00_files[0]).parent / "no-such-model.pt"
    widget.run_button.clicked.emit()  # a named file that is missing: no silent fallback
    assert "model file" in widget.status.value


def test_widget_adds_the_trust_map_as_a_second_layer(
    qtbot, viewer, refocuser, tiny_model_path: Path, z00_files: list[Path], no_default_model
) -> None:
    from refocus.napari_plugin._widget import WIDGET_TRUST_FLIPS, RefocusWidget, refocus_planes

    stack = np.stack([read_plane(p)[:64, :96] for p in z00_files[:2]])
    steps = refocus_planes(refocuser, stack, tile=128, trust=1)
    try:
        while True:
            next(steps)
    except StopIteration as done:
        out, maps = done.value
    for plane, result, trust in zip(stack, out, maps, strict=True):
        expected = refocuser.predict(plane, tile=128, trust=1)
        np.testing.assert_array_equal(result, expected[0])
        np.testing.assert_array_equal(trust, expected[1])

    layer = viewer.add_image(stack[0], name="field", scale=(0.65, 0.65))
    widget = RefocusWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.reset_choices()
    widget.model_file.value = tiny_model_path
    widget.image_layer.value = layer
    widget.tile.value = 128
    widget.trust.value = True
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: "field trust" in viewer.layers, timeout=120_000)
    trust = viewer.layers["field trust"]
    expected = refocuser.predict(stack[0], tile=128, trust=WIDGET_TRUST_FLIPS)[1]
    np.testing.assert_allclose(trust.data, expected, atol=1e-6)
    assert tuple(trust.contrast_limits) == (0.0, 1.0)
    np.testing.assert_allclose(trust.scale, layer.scale)
    assert "score" in widget.status.value
