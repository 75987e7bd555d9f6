"""Post-training quantization options (issue #15): granularity and activation ranges."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _badinput import one_error_line
from _models import separable

from toolkit.convert import convert


@pytest.fixture(scope="module")
def mlp():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,), name="input")
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(hidden))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    return model, x


def _weight_scales(path) -> list[int]:
    """Number of scales of each int8 weight tensor of a .tflite file."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(path.read_bytes()))
    counts = []
    for t in model.subgraphs[0].tensors:
        data = model.buffers[t.buffer].data
        if t.type == 9 and data is not None and len(data) > 0 and t.quantization is not None:
            counts.append(len(t.quantization.scale))  # 9: INT8 constants = weights
    return counts


def _activation_scales(path) -> dict[bytes, float]:
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(path.read_bytes()))
    out = {}
    for t in model.subgraphs[0].tensors:
        data = model.buffers[t.buffer].data
        q = t.quantization
        if (data is None or len(data) == 0) and q is not None and q.scale is not None:
            out[bytes(t.name)] = float(q.scale[0])
    return out


def test_per_tensor_has_one_scale_per_weight_tensor(mlp, tmp_path) -> None:
    import onnx

    model, x = mlp
    channel = convert(model, "tflite-int8", tmp_path / "c", calibration=x[:128])
    tensor = convert(model, "tflite-int8", tmp_path / "t", calibration=x[:128],
                     granularity="per-tensor")  # fmt: skip
    assert max(_weight_scales(channel)) > 1 and set(_weight_scales(tensor)) == {1}
    onnx_t = convert(model, "onnx-int8", tmp_path / "o", calibration=x[:128],
                     granularity="per-tensor")  # fmt: skip
    graph = onnx.load(str(onnx_t)).graph
    inits = {i.name: i for i in graph.initializer}
    weight_scales = [inits[n.input[1]] for n in graph.node
                     if n.op_type == "DequantizeLinear" and n.input[0] in inits
                     and inits[n.input[0]].data_type == onnx.TensorProto.INT8]  # fmt: skip
    assert weight_scales and all(len(s.dims) == 0 or s.dims == [1] for s in weight_scales)


def _same_outputs(eq_model, model, x: np.ndarray) -> np.ndarray:
    """Equalization's promise: the float outputs stay the original's (to 1e-5 of their
    range); returns the original's."""
    ref = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(eq_model(x, training=False)), ref, rtol=1e-4,
                               atol=1e-5 * np.abs(ref).max())  # fmt: skip
    return ref


def _int8_sqnr(model, x: np.ndarray, ref: np.ndarray, out, **opts) -> float:
    """SQNR (dB) of int8 (float I/O, LiteRT) on x[200:], calibrated on x[:200]."""
    from toolkit.runtimes import open_runner

    path = convert(model, "tflite-int8-float-io", out, calibration=x[:200], **opts)
    with open_runner(path) as runner:
        err = runner.predict(x[200:]) - ref[200:]
    return float(10 * np.log10(np.sum(ref[200:] ** 2) / np.sum(err**2)))


