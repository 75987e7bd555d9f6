"""What runs on an ONNX graph before onnxruntime's quantize_static: ORT's pre-processing, kept
out of the working directory, the calibration reader, and entropy (KL) activation ranges
computed with enough bins."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
_CALIBRATION_BATCH = 16


def even_batch(n: int, most: int = _CALIBRATION_BATCH) -> int:
    """The largest batch size <= `most` that splits `n` samples into equal batches."""
    return next(b for b in range(min(most, max(n, 1)), 0, -1) if n % b == 0)


def calibration_reader(input_name: str, data: np.ndarray, even: bool = False) -> Any:
    """A CalibrationDataReader over the array, in small batches (the batch dim is symbolic).

    `even`: batches of one size. ORT's histogram calibrators (percentile, entropy) stack every
    batch of a tensor into one array and fail on a short last one ("inhomogeneous shape": 44
    BasicMotions windows in 16s)."""
    from onnxruntime.quantization import CalibrationDataReader

    size = even_batch(len(data)) if even else _CALIBRATION_BATCH

    class ArrayReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._iter = self._batches()

        def _batches(self) -> Iterator[dict[str, np.ndarray]]:
            for start in range(0, len(data), size):
                yield {input_name: data[start : start + size]}

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._iter, None)

        def rewind(self) -> None:
            self._iter = self._batches()

    return ArrayReader()


# ORT's quantize_static builds its entropy calibrator with 128 histogram bins and 128
# quantized bins, and no option reaches them: the KL search then has one candidate, the full
# range, so its "entropy" wrote min-max's very file (every row of RESULTS.md's main PTQ table).
# ORT's collector gathers the histograms (4096 bins over [-t, t]: TensorRT's 2048 of |x|);
# toolkit.convert.kl_ranges searches them, since ORT's own search collapses post-ReLU ranges;
# the ranges reach quantize_static through its calibration cache.
ENTROPY_BINS = {"num_bins": 4096, "num_quantized_bins": 128}


def entropy_cache(source: Path, calibration: np.ndarray, input_name: str, where: Path) -> Path:
    """KL-calibrated tensor ranges of `source`, saved as quantize_static's calibration cache."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorsData,
        create_calibrator,
        save_tensors_data,
    )
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from toolkit.convert.kl_ranges import kl_range

    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # quantize_static's default
    calibrator = create_calibrator(
        source, ops, augmented_model_path=str(where / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy, extra_options=ENTROPY_BINS,
    )  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        calibrator.collect_data(calibration_reader(input_name, calibration, even=True))
    ranges = {}
    for name, (hist, edges, low, high, *_) in calibrator.collector.histogram_dict.items():
        lo, hi = kl_range(hist, edges, float(low), float(high))
        ranges[name] = (np.float32(lo), np.float32(hi), hist, edges)
    cache = where / "entropy-ranges.json"
    save_tensors_data(TensorsData(CalibrationMethod.Entropy, ranges), cache)
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
