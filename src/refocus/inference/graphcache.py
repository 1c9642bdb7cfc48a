"""Set-up paid once per model: exported graphs and measured facts, cached on disk.

Preparing a model for fast inference costs seconds to a minute: the ONNX export, int8
calibration, the speed and quality measurement that picks the default variant
(:mod:`refocus.inference.budget`), the receptive-field probe. None of it changes while the
weights, the architecture and the libraries stay the same, so it is kept in the user
cache folder (``$REFOCUS_CACHE_DIR/onnx``, else the platform's user cache folder's
``refocus/onnx``) under a key hashing all of those: the state dict and the module's
structure, not a file, since a :class:`~refocus.inference.refocuser.Refocuser` may have
none. Each graph's sha256 is stored in the entry and checked on every load, so a damaged,
truncated or foreign file is rebuilt, never trusted; every file is written atomically
(:func:`refocus.images.atomic_output`), so concurrent processes at worst both build.

``REFOCUS_NO_CACHE=1`` (or a cache folder that cannot be written) keeps everything in a
temporary folder for this process only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from refocus.errors import RefocusError
from refocus.fetch import sha256_of
from refocus.images import atomic_output
from refocus.inference.cost import macs_per_pixel
from refocus.inference.memory import peak_bytes_per_pixel
from refocus.inference.receptive import receptive_radius
from refocus.zoo import CACHE_ENV

log = logging.getLogger(__name__)

NO_CACHE_ENV = "REFOCUS_NO_CACHE"
ENTRY_NAME = "entry.json"
#: Bumped when the entry's layout or the meaning of what it holds changes.
ENTRY_FORMAT = 1
#: Memo of model -> (signature of its tensors, key): hashing resnet34 takes a fraction of
#: a second, and a prepared model is asked for its key more than once.
_KEYS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], str]] = (
    weakref.WeakKeyDictionary())


def cache_root() -> Path:
    """Where prepared graphs live: ``$REFOCUS_CACHE_DIR/onnx``, else the user cache's."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "onnx"
    import platformdirs

    return Path(platformdirs.user_cache_dir("refocus")) / "onnx"


def caching_enabled() -> bool:
    """False when ``REFOCUS_NO_CACHE`` is set to anything but 0/empty."""
    return os.environ.get(NO_CACHE_ENV, "0").strip().lower() in ("", "0", "false", "no")


def library_versions() -> dict[str, str]:
    """Versions whose change can change an exported graph or its speed."""
    # the package is loaded already; importing it here would close a cycle (its
    # __init__ imports the Refocuser lazily, which imports this module)
    versions = {"torch": torch.__version__, "refocus": sys.modules["refocus"].__version__,
                "entry_format": str(ENTRY_FORMAT)}
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "none"
    return versions


def _signature(model: nn.Module) -> tuple[Any, ...]:
    """Cheap identity of the model's current tensors (storage and in-place version)."""
    return tuple((t.data_ptr(), t._version) for t in model.state_dict().values())


def model_key(model: nn.Module) -> str:
    """sha256 of the library versions, the module's structure (its repr: layers, sizes,
    strides) and every state-dict tensor (name, dtype, shape, bytes)."""
    signature = _signature(model)
    memo = _KEYS.get(model)
    if memo is not None and memo[0] == signature:
        return memo[1]
    digest = hashlib.sha256(json.dumps(library_versions(), sort_keys=True).encode())
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}".encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    key = digest.hexdigest()
    _KEYS[model] = (signature, key)
    return key