def test_range_methods_clip_a_rare_outlier() -> None:
    """Mass in [0, 1] and one value at 100: percentile clips to ~1; mse trades rounding noise
    against clipping error and lands below min-max with a lower expected error."""
    from toolkit.convert.tflite_ranges import BINS, _clip_error, choose

    lo, hi = 0.0, 100.0
    hist = np.zeros(BINS)
    hist[: BINS // 100] = 10_000.0  # [0, 1)
    hist[-1] = 1.0
    assert choose(hist, lo, hi, "minmax") == (lo, hi)
    p_lo, p_hi = choose(hist, lo, hi, "percentile")
    assert p_lo == 0.0 and 0.9 <= p_hi <= 1.1
    m_lo, m_hi = choose(hist, lo, hi, "mse")
    centers = lo + (np.arange(BINS) + 0.5) * (hi - lo) / BINS
    assert m_lo == 0.0 and m_hi < hi
    assert _clip_error(hist, centers, m_lo, m_hi) < _clip_error(hist, centers, lo, hi)


def test_tighter_ranges_reach_the_file_and_keep_outputs(mlp, tmp_path) -> None:
    from toolkit.runtimes import open_runner

    model, x = mlp
    calib = x[:256].copy()
    calib[0] *= 25.0  # one outlier sample stretches min-max ranges
    ref = np.asarray(model(x[256:], training=False))
    files = {r: convert(model, "tflite-int8-float-io", tmp_path / r, calibration=calib, ranges=r)
             for r in ("minmax", "percentile", "mse")}  # fmt: skip
    base = _activation_scales(files["minmax"])
    for method in ("percentile", "mse"):
        scales = _activation_scales(files[method])
        assert all(scales[k] <= base[k] * (1 + 1e-6) for k in base if k in scales)
    percentile = _activation_scales(files["percentile"])  # clips the outlier sample's values
    assert any(percentile[k] < base[k] * 0.9 for k in base if k in percentile)

    def sqnr(path) -> float:
        with open_runner(path) as runner:
            err = runner.predict(x[256:]) - ref
        return float(10 * np.log10(np.sum(ref**2) / np.sum(err**2)))

    # On inputs like the calibration set minus its outlier, the clipped ranges reproduce the
    # float model better than ranges stretched by the outlier.
    assert sqnr(files["percentile"]) > sqnr(files["minmax"])


def test_cli_options_land_in_the_report_and_bad_ones_exit_2(cli, mlp, tmp_path) -> None:
    model, x = mlp
    path = tmp_path / "m.keras"
    model.save(path)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(len(x)) % 4)
    base = ["export", str(path), "--data", f"npz:{tmp_path / 'd.npz'}", "--task",
            "classification", "--latency-runs", "0",
            "--runtimes", "litert:xnnpack,onnxruntime"]  # fmt: skip
    proc = cli(*base, "--formats", "tflite,onnx", "--precisions", "fp32,int8",
               "--granularity", "per-tensor", "--ranges", "percentile", "--out",
               str(tmp_path / "e"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "e" / "report.json").read_text())["artifacts"]
    ptq = {r["name"]: r.get("ptq") for r in rows}
    named = {"granularity": "per-tensor", "ranges": "percentile", "method": "percentile"}
    assert ptq["tflite-int8"] == named and ptq["onnx-int8"] == named
    assert ptq["tflite-fp32"] is None
    bad = cli(*base, "--formats", "onnx", "--precisions", "int8", "--ranges", "mse",
              "--out", str(tmp_path / "f"))  # fmt: skip
    one_error_line(bad, "--ranges mse is not available for onnx-int8")
    bad = cli(*base, "--granularity", "per-layer", "--out", str(tmp_path / "g"))
    one_error_line(bad, "--granularity must be per-channel or per-tensor")
    assert not (tmp_path / "f").exists() and not (tmp_path / "g").exists()


def _mlp_cli(cli, mlp, tmp_path):
    model, x = mlp
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(len(x)) % 4)

    def export(out: str, *args: str):
        return cli("export", str(tmp_path / "m.keras"), "--data", f"npz:{tmp_path / 'd.npz'}",
                   "--task", "classification", "--latency-runs", "0", "--out",
                   str(tmp_path / out), *args)  # fmt: skip

    return export


def test_ptq_forces_one_method_and_the_report_names_it(cli, mlp, tmp_path) -> None:
    export = _mlp_cli(cli, mlp, tmp_path)
    proc = export("e", "--formats", "tflite,onnx", "--precisions", "int8", "--ptq",
                  "bias-correction", "--runtimes", "litert:xnnpack,onnxruntime")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "e" / "report.json").read_text())["artifacts"]
    for row in rows:
        assert row["ptq"]["method"] == "bias-correction", row["ptq"]
        assert "2 layers" in row["ptq"]["bias_correction"], row["ptq"]
    bad = export("f", "--formats", "onnx", "--precisions", "int8", "--ptq", "mse")
    one_error_line(bad, "--ptq mse is not available for onnx-int8", "tflite")
    bad = export("g", "--formats", "tflite", "--ptq", "bias-correction", "--ranges", "mse")
    one_error_line(bad, "--ptq METHOD names one method")
    bad = export("h", "--formats", "tflite", "--ptq", "adaroun")
    one_error_line(bad, "unknown --ptq method 'adaroun'")
    bad = export("i", "--formats", "tflite", "--precisions", "fp32,fp16", "--ptq", "mse")
    one_error_line(bad, "--ptq mse changes calibrated int8 artifacts; none is chosen")
    assert not any((tmp_path / d).exists() for d in "fghi")


