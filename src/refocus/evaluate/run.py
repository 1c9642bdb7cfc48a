"""Score the model against classical baselines on the same fields, per defocus plane.

Every method restores exactly the same fields at each z; every output is scored by
:mod:`refocus.metrics` against the same target; Richardson-Lucy's iteration count is chosen
on validation fields, never on the fields it is scored on. Files in, ``metrics.csv``,
``metrics.json``, ``report.html`` and ``figures/`` out.

Two entry points: :func:`evaluate` reads a data folder and model files; :func:`evaluate_fields`
takes arrays already in memory and any methods (the demo uses it with simulated planes).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from refocus import baselines
from refocus.data import Pair, build_pairs, split_pairs
from refocus.data.bbbc006 import BEST_FOCUS_Z, plane_from_path
from refocus.errors import RefocusError
from refocus.images import IMAGE_SUFFIXES, atomic_output, read_plane
from refocus.metrics import bootstrap_ci, focus_score, score_field, segment_nuclei
from refocus.report import Panel, render_report
from refocus.simulate import Optics, defocus_psf, plane_defocus_um

if TYPE_CHECKING:
    from refocus.inference.refocuser import Refocuser

#: A method restores one plane given its z; ``None`` means it does not apply (no PSF known).
Method = Callable[[np.ndarray, int | None], np.ndarray | None]

#: The method's planes: trained-side z = 1, 5, 10 and, never trained on, z = 32.
DEFAULT_INPUT_Z = (1, 5, 10, 32)
SUMMARY_METRICS = ("psnr", "ssim", "fg_ssim", "nuclei_f1", "count_error")
CSV_COLUMNS = ("field", "z", "method", "psnr", "ssim", "fg_ssim", "nuclei_target",
               "nuclei_pred", "count_error", "nuclei_f1", "focus")
UNPAIRED_COLUMNS = ("field", "z", "method", "focus")
OUTPUT_NAMES = ("metrics.csv", "unpaired.csv", "metrics.json", "report.html")


@dataclass(frozen=True)
class EvalField:
    """One defocused input plane with its in-focus target (``target`` None when unpaired)
    and the file it was read from, if any."""

    name: str
    z: int | None
    input: np.ndarray
    target: np.ndarray | None = None
    source: Path | None = None


@dataclass
class Evaluation:
    """What a run produced: one row per field x z x method, the summary, and the files."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    unpaired_rows: list[dict[str, Any]] = field(default_factory=list)


class Deconvolution:
    """Richardson-Lucy and unsupervised Wiener with the simulator's PSF for each plane.

    RL's iteration count is chosen per z on validation fields (:meth:`tune`); a plane whose
    z was not tuned uses the count of the tuned z with the nearest defocus.
    """

    def __init__(self, optics: Optics | None = None) -> None:
        self.optics = optics if optics is not None else Optics()
        self.iterations: dict[int, int] = {}
        self.tuning: dict[int, dict[int, float]] = {}

    def psf(self, z: int) -> np.ndarray:
        return defocus_psf(plane_defocus_um(z, self.optics), self.optics)

    def tune(self, fields: Sequence[EvalField],
             candidates: Sequence[int] = baselines.RL_CANDIDATES, progress: bool = False
             ) -> None:
        """Choose RL's iterations for every z among ``fields`` by mean PSNR."""
        zs = sorted({f.z for f in fields if f.z is not None and f.target is not None})
        with _progress(progress) as bar:
            task = bar.add_task("tuning Richardson-Lucy", total=len(zs))
            for z in zs:
                bar.update(task, description=f"tuning Richardson-Lucy z={z}")
                group = [f for f in fields if f.z == z and f.target is not None]
                best, means = baselines.choose_rl_iterations(
                    [f.input for f in group], [f.target for f in group], self.psf(z), candidates)
                self.iterations[z], self.tuning[z] = best, means
                bar.advance(task)

    def rl_iterations(self, z: int) -> int:
        if not self.iterations:
            raise RefocusError(None, "Richardson-Lucy has no tuned iteration count "
                                     "(no validation fields were given)")
        if z in self.iterations:
            return self.iterations[z]
        nearest = min(self.iterations, key=lambda t: abs(
            abs(plane_defocus_um(t, self.optics)) - abs(plane_defocus_um(z, self.optics))))
        return self.iterations[nearest]

    def richardson_lucy(self, image: np.ndarray, z: int | None) -> np.ndarray | None:
        if z is None:
            return None
        return baselines.richardson_lucy(image, self.psf(z), self.rl_iterations(z))

    def wiener(self, image: np.ndarray, z: int | None) -> np.ndarray | None:
        return None if z is None else baselines.wiener(image, self.psf(z))


