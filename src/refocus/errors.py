"""One error type for everything a user can get wrong.

The CLI prints a ``RefocusError`` as a single line (no traceback unless ``--debug``) and
exits with code 2, so every message must name the file and the problem on its own.
"""

from __future__ import annotations

from os import PathLike


class RefocusError(Exception):
    """A user-facing problem with an input, an output or a setting."""

    def __init__(self, where: str | PathLike[str] | None, problem: str) -> None:
        self.where = None if where is None else str(where)
        self.problem = problem
        super().__init__(problem if where is None else f"{where}: {problem}")
