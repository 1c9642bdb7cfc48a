"""Honest evaluation: fields, methods (model and baselines), scores and result files.

:mod:`~refocus.evaluate.config` says what to evaluate, :mod:`~refocus.evaluate.fields`
reads it, :mod:`~refocus.evaluate.methods` restores it, :mod:`~refocus.evaluate.scoring`
scores it, :mod:`~refocus.evaluate.results` writes it and :mod:`~refocus.evaluate.run`
runs it all.
"""

from refocus.evaluate.config import DEFAULT_INPUT_Z, SPLIT_CHOICES, EvalConfig
from refocus.evaluate.fields import (
    EvalField,
    data_optics,
    load_fields,
    training_settings,
    unpaired_fields,
)
from refocus.evaluate.methods import (
    Deconvolution,
    Method,
    ModelMethod,
    baseline_methods,
    model_method,
    model_name,
    restore_all,
)
from refocus.evaluate.results import (
    CSV_COLUMNS,
    OUTPUT_NAMES,
    UNPAIRED_COLUMNS,
    Evaluation,
    check_outputs,
    write_csv,
    write_results,
)
from refocus.evaluate.run import evaluate, evaluate_fields
from refocus.evaluate.scoring import (
    SUMMARY_METRICS,
    OutputSink,
    focus_rows,
    score_fields,
    summarize,
)

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_INPUT_Z",
    "OUTPUT_NAMES",
    "SPLIT_CHOICES",
    "SUMMARY_METRICS",
    "UNPAIRED_COLUMNS",
    "Deconvolution",
    "EvalConfig",
    "EvalField",
    "Evaluation",
    "Method",
    "ModelMethod",
    "OutputSink",
    "baseline_methods",
    "check_outputs",
    "data_optics",
    "evaluate",
    "evaluate_fields",
    "focus_rows",
    "load_fields",
    "model_method",
    "model_name",
    "restore_all",
    "score_fields",
    "summarize",
    "training_settings",
    "unpaired_fields",
    "write_csv",
    "write_results",
]
