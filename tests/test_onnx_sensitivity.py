"""Measured ONNX node sensitivity (toolkit.convert.onnx_sensitivity): the ranking the
`--precisions auto` ladder uses to keep nodes float, on a real QDQ model in onnxruntime."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from toolkit.core.metrics import fidelity


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """Three Dense layers; the middle one has one outlier weight, so per tensor its other
    weights get a coarse step: the layer to keep float, and not the last one."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16,), name="x")
    h = keras.layers.Dense(32, activation="relu", name="first")(inp)
    h = keras.layers.Dense(32, activation="relu", name="middle")(h)
    out = keras.layers.Dense(4, name="last")(h)
    model = keras.Model(inp, out)
    kernel, bias = model.get_layer("middle").get_weights()
    kernel[0, 0] = 40 * np.abs(kernel).max()
    model.get_layer("middle").set_weights([kernel, bias])
    x = np.random.default_rng(0).normal(size=(256, 16)).astype(np.float32)
    return model, x, tmp_path_factory.mktemp("sens")


def _int8(model, x, path, **options):
    from toolkit.convert.onnx import export_onnx

    return export_onnx(model, path, "int8", calibration=x[:128], granularity="per-tensor",
                       **options)  # fmt: skip


def _sqnr(path, model, x) -> float:
    from toolkit.runtimes import open_runner

    with open_runner(path) as runner:
        out = runner.predict(x)
    return fidelity(out, np.asarray(model(x)), classes=False)["sqnr_db"]


def test_the_outlier_layer_ranks_first_and_keeping_it_float_beats_the_last_layer(mlp):
    import onnx

    from toolkit.convert.onnx_sensitivity import QUANTIZABLE, node_sensitivity

    model, x, tmp = mlp
    full = _int8(model, x, tmp / "full.onnx")
    rows = node_sensitivity(full, x)
    assert [r["sqnr_db"] for r in rows] == sorted(r["sqnr_db"] for r in rows)
    graph = onnx.load(str(full)).graph
    assert {r["node"] for r in rows} == {n.name for n in graph.node if n.op_type in QUANTIZABLE}
    assert "middle" in rows[0]["node"], rows
    assert rows[0]["weight_sqnr_db"] < min(r["weight_sqnr_db"] for r in rows[1:]) - 10
    last = next(n.name for n in reversed(graph.node) if n.op_type in QUANTIZABLE)
    assert last != rows[0]["node"]
    measured = _sqnr(_int8(model, x, tmp / "measured.onnx", nodes_to_exclude=[rows[0]["node"]]),
                     model, x)  # fmt: skip
    guessed = _sqnr(_int8(model, x, tmp / "guessed.onnx", nodes_to_exclude=[last]), model, x)
    assert measured > guessed + 3, (measured, guessed, _sqnr(full, model, x))


def test_relu_outputs_are_not_scored_as_noise(mlp):
    """The quantizer drops the ReLU after a MatMul and lets the Q node clamp at 0: the negative
    half of the pre-Q tensor is the activation, not quantization noise."""
    from toolkit.convert.onnx_sensitivity import node_sensitivity

    model, x, tmp = mlp
    rows = node_sensitivity(_int8(model, x, tmp / "relu.onnx"), x)
    first = next(r for r in rows if "first" in r["node"])
    assert first["output_sqnr_db"] > 25, rows


def test_the_onnx_ladder_ranks_by_measurement(mlp):
    from toolkit.pipeline.ladder import onnx_rungs

    model, x, tmp = mlp
    rungs = list(onnx_rungs(model, tmp / "ladder", calibration=x[:128], granularity="per-tensor"))
    kept = [r for r in rungs if r.options.get("nodes_to_exclude")]
    assert kept and "most sensitive" in kept[0].label
    assert "middle" in kept[0].options["nodes_to_exclude"][0]
    # the ladder's own plain int8 is ranked, not converted a second time
    from toolkit.pipeline.ladder import built_key

    plain = _int8(model, x, tmp / "p.onnx")
    built = {built_key("onnx-int8", {"granularity": "per-tensor"}): plain}
    again = list(onnx_rungs(model, tmp / "reuse", calibration=x[:128], granularity="per-tensor",
                            built=built))  # fmt: skip
    assert [r.options for r in again] == [r.options for r in rungs]
    assert not (tmp / "reuse" / "probe-int8").exists()