def model_method(model: str | Path | Refocuser, device: str | None = None) -> Method:
    """The trained model (a file, or one already loaded) as a :data:`Method` (it needs no z).

    Its output is what ``refocus predict`` writes: the input's units and dtype, so the
    scores are those of the files users get.
    """
    from refocus.inference.refocuser import Refocuser

    refocuser = model if isinstance(model, Refocuser) else Refocuser.from_file(model, device)

    def restore(image: np.ndarray, z: int | None) -> np.ndarray:
        return refocuser.predict(image)

    return restore


def baseline_methods(deconvolution: Deconvolution) -> dict[str, Method]:
    """identity, richardson_lucy and wiener, in the order the report shows them."""
    return {
        "identity": lambda image, z: baselines.identity(image),
        "richardson_lucy": deconvolution.richardson_lucy,
        "wiener": deconvolution.wiener,
    }


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), disable=not enabled,
                    transient=True)


def restore_all(fields: Sequence[EvalField], methods: Mapping[str, Method],
                progress: bool = False, label: str = "restoring"
                ) -> Iterator[tuple[EvalField, str, np.ndarray]]:
    """(field, method name, output) for every method that applies to every field."""
    with _progress(progress) as bar:
        task = bar.add_task(label, total=len(fields) * len(methods))
        for f in fields:
            for name, method in methods.items():
                bar.update(task, description=f"{label} {f.name} z={f.z} {name}")
                output = method(f.input, f.z)
                bar.advance(task)
                if output is not None:
                    yield f, name, output


def score_fields(fields: Sequence[EvalField], methods: Mapping[str, Method],
                 panel_names: Iterable[str] = (), progress: bool = False
                 ) -> tuple[list[dict[str, Any]], dict[int | None, list[Panel]]]:
    """Run every method on every paired field and score it: (csv rows, panels by z).

    Fields named in ``panel_names`` keep their images for the report's panels.
    """
    missing = [f.name for f in fields if f.target is None]
    if missing:
        raise ValueError(f"fields without a target: {missing}; score them with focus_rows")
    keep = set(panel_names)
    rows: list[dict[str, Any]] = []
    panels: dict[tuple[str, int | None], Panel] = {}
    labels: dict[int, np.ndarray] = {}  # fields at several z share one target array
    for f, name, output in restore_all(fields, methods, progress, "scoring"):
        if id(f.target) not in labels:
            labels[id(f.target)] = segment_nuclei(f.target)
        scores = score_field(f.target, output, labels[id(f.target)])
        rows.append({"field": f.name, "z": f.z, "method": name, **scores.to_dict()})
        if f.name in keep:
            panels.setdefault((f.name, f.z), Panel(f.name, f.z, f.input, target=f.target)
                              ).outputs[name] = output
    by_z: dict[int | None, list[Panel]] = {}
    for (_, z), panel in sorted(panels.items(), key=lambda kv: (kv[0][1] is None, kv[0][1] or 0,
                                                                 kv[0][0])):
        by_z.setdefault(z, []).append(panel)
    return rows, by_z


#: Hears every (field, method name, output) of the unpaired images, e.g. to save them.
OutputSink = Callable[[EvalField, str, np.ndarray], None]


