"""A model file as a bioimage.io model package (spec 0.5), to run without refocus installed.

The package holds TorchScript and ONNX weights (:mod:`refocus.convert`, each checked
against PyTorch by :mod:`refocus.export.check`) plus what deepImageJ, ilastik or napari
need: the percentile normalisation as declared preprocessing, the halo, test input/output
tensors, a cover, documentation and citations. It is validated with ``bioimageio.spec``
without network access before it is kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from refocus.archs.padding import MULTIPLE
from refocus.convert import INPUT_NAME, OUTPUT_NAME, export_onnx, export_torchscript
from refocus.errors import RefocusError
from refocus.export.check import ExportReport, Reference, pytorch_output
from refocus.export.formats import EXPORT_FORMATS
from refocus.images import atomic_output
from refocus.inference.receptive import receptive_radius

if TYPE_CHECKING:
    from refocus.data.normalize import PercentileNormalizer
    from refocus.modelfile import LoadedModel

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
#: The runtimes in the package and their file names inside it.
WEIGHT_FILES = {"torchscript": "weights_torchscript.pt", "onnx": "weights.onnx"}


def bioimageio_normalise(image: np.ndarray, normalizer: PercentileNormalizer) -> np.ndarray:
    """The declared ``scale_range`` preprocessing, computed as the spec defines it."""
    lo, hi = normalizer.percentiles(image)
    return ((image.astype(np.float64) - lo) / (hi - lo + normalizer.eps)).astype(np.float32)


def _display(image: np.ndarray) -> np.ndarray:
    """An 8-bit contrast-stretched view, for the sample images and the cover."""
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
    """The package's description (rdf.yaml): tensors with their axes, preprocessing and
    halo, the two weight files, tags and citations."""
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
                source=folder / WEIGHT_FILES["torchscript"],
                pytorch_version=b.Version(torch.__version__.split("+")[0])),
            onnx=b.OnnxWeightsDescr(source=folder / WEIGHT_FILES["onnx"], opset_version=opset,
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


def _test_tensors(
    model: nn.Module, normalizer: PercentileNormalizer, raw: np.ndarray, min_size: int,
    where: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """A central square of ``raw`` on the 32-px grid (raw intensities, as the package's
    input) and the PyTorch output for it after the declared preprocessing."""
    raw = raw.astype(np.float32)
    side = max(min_size, min(256, min(raw.shape)) // MULTIPLE * MULTIPLE)
    if side > min(raw.shape):
        raise RefocusError(where, f"sample too small for a {side} px test tensor")
    top, left = (raw.shape[0] - side) // 2, (raw.shape[1] - side) // 2
    test_raw = raw[top : top + side, left : left + side][None, None]
    return test_raw, pytorch_output(model, bioimageio_normalise(test_raw, normalizer))


def _write_files(
    folder: Path, model: nn.Module, reference: Reference, test_raw: np.ndarray,
    test_out: np.ndarray,
) -> tuple[dict[str, float], int]:
    """The weight files (checked: max abs diff per runtime), the test tensors and the
    images; returns the diffs and the ONNX opset."""
    import imageio.v3 as iio

    export_torchscript(model, folder / WEIGHT_FILES["torchscript"])
    opset = export_onnx(model, folder / WEIGHT_FILES["onnx"])
    diffs = {rt: reference.check(rt, folder / name) for rt, name in WEIGHT_FILES.items()}
    np.save(folder / "test_input.npy", test_raw)
    np.save(folder / "test_output.npy", test_out)
    iio.imwrite(folder / "sample_input.png", _display(test_raw[0, 0]))
    iio.imwrite(folder / "sample_output.png", _display(test_out[0, 0]))
    iio.imwrite(folder / "cover.png", _cover(test_raw[0, 0], test_out[0, 0]))
    return diffs, opset


@EXPORT_FORMATS.register("bioimageio")
def export_bioimageio(
    loaded: LoadedModel, out: Path, reference: Reference, *, overwrite: bool = False
) -> ExportReport:
    """Write and validate a bioimage.io model package (zip) at ``out``; the test tensors
    are a central crop of the reference plane."""
    from bioimageio.spec import save_bioimageio_package

    if loaded.guide is not None:  # bioimage.io preprocessing has no PSF estimate nor Wiener
        raise RefocusError(out, f"a bioimage.io package cannot compute this model's "
                                f"{loaded.guide.name!r} guide channel; export torchscript or "
                                "onnx (input: the image and its guide)")
    model = loaded.model.eval()
    halo = receptive_radius(model, torch.device("cpu"))
    min_size = max(2 * MULTIPLE, -(-(2 * halo + MULTIPLE) // MULTIPLE) * MULTIPLE)
    raw, sample = reference.raw, reference.sample
    test_raw, test_out = _test_tensors(model, loaded.normalizer, raw, min_size, sample)
    with tempfile.TemporaryDirectory(prefix="refocus-bioimageio-") as tmpdir:
        folder = Path(tmpdir)
        diffs, opset = _write_files(folder, model, reference, test_raw, test_out)
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
