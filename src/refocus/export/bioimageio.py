"""Take a trained model to other tools: TorchScript, ONNX, or a bioimage.io model package.

Every export is checked before it is kept: the exported network and the PyTorch network
refocus the same real defocused BBBC006 field (normalised as in training, 520x696, so not
a multiple of the encoder's 32-px stride and the padding path is exercised too), and the
largest absolute difference is reported.

- TorchScript: the network is traced on a 32-px-aligned input (where its internal padding
  is a no-op) and wrapped in a small *scripted* module that pads to the 32-px grid and
  crops back, so the file accepts any height and width, not only the traced one.
- ONNX: exported through ``torch.export`` with symbolic batch, height and width, so the
  padding arithmetic stays symbolic and the file accepts any size.
- bioimage.io (spec 0.5): both files above, plus what runs the model in deepImageJ, ilastik
  or napari without refocus installed: the percentile normalisation as declared
  preprocessing, the halo, test input/output tensors, a cover, documentation and
  citations. The package is validated with ``bioimageio.spec`` without network access.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from refocus.archs.padding import MULTIPLE
from refocus.convert import INPUT_NAME, OUTPUT_NAME, RUNNERS, export_onnx, export_torchscript
from refocus.errors import RefocusError
from refocus.images import atomic_output, prepare_destination, read_plane
from refocus.samples import z00_paths

if TYPE_CHECKING:
    from refocus.data.normalize import PercentileNormalizer
    from refocus.modelfile import LoadedModel

FORMATS = ("torchscript", "onnx", "bioimageio")

#: Exported files must match PyTorch this closely on the normalised sample (0..1 scale).
TOLERANCE = 1e-3

REFOCUS_CITATION = (
    "Tian Y. ReFocus: Making Out-of-Focus Microscopy Images In-Focus Again (2019). "
    "U-Net with a ResNet encoder trained on BBBC006 with a feature loss.",
    "https://www.ytiancompbio.com/refocus-making-out-of-focus-microscopy-images-in-focus-again/",
)
BBBC006_CITATION = (
    "Ljosa V, Sokolnicki KL, Carpenter AE. Annotated high-throughput microscopy image sets "
    "for validation. Nature Methods 9:637 (2012). Image set BBBC006v1, Broad Bioimage "
    "Benchmark Collection.",
    "10.1038/nmeth.2083",
)


@dataclass(frozen=True)
class ExportReport:
    """Where an export went and how closely each exported runtime matches PyTorch."""

    format: str
    path: Path
    sample: str
    max_abs_diff: dict[str, float]
    validation: str | None = None
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.format}: {self.path}"]
        out += [
            f"  {runtime} vs PyTorch on {self.sample}: max abs diff {diff:.2e}"
            for runtime, diff in self.max_abs_diff.items()
        ]
        if self.validation is not None:
            out.append(f"  bioimageio.spec validation: {self.validation}")
        out += [f"  warning: {w}" for w in self.warnings]
        return out






def _checked(runtime: str, path: Path, x: np.ndarray, reference: np.ndarray) -> float:
    """Max abs difference between the exported file and PyTorch; refuse a bad export."""
    y = RUNNERS[runtime](path, x)
    diff = float(np.max(np.abs(y.astype(np.float64) - reference.astype(np.float64))))
    if not diff <= TOLERANCE:
        raise RefocusError(path, f"{runtime} export differs from PyTorch by {diff:.3g} "
                                 f"(tolerance {TOLERANCE:g}); not kept")
    return diff


# --- the model-file level ------------------------------------------------------------


def sample_input(normalizer: PercentileNormalizer, sample: str | os.PathLike[str]) -> np.ndarray:
    """A real plane normalised as in training, shaped (1, 1, H, W) float32."""
    return _normalised(normalizer, read_plane(sample))


def _normalised(normalizer: PercentileNormalizer, raw: np.ndarray) -> np.ndarray:
    """``raw`` as the network sees it in training, shaped (1, 1, H, W) float32."""
    return normalizer(raw)[None, None].astype(np.float32)


def pytorch_output(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The reference: the PyTorch network in float32 eager mode."""
    with torch.no_grad():
        return model.eval()(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def export_model(
    model_path: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    sample: str | os.PathLike[str] | None = None,
) -> ExportReport:
    """Export a model file to ``fmt`` at ``out``, checked against PyTorch on ``sample``.

    ``sample`` defaults to the first shipped real defocused BBBC006 field. Nothing is
    written under ``out`` unless the check passes (and, for bioimage.io, validation).
    """
    from refocus.modelfile import load_model

    if fmt not in FORMATS:
        raise RefocusError(None, f"unknown format {fmt!r} (choose {', '.join(FORMATS)})")
    out = Path(out)
    prepare_destination(out, overwrite)
    loaded = load_model(model_path, device="cpu")
    sample = Path(sample) if sample is not None else z00_paths()[0]
    raw = read_plane(sample)  # decoded once: bioimage.io also cuts its test tensors from it
    x = _normalised(loaded.normalizer, raw)
    reference = pytorch_output(loaded.model, x)
    if fmt == "bioimageio":
        return export_bioimageio(loaded, out, sample, raw, x, reference, overwrite=overwrite)
    with atomic_output(out, overwrite=overwrite) as tmp:
        if fmt == "torchscript":
            export_torchscript(loaded.model, tmp)
        else:
            export_onnx(loaded.model, tmp)
        diff = _checked(fmt, tmp, x, reference)
    return ExportReport(fmt, out, sample.name, {fmt: diff})


# --- bioimage.io ---------------------------------------------------------------------


def bioimageio_normalise(image: np.ndarray, normalizer: PercentileNormalizer) -> np.ndarray:
    """The declared ``scale_range`` preprocessing, computed as the spec defines it."""
    lo, hi = normalizer.percentiles(image)
    return ((image.astype(np.float64) - lo) / (hi - lo + normalizer.eps)).astype(np.float32)


def _display(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, (0.5, 99.8))
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _cover(raw: np.ndarray, refocused: np.ndarray) -> np.ndarray:
    """Input | output side by side (2:1, as bioimage.io recommends), each contrast-stretched."""
    gap = np.full((raw.shape[0], 4), 255, np.uint8)
    return np.concatenate([_display(raw), gap, _display(refocused)], axis=1)


def _documentation(
    loaded: LoadedModel, halo: int, min_size: int, diffs: dict[str, float], checked_on: str
) -> str:
    arch = loaded.arch.get("arch", "resnet")
    norm = loaded.normalizer
    diff_lines = "\n".join(f"- {k}: max abs difference {v:.2e}" for k, v in diffs.items())
    provenance = "\n".join(f"- {k}: {v}" for k, v in sorted(loaded.provenance.items()))
    return f"""# refocus U-Net ({arch})

Makes out-of-focus widefield fluorescence images of nuclei (Hoechst 33342, U2OS cells,
20x) sharp again: a U-Net with a {arch} encoder and a fastai-style decoder, trained on
pairs of defocused and best-focus planes (BBBC006 layout; see provenance below),
following the ReFocus method (Tian 2019).

## Input and output

- Input `input`: one grey plane, axes (batch, channel, y, x), raw intensities as float32.
  Height and width: at least {min_size} px, in steps of 32 (the encoder's stride).
- Preprocessing (declared): each plane is scaled so that its percentile {norm.low:g} maps
  to 0 and its percentile {norm.high:g} to 1 (`scale_range`, axes y and x), exactly as in
  training.
- Output `output`: the refocused plane in those normalised units (background 0, bright
  nuclei around 1). The `refocus` package additionally rescales it to the input's
  intensities so that the integrated flux above background is conserved; tools running
  this package show the normalised image.
- Halo: {halo} px on each side. Tiles should overlap by at least twice that; the
  receptive radius holding 99% of an output pixel's input gradient was measured on the
  trained network.

## Validation

The exported weights were run on {checked_on}, normalised as in training, and compared
with the PyTorch network:

{diff_lines}

To validate on your own data, image the same field in focus and out of focus and compare
the refocused image with the in-focus one (`refocus evaluate` reports PSNR, SSIM and
focus scores against such references, and against the unrefocused input as a baseline).

## Training data and provenance

{provenance or "- (not recorded in the model file)"}

## Limitations

Trained on one cell line, one stain and one microscope: other samples, stains,
magnifications or defocus ranges need their own validation, and refocused images must not
replace in-focus acquisitions for quantitative conclusions without it. Detail that the
defocus has removed cannot be recovered, only estimated.

## Citations

- {REFOCUS_CITATION[0]} {REFOCUS_CITATION[1]}
- {BBBC006_CITATION[0]} doi:{BBBC006_CITATION[1]}
"""


def _model_description(
    folder: Path, loaded: LoadedModel, halo: int, min_size: int, opset: int
) -> object:
    from bioimageio.spec.model import v0_5 as b

    norm = loaded.normalizer
    space = b.ParameterizedSize(min=min_size, step=MULTIPLE)
    inputs = [b.InputTensorDescr(
        id=b.TensorId(INPUT_NAME),
        description="defocused fluorescence plane (raw intensities)",
        axes=[b.BatchAxis(), b.ChannelAxis(channel_names=[b.Identifier("nuclei")]),
              b.SpaceInputAxis(id=b.AxisId("y"), size=space),
              b.SpaceInputAxis(id=b.AxisId("x"), size=space)],
        test_tensor=b.FileDescr(source=folder / "test_input.npy"),
        sample_tensor=b.FileDescr(source=folder / "sample_input.png"),
        data=b.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[b.ScaleRangeDescr(kwargs=b.ScaleRangeKwargs(
            axes=[b.AxisId("y"), b.AxisId("x")], min_percentile=norm.low,
            max_percentile=norm.high, eps=norm.eps))],
    )]
    outputs = [b.OutputTensorDescr(
        id=b.TensorId(OUTPUT_NAME),
        description="refocused plane, percentile-normalised units",
        axes=[b.BatchAxis(), b.ChannelAxis(channel_names=[b.Identifier("nuclei")]),
              *(b.SpaceOutputAxisWithHalo(
                  id=b.AxisId(a), halo=halo,
                  size=b.SizeReference(tensor_id=b.TensorId(INPUT_NAME), axis_id=b.AxisId(a)))
                for a in "yx")],
        test_tensor=b.FileDescr(source=folder / "test_output.npy"),
        sample_tensor=b.FileDescr(source=folder / "sample_output.png"),
        data=b.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[b.EnsureDtypeDescr(kwargs=b.EnsureDtypeKwargs(dtype="float32"))],
    )]
    arch = loaded.arch.get("arch", "resnet")
    return b.ModelDescr(
        name=f"refocus U-Net {arch} BBBC006 nuclei",
        description="Refocuses out-of-focus widefield fluorescence images of nuclei "
                    "(U-Net with a ResNet encoder, ReFocus method, trained on BBBC006).",
        authors=[b.Author(name="refocus developers")],
        cite=[b.CiteEntry(text=REFOCUS_CITATION[0], url=REFOCUS_CITATION[1]),
              b.CiteEntry(text=BBBC006_CITATION[0], doi=BBBC006_CITATION[1])],
        license=b.LicenseId("BSD-3-Clause"),
        documentation=b.FileDescr(source=folder / "README.md"),
        covers=[b.FileDescr(source=folder / "cover.png")],
        tags=["refocusing", "deblurring", "image-restoration", "fluorescence-light-microscopy",
              "nuclei", "u-net", "2d", "pytorch", "bbbc006"],
        inputs=inputs,
        outputs=outputs,
        weights=b.WeightsDescr(
            torchscript=b.TorchscriptWeightsDescr(
                source=folder / "weights_torchscript.pt",
                pytorch_version=b.Version(torch.__version__.split("+")[0])),
            onnx=b.OnnxWeightsDescr(source=folder / "weights.onnx", opset_version=opset,
                                    parent="torchscript"),
        ),
    )


def validate_bioimageio(path: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """Validate a bioimage.io package with ``bioimageio.spec``: (status, problems).

    Files inside the package are read and hashed; the one web link (the ReFocus
    citation) is only a warning when it cannot be reached, so this works offline.
    """
    from bioimageio.spec import load_description

    descr = load_description(Path(path), perform_io_checks=True)
    summary = descr.validation_summary
    problems = [f"{e.loc}: {e.msg}" for d in summary.details for e in d.errors]
    problems += [f"{w.loc}: {w.msg}" for d in summary.details for w in d.warnings]
    return summary.status, problems


def export_bioimageio(
    loaded: LoadedModel,
    out: Path,
    sample: Path,
    raw: np.ndarray,
    x: np.ndarray,
    reference: np.ndarray,
    *,
    overwrite: bool = False,
) -> ExportReport:
    """Write and validate a bioimage.io model package (zip) at ``out``.

    ``raw`` is the plane read from ``sample``, ``x`` it normalised and ``reference`` the
    PyTorch output for it; the test tensors are a central crop of ``raw``.
    """
    import imageio.v3 as iio
    from bioimageio.spec import save_bioimageio_package

    from refocus.inference.refocuser import receptive_radius

    model = loaded.model.eval()
    halo = receptive_radius(model, torch.device("cpu"))
    min_size = max(2 * MULTIPLE, -(-(2 * halo + MULTIPLE) // MULTIPLE) * MULTIPLE)
    raw = raw.astype(np.float32)
    side = min(raw.shape)
    side = max(min_size, min(256, side) // MULTIPLE * MULTIPLE)
    if side > min(raw.shape):
        raise RefocusError(sample, f"sample too small for a {side} px test tensor")
    top, left = (raw.shape[0] - side) // 2, (raw.shape[1] - side) // 2
    test_raw = raw[top : top + side, left : left + side][None, None]
    test_out = pytorch_output(model, bioimageio_normalise(test_raw, loaded.normalizer))

    with tempfile.TemporaryDirectory(prefix="refocus-bioimageio-") as tmpdir:
        folder = Path(tmpdir)
        export_torchscript(model, folder / "weights_torchscript.pt")
        opset = export_onnx(model, folder / "weights.onnx")
        diffs = {rt: _checked(rt, folder / f, x, reference)
                 for rt, f in (("torchscript", "weights_torchscript.pt"), ("onnx", "weights.onnx"))}
        np.save(folder / "test_input.npy", test_raw)
        np.save(folder / "test_output.npy", test_out)
        iio.imwrite(folder / "sample_input.png", _display(test_raw[0, 0]))
        iio.imwrite(folder / "sample_output.png", _display(test_out[0, 0]))
        iio.imwrite(folder / "cover.png", _cover(test_raw[0, 0], test_out[0, 0]))
        checked_on = f"{sample.name} ({raw.shape[0]}x{raw.shape[1]} px)"
        (folder / "README.md").write_text(
            _documentation(loaded, halo, min_size, diffs, checked_on))
        descr = _model_description(folder, loaded, halo, min_size, opset)
        package = folder / "package.zip"
        with warnings.catch_warnings():  # bioimageio.spec's notes on its own file scan
            warnings.filterwarnings("ignore", message="Found mapping with 'source'")
            save_bioimageio_package(descr, output_path=package)
        status, problems = validate_bioimageio(package)
        if status not in ("valid-format", "passed"):
            raise RefocusError(out, "bioimage.io package failed validation: " + "; ".join(problems))
        with atomic_output(out, overwrite=overwrite) as tmp:
            shutil.move(package, tmp)
    return ExportReport("bioimageio", out, sample.name, diffs, status, problems)