def focus_rows(fields: Sequence[EvalField], methods: Mapping[str, Method],
               panel_names: Iterable[str] = (), progress: bool = False,
               on_output: OutputSink | None = None
               ) -> tuple[list[dict[str, Any]], list[Panel]]:
    """No-reference focus score of every method's output for unpaired fields."""
    keep = set(panel_names)
    rows: list[dict[str, Any]] = []
    panels: dict[str, Panel] = {}
    for f, name, output in restore_all(fields, methods, progress, "unpaired"):
        if on_output is not None:
            on_output(f, name, output)
        rows.append({"field": f.name, "z": f.z, "method": name, "focus": focus_score(output)})
        if f.name in keep:
            panels.setdefault(f.name, Panel(f.name, f.z, f.input)).outputs[name] = output
    return rows, list(panels.values())


def _ci(values: Sequence[float], seed: int) -> dict[str, float | int]:
    return bootstrap_ci(values, seed=seed).to_dict()


def summarize(rows: Sequence[Mapping[str, Any]], unpaired: Sequence[Mapping[str, Any]] = (),
              target_focus: Sequence[float] = (), meta: Mapping[str, Any] | None = None,
              seed: int = 0) -> dict[str, Any]:
    """Per (z, method): mean and bootstrap 95% interval of each metric over fields, and the
    paired difference to identity on the same fields (the honest "does it help" number)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    zs = sorted({r["z"] for r in rows}, key=lambda z: (z is None, z))
    by_key = {(r["field"], r["z"], r["method"]): r for r in rows}
    paired = []
    for z in zs:
        for method in methods:
            group = [r for r in rows if r["z"] == z and r["method"] == method]
            if not group:
                continue
            record: dict[str, Any] = {"z": z, "method": method}
            record.update({m: _ci([r[m] for r in group], seed) for m in SUMMARY_METRICS})
            base = [(r, by_key.get((r["field"], z, "identity"))) for r in group]
            base = [(r, b) for r, b in base if b is not None]
            if method != "identity" and base:
                record["delta_vs_identity"] = {
                    m: _ci([r[m] - b[m] for r, b in base], seed) for m in ("psnr", "ssim")}
            paired.append(record)
    focus = [{"method": m, "focus": _ci([r["focus"] for r in unpaired if r["method"] == m], seed)}
             for m in dict.fromkeys(r["method"] for r in unpaired)]
    summary: dict[str, Any] = {"meta": dict(meta or {}), "methods": methods, "paired": paired,
                               "unpaired": focus}
    if len(target_focus):
        summary["target_focus"] = _ci(target_focus, seed)
    return summary


def _clean(value: Any) -> Any:
    """JSON without NaN/Infinity (not valid JSON): non-finite numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return _clean(value.item())
    return value


def check_outputs(out: str | Path, overwrite: bool) -> Path:
    """Refuse an output folder holding an earlier run unless ``overwrite`` (before any work)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RefocusError(out, "exists and is not a folder")
    if not overwrite:
        for name in OUTPUT_NAMES:
            if (out / name).exists():
                raise RefocusError(out / name, "exists already (use --overwrite to replace it)")
    return out


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
              overwrite: bool = False) -> Path:
    """Rows as CSV (missing values empty), written atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    return path