def test_auto_ladder_takes_the_forced_method_and_granularity(cli, mlp, tmp_path) -> None:
    """--precisions auto with --ptq and --granularity: every int8 rung is per tensor with the
    method, the corrected rungs are not tried, and the chosen file really is per tensor."""
    from toolkit.core.model_stats import weight_granularity

    export = _mlp_cli(cli, mlp, tmp_path)
    proc = export("auto", "--formats", "tflite", "--precisions", "auto", "--max-drop", "1",
                  "--ptq", "percentile", "--granularity", "per-tensor",
                  "--runtimes", "litert:xnnpack")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "auto" / "report.json").read_text())
    budget = report["budget"]
    assert budget["ptq"] == "percentile" and budget["granularity"] == "per-tensor"
    tflite = budget["formats"]["tflite"]
    assert tflite["chosen"] == "tflite-int8", tflite
    assert tflite["options"] == {"granularity": "per-tensor", "ranges": "percentile"}
    assert "[--ptq percentile]" in tflite["ladder"][0]["rung"]
    assert weight_granularity(tmp_path / "auto" / "model-int8.tflite") == "per-tensor"
    row = next(r for r in report["artifacts"] if r["name"] == "tflite-int8")
    assert row["ptq"] == {"granularity": "per-tensor", "ranges": "percentile",
                          "method": "percentile"}  # fmt: skip
    bad = export("bad", "--formats", "tflite", "--precisions", "auto", "--max-drop", "1",
                 "--equalize")  # fmt: skip
    one_error_line(bad, "--ptq METHOD forces one")


def test_equalization_is_exact_for_relu_and_helps_per_tensor_int8(tmp_path) -> None:
    from toolkit.convert.equalize import equalize

    model = separable(relu6=False)
    x = np.random.default_rng(0).uniform(-1, 1, (300, 12, 12, 3)).astype(np.float32)
    eq = equalize(model)
    assert ("dw", "pw") in eq.pairs, eq.pairs
    ref = _same_outputs(eq.model, model, x)
    plain = _int8_sqnr(model, x, ref, tmp_path / "plain", granularity="per-tensor")
    equalized = _int8_sqnr(model, x, ref, tmp_path / "eq", granularity="per-tensor",
                           equalize=True)  # fmt: skip
    assert equalized > plain + 3.0, (plain, equalized)


def test_equalization_turns_only_the_relu6_that_never_clips_into_relu() -> None:
    """ReLU6 -> ReLU (AIMET's rule for every ReLU6 between a pair) changes the float model
    wherever a value passes 6: on a trained MobileNetV2 that cost more SQNR than int8. On
    these samples the depthwise layer's ReLU6 (its BatchNorm spread 30x) reaches 6 and the
    other two do not: only those two become ReLU, and the outputs stay the original's."""
    import keras

    from toolkit.convert.equalize import equalize

    model = separable(relu6=True)
    x = np.random.default_rng(0).uniform(-1, 1, (300, 12, 12, 3)).astype(np.float32)
    relu6 = [layer for layer in model.layers if type(layer).__name__ == "ReLU"]
    peaks = [float(np.max(o)) for o in keras.Model(model.inputs[0], [r.output for r in relu6])(x)]
    assert [p >= 6.0 for p in peaks] == [False, True, False], peaks
    eq = equalize(model, x)
    assert (eq.relu6_replaced, eq.relu6_kept) == (2, 1) and "1 ReLU6 kept" in eq.summary
    assert eq.pairs and ("dw", "pw") not in eq.pairs, eq.pairs  # not across the clip
    _same_outputs(eq.model, model, x)
    blind = equalize(model)  # no samples to check a clip with: every ReLU6 stays
    assert blind.model is model and blind.relu6_kept == 3, blind.summary
    assert "3 ReLU6 between pairs kept: no samples to check" in blind.summary


