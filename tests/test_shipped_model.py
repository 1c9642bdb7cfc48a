"""The default model that ships inside the package: found with no network, leaves a real
in-focus field nearly unchanged and sharpens a real field 32 um from focus (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from refocus.focus import estimate_focus
from refocus.images import read_plane
from refocus.metrics import focus_score, psnr, ssim
from refocus.predict import Refocuser
from refocus.samples import in_focus_paths, z00_paths
from refocus.zoo import MODELS, default_model, resolve_model


@pytest.fixture(scope="module")
def shipped() -> Refocuser:
    """The default model, loaded with every network connection refused."""
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in tests")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        return Refocuser.from_file(resolve_model(None), device="cpu")


def test_default_model_is_registered_inside_the_package() -> None:
    entry = default_model()
    assert entry.file is not None and entry.url is None
    assert entry.path().stat().st_size < 20 * 2**20
    assert entry.name in MODELS.names() and entry.card.startswith("docs/models/")


def test_in_focus_field_comes_back_nearly_unchanged(shipped: Refocuser) -> None:
    # a03 is one of the model's held-out wells
    path = next(p for p in in_focus_paths() if "__a03__" in p.name)
    image = read_plane(path)
    out = shipped.predict(image)
    assert out.dtype == image.dtype and out.shape == image.shape
    reference = image.astype(np.float64)
    assert psnr(reference, out.astype(np.float64)) >= 38
    assert ssim(reference, out.astype(np.float64)) >= 0.95


def test_real_z00_field_is_sharpened(shipped: Refocuser) -> None:
    image = read_plane(z00_paths()[1])
    out = shipped.predict(image)
    before, after = focus_score(image.astype(float)), focus_score(out.astype(float))
    assert after > 2 * before
    assert estimate_focus(image).distance_um > 25
    assert estimate_focus(out).distance_um < 8  # the focus estimator calls it near focus