class ModelCache:
    """One model's cache entry: graphs (files checked by sha256) and facts (JSON values).

    ``facts`` depend on the model only (the receptive radius); ``checks`` also on the
    graphs (the variant measured fastest within the quality budget), so rebuilding a
    graph forgets them.
    """

    def __init__(self, model: nn.Module, root: Path | None = None) -> None:
        self.key = model_key(model)
        self.persistent = caching_enabled()
        self.folder = (root or cache_root()) / self.key[:32]
        if self.persistent and not self._usable(self.folder):
            log.warning("cache folder %s cannot be written; preparing this model again in "
                        "every process", self.folder)
            self.persistent = False
        if not self.persistent:  # removed with this object (sessions hold their graphs)
            self.folder = Path(tempfile.mkdtemp(prefix="refocus-onnx-"))
            weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)
        self.entry = self._read()
        self._verified: set[str] = set()  # graphs hashed once by this object already

    @staticmethod
    def _usable(folder: Path) -> bool:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(folder, os.W_OK | os.X_OK)

    def _fresh(self) -> dict[str, Any]:
        return {"key": self.key, "versions": library_versions(), "graphs": {}, "facts": {},
                "checks": {}}

    def _read(self) -> dict[str, Any]:
        """The stored entry, or a fresh one when it is missing, unreadable or not ours."""
        try:
            entry = json.loads((self.folder / ENTRY_NAME).read_text())
        except (OSError, ValueError):
            return self._fresh()
        fresh = self._fresh()
        if not isinstance(entry, dict) or entry.get("key") != self.key or any(
                not isinstance(entry.get(k), dict) for k in ("graphs", "facts", "checks")):
            log.info("cache entry %s is stale or damaged; rebuilding it", self.folder)
            return fresh
        return entry

    def _write(self) -> None:
        try:
            with atomic_output(self.folder / ENTRY_NAME, overwrite=True) as tmp:
                tmp.write_text(json.dumps(self.entry, indent=1, sort_keys=True))
        except (OSError, RefocusError) as exc:  # a full disk must not stop prediction
            log.warning("could not write the cache entry %s: %s", self.folder, exc)

    def fact(self, name: str) -> Any:
        """A stored model fact, or None."""
        return self.entry["facts"].get(name)

    def remember_fact(self, name: str, value: Any) -> None:
        self.entry["facts"][name] = value
        self._write()

    def check(self, name: str) -> Any:
        """A stored measurement of the current graphs, or None."""
        return self.entry["checks"].get(name)

    def remember_check(self, name: str, value: Any) -> None:
        self.entry["checks"][name] = value
        self._write()

    def verified_graph(self, name: str) -> Path | None:
        """The graph stored as ``name`` if its file still has the recorded sha256."""
        info = self.entry["graphs"].get(name)
        if not isinstance(info, dict) or not isinstance(info.get("file"), str):
            return None
        path = self.folder / Path(info["file"]).name
        if path.is_file() and (name in self._verified or sha256_of(path) == info.get("sha256")):
            self._verified.add(name)
            return path
        self._verified.discard(name)
        log.warning("cached %s graph %s is missing or damaged; rebuilding it", name, path)
        return None

    def graph(self, name: str, build: Callable[[Path], None]) -> Path:
        """The verified graph ``name``, built with ``build(path)`` when there is none."""
        path = self.verified_graph(name)
        if path is not None:
            return path
        path = self.folder / f"{name}.onnx"
        with atomic_output(path, overwrite=True) as tmp:
            build(tmp)
            digest = sha256_of(tmp)
        self.entry["graphs"][name] = {"file": path.name, "sha256": digest}
        self._verified.add(name)
        self.entry["checks"] = {}  # what was measured on the old graphs no longer holds
        self._write()
        return path


def cached_receptive_radius(model: nn.Module, device: torch.device) -> int:
    """:func:`~refocus.inference.receptive.receptive_radius`, measured once per model and
    remembered in its cache entry (a 256-px forward and backward pass saved per start)."""
    return int(_cached_fact(model, "receptive_radius", lambda: receptive_radius(model, device)))


def cached_peak_bytes_per_pixel(model: nn.Module, device: torch.device) -> float:
    """:func:`~refocus.inference.memory.peak_bytes_per_pixel`, measured once per model and
    device type (its dispatch mode imports torch's compiler stack: seconds per start)."""
    return float(_cached_fact(model, f"peak_bytes_per_pixel:{device.type}",
                              lambda: peak_bytes_per_pixel(model, device)))


def cached_macs_per_pixel(model: nn.Module) -> float:
    """:func:`~refocus.inference.cost.macs_per_pixel`, counted once per model (on the
    model's device; the count does not depend on it)."""
    return float(_cached_fact(model, "macs_per_pixel", lambda: macs_per_pixel(model)))


def _cached_fact(model: nn.Module, name: str, measure: Callable[[], float]) -> float:
    """A non-negative number the model's cache entry remembers, else ``measure()`` stored."""
    store = ModelCache(model)
    value = store.fact(name)
    if isinstance(value, int | float) and value >= 0:
        return value
    value = measure()
    store.remember_fact(name, value)
    return value