def test_the_ladder_keeps_the_best_of_its_equal_cost_corrected_rungs(tmp_path) -> None:
    """Bias correction, equalization and both cost the same, so cheapest-first cannot order
    them: per tensor on this model bias correction alone is inside the SQNR floor and far
    from the best, which the ladder must still find (and never build AdaRound, which costs
    more, once one of them is within)."""
    from toolkit.data.evaldata import EvalData
    from toolkit.pipeline.budget import Budget, choose
    from toolkit.pipeline.ladder import Quant, corrected_options

    model = separable(relu6=False)
    x = np.random.default_rng(0).uniform(-1, 1, (400, 12, 12, 3)).astype(np.float32)
    val = EvalData(x[200:], np.argmax(np.asarray(model(x[200:], training=False)), 1),
                   "classification")  # fmt: skip
    picked, budget = choose(model, ["tflite", "onnx"], val, x[:200], Budget(min_sqnr=10.0),
                            tmp_path, quant=Quant(granularity="per-tensor"))  # fmt: skip
    assert len(picked) == 2, budget
    for fmt in ("tflite", "onnx"):
        ladder, tier = budget["formats"][fmt]["ladder"], corrected_options(f"{fmt}-int8")
        assert len(ladder) == 1 + len(tier), ladder  # AdaRound never built
        assert not ladder[0]["within"] and ladder[1]["within"], ladder  # plain int8 < 10 dB
        chosen = [s for s in ladder if s.get("chosen")]
        best = max(ladder[1:], key=lambda s: s["sqnr_db"])
        assert chosen == [best] and best is not ladder[1], ladder
        assert budget["formats"][fmt]["options"] == {
            "granularity": "per-tensor",
            **tier[ladder.index(best) - 1][1],
        }


def test_equalization_raises_live_channels_to_a_range_dead_ones_hold(tmp_path) -> None:
    """A trained MobileNet's pointwise layer can have most output channels dead (a constant
    from its BatchNorm's beta), while the depthwise after it keeps wide kernels on them: they
    set that tensor's per-tensor scale and equalization must not touch them. The live
    channels are then raised to that range (the paper's objective with fixed channels), not
    squeezed below it, which made per-tensor int8 worse than no equalization at all on
    vww_transfer (bench/ptq.py). This tiny model only guards the end-to-end behaviour (exact
    float, better int8); the `_scales` check is the one the old sqrt(r1 / r2) fails."""
    import keras

    from toolkit.convert.equalize import _scales, equalize

    keras.utils.set_random_seed(3)
    inputs = keras.Input((10, 10, 3), name="input")
    h = keras.layers.Conv2D(16, 1, use_bias=False, name="a")(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="a_bn")(h))
    h = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(h)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    h = keras.layers.Conv2D(8, 1, name="pw")(h)
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(h)))
    dead = np.arange(16) >= 4  # 12 of 16 channels of `a` only pass on BatchNorm's beta
    a = model.get_layer("a")
    a.set_weights([a.get_weights()[0] * (~dead) * 0.2])
    beta = model.get_layer("a_bn").get_weights()
    beta[1] = np.where(dead, 0.5, 0.0).astype(np.float32)
    model.get_layer("a_bn").set_weights(beta)
    dw = model.get_layer("dw")
    dw.set_weights([dw.get_weights()[0] * np.where(dead, 4.0, 1.5).reshape(1, 1, -1, 1)])

    x = np.random.default_rng(0).uniform(-1, 1, (300, 10, 10, 3)).astype(np.float32)
    eq = equalize(model)
    assert ("a", "dw") in eq.pairs, eq.pairs
    ref = _same_outputs(eq.model, model, x)
    plain = _int8_sqnr(model, x, ref, tmp_path / "plain", granularity="per-tensor")
    equalized = _int8_sqnr(model, x, ref, tmp_path / "eq", granularity="per-tensor",
                           equalize=True)  # fmt: skip
    assert equalized > plain + 1.0, (plain, equalized)
    # The live channels' ranges meet at the fixed channels' range on B's side.
    r1, r2 = np.array([1.0, 2.0, 1e-9]), np.array([0.5, 0.5, 8.0])
    ok = np.array([True, True, False])
    s = _scales(r1, r2, ok)
    np.testing.assert_allclose(r2[ok] * s, [8.0 * np.sqrt(0.5), 8.0], rtol=1e-6)
    assert np.max(r1[ok] / s) * 8.0 <= np.max(r1[ok] * r2[ok]) * (1 + 1e-6)


def test_equalization_keeps_the_relu6_of_a_hard_swish() -> None:
    """MobileNetV3's hard-swish is x * relu6(x + 3) / 6: that ReLU6 is not between a pair and
    keeps its clip (replacing every ReLU6 took a trained MobileNetV3-Small to chance)."""
    import keras

    from toolkit.convert.equalize import equalize

    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 3), name="input")
    h = keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3, padding="same")(inputs))
    h = keras.layers.Multiply()([h, keras.layers.ReLU(6.0)(h + 3.0) * (1.0 / 6.0)])
    h = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(h)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="dw_bn")(h))
    h = keras.layers.Conv2D(4, 1, name="pw")(h)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    x = np.random.default_rng(0).normal(0, 4, (64, 8, 8, 3)).astype(np.float32)
    eq = equalize(model)
    assert eq.pairs == [("dw", "pw")] and eq.relu6_replaced == 0, (eq.pairs, eq.summary)
    _same_outputs(eq.model, model, x)


