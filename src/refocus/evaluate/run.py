"""Score the model against classical baselines on the same fields, per defocus plane.

Every method restores exactly the same fields at each z; every output is scored by
:mod:`refocus.metrics` against the same target; Richardson-Lucy's iteration count is chosen
on validation fields, never on the fields it is scored on. Files in, ``metrics.csv``,
``metrics.json``, ``report.html`` and ``figures/`` out.

Two entry points: :func:`evaluate` reads a data folder and model files as an
:class:`~refocus.evaluate.config.EvalConfig` says; :func:`evaluate_fields` takes arrays
already in memory and any methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from refocus.data import build_pairs, split_pairs
from refocus.errors import RefocusError
from refocus.evaluate.config import EvalConfig
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
    baseline_methods,
    model_method,
    model_name,
)
from refocus.evaluate.results import Evaluation, check_outputs, write_results
from refocus.evaluate.scoring import OutputSink, focus_rows, score_fields, summarize
from refocus.metrics import focus_score
from refocus.modelfile import read_model_file

if TYPE_CHECKING:
    from refocus.inference.refocuser import Refocuser


def evaluate_fields(fields: Sequence[EvalField], methods: Mapping[str, Method],
                    out: str | Path, unpaired: Sequence[EvalField] = (),
                    meta: Mapping[str, Any] | None = None, n_panels: int = 3,
                    overwrite: bool = False, progress: bool = False, seed: int = 0,
                    on_unpaired: OutputSink | None = None) -> Evaluation:
    """Score arrays already in memory with the given methods and write every output.

    ``fields`` are paired (input, target); ``unpaired`` fields get the focus score only,
    and each of their outputs is handed to ``on_unpaired`` (the demo saves the model's).
    The first ``n_panels`` field names (sorted) appear as image panels at every z.
    """
    out = check_outputs(out, overwrite)
    names = sorted({f.name for f in fields})[:n_panels]
    rows, panels = score_fields(fields, methods, names, progress)
    unpaired_names = sorted({f.name for f in unpaired})[: min(n_panels, 2)]
    urows, upanels = focus_rows(unpaired, methods, unpaired_names, progress, on_unpaired)
    targets = {id(f.target): f.target for f in fields if f.target is not None}
    summary = summarize(rows, urows, [focus_score(t) for t in targets.values()] if urows else (),
                        meta, seed)
    files = write_results(out, rows, summary, panels, urows, upanels, overwrite)
    return Evaluation(rows, summary, out, files, urows)


def evaluate(config: EvalConfig, model: Refocuser | None = None,
             on_unpaired: OutputSink | None = None) -> Evaluation:
    """Evaluate ``config.model`` against identity, Richardson-Lucy and Wiener on a data folder.

    ``model`` is ``config.model`` already loaded (:class:`refocus.predict.Refocuser`), so a
    caller that predicts more keeps one prepared model; ``on_unpaired`` hears every output
    for the unpaired images (the demo saves the model's). The split is the training run's
    unless the config says otherwise, so the test split holds only wells the model never
    saw; deconvolution uses the PSF of the folder's optics
    (:func:`~refocus.evaluate.fields.data_optics`).
    """
    out = check_outputs(config.out, config.overwrite)
    _check_models(config, model)
    trained = training_settings(config.model)
    fractions = config.fractions or trained["fractions"]
    seed = trained["seed"] if config.seed is None else config.seed
    fields, val_fields = _read_split(config, fractions, seed,
                                     config.channels or trained["channels"])
    optics, optics_source = ((config.optics, "given") if config.optics is not None
                             else data_optics(config.data))
    deconv = Deconvolution(optics)
    if val_fields:
        deconv.tune(val_fields, config.rl_candidates, config.progress)
    methods = _methods(config, deconv, model)
    meta = {
        "model": str(config.model), "second_model": None if config.second_model is None
        else str(config.second_model), "data": str(config.data), "layout": config.layout,
        "split": config.split,
        "input_z": list(config.input_z) if any(f.z is not None for f in fields) else None,
        "target_z": config.target_z, "fields": len({f.name for f in fields}),
        "rl_iterations": deconv.iterations, "rl_tuning_psnr": deconv.tuning,
        "fractions": list(fractions), "seed": seed, "model_trained_on_z": trained["input_z"],
        "psf_optics": optics_source, "trust_flips": config.trust_flips,
    }
    if not deconv.iterations:
        meta["deconvolution"] = "skipped: no z (hence no PSF) or no validation fields"
    warnings = _split_warnings(config, fractions, seed)
    if warnings:
        meta["warnings"] = warnings
    extra = (unpaired_fields(config.unpaired)[:config.max_fields]
             if config.unpaired is not None else [])
    return evaluate_fields(fields, methods, out, extra, meta, config.n_panels,
                           config.overwrite, config.progress, seed, on_unpaired)


def _check_models(config: EvalConfig, model: Refocuser | None) -> None:
    """Model files exist, and a loaded model is the one the config names (the report says
    which file was scored)."""
    for path in (config.model, config.second_model):
        if path is not None and not path.is_file():
            raise RefocusError(path, "model file not found")
    if model is not None and model.source != config.model.resolve():
        raise ValueError(f"the Refocuser given to evaluate was loaded from {model.source}, "
                         f"not from config.model {config.model}")


def _read_split(config: EvalConfig, fractions: tuple[float, float, float], seed: int,
                channels: Sequence[str]) -> tuple[list[EvalField], list[EvalField]]:
    """The fields of the evaluated split, and the validation fields that tune RL (none
    when the layout has no z, hence no PSF)."""
    every = build_pairs(config.data, config.layout, config.input_z, config.target_z,
                        channels)  # one scan of the folder
    splits = {"all": every, **split_pairs(every, fractions, seed)}
    pairs = splits[config.split]
    if not pairs:
        raise RefocusError(config.data, f"no pairs in the {config.split!r} split")
    reads: dict[Path, np.ndarray] = {}  # a field both tunes and is scored with split "val"
    fields = load_fields(pairs, config.max_fields, reads)
    has_z = any(p.z is not None for p in every)
    val = load_fields(splits["val"], config.max_val_fields, reads) if has_z else []
    return fields, val


def _methods(config: EvalConfig, deconv: Deconvolution, model: Refocuser | None
             ) -> dict[str, Method]:
    """Identity, the deconvolutions when they could be tuned, the model and a second one."""
    baseline = baseline_methods(deconv)
    methods = baseline if deconv.iterations else {"identity": baseline["identity"]}
    methods["model"] = model_method(config.model if model is None else model, config.device,
                                    config.trust_flips, config.variant)
    if config.second_model is not None:
        methods[model_name(config.second_model, methods)] = model_method(
            config.second_model, config.device, config.trust_flips, config.variant)
    return methods


def _split_warnings(config: EvalConfig, fractions: tuple[float, float, float],
                    seed: int) -> list[str]:
    """What makes the scores less than held-out: RL tuned on the scored fields, or a second
    model that trained or chose its checkpoint on wells being scored."""
    warnings = []
    if config.split == "val":
        warnings.append("RL iterations were tuned on the evaluated (validation) fields")
    if config.second_model is not None:
        scored = _groups(config.model).get(config.split)
        seen = _groups(config.second_model)
        if scored is not None and "train" in seen:
            overlap = sorted(set(scored) & {*seen["train"], *seen.get("val", [])})
            if overlap:
                warnings.append(f"{config.second_model} trained or validated on evaluated "
                                f"wells {', '.join(overlap)}")
        else:
            other = training_settings(config.second_model)
            if (other["fractions"], other["seed"]) != (tuple(fractions), seed):
                warnings.append(f"{config.second_model} was trained with another split "
                                f"(fractions {list(other['fractions'])}, seed "
                                f"{other['seed']}): some evaluated fields may be its "
                                "training fields")
    return warnings


def _groups(model_file: Path) -> dict[str, list[str]]:
    """The wells (or files) of each split a model file recorded (empty if none)."""
    return read_model_file(model_file)["provenance"].get("groups") or {}
