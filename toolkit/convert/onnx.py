"""Keras 3 model -> `.onnx` at fp32, fp16, static int8 (QDQ) or dynamic int8.

tf2onnx converts the float graph from an explicit input signature; the other precisions are
post-processing of that ONNX file with onnxconverter-common and onnxruntime.quantization, so
every ONNX artifact starts from the same graph. The batch dimension is symbolic ("N").
"""

from __future__ import annotations

import inspect
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.convert.calibration import (
    ConversionFailed,
    atomic_write_bytes,
    check_calibration,
    check_model,
    default_input_shape,
    temp_path_beside,
)
from toolkit.convert.onnx_prep import calibration_reader, entropy_cache, pre_process
from toolkit.core.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8", "dynamic")
GRANULARITIES = ("per-channel", "per-tensor")
RANGES = ("minmax", "percentile", "entropy")  # onnxruntime's calibrators
BATCH_DIM = "N"
log = logging.getLogger(__name__)


def _erfc(ctx: Any, node: Any, name: str, args: Any) -> None:
    """TF's exact GELU (Keras' default `gelu`) computes erfc, which ONNX lacks and tf2onnx
    passes through as an unknown op: rewrite it as 1 - Erf(x), Erf being ONNX since opset 9."""
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype))
    ctx.insert_new_node_on_output(
        "Sub", node.output[0], name=utils.make_name(f"{name}_erfc"),
        inputs=[one.output[0], node.output[0]],
    )  # fmt: skip


# TF ops tf2onnx does not map, with the rewrite into ONNX ops that computes each.
_HANDLERS = {"Erfc": (_erfc, [])}


def _to_onnx_fp32(model: Any, input_signature: Sequence[Any] | None, opset: int) -> Any:
    """tf2onnx on the Keras model; a tf.function wrapper if `from_keras` rejects it."""
    import tensorflow as tf
    import tf2onnx

    if input_signature is None:
        shape = default_input_shape(model, batch=None)
        input_signature = (tf.TensorSpec(shape, tf.float32, name="input"),)
    signature = tuple(input_signature)
    try:
        proto, _ = tf2onnx.convert.from_keras(
            model, input_signature=signature, opset=opset, custom_op_handlers=_HANDLERS
        )
        return proto
    except Exception as exc:  # some Keras 3 graphs trip from_keras; from_function holds up
        log.info("tf2onnx.from_keras failed (%s); retrying with from_function", exc)

    @tf.function(input_signature=signature)
    def serve(*args: Any) -> Any:
        return model(args[0] if len(args) == 1 else list(args), training=False)

    try:
        proto, _ = tf2onnx.convert.from_function(
            serve, input_signature=signature, opset=opset, custom_op_handlers=_HANDLERS
        )
    except Exception as exc:
        raise UserError(f"ONNX conversion (tf2onnx, opset {opset}) failed: {exc}") from exc
    return proto


# The last float graph tf2onnx produced: (key, serialized proto). Every ONNX precision starts
# from that graph, and tf2onnx takes ~7 s on a MobileNetV2-224, so an export converts once.
_LAST_FP32: list[tuple[tuple[Any, ...], bytes]] = []


def _fp32_graph(model: Any, input_signature: Sequence[Any] | None, opset: int) -> Any:
    """The fp32 ONNX graph of `model` (batch symbolic), converted once per model state.

    The key holds the weights' digest, so a model trained further (or pruned in place) after
    an export is converted again; a fresh copy is parsed for each caller, who may modify it."""
    import onnx

    from toolkit.core.model_stats import weights_digest

    signature = None if input_signature is None else [
        (tuple(s.shape), str(s.dtype), s.name) for s in input_signature
    ]  # fmt: skip
    key = (id(model), str(model.name), weights_digest(model), repr(signature), opset)
    if _LAST_FP32 and _LAST_FP32[0][0] == key:
        return onnx.load_from_string(_LAST_FP32[0][1])
    proto = _symbolic_batch(_to_onnx_fp32(model, input_signature, opset))
    _LAST_FP32[:] = [(key, proto.SerializeToString())] if proto.ByteSize() < 2**30 else []
    return proto


