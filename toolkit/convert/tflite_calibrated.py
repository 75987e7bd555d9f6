"""Calibrate once, quantize per type: int8, int8-float-io, uint8 and int16x8 share one calibration.

TFLiteConverter's full-integer path is convert-to-float, run the calibration samples through
the float model (the slow part: ~0.18 s per 224x224 image on MobileNetV2 here, 45 s for the
default 256 samples), then `mlir_quantize` the calibrated model for the requested input and
output types. The three int8 artifacts differ only in that last step, so the calibrated model
is kept (for the last model state and calibration set) and quantized three times. The result
equals the converter's own output in every tensor, buffer and quantization parameter; only the
CONVERSION_METADATA buffer differs (tests/test_convert.py).

int16x8 goes through the converter's older quantizer (`Calibrator.QuantizeModel`), which the
converter calls after feeding the samples again: 70 s on MobileNetV2-224, for statistics the
calibrated model already holds. Quantizing the calibrated model with that quantizer directly
gives the converter's int16x8 file tensor for tensor (tests/test_convert.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

SHARED = ("int8", "int8-float-io", "uint8")  # the MLIR quantizer; ranges= applies
CALIBRATED = (*SHARED, "int16x8")  # every precision quantized from the shared calibration
_LAST: list[tuple[tuple[Any, ...], bytes]] = []  # (key, calibrated float model)
_TUNED: list[tuple[tuple[Any, ...], bytes]] = []  # (key + ranges method, retuned model)


def key(model: Any, calibration: np.ndarray, signature: Sequence[Any] | None) -> tuple:
    """What the calibrated model depends on: the model's state, the data, the signature."""
    from toolkit.core.model_stats import weights_digest

    data = hashlib.sha256(np.ascontiguousarray(calibration, np.float32).tobytes()).hexdigest()
    shown = None if signature is None else [(tuple(s.shape), str(s.dtype)) for s in signature]
    return (id(model), str(model.name), weights_digest(model), data, repr(shown))


def calibrated_model(
    cache_key: tuple, float_io_converter: Callable[[], Any], quiet: Callable[[], Any]
) -> bytes:
    """The float model with calibration statistics, computed once per `cache_key`.

    `float_io_converter()` builds the int8-float-io converter `export_tflite` would use."""
    if _LAST and _LAST[0][0] == cache_key:
        return _LAST[0][1]
    converter = float_io_converter()
    converter._experimental_calibrate_only = True  # what QuantizationDebugger does too
    with quiet():
        calibrated = converter.convert()
    _LAST[:] = [(cache_key, calibrated)]
    return calibrated


def quantize(
    precision: str,
    cache_key: tuple,
    float_io_converter: Callable[[], Any],
    quiet: Callable[[], Any],
    *,
    per_tensor: bool = False,
    ranges: str = "minmax",
    calibration: np.ndarray | None = None,
) -> bytes:
    """The converter's full-integer file for `precision`, from the shared calibration;
    `per_tensor` is the converter's private `_experimental_disable_per_channel`, `ranges` a
    `tflite_ranges` method applied to the calibrated statistics first."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    from toolkit.convert.tflite_ranges import retune

    calibrated = calibrated_model(cache_key, float_io_converter, quiet)
    if precision == "int16x8":
        return _int16x8(calibrated, per_tensor, quiet)
    io_type = {"int8": tf.int8, "uint8": tf.uint8, "int8-float-io": tf.float32}[precision]
    if ranges != "minmax":
        tuned_key = (*cache_key, ranges)
        if _TUNED and _TUNED[0][0] == tuned_key:
            calibrated = _TUNED[0][1]
        else:
            calibrated = retune(calibrated, calibration, ranges)
            _TUNED[:] = [(tuned_key, calibrated)]
    with quiet():
        content = tf_convert.mlir_quantize(calibrated, per_tensor, input_data_type=io_type,
                                           output_data_type=io_type)  # fmt: skip
    return bytes(tf_convert.deduplicate_readonly_buffers(content))


def _int16x8(calibrated: bytes, per_tensor: bool, quiet: Callable[[], Any]) -> bytes:
    """What `converter.convert()` gives for int16x8 (int16 I/O, int64 bias, no float ops),
    from the shared calibrated model instead of a second calibration pass."""
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python.optimize import calibrator

    int16, int64 = np.dtype(np.int16).num, np.dtype(np.int64).num
    quantizer = calibrator.Calibrator(calibrated)
    with quiet():
        content = quantizer._calibrator.QuantizeModel(
            int16, int16, False, int16, int64, per_tensor, False
        )
    return bytes(tf_convert.deduplicate_readonly_buffers(content))
