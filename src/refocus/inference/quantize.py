"""int8 ONNX graphs: ONNX Runtime static quantisation calibrated on real defocused fields.

Static quantisation fixes every activation's int8 scale from a calibration set, so the
calibration must look like what the network will see: the shipped real z=00 fields
(:func:`refocus.samples.z00_paths`), percentile-normalised as prediction does. Weights are
quantised per output channel (QInt8), activations per tensor (QUInt8, min/max), in the QDQ
format ONNX Runtime fuses into integer convolutions (VNNI/AMX on recent x86 CPUs). Whether
the result is good enough for a given model is decided elsewhere, by measurement
(:mod:`refocus.inference.budget`); nothing here assumes it is.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from refocus.convert import INPUT_NAME
from refocus.guides import Guide, guide_input

#: Calibration crops: the centre of each of this many real fields, this many pixels wide
#: (activation ranges depend on content, not on size; small crops keep calibration quick).
CALIBRATION_FIELDS = 8
CALIBRATION_CROP = 192


def calibration_inputs(count: int | None = None, crop: int | None = None,
                       guide: Guide | None = None) -> list[np.ndarray]:
    """(1, C, crop, crop) float32 centre crops of the first ``count`` shipped z=00 fields
    (default :data:`CALIBRATION_FIELDS`, :data:`CALIBRATION_CROP`), normalised with the
    default percentile normaliser; with a ``guide``, each whole field's guide channel too
    (C = 2, :func:`refocus.guides.guide_input`)."""
    from refocus.data.normalize import PercentileNormalizer
    from refocus.images import read_plane
    from refocus.samples import z00_paths

    count = CALIBRATION_FIELDS if count is None else count
    crop = CALIBRATION_CROP if crop is None else crop
    normalizer = PercentileNormalizer()
    out = []
    for path in z00_paths()[:count]:
        raw = read_plane(path)
        field = guide_input(guide, normalizer(raw), raw)
        top, left = max((field.shape[1] - crop) // 2, 0), max((field.shape[2] - crop) // 2, 0)
        piece = field[:, top : top + crop, left : left + crop]
        out.append(np.ascontiguousarray(piece, dtype=np.float32)[None])
    return out


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantiser logs hints (pre-processing, BatchNorm axes) on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(fp32: Path, out: Path, inputs: list[np.ndarray] | None = None) -> None:
    """Write the int8 (QDQ) version of the ONNX graph ``fp32`` to ``out``, calibrated on
    ``inputs`` (default :func:`calibration_inputs`)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = iter(calibration_inputs() if inputs is None else inputs)

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(batches, None)
            return None if x is None else {INPUT_NAME: x}

    fp32, out = Path(fp32).resolve(), Path(out).resolve()
    # chdir: ONNX Runtime's shape inference saves a failed model (with >100 MB of external
    # data) into the working directory; it must land in the temporary folder instead.
    with tempfile.TemporaryDirectory(prefix="refocus-int8-") as tmp, _quiet_quantizer(), \
            contextlib.chdir(tmp):
        source = Path(tmp) / "pre.onnx"
        try:  # folds BatchNorm into convolutions first, so more of the graph quantises
            quant_pre_process(str(fp32), str(source), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 (an optimisation: quantise the graph as it is)
            source = fp32
        quantize_static(
            str(source), str(out), Reader(), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
