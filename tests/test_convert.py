"""Every row of the format table converts, loads in its runtime and stays close to Keras."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolkit.convert import FORMATS, convert, select
from toolkit.core import formats
from toolkit.core.errors import UserError

keras = pytest.importorskip("keras")

N_CLASSES = 3


def stripe_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3 classes a 3x3 conv + global pooling can separate: vertical, horizontal stripes, noise.

    Raw pixel values in 0..255 so the model's Rescaling layer matters for quantization.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    x = rng.uniform(0, 60, (n, 16, 16, 1))
    stripes = (np.arange(16) // 2 % 2) * 150.0
    x[y == 0] += stripes[None, None, :, None]
    x[y == 1] += stripes[None, :, None, None]
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def cnn() -> tuple[object, np.ndarray, np.ndarray]:
    """A tiny trained CNN (Rescaling, Conv, BN, ReLU, GAP, Dense) and held-out data."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1), name="image")
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Conv2D(4, 3, padding="same")(h)
    h = keras.layers.BatchNormalization(momentum=0.9)(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(N_CLASSES, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    x, y = stripe_images(512, seed=0)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    x_test, y_test = stripe_images(200, seed=1)
    accuracy = (np.asarray(model(x_test, training=False)).argmax(1) == y_test).mean()
    assert accuracy >= 0.9, f"fixture model did not learn (inference accuracy {accuracy})"
    return model, x_test, y_test


@pytest.fixture(scope="module")
def tabular() -> tuple[object, np.ndarray]:
    """A Dense-only model on 8 features (no conv): the other common edge shape."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    inp = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    out = keras.layers.Dense(N_CLASSES, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model, x


@pytest.fixture(scope="module")
def exported(cnn, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """Every artifact in the table, converted once for the module."""
    model, x, _ = cnn
    out_dir = tmp_path_factory.mktemp("export")
    paths = {f.name: convert(model, f, out_dir, calibration=x[:100]) for f in FORMATS}
    return out_dir, paths


def reference(cnn) -> np.ndarray:
    model, x, _ = cnn
    return np.asarray(model(x, training=False))


PROVIDERS = {
    "keras": ("tensorflow",),
    "tflite": ("xnnpack", "reference"),
    "onnx": ("CPUExecutionProvider",),
}
CASES = [(f.name, provider) for f in FORMATS for provider in PROVIDERS[f.format]]


@pytest.mark.parametrize(("name", "provider"), CASES)
def test_every_artifact_runs_close_to_keras(cnn, exported, name, provider):
    from toolkit.runtimes import open_runner

    _, paths = exported
    fmt = formats.get(name)
    with open_runner(paths[name], provider=provider) as runner:
        assert runner.name == fmt.runtime
        out = runner.predict(cnn[1])
    ref = reference(cnn)
    assert out.dtype == np.float32 and out.shape == ref.shape
    diff = float(np.abs(out - ref).max())
    agreement = float((out.argmax(1) == ref.argmax(1)).mean())
    print(f"{name}/{provider}: max_abs_diff={diff:.2e} agreement={agreement:.3f}")
    if fmt.precision == "fp32":
        assert diff < 1e-4
    elif fmt.precision == "fp16":
        assert diff < 1e-2
    else:
        assert agreement >= 0.9
        assert diff < 0.2


def test_int8_tflite_has_quantized_io_and_runner_dequantizes(cnn, exported):
    from toolkit.runtimes import open_runner

    _, paths = exported
    expected = {"tflite-int8": "int8", "tflite-uint8": "uint8", "tflite-int16x8": "int16",
                "tflite-int8-float-io": "float32"}  # fmt: skip
    for name, dtype in expected.items():
        with open_runner(paths[name]) as runner:
            assert runner.inputs[0].dtype == dtype, name
            assert runner.outputs[0].dtype == dtype, name
            if dtype != "float32":
                scale, _zero_point = runner.inputs[0].quantization
                assert scale > 0
                assert runner.outputs[0].quantization is not None
            out = runner.predict(cnn[1][:5])
            assert out.dtype == np.float32
            np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=0.05)  # softmax survived


def test_onnx_artifacts_have_symbolic_batch_and_qdq(exported):
    import onnx

    _, paths = exported
    for name in ("onnx-fp32", "onnx-fp16", "onnx-int8", "onnx-dynamic"):
        proto = onnx.load(str(paths[name]))
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N", name
        assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT, name
    ops = {n.op_type for n in onnx.load(str(paths["onnx-int8"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_export_dir_holds_only_artifacts(exported):
    out_dir, paths = exported
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f.filename for f in FORMATS)
    assert all(p.parent == out_dir and p.stat().st_size > 0 for p in paths.values())


def test_tabular_model_converts(tabular, tmp_path):
    from toolkit.runtimes import open_runner

    model, x = tabular
    ref = np.asarray(model(x, training=False))
    for name in ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"):
        path = convert(model, name, tmp_path, calibration=x[:100])
        with open_runner(path) as runner:
            out = runner.predict(x)
        agreement = (out.argmax(1) == ref.argmax(1)).mean()
        assert agreement >= 0.9, (name, agreement)
        if name.endswith("fp32"):
            assert np.abs(out - ref).max() < 1e-4


def test_onnx_int8_survives_full_range_inputs(tmp_path):
    """Raw 0..255 inputs straight into a Dense layer: without reduce_range, ORT's fused u8s8
    kernels on AVX2 CPUs saturate and the int8 model is off by tens of units."""
    from toolkit.runtimes import open_runner

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2)])  # fmt: skip
    x = np.random.default_rng(0).integers(0, 256, (64, 8)).astype(np.float32)
    ref = np.asarray(model(x))
    for name in ("onnx-int8", "onnx-dynamic"):
        with open_runner(convert(model, name, tmp_path, calibration=x)) as runner:
            diff = np.abs(runner.predict(x) - ref).max()
        assert diff < 0.03 * np.ptp(ref), (name, diff, np.ptp(ref))


def test_exact_gelu_exports_to_onnx(tmp_path):
    """Keras' default gelu is TF's exact one, built on erfc: ONNX has no Erfc, and tf2onnx
    left it in as an unknown op (ORT refused the file). It must become 1 - Erf, exactly."""
    import onnx

    from toolkit.runtimes import open_runner

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="gelu"),
                              keras.layers.Dense(3)])  # fmt: skip
    x = np.random.default_rng(0).normal(0, 3, (64, 8)).astype(np.float32)
    ref = np.asarray(model(x))
    path = convert(model, "onnx-fp32", tmp_path)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Erfc" not in ops and "Erf" in ops
    with open_runner(path) as runner:
        assert np.abs(runner.predict(x) - ref).max() < 1e-5
    with open_runner(convert(model, "onnx-int8", tmp_path, calibration=x)) as runner:
        assert np.abs(runner.predict(x) - ref).max() < 0.05 * np.ptp(ref)


def test_onnx_int8_of_attention_leaves_the_working_directory_clean(tmp_path, monkeypatch):
    """ORT's symbolic shape inference cannot finish on Keras attention's reshapes and then
    dumps sym_shape_infer_temp.onnx plus a .data file into the working directory: every ONNX
    int8 export of a transformer littered the user's directory with them."""
    from toolkit.builders import BuildContext, build_model
    from toolkit.runtimes import open_runner

    keras.utils.set_random_seed(0)
    ctx = BuildContext(input_shape=(16, 16, 3), task="classification", num_outputs=3)
    model = build_model("vit_tiny", ctx, {"d_model": 16, "heads": 2, "blocks": 1, "ff": 32})
    x = np.random.default_rng(0).normal(size=(32, 16, 16, 3)).astype(np.float32)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    path = convert(model, "onnx-int8", tmp_path / "out", calibration=x)
    assert list(cwd.iterdir()) == []
    with open_runner(path) as runner:
        assert runner.predict(x[:2]).shape == (2, 3)


def test_missing_or_bad_calibration_is_a_user_error(cnn, tmp_path):
    from toolkit.convert.onnx import export_onnx
    from toolkit.convert.tflite import export_tflite

    model, x, _ = cnn
    with pytest.raises(UserError, match="needs calibration"):
        convert(model, "tflite-int8", tmp_path)
    with pytest.raises(UserError, match="needs calibration"):
        export_tflite(model, tmp_path / "m.tflite", "uint8")
    with pytest.raises(UserError, match=r"shape \(N, 16, 16, 1\); got \(10, 16, 16\)"):
        export_onnx(model, tmp_path / "m.onnx", "int8", calibration=x[:10, ..., 0])
    with pytest.raises(UserError, match=r"ending in \.tflite"):
        export_tflite(model, tmp_path / "m.onnx", "fp32")
    with pytest.raises(UserError, match="tflite has no 'int4'"):
        export_tflite(model, tmp_path / "m.tflite", "int4")
    with pytest.raises(UserError, match="directory does not exist"):
        export_onnx(model, tmp_path / "missing" / "m.onnx")
    with pytest.raises(UserError, match="built Keras model"):
        export_tflite(object(), tmp_path / "m.tflite")
    with pytest.raises(UserError, match="does not take opset; it takes: input_signature"):
        convert(model, "tflite-fp32", tmp_path, opset=13)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    from toolkit.convert import calibration

    target = tmp_path / "model.tflite"
    calibration.atomic_write_bytes(target, b"old")

    def boom(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(calibration.os, "replace", boom)
    with pytest.raises(UserError, match=r"cannot write .*model\.tflite"):  # one line, exit 2
        calibration.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_layer_sensitivity_and_selective_int8(cnn, tmp_path):
    from toolkit.convert.tflite import export_tflite, layer_sensitivity
    from toolkit.runtimes import open_runner

    model, x, _ = cnn
    rows = layer_sensitivity(model, x[:32])
    assert rows and {"op_name", "tensor_name", "scale", "rmse_over_scale"} <= rows[0].keys()
    scores = [r["rmse_over_scale"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    for precision, dtype in (("int8", "int8"), ("uint8", "uint8"), ("int8-float-io", "float32")):
        path = export_tflite(
            model,
            tmp_path / f"keep-float-{precision}.tflite",
            precision,
            calibration=x[:64],
            denylisted_ops=["FULLY_CONNECTED"],
        )
        with open_runner(path) as runner:
            assert runner.inputs[0].dtype == dtype
            out = runner.predict(x)
        assert (out.argmax(1) == reference(cnn).argmax(1)).mean() >= 0.9
    with pytest.raises(UserError, match="apply to int8"):
        export_tflite(model, tmp_path / "x.tflite", "fp16", denylisted_ops=["CONV_2D"])


def test_selective_int8_per_tensor_ranks_and_ships_per_tensor(cnn, tmp_path):
    """The mixed-precision rungs of a per-tensor ladder: layers ranked at per-tensor, the
    file per-tensor with the denylisted layer float (before, the combination was refused)."""
    from toolkit.convert.tflite import export_tflite, layer_sensitivity
    from toolkit.core.model_stats import weight_granularity
    from toolkit.runtimes import open_runner

    model, x, _ = cnn
    per_channel = {r["tensor_name"]: r["rmse_over_scale"] for r in layer_sensitivity(model, x[:32])}
    per_tensor = layer_sensitivity(model, x[:32], granularity="per-tensor")
    assert {r["tensor_name"] for r in per_tensor} == set(per_channel)
    assert [r["rmse_over_scale"] for r in per_tensor] != [per_channel[r["tensor_name"]]
                                                           for r in per_tensor]  # fmt: skip
    keep = per_tensor[0]["tensor_name"]
    common = {"calibration": x[:64], "granularity": "per-tensor"}
    full = export_tflite(model, tmp_path / "full.tflite", "int8-float-io", **common)
    mixed = export_tflite(model, tmp_path / "mixed.tflite", "int8-float-io",
                          denylisted_nodes=[keep], **common)  # fmt: skip
    assert weight_granularity(mixed) == "per-tensor"
    assert mixed.read_bytes() != full.read_bytes()
    with open_runner(mixed) as runner:
        out = runner.predict(x)
    assert (out.argmax(1) == reference(cnn).argmax(1)).mean() >= 0.9
    with pytest.raises(UserError, match="min-max ranges only"):
        export_tflite(model, tmp_path / "x.tflite", "int8", calibration=x[:64],
                      denylisted_nodes=[keep], ranges="percentile")  # fmt: skip


def test_onnx_nodes_to_exclude(cnn, tmp_path):
    import onnx

    from toolkit.convert.onnx import export_onnx

    model, x, _ = cnn
    fp32 = onnx.load(str(export_onnx(model, tmp_path / "f.onnx")))
    conv = next(n.name for n in fp32.graph.node if n.op_type == "Conv")
    path = export_onnx(model, tmp_path / "q.onnx", "int8", calibration=x[:32],
                       nodes_to_exclude=[conv])  # fmt: skip
    quantized = onnx.load(str(path))
    conv_inputs = next(n.input for n in quantized.graph.node if n.op_type == "Conv")
    producers = {o: n.op_type for n in quantized.graph.node for o in n.output}
    assert producers.get(conv_inputs[1]) != "DequantizeLinear"  # weights kept float


def test_select_builds_lists_and_rejects_bad_combos():
    assert [f.name for f in select(["onnx"], ["int8"])] == ["onnx-int8"]
    # the keras reference rides along with every export (validate re-runs from disk with it)
    assert {f.name for f in select(None, ["int8"])} == {"keras-fp32", "tflite-int8", "onnx-int8"}
    assert select() == list(FORMATS)
    assert [f.name for f in select(["tflite-uint8", "onnx-fp16"])] == [
        "tflite-uint8",
        "onnx-fp16",
    ]
    assert len({f.name for f in FORMATS}) == len(FORMATS)
    with pytest.raises(
        UserError, match="onnx has no int16x8 precision; onnx precisions: fp32, fp16, int8, dynamic"
    ):
        select(["onnx"], ["int16x8"])
    with pytest.raises(UserError, match=r"unknown format 'tflit'.*did you mean 'tflite'"):
        select(["tflit"])
    with pytest.raises(UserError, match="unknown precision 'int4'"):
        select(["tflite"], ["int4"])
    with pytest.raises(UserError, match="unknown artifact 'tflite-int4'"):
        select(["tflite-int4"])
    # the keras passthrough is the reference: precisions do not apply to it
    assert [f.name for f in select(["keras", "tflite"], ["int8"])] == ["keras-fp32", "tflite-int8"]
    with pytest.raises(UserError, match="not both"):
        select(["tflite-int8"], ["fp16"])
    assert "tflite-int16x8" in formats.help_table()


def test_imports_stay_light():
    code = (
        "import sys, toolkit.convert, toolkit.runtimes, toolkit.core.formats;"
        "heavy = {'tensorflow', 'onnxruntime', 'keras', 'onnx', 'tf2onnx'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_onnx_precisions_share_one_tf2onnx_conversion(tabular, tmp_path, monkeypatch):
    """fp16/int8/dynamic start from the fp32 graph converted once per model state; a model
    whose weights changed is converted again."""
    from toolkit.convert import onnx as onnx_export

    model, x = tabular
    calls = []
    real = onnx_export._to_onnx_fp32
    monkeypatch.setattr(onnx_export, "_to_onnx_fp32",
                        lambda *a, **k: calls.append(1) or real(*a, **k))  # fmt: skip
    monkeypatch.setattr(onnx_export, "_LAST_FP32", [])
    first = {p: convert(model, f"onnx-{p}", tmp_path / "a", calibration=x[:64])
             for p in ("fp32", "fp16", "int8", "dynamic")}  # fmt: skip
    assert len(calls) == 1
    weights = model.get_weights()
    model.set_weights([w * 1.5 for w in weights])
    try:
        again = convert(model, "onnx-fp32", tmp_path / "b")
    finally:
        model.set_weights(weights)
    assert len(calls) == 2
    assert first["fp32"].read_bytes() != again.read_bytes()


def _numerics(content: bytes) -> tuple:
    """Everything in a .tflite that decides what it computes: buffers (metadata buffers left
    out), tensors with their quantization, operators and signatures."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    meta = {m.buffer for m in model.metadata or []}
    buffers = tuple(b"" if b.data is None or i in meta else bytes(b.data)
                    for i, b in enumerate(model.buffers))  # fmt: skip
    graphs = []
    for g in model.subgraphs:
        tensors = tuple((bytes(t.name), tuple(t.shape), t.type, t.buffer,
                         None if t.quantization is None or t.quantization.scale is None else
                         (tuple(t.quantization.scale), tuple(t.quantization.zeroPoint)))
                        for t in g.tensors)  # fmt: skip
        ops = tuple((o.opcodeIndex, tuple(o.inputs), tuple(o.outputs)) for o in g.operators)
        graphs.append((tensors, ops, tuple(g.inputs), tuple(g.outputs)))
    signatures = tuple(bytes(s.signatureKey) for s in model.signatureDefs or [])
    return buffers, tuple(graphs), signatures


def test_int8_files_from_one_calibration_equal_the_converters(cnn, tmp_path):
    """int8, int8-float-io, uint8 and int16x8 share one calibration run; each file computes
    exactly what TFLiteConverter.convert() writes for that precision."""
    from toolkit.convert import tflite as tflite_export
    from toolkit.convert import tflite_calibrated

    model, x, _ = cnn
    tflite_calibrated._LAST.clear()
    for precision in tflite_calibrated.CALIBRATED:
        ours = convert(model, f"tflite-{precision}", tmp_path, calibration=x[:64]).read_bytes()
        converter = tflite_export.make_converter(model, precision, calibration=x[:64])
        with tflite_export._quiet_converter():
            plain = converter.convert()
        assert _numerics(ours) == _numerics(plain), precision
    assert len(tflite_calibrated._LAST) == 1  # one calibrated model served all four
