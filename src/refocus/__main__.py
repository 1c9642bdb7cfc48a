"""``python -m refocus``: the same as the ``refocus`` command."""

from refocus.cli import run

run()
