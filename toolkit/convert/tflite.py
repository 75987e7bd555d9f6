"""Keras 3 model -> `.tflite` at any precision in the format table.

The converter is always built from a concrete function with an explicit input signature
(`TFLiteConverter.from_concrete_functions`): it is the route that holds up on Keras 3 models,
where `from_keras_model` breaks on some graphs. Batch is fixed at 1 by default, which is what
edge delegates (XNNPACK, Edge TPU, NNAPI) prefer; the Runner feeds larger batches sample by
sample.
"""

from __future__ import annotations

import contextlib
import csv
import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.convert import tflite_calibrated
from toolkit.convert import tflite_signature as sig
from toolkit.convert.calibration import (
    ConversionFailed,
    atomic_write_bytes,
    check_calibration,
    check_model,
)
from toolkit.core.errors import UserError

PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "int8-float-io", "uint8", "int16x8")
FULL_INTEGER = ("int8", "int8-float-io", "uint8", "int16x8")
# Precisions where some layers can be kept float through the quantization debugger.
SELECTIVE = ("int8", "int8-float-io", "uint8")
GRANULARITIES = ("per-channel", "per-tensor")


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """Hide two known-benign warnings: int8 I/O 'statistics' and the debugger's use of the
    deprecated tf.lite.Interpreter (it only runs calibration there)."""
    from toolkit.core.quiet import muted_stderr

    with warnings.catch_warnings(), muted_stderr():  # also the C++ "fully_quantize: ..." lines
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
        yield


def representative_dataset(calibration: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """One float32 sample per step, as the TFLite calibrator expects."""
    data = np.asarray(calibration, dtype=np.float32)

    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(len(data)):
            yield [data[i : i + 1]]

    return gen


def make_converter(
    model: Any,
    precision: str,
    *,
    calibration: np.ndarray | None = None,
    input_signature: Sequence[Any] | None = None,
    granularity: str = "per-channel",
) -> Any:
    """A configured `tf.lite.TFLiteConverter` for `precision` (not yet converted).

    Exposed so the quantization debugger and an accuracy-budget ladder can reuse exactly the
    converter `export_tflite` would use.
    """
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise UserError(f"tflite has no {precision!r} precision; choose one of {PRECISIONS}")
    signature = sig.input_signature(model, input_signature)
    if precision in FULL_INTEGER:
        calibration = check_calibration(calibration, signature[0].shape, f"tflite-{precision}")
    # The trackable object is a tf.Module over the model's tf.Variables, not the Keras 3 model
    # (that leaves them unfrozen: NaN outputs); with it the file gets its `serving_default`.
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [sig.concrete_function(model, signature)], sig.variables_holder(model)
    )
    if precision == "fp32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # Per-tensor weights (what many NPUs, DSPs and older accelerators take): only reachable
    # through this private flag in TF 2.21.
    converter._experimental_disable_per_channel = granularity == "per-tensor"
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision in FULL_INTEGER:
        converter.representative_dataset = representative_dataset(calibration)
        if precision == "int16x8":
            ops = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            converter.target_spec.supported_ops = [ops]
            converter.inference_input_type = tf.int16
            converter.inference_output_type = tf.int16
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = {"int8": tf.int8, "uint8": tf.uint8}.get(precision)
            if io_type is not None:
                converter.inference_input_type = io_type
                converter.inference_output_type = io_type
    return converter


def quantization_debugger(
    model: Any,
    calibration: np.ndarray,
    *,
    precision: str = "int8-float-io",
    input_signature: Sequence[Any] | None = None,
    denylisted_nodes: Sequence[str] | None = None,
    denylisted_ops: Sequence[str] | None = None,
    granularity: str = "per-channel",
) -> Any:
    """A `tf.lite.experimental.QuantizationDebugger` over the calibrated int8 model (the
    debugger honours the converter's per-tensor flag, so its statistics are those of the
    granularity that will ship)."""
    import tensorflow as tf

    if precision not in SELECTIVE:
        raise UserError(
            f"per-layer quantization control supports {', '.join(SELECTIVE)}; got {precision!r}"
        )
    converter = make_converter(
        model, precision, calibration=calibration, input_signature=input_signature,
        granularity=granularity,
    )  # fmt: skip
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=list(denylisted_nodes) if denylisted_nodes else None,
        denylisted_ops=list(denylisted_ops) if denylisted_ops else None,
    )
    with _quiet_converter():
        return tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=representative_dataset(calibration),
            debug_options=options,
        )


