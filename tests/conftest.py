"""Shared fixtures: the shipped real sample, and BBBC006-layout folders built from it."""

from __future__ import annotations

import http.server
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import tifffile
from rich.console import Console
from scipy import ndimage

from refocus.images import read_plane
from refocus.samples import in_focus_paths, sample_dir, z00_paths


@pytest.fixture(scope="session", autouse=True)
def test_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Prepared graphs and downloaded models go to one folder per test session (shared by
    its tests and their subprocesses), never into the user's own cache."""
    folder = tmp_path_factory.mktemp("refocus-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFOCUS_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def sample_root() -> Path:
    return sample_dir()


@pytest.fixture(scope="session")
def in_focus_images() -> list[np.ndarray]:
    """The 8 real best-focus fields as uint16 arrays."""
    return [read_plane(p) for p in in_focus_paths()]


@pytest.fixture(scope="session")
def z00_files() -> list[Path]:
    return z00_paths()


def write_bbbc006_layout(
    root: Path,
    images: Sequence[np.ndarray],
    wells: Sequence[str],
    z_values: Sequence[int] = (1, 5, 10, 16),
    channel: str = "w1",
) -> Path:
    """Write real in-focus pixels as z=16 and blurred copies as other planes, named exactly
    as the Broad does (fresh uuid per file, so pairing by name would fail)."""
    for z in z_values:
        folder = root / f"BBBC006_v1_images_z_{z:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for image, well in zip(images, wells, strict=True):
            sigma = abs(z - 16) * 0.4
            plane = ndimage.gaussian_filter(image.astype(np.float32), sigma) if sigma else image
            name = f"mcf-z-stacks-03212011_{well}_s1_{channel}{uuid.uuid4()}.tif"
            tifffile.imwrite(folder / name, np.asarray(plane).astype(np.uint16))
    return root


@pytest.fixture
def make_bbbc006(tmp_path: Path, in_focus_images: list[np.ndarray]) -> Callable[..., Path]:
    """Factory: a BBBC006-layout folder from the real sample (8 fields = 8 wells)."""

    def make(
        z_values: Sequence[int] = (1, 5, 10, 16),
        n_fields: int = 8,
        crop: int | None = None,
        channel: str = "w1",
    ) -> Path:
        images = in_focus_images[:n_fields]
        if crop:
            images = [im[:crop, :crop] for im in images]
        wells = [f"b{i + 2:02d}" for i in range(len(images))]
        return write_bbbc006_layout(tmp_path / "bbbc006", images, wells, z_values, channel)

    return make


@pytest.fixture(scope="session")
def tiny_model_path(
    tmp_path_factory: pytest.TempPathFactory, in_focus_images: list[np.ndarray]
) -> Path:
    """A real model file (resnet18, random init, L1) trained for a few steps on the sample's
    pixels by ``refocus.train``, for tests that need a model rather than a good one."""
    from refocus.train import TrainConfig, last_path, train

    root = tmp_path_factory.mktemp("tiny_model")
    images = [im[:192, :192] for im in in_focus_images]
    data = write_bbbc006_layout(root / "data", images, [f"c{i + 2:02d}" for i in range(8)])
    config = TrainConfig(
        data=str(data), out=str(root / "model.pt"), arch="resnet18", weights=None,
        loss="l1", size=64, batch=4, epochs=1, input_z=[5, 10], crops_per_pair=1, val_crops=1,
    )
    result = train(config, Console(quiet=True))
    last_path(result.out).unlink()  # the checkpoint (weights + optimizer) is not needed
    return result.out


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cached weights (empty TORCH_HOME) and no network: any connection attempt fails."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return home


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) with HTTP Range support and logs every request."""

    files: dict[str, bytes] = {}
    log: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        data = self.files.get(self.path)
        range_header = self.headers.get("Range")
        self.log.append((self.path, range_header))
        if data is None:
            self.send_error(404)
            return
        start = int(range_header.split("=")[1].split("-")[0]) if range_header else 0
        self.send_response(206 if range_header else 200)
        if range_header:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def range_server() -> Iterator[tuple[str, type[RangeHandler]]]:
    """A local HTTP server on 127.0.0.1: (base URL, handler class whose ``files`` to fill)."""
    handler = type("Handler", (RangeHandler,), {"files": {}, "log": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", handler
    httpd.shutdown()


@pytest.fixture
def dead_url() -> str:
    """A URL on a local port nobody listens on: what being offline looks like."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