def test_equalization_skips_what_it_cannot_apply_to() -> None:
    """No pair (a dense softmax head on a tanh layer): the original model, with a reason."""
    import keras

    from toolkit.convert.equalize import equalize

    inputs = keras.Input((6,), name="input")
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)  # not scale-invariant
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    eq = equalize(model)
    assert eq.model is model and eq.pairs == []
    assert eq.summary == "skipped: no conv/depthwise/dense pairs to equalize"


def test_the_method_table_names_the_ranges_each_exporter_takes() -> None:
    """`--ranges` is checked against toolkit.convert.methods; the exporters check their own
    constants: one must not drift from the other."""
    from toolkit.convert import onnx, tflite_ranges
    from toolkit.convert.methods import range_methods

    assert set(range_methods()["tflite"]) == set(tflite_ranges.METHODS)
    assert set(range_methods()["onnx"]) == set(onnx.RANGES)


@pytest.mark.parametrize("ranges", ["percentile", "entropy"])
def test_onnx_histogram_ranges_take_a_calibration_set_of_any_size(mlp, tmp_path, ranges) -> None:
    """44 samples (BasicMotions' training windows) do not split into batches of 16: ORT's
    histogram calibrators failed on the short last batch; the reader now batches evenly."""
    from toolkit.convert.onnx_prep import even_batch
    from toolkit.runtimes import open_runner

    assert (even_batch(44), even_batch(256), even_batch(13), even_batch(1)) == (11, 16, 13, 1)
    model, x = mlp
    path = convert(model, "onnx-int8", tmp_path, calibration=x[:44], ranges=ranges)
    with open_runner(path) as runner:
        out = runner.predict(x[200:])
    ref = np.asarray(model(x[200:]))
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.9


def _onnx_activation_scales(path) -> dict[str, float]:
    """Scale of each QuantizeLinear (the activations) of a QDQ .onnx file."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    return {n.input[0]: float(init[n.input[1]]) for n in graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in init}  # fmt: skip


def test_onnx_entropy_ranges_are_not_min_max(mlp, tmp_path) -> None:
    """Through quantize_static alone ORT's entropy calibrator has 128 bins for 128 quantized
    bins, one KL candidate (the full range): its file was min-max's, scale for scale. With a
    KL search over ORT's 4096-bin histograms the threshold clips the heavy-tailed activations,
    so some range shrinks."""
    model, x = mlp
    x = x.copy()
    x[:4] *= 20  # a few outliers: min-max must cover them, a KL threshold need not
    minmax = _onnx_activation_scales(convert(model, "onnx-int8", tmp_path / "mm", calibration=x))
    entropy = _onnx_activation_scales(
        convert(model, "onnx-int8", tmp_path / "kl", calibration=x, ranges="entropy")
    )
    assert minmax.keys() == entropy.keys() and minmax
    assert all(entropy[k] <= minmax[k] * (1 + 1e-6) for k in minmax), (minmax, entropy)
    assert any(entropy[k] < 0.9 * minmax[k] for k in minmax), (minmax, entropy)


def test_onnx_entropy_on_an_older_onnxruntime_is_a_clear_error(mlp, tmp_path, monkeypatch) -> None:
    """Before 1.32 quantize_static takes no calibration cache, so the KL ranges cannot
    reach it: one UserError that names the way out, and no file left where the artifact was."""
    import onnxruntime.quantization as ortq

    from toolkit.core.errors import UserError

    real = ortq.quantize_static

    def quantize_static(model_input, model_output, calibration_data_reader, **kwargs):  # 1.31's
        return real(model_input, model_output, calibration_data_reader, **kwargs)

    monkeypatch.setattr(ortq, "quantize_static", quantize_static)
    model, x = mlp
    with pytest.raises(UserError, match=r"onnxruntime >= 1\.32.*percentile"):
        convert(model, "onnx-int8", tmp_path / "old", calibration=x, ranges="entropy")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], list(tmp_path.rglob("*"))
