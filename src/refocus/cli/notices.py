"""What the library logs for the person at the command line.

The library logs; it does not print. Warnings and errors reach stderr as one plain line
each (what Python's last-resort handler did before), and an INFO record marked
``extra={"notice": True}`` is a status line worth seeing — a pause of a
minute that would otherwise look like a hang — printed on stdout. Other INFO records stay
quiet. In the ``refocus`` process itself (:func:`own_the_terminal`), Python warnings are one
line too, and no other library's logging set-up repeats our records.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import TextIO

from rich.console import Console


class _CommandLineHandler(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (a bad format string must not stop a command)
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            sys.stderr.write(message + "\n")
        elif getattr(record, "notice", False):
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)


def show_notices(console: Console) -> None:
    """Route the ``refocus`` loggers' warnings and notices to the terminal (once)."""
    logger = logging.getLogger("refocus")
    if not any(isinstance(h, _CommandLineHandler) for h in logger.handlers):
        logger.addHandler(_CommandLineHandler(console))
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def _one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
              file: TextIO | None = None, line: str | None = None) -> None:
    (file or sys.stderr).write(f"warning: {message}\n")


def own_the_terminal() -> None:
    """For the ``refocus`` process only (tests and scripts keep Python's defaults).

    Warnings lose the file name and source line that mean nothing to a microscopist; and
    the ``refocus`` records stop at :func:`show_notices`' handler, because a library that
    calls ``logging.info`` on the root logger (ONNX Runtime's quantiser does) installs
    ``basicConfig``'s handler there, which printed every INFO record a second time as
    ``INFO:refocus...``.
    """
    warnings.showwarning = _one_line
    logging.getLogger("refocus").propagate = False
