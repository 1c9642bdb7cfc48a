"""Command-line interface: ``refocus <command>``. Each command lives in its own module."""

from refocus.cli import data_commands  # noqa: F401  (registers download, info)
from refocus.cli import demo as _demo  # noqa: F401  (registers demo)
from refocus.cli import evaluate as _evaluate  # noqa: F401  (registers evaluate)
from refocus.cli import export as _export  # noqa: F401  (registers export)
from refocus.cli import focus as _focus  # noqa: F401  (registers focus)
from refocus.cli import models as _models  # noqa: F401  (registers models)
from refocus.cli import predict as _predict  # noqa: F401  (registers predict)
from refocus.cli import simulate as _simulate  # noqa: F401  (registers simulate)
from refocus.cli import train as _train  # noqa: F401  (registers train)
from refocus.cli import watch as _watch  # noqa: F401  (registers watch)
from refocus.cli.app import app, main, run

__all__ = ["app", "main", "run"]
