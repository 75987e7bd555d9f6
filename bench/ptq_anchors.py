"""The anchors of bench/ptq.py: other tools' int8 on our float artifacts, same calibration data.

Each function writes one artifact and returns its path; a failure raises and the bench
records it as a failed row. Nothing here is part of the toolkit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def tflite_plain(model: Any, out: Path, calib: np.ndarray, per_tensor: bool) -> Path:
    """The plain TFLiteConverter int8 (int8 I/O, min-max): toolkit's own export with its
    defaults per channel; per tensor the converter toolkit builds (`make_converter`) with the
    private `_experimental_disable_per_channel` flag, so no toolkit PTQ step is in this row."""
    from toolkit.convert import convert, tflite

    if not per_tensor:
        return convert(model, "tflite-int8", out, calibration=calib)
    converter = tflite.make_converter(model, "int8", calibration=calib)
    converter._experimental_disable_per_channel = True
    with tflite._quiet_converter():
        content = converter.convert()
    path = out / "model-int8-per-tensor.tflite"
    path.write_bytes(content)
    return path


def ort_static(fp32: Path, out: Path, calib: np.ndarray, per_tensor: bool, method: str) -> Path:
    """onnxruntime quantize_static with its defaults (QDQ, int8/int8, no reduce_range) after
    ORT's recommended quant_pre_process; only `per_channel` and `calibrate_method` are set."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, quant_pre_process, quantize_static

    from toolkit.convert.onnx_prep import calibration_reader

    prepped = out / f"{fp32.stem}.prep.onnx"
    try:
        quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=False)
        source = prepped
    except Exception:
        source = fp32
    input_name = onnx.load(str(source)).graph.input[0].name
    path = out / f"ort-{method.lower()}-{'pt' if per_tensor else 'pc'}.onnx"
    quantize_static(
        str(source),
        str(path),
        calibration_reader(input_name, calib),  # batches of 16, as before
        per_channel=not per_tensor,
        calibrate_method=getattr(CalibrationMethod, method),
    )
    prepped.unlink(missing_ok=True)
    return path


def nncf_quantize(
    fp32: Path, out: Path, calib: np.ndarray, per_tensor: bool, fast: bool, minmax: bool = False
) -> Path:
    """nncf.quantize on the fp32 ONNX: every calibration sample (subset_size = all of them),
    fast or full bias correction; per tensor through advanced_parameters.

    nncf's per-tensor activation ranges default to MEAN_MINMAX, the mean over samples of each
    sample's min and max (nncf 3.4, min_max/algorithm.py), which clips every sample above the
    average; `minmax` asks for RangeEstimatorParametersSet.MINMAX (the min and max over all
    samples, TFLiteConverter's and ORT MinMax's rule)."""
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        QuantizationParameters,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    proto = onnx.load(str(fp32))
    name = proto.graph.input[0].name
    items = [{name: calib[i : i + 1]} for i in range(len(calib))]
    options: dict[str, Any] = {}
    if per_tensor:
        options["weights_quantization_params"] = QuantizationParameters(per_channel=False)
    if minmax:
        options["activations_range_estimator_params"] = RangeEstimatorParametersSet.MINMAX
    advanced = AdvancedQuantizationParameters(**options) if options else None
    quantized = nncf.quantize(
        proto,
        nncf.Dataset(items),
        subset_size=len(items),
        fast_bias_correction=fast,
        advanced_parameters=advanced,
    )
    ranges = "-minmax" if minmax else ""
    path = out / f"nncf-{'fast' if fast else 'full'}-bc{ranges}-{'pt' if per_tensor else 'pc'}.onnx"
    onnx.save(quantized, str(path))
    return path


def aeq(
    float_tflite: Path,
    out: Path,
    calib: np.ndarray,
    per_tensor: bool,
    algo: str,
    *,
    true_min_max: bool = False,
    int16_layers: tuple[str, ...] = (),
) -> Path:
    """ai-edge-quantizer on our float .tflite: the static_wi8_ai8 recipe (min-max), or the same
    with its MSE weight-range search on CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED.

    `Quantizer.calibrate` keeps a moving average (0.95) of each sample's activation min/max,
    the tool's default and what a user gets; `true_min_max` calibrates through its Calibrator
    with `min_max_update` instead (the min and max over all samples, as TFLiteConverter
    does; the Quantizer does not pass the rule on, so this uses its private recipe manager,
    ai-edge-quantizer 0.10). `int16_layers`: ops (by output tensor name) given 16-bit
    activations, 8-bit weights, the rest int8 (per-layer mixed precision, bench/ptq_int16.py).
    """
    import contextlib
    import io
    import re

    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, quantizer, recipe
    from ai_edge_quantizer.utils import qsv_utils

    signatures = Interpreter(model_path=str(float_tflite)).get_signature_list()
    if not signatures:
        raise RuntimeError("the float .tflite has no SignatureDef (ai-edge-quantizer needs one)")
    key = next(iter(signatures))
    input_name = signatures[key]["inputs"][0]
    granularity = recipe.QuantGranularity.TENSORWISE if per_tensor else None
    qt = quantizer.Quantizer(str(float_tflite))
    ops = recipe.TFLOperationName
    if granularity is None and algo == "min_max" and not int16_layers:
        qt.load_quantization_recipe(recipe.static_wi8_ai8())
    else:
        g = {"weight_granularity": granularity} if granularity is not None else {}
        qt.add_static_config(".*", ops.ALL_SUPPORTED, 8, 8, **g)
        if algo == "mse":
            for op in (ops.CONV_2D, ops.DEPTHWISE_CONV_2D, ops.FULLY_CONNECTED):
                qt.add_static_config(".*", op, 8, 8, algorithm_key=recipe.AlgorithmName.MSE, **g)
        for name in int16_layers:  # an op's scope: its output names, each followed by ";"
            qt.add_static_config(f"^{re.escape(name)};$", ops.ALL_SUPPORTED, 16, 8, **g)
    data = {key: [{input_name: calib[i : i + 1]} for i in range(len(calib))]}
    with contextlib.redirect_stdout(io.StringIO()):  # its size report
        if true_min_max:
            calib_run = calibrator.Calibrator(float_tflite.read_bytes(), num_threads=2,
                                              qsv_update_func=qsv_utils.min_max_update)  # fmt: skip
            calib_run.calibrate(data, qt._recipe_manager)
            result = calib_run.get_model_qsvs()
        else:
            result = qt.calibrate(data, num_threads=2)
        quantized = qt.quantize(result, enable_progress_report=False)
    tag = ("-true-minmax" if true_min_max else "") + (f"-a16x{len(int16_layers)}" if int16_layers
                                                      else "")  # fmt: skip
    path = out / f"aeq-{algo}-{'pt' if per_tensor else 'pc'}{tag}.tflite"
    quantized.export_model(str(path), overwrite=True)
    return path