def layer_sensitivity(
    model: Any,
    calibration: np.ndarray,
    *,
    input_signature: Sequence[Any] | None = None,
    granularity: str = "per-channel",
) -> list[dict[str, Any]]:
    """Per-layer int8 quantization error at `granularity`, most sensitive first.

    Each row is the debugger's `layer_statistics_dump` CSV row (op_name, tensor_name, scale,
    mean_squared_error, ...) plus `rmse_over_scale`: the RMS quantization error in units of
    the layer's quantization step. Values well above ~0.3 mark layers worth keeping float;
    pass their `tensor_name` as `denylisted_nodes` to `export_tflite`.
    """
    debugger = quantization_debugger(
        model, calibration, input_signature=input_signature, granularity=granularity
    )
    with _quiet_converter():
        debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    buffer.seek(0)
    rows: list[dict[str, Any]] = []
    for row in csv.DictReader(buffer):
        parsed: dict[str, Any] = dict(row)
        for key, value in row.items():
            if key not in ("op_name", "tensor_name"):
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    parsed[key] = value
        scale = parsed.get("scale") or 0.0
        mse = parsed.get("mean_squared_error") or 0.0
        parsed["rmse_over_scale"] = float(np.sqrt(mse) / scale) if scale else float("inf")
        rows.append(parsed)
    rows.sort(key=lambda r: r["rmse_over_scale"], reverse=True)
    return rows


def _selective_quantize(
    model: Any,
    precision: str,
    calibration: np.ndarray,
    input_signature: Sequence[Any] | None,
    denylisted_nodes: Sequence[str] | None,
    denylisted_ops: Sequence[str] | None,
    granularity: str,
) -> bytes:
    debugger = quantization_debugger(
        model,
        calibration,
        precision=precision,
        input_signature=input_signature,
        denylisted_nodes=denylisted_nodes,
        denylisted_ops=denylisted_ops,
        granularity=granularity,
    )
    with _quiet_converter():  # float I/O, as the debugger makes it
        content = debugger.get_nondebug_quantized_model()
    if precision == "int8-float-io":
        return content
    # Integer I/O: strip the QUANTIZE/DEQUANTIZE at the edges, as the converter itself does.
    import tensorflow as tf
    from tensorflow.lite.python.util import modify_model_io_type

    io_type = {"int8": tf.int8, "uint8": tf.uint8}[precision]
    try:
        return modify_model_io_type(content, io_type, io_type)
    except (ValueError, RuntimeError) as exc:
        raise UserError(
            f"cannot give tflite-{precision} {precision} input/output with these layers kept "
            f"float ({exc}); use precision int8-float-io instead"
        ) from exc


