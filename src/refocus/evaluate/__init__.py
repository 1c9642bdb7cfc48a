"""Honest evaluation: fields, methods (model and baselines), scores and result files."""

from refocus.evaluate.run import *  # noqa: F403  (split into modules by issue 12)
