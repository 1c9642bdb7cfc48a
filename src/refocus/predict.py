"""``refocus.predict.Refocuser``: the import path users know (see :mod:`refocus.inference`)."""

from refocus.inference.refocuser import Refocuser

__all__ = ["Refocuser"]