def export_tflite(
    model: Any,
    filepath: str | Path,
    precision: str = "fp32",
    *,
    calibration: np.ndarray | None = None,
    input_signature: Sequence[Any] | None = None,
    denylisted_nodes: Sequence[str] | None = None,
    denylisted_ops: Sequence[str] | None = None,
    granularity: str = "per-channel",
    ranges: str = "minmax",
    equalize: bool = False,
    adaround: bool = False,
    bias_correction: bool = False,
) -> Path:
    """Convert a Keras model to a `.tflite` file at `precision`; return the written path.

    Args:
        model: a built Keras 3 model.
        filepath: where to write; the parent directory must exist. Written atomically.
        precision: one of PRECISIONS.
        calibration: float32 raw inputs (N, *input_shape) for the full-integer precisions;
            a few hundred representative samples are enough.
        input_signature: tf.TensorSpec list; default is the model's input with batch 1.
        denylisted_nodes / denylisted_ops: keep these tensors / op types (e.g.
            "FULLY_CONNECTED") float in an int8 model (see `layer_sensitivity`).
        granularity: "per-channel" (default) or "per-tensor" weight scales for the quantized
            precisions (float ones ignore it).
        ranges: activation ranges for int8 / int8-float-io / uint8: "minmax" (the
            converter's), "percentile" or "mse" (see `tflite_ranges`).
        equalize: cross-layer equalization of the Keras weights first (a ReLU6 that never
            clips on `calibration` becomes ReLU; see `equalize`); for depthwise-separable
            nets, per tensor above all.
        adaround: learn each weight's rounding (up or down) to keep every layer's output on
            the calibration samples (see `adaround`), for the calibrated precisions; after
            equalization, before bias correction.
        bias_correction: move each layer's bias by the output shift its int8 weights cause
            (on the calibration samples; see `bias_correct`), for the calibrated precisions.
    """
    model = check_model(model)
    if equalize:  # the calibration samples say which ReLU6 may become ReLU
        from toolkit.convert.equalize import equalized

        if calibration is not None:
            shape = sig.input_signature(model, input_signature)[0].shape
            calibration = check_calibration(calibration, shape, f"tflite-{precision}")
        model = equalized(model, calibration)
    if adaround:
        if precision not in FULL_INTEGER or precision == "int16x8":
            raise UserError(f"adaround applies to tflite int8 / int8-float-io / uint8; got "
                            f"precision {precision!r}")  # fmt: skip
        from toolkit.convert.adaround import rounded

        shape = sig.input_signature(model, input_signature)[0].shape
        calibration = check_calibration(calibration, shape, f"tflite-{precision}")
        model = rounded(model, calibration, "tflite", granularity == "per-tensor", 127)
    if bias_correction:
        if precision not in FULL_INTEGER:
            raise UserError(f"bias_correction applies to tflite {', '.join(FULL_INTEGER)}; "
                            f"got precision {precision!r}")  # fmt: skip
        from toolkit.convert.bias_correct import corrected

        shape = sig.input_signature(model, input_signature)[0].shape
        calibration = check_calibration(calibration, shape, f"tflite-{precision}")
        model = corrected(model, calibration, "tflite", granularity == "per-tensor", 127)
    filepath = Path(filepath)
    if filepath.suffix != ".tflite":
        raise UserError(f"expected a filepath ending in .tflite; got {str(filepath)!r}")
    if not filepath.parent.is_dir():
        raise UserError(f"output directory does not exist: {filepath.parent}")
    if precision not in PRECISIONS:
        raise UserError(f"tflite has no {precision!r} precision; choose one of {PRECISIONS}")
    if granularity not in GRANULARITIES:
        raise UserError(f"granularity must be one of {GRANULARITIES}; got {granularity!r}")
    from toolkit.convert.tflite_ranges import METHODS

    if ranges not in METHODS:
        raise UserError(f"ranges must be one of {METHODS}; got {ranges!r}")
    if ranges != "minmax" and precision not in tflite_calibrated.SHARED:
        raise UserError(
            f"ranges={ranges!r} applies to tflite {', '.join(tflite_calibrated.SHARED)}; "
            f"got precision {precision!r}"
        )
    selective = bool(denylisted_nodes or denylisted_ops)
    if selective and precision not in SELECTIVE:
        raise UserError(
            f"denylisted_nodes/denylisted_ops apply to {', '.join(SELECTIVE)}; "
            f"got precision {precision!r}"
        )
    if selective and ranges != "minmax":
        raise UserError("denylisted layers take the converter's min-max ranges only")
    if selective:
        content = _selective_quantize(
            model, precision, calibration, input_signature, denylisted_nodes, denylisted_ops,
            granularity,
        )  # fmt: skip
    else:
        try:
            if precision in tflite_calibrated.CALIBRATED:  # one calibration for all four
                calibration = check_calibration(
                    calibration, sig.input_signature(model, input_signature)[0].shape,
                    f"tflite-{precision}",
                )  # fmt: skip
                content = tflite_calibrated.quantize(
                    precision,
                    tflite_calibrated.key(model, calibration, input_signature),
                    lambda: make_converter(model, "int8-float-io", calibration=calibration,
                                           input_signature=input_signature),
                    _quiet_converter,
                    per_tensor=granularity == "per-tensor", ranges=ranges,
                    calibration=calibration,
                )  # fmt: skip
            else:
                converter = make_converter(
                    model, precision, calibration=calibration, input_signature=input_signature,
                    granularity=granularity,
                )  # fmt: skip
                with _quiet_converter():
                    content = converter.convert()
        except UserError:
            raise
        except Exception as exc:
            raise ConversionFailed(f"tflite-{precision}", "TFLite conversion", exc) from exc
    if precision in FULL_INTEGER:
        check_kernels(content, f"tflite-{precision}")
    return atomic_write_bytes(filepath, content)


def check_kernels(content: bytes, artifact: str) -> None:
    """Fail with ConversionFailed when LiteRT cannot prepare the converted integer model.

    The converter writes ops whose integer kernels then refuse this model's scales (MobileNetV2
    at int16x8: "no_integer_overflow_from_quantization was not true ... DEPTHWISE_CONV_2D
    failed to prepare"); such a file is a precision that cannot apply, not an artifact.
    Default kernels only: LiteRT's reference kernels abort the process on some int8 models.
    """
    from ai_edge_litert import interpreter as litert

    from toolkit.core.quiet import captured

    try:
        with captured():
            litert.Interpreter(model_content=content).allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ConversionFailed(artifact, "LiteRT kernel preparation", exc) from exc