def _symbolic_batch(proto: Any) -> Any:
    """Name the leading dim of every graph input/output "N" so any batch size runs."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_DIM
    return proto


def _quantize_static(
    fp32_path: Path,
    out_path: Path,
    calibration: np.ndarray,
    input_name: str,
    nodes_to_exclude: Sequence[str] | None,
    reduce_range: bool,
    per_channel: bool = True,
    ranges: str = "minmax",
) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[ranges]  # fmt: skip

    source = fp32_path
    prepped = temp_path_beside(out_path, ".prep.onnx")
    scratch = tempfile.TemporaryDirectory(prefix="keras-edge-ort-")
    try:
        if pre_process(fp32_path, prepped, Path(scratch.name)):
            source = prepped
        cached: dict[str, Any] = {}
        if ranges == "entropy":
            if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
                raise UserError("ranges 'entropy' needs onnxruntime >= 1.32 (its calibration "
                                "cache); use 'percentile', or upgrade onnxruntime")  # fmt: skip
            where = Path(scratch.name)
            cached["calibration_cache_path"] = str(
                entropy_cache(source, calibration, input_name, where)
            )
        quantize_static(
            str(source),
            str(out_path),
            calibration_reader(input_name, calibration, even=ranges != "minmax"),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            calibrate_method=method,
            reduce_range=reduce_range,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude or []),
            **cached,
        )
    finally:
        prepped.unlink(missing_ok=True)
        scratch.cleanup()


def _quantize_dynamic(
    fp32_path: Path, out_path: Path, nodes_to_exclude: Sequence[str] | None, reduce_range: bool
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32_path),
        str(out_path),
        weight_type=QuantType.QInt8,
        reduce_range=reduce_range,
        nodes_to_exclude=list(nodes_to_exclude or []),
    )


def export_onnx(
    model: Any,
    filepath: str | Path,
    precision: str = "fp32",
    *,
    calibration: np.ndarray | None = None,
    opset: int = 17,
    nodes_to_exclude: Sequence[str] | None = None,
    input_signature: Sequence[Any] | None = None,
    reduce_range: bool | None = None,
    granularity: str = "per-channel",
    ranges: str = "minmax",
    equalize: bool = False,
    adaround: bool = False,
    bias_correction: bool = False,
) -> Path:
    """Convert a Keras model to an `.onnx` file at `precision`; return the written path.

    Args:
        model: a built Keras 3 model.
        filepath: where to write; the parent directory must exist. Written atomically.
        precision: one of PRECISIONS.
        calibration: float32 raw inputs (N, *input_shape), required for "int8".
        opset: ONNX opset for tf2onnx (13..18 are sensible).
        nodes_to_exclude: ONNX node names to keep float in "int8"/"dynamic".
        input_signature: tf.TensorSpec tuple; default is the model's input, batch None.
        reduce_range: 7-bit weights for "int8" and "dynamic". ORT's u8s8 integer kernels on
            x86 CPUs without VNNI (AVX2, AVX-512F) saturate int16 sums with full 8-bit
            weights: a Dense model on 0..255 inputs was off by 38 (int8) / 27 (dynamic) here,
            2.7 / 2.0 with reduce_range. Turn off only for Arm or VNNI targets. Default
            (None): on per channel, off per tensor: 7-bit weights with one scale per tensor
            lost 19 pp where 8-bit lost 5.5 (bench/RESULTS.md, vww_transfer_full), and
            per-tensor targets (NPUs, DSPs) run int8 natively.
        granularity: "per-channel" (default) or "per-tensor" weight scales for "int8"
            ("dynamic" keeps ORT's per-tensor default either way).
        ranges: "int8" activation ranges by ORT's calibrators: "minmax" (default),
            "percentile" (99.999) or "entropy".
        equalize: cross-layer equalization of the Keras weights first (a ReLU6 that never
            clips on `calibration` becomes ReLU; see `equalize`); for depthwise-separable
            nets, per tensor above all.
        adaround: learned rounding of the weights (see `adaround`), for "int8"; after
            equalization, before bias correction.
        bias_correction: move each layer's bias by the output shift its int8 weights cause
            (on the calibration samples; see `bias_correct`), for "int8".
    """
    import onnx

    model = check_model(model)
    if reduce_range is None:
        reduce_range = granularity != "per-tensor"
    if equalize:  # the calibration samples say which ReLU6 may become ReLU
        from toolkit.convert.equalize import equalized

        if calibration is not None:
            shape = default_input_shape(model, batch=None)
            calibration = check_calibration(calibration, shape, f"onnx-{precision}")
        model = equalized(model, calibration)
    levels = 64 if reduce_range else 127  # ORT's symmetric int8 weights, 7-bit or 8-bit
    for name, on in (("adaround", adaround), ("bias_correction", bias_correction)):
        if on and precision != "int8":
            raise UserError(f"{name} applies to onnx int8; got precision {precision!r}")
        if on:
            calibration = check_calibration(
                calibration, default_input_shape(model, batch=None), "onnx-int8"
            )
    if adaround:
        from toolkit.convert.adaround import rounded

        model = rounded(model, calibration, "onnx", granularity == "per-tensor", levels)
    if bias_correction:
        from toolkit.convert.bias_correct import corrected

        model = corrected(model, calibration, "onnx", granularity == "per-tensor", levels)
    filepath = Path(filepath)
    if filepath.suffix != ".onnx":
        raise UserError(f"expected a filepath ending in .onnx; got {str(filepath)!r}")
    if not filepath.parent.is_dir():
        raise UserError(f"output directory does not exist: {filepath.parent}")
    if precision not in PRECISIONS:
        raise UserError(f"onnx has no {precision!r} precision; choose one of {PRECISIONS}")
    if not isinstance(opset, int) or not 9 <= opset <= 21:
        raise UserError(f"opset must be an integer between 9 and 21; got {opset!r}")
    if granularity not in GRANULARITIES:
        raise UserError(f"granularity must be one of {GRANULARITIES}; got {granularity!r}")
    if ranges not in RANGES:
        raise UserError(f"onnx int8 ranges: one of {RANGES}; got {ranges!r}")
    if ranges != "minmax" and precision != "int8":
        raise UserError(f"ranges={ranges!r} applies to onnx int8; got precision {precision!r}")
    if nodes_to_exclude and precision not in ("int8", "dynamic"):
        raise UserError(f"nodes_to_exclude applies to int8 and dynamic; got {precision!r}")
    if precision == "int8":
        shape = default_input_shape(model, batch=None)
        calibration = check_calibration(calibration, shape, "onnx-int8")

    proto = _fp32_graph(model, input_signature, opset)
    if precision == "fp32":
        return atomic_write_bytes(filepath, proto.SerializeToString())
    if precision == "fp16":
        from onnxconverter_common import float16

        try:
            half = float16.convert_float_to_float16(proto, keep_io_types=True)
            # A fake-quant (QAT) graph comes out invalid (QuantizeLinear takes no float16):
            # found here, it is a skipped artifact rather than a file no runtime loads.
            if half.ByteSize() < 2**31:
                onnx.checker.check_model(half, full_check=True)
        except Exception as exc:
            raise ConversionFailed("onnx-fp16", "float16 conversion", exc) from exc
        return atomic_write_bytes(filepath, half.SerializeToString())

    fp32_tmp = temp_path_beside(filepath, ".fp32.onnx")
    out_tmp = temp_path_beside(filepath, ".q.onnx")
    try:
        onnx.save(proto, str(fp32_tmp))
        try:
            if precision == "int8":
                input_name = proto.graph.input[0].name
                _quantize_static(
                    fp32_tmp, out_tmp, calibration, input_name, nodes_to_exclude, reduce_range,
                    per_channel=granularity == "per-channel", ranges=ranges,
                )  # fmt: skip
            else:
                _quantize_dynamic(fp32_tmp, out_tmp, nodes_to_exclude, reduce_range)
        except UserError:
            raise
        except Exception as exc:
            raise ConversionFailed(f"onnx-{precision}", "ONNX quantization", exc) from exc
        out_tmp.replace(filepath)
    finally:
        fp32_tmp.unlink(missing_ok=True)
        out_tmp.unlink(missing_ok=True)
    return filepath
