"""refocus: make out-of-focus fluorescence microscopy images in focus again.

``refocus.Refocuser.from_file("model.pt").predict(image)`` is the one-line Python API; it is
imported lazily so ``import refocus`` (and the CLI's start-up) stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Refocuser", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Refocuser":
        from refocus.inference.refocuser import Refocuser

        return Refocuser
    raise AttributeError(f"module 'refocus' has no attribute {name!r}")
