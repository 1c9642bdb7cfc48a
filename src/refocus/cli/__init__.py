"""Command-line interface: ``refocus <command>``. Each command lives in its own module."""

from refocus.cli import data_commands  # noqa: F401  (registers download, info)
from refocus.cli.app import app, main

__all__ = ["app", "main"]
