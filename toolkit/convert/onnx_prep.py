"""What runs on an ONNX graph before onnxruntime's quantize_static: ORT's pre-processing, kept
out of the working directory, and entropy (KL) activation ranges computed with enough bins."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


# ORT's quantize_static builds its entropy calibrator with 128 histogram bins and 128
# quantized bins, and no option reaches them: the KL search then has one candidate, the full
# range, so its "entropy" wrote min-max's very file (every row of RESULTS.md's main PTQ table).
# TensorRT's 2048 / 128 is the KL calibration users mean; the ranges reach quantize_static
# through its calibration cache.
ENTROPY_BINS = {"num_bins": 2048, "num_quantized_bins": 128}


def entropy_cache(source: Path, calibration: np.ndarray, input_name: str, where: Path) -> Path:
    """KL-calibrated tensor ranges of `source`, saved as quantize_static's calibration cache."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        create_calibrator,
        save_tensors_data,
    )
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from toolkit.convert.onnx import calibration_reader

    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # quantize_static's default
    calibrator = create_calibrator(
        source, ops, augmented_model_path=str(where / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy, extra_options=ENTROPY_BINS,
    )  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        calibrator.collect_data(calibration_reader(input_name, calibration, even=True))
        ranges = calibrator.compute_data()
    cache = where / "entropy-ranges.json"
    save_tensors_data(ranges, cache)
    return cache


def pre_process(fp32_path: Path, out: Path, scratch: Path) -> bool:
    """ORT's shape inference + graph cleanup, which the quantizer runs better after (and
    without). Symbolic shape inference first; where it cannot finish (vit_tiny's attention
    reshapes) it dumps sym_shape_infer_temp.onnx and a .data file into the working
    directory, so it runs inside `scratch`, and ONNX's own shape inference is tried next."""
    from onnxruntime.quantization import quant_pre_process

    src, dst = str(fp32_path.resolve()), str(out.resolve())
    for symbolic in (True, False):
        try:
            with contextlib.chdir(scratch):
                quant_pre_process(src, dst, skip_symbolic_shape=not symbolic)
            return True
        except Exception as exc:
            log.info("quant_pre_process (symbolic=%s) failed: %s", symbolic, exc)
    return False