def write_results(out: str | Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                  panels: Mapping[int | None, Sequence[Panel]],
                  unpaired_rows: Sequence[Mapping[str, Any]] = (),
                  unpaired_panels: Sequence[Panel] = (), overwrite: bool = False
                  ) -> dict[str, Path]:
    """metrics.csv, unpaired.csv (if any), metrics.json, then the report and its figures."""
    out = check_outputs(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": write_csv(out / "metrics.csv", rows, CSV_COLUMNS, overwrite)}
    if unpaired_rows:
        files["unpaired_csv"] = write_csv(out / "unpaired.csv", unpaired_rows, UNPAIRED_COLUMNS,
                                          overwrite)
    else:  # an overwritten run must not leave the previous run's focus scores behind
        (out / "unpaired.csv").unlink(missing_ok=True)
    files["json"] = out / "metrics.json"
    with atomic_output(files["json"], overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(_clean(summary), indent=2), encoding="utf-8")
    files["report"] = render_report(out, summary, panels, unpaired_panels, overwrite=overwrite)
    files["figures"] = out / "figures"
    return files


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


def load_fields(pairs: Sequence[Pair], limit: int | None = None,
                cache: dict[Path, np.ndarray] | None = None) -> list[EvalField]:
    """Read pairs (:class:`refocus.data.Pair`) into arrays, each file read once (also
    across calls sharing ``cache``: a target serves several z, a field both tuning and
    scoring)."""
    reads = {} if cache is None else cache

    def read(path: Path) -> np.ndarray:
        if path not in reads:
            reads[path] = read_plane(path)
        return reads[path]

    fields = []
    by_field = sorted(pairs, key=lambda p: (str(p.target), p.z if p.z is not None else -1))
    keep = sorted({str(p.target) for p in by_field})[:limit] if limit else None
    for p in by_field:
        if keep is not None and str(p.target) not in keep:
            continue
        name = p.name.rsplit("_z", 1)[0] if p.z is not None else p.name  # field_channel
        fields.append(EvalField(name, p.z, read(p.input), read(p.target)))
    return fields


def unpaired_fields(source: str | Path | Sequence[str | Path]) -> list[EvalField]:
    """Images without a target (a folder or a list of files); z taken from BBBC006 names."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise RefocusError(folder, "unpaired-image folder not found")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise RefocusError(folder, "no TIFF or PNG images")
    else:
        paths = [Path(p) for p in source]
    fields = []
    for path in paths:
        plane = plane_from_path(path)
        if plane is None:
            fields.append(EvalField(path.stem, None, read_plane(path), source=path))
        else:  # BBBC006 names carry a uuid; the field, channel and z say it all
            name = f"{plane.field}_{plane.channel}_z{plane.z:02d}"
            fields.append(EvalField(name, plane.z, read_plane(path), source=path))
    return fields


def training_settings(model_path: str | Path) -> dict[str, Any]:
    """Split fractions, split seed, channels and input z the model file was trained with
    (the split must be the training run's, or "test" may hold training wells)."""
    from refocus.modelfile import read_model_file

    payload = read_model_file(model_path)
    prov, config = payload["provenance"], payload["train_config"]
    channel = prov.get("channel") or config.get("channel") or "w1"
    return {
        "fractions": tuple(prov.get("fractions") or config.get("fractions") or (0.8, 0.1, 0.1)),
        "seed": int(prov.get("split_seed", config.get("seed", 0))),
        "channels": (channel,) if isinstance(channel, str) else tuple(channel),
        "input_z": prov.get("input_z") or config.get("input_z"),
    }


def data_optics(data: str | Path) -> tuple[Optics, str]:
    """The optics whose PSF deconvolution should use for a data folder, and why.

    A simulated folder records the optics it was blurred with (``simulation.json``); using
    them gives RL and Wiener the exact PSF. Real data gets the calibrated BBBC006 defaults.
    """
    from refocus.simulate.layout import MANIFEST

    manifest = Path(data) / MANIFEST
    if manifest.is_file():
        try:
            return Optics(**json.loads(manifest.read_text())["optics"]), f"{manifest} (exact)"
        except (ValueError, KeyError, TypeError) as exc:
            raise RefocusError(manifest, f"unreadable simulation settings ({exc})") from exc
    return Optics(), "refocus.simulate.Optics() defaults (calibrated on real BBBC006 z=00)"


def model_name(path: str | Path, taken: Iterable[str]) -> str:
    """``model_2`` style name for a second model, or its file stem when that is distinct."""
    stem = Path(path).stem
    return stem if stem not in {*taken, "model", "identity"} else "model_2"


def evaluate(model: str | Path | Refocuser, data: str | Path, layout: str = "bbbc006",
             input_z: Sequence[int] = DEFAULT_INPUT_Z, target_z: int = BEST_FOCUS_Z,
             split: str = "test", out: str | Path = "evaluation",
             second_model: str | Path | None = None, *,
             unpaired: str | Path | Sequence[str | Path] | None = None,
             channels: Sequence[str] | None = None,
             fractions: tuple[float, float, float] | None = None, seed: int | None = None,
             max_fields: int | None = None,
             max_val_fields: int = 3, rl_candidates: Sequence[int] = baselines.RL_CANDIDATES,
             optics: Optics | None = None, device: str | None = None, n_panels: int = 3,
             overwrite: bool = False, progress: bool = True,
             on_unpaired: OutputSink | None = None) -> Evaluation:
    """Evaluate a model against identity, Richardson-Lucy and Wiener on a data folder.

    ``model`` is a model file or a :class:`refocus.predict.Refocuser` loaded from one (so
    a caller that predicts more keeps one prepared model).
    ``fractions``, ``seed`` and ``channels`` default to the ones stored in the model file,
    so the test split holds only wells the model never saw. Deconvolution uses the PSF of
    ``optics``, by default those in the folder's ``simulation.json`` if it was simulated
    (:func:`data_optics`). RL is tuned on up to ``max_val_fields`` fields of the validation
    split; ``max_fields`` caps the evaluated fields and the unpaired images (quick looks).
    """
    out = check_outputs(out, overwrite)
    model_path = model if isinstance(model, (str, Path)) else model.source
    if model_path is None:
        raise ValueError("a Refocuser given to evaluate must come from a model file")
    for path in (model_path, second_model):
        if path is not None and not Path(path).is_file():
            raise RefocusError(path, "model file not found")
    trained = training_settings(model_path)
    fractions = fractions or trained["fractions"]
    seed = trained["seed"] if seed is None else seed
    channels = channels or trained["channels"]
    every = build_pairs(data, layout, input_z, target_z, channels)  # one scan of the folder
    splits = {"all": every, **split_pairs(every, fractions, seed)}
    pairs = splits[split]
    if not pairs:
        raise RefocusError(data, f"no pairs in the {split!r} split")
    reads: dict[Path, np.ndarray] = {}
    fields = load_fields(pairs, max_fields, reads)
    optics, optics_source = (optics, "given") if optics is not None else data_optics(data)
    deconv = Deconvolution(optics)
    if layout == "bbbc006":
        deconv.tune(load_fields(splits["val"], max_val_fields, reads), rl_candidates, progress)
    methods = baseline_methods(deconv) if deconv.iterations else {
        "identity": baseline_methods(deconv)["identity"]}
    methods["model"] = model_method(model, device)
    if second_model is not None:
        methods[model_name(second_model, methods)] = model_method(second_model, device)
    meta = {
        "model": str(model_path), "second_model": None if second_model is None else
        str(second_model), "data": str(data), "layout": layout, "split": split,
        "input_z": list(input_z) if layout == "bbbc006" else None, "target_z": target_z,
        "fields": len({f.name for f in fields}), "rl_iterations": deconv.iterations,
        "rl_tuning_psnr": deconv.tuning, "fractions": list(fractions), "seed": seed,
        "model_trained_on_z": trained["input_z"], "psf_optics": optics_source,
    }
    if not deconv.iterations:
        meta["deconvolution"] = "skipped: no z (hence no PSF) or no validation fields"
    warnings = []
    if split == "val":
        warnings.append("RL iterations were tuned on the evaluated (validation) fields")
    if second_model is not None:
        other = training_settings(second_model)
        if (other["fractions"], other["seed"]) != (tuple(fractions), seed):
            warnings.append(f"{second_model} was trained with another split "
                            f"(fractions {list(other['fractions'])}, seed {other['seed']}): "
                            "some evaluated fields may be its training fields")
    if warnings:
        meta["warnings"] = warnings
    extra = unpaired_fields(unpaired)[:max_fields] if unpaired is not None else []
    return evaluate_fields(fields, methods, out, extra, meta, n_panels, overwrite, progress,
                           seed, on_unpaired)
