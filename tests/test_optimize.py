"""The optimize stage: pruning, clustering and QAT on a real (tiny) run, outputs and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _badinput import one_error_line

from toolkit.core.errors import UserError

TINY = {
    "name": "tiny",
    "dataset": {"name": "digits", "image_size": [8, 8], "max_samples": 400},
    "model": {"builder": "cnn", "args": {"filters": [8, 16], "dense": 16}},
    "train": {"epochs": 2, "batch_size": 32, "tensorboard": False},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from toolkit.core.recipe import parse_recipe
    from toolkit.train.stage import train

    return train(parse_recipe(TINY), tmp_path_factory.mktemp("runs")).run_dir


@pytest.fixture(scope="module")
def pruned(run_dir):
    from toolkit.core.optimize_config import from_flags
    from toolkit.optimize.stage import optimize

    return optimize(run_dir, from_flags(prune=0.5, epochs=1), run_dir / "pruned")


@pytest.mark.parametrize(
    "flags, needle",
    [
        ({"prune": 1.2}, "--prune"),
        ({"prune": 0.0}, "--prune"),
        ({"structured": "3:4"}, "--structured"),
        ({"prune": 0.7, "structured": "2:4"}, "fixes sparsity at 0.5"),
        ({}, "nothing to do"),
        ({"cluster": 1}, "--cluster"),
        ({"qat": True, "preserve": "clusters"}, "needs a cluster step"),
    ],
)
def test_bad_settings_are_user_errors(flags: dict, needle: str) -> None:
    from toolkit.core.optimize_config import from_flags

    with pytest.raises(UserError, match=needle):
        from_flags(**flags)


def test_recipe_section_parses_and_names_bad_keys() -> None:
    from toolkit.core.optimize_config import OptimizeConfig, parse_optimize

    cfg = parse_optimize({"prune": {"sparsity": 0.5, "schedule": "constant"}, "qat": {}})
    assert isinstance(cfg, OptimizeConfig) and cfg.steps() == ["prune", "qat"]
    assert cfg.qat_preserve == "sparsity"
    with pytest.raises(UserError, match=r"optimize\.prune\.sparsity"):
        parse_optimize({"prune": {"sparsity": 1.5}})
    with pytest.raises(UserError, match=r"optimize\.cluster\.init"):
        parse_optimize({"cluster": {"init": "kmeans"}})


def test_pruning_reaches_the_sparsity_and_writes_a_keras3_run(pruned) -> None:
    import keras

    out = pruned.out_dir
    assert {p.name for p in out.iterdir()} >= {"model.keras", "input_spec.json", "recipe.yaml",
                                               "metrics.json"}  # fmt: skip
    for row in pruned.layers:
        assert row["sparsity"] >= 0.49, row
    model = keras.saving.load_model(out / "model.keras")
    kernels = [w for w in model.weights if w.path.endswith("kernel")]
    assert kernels and all(np.mean(np.asarray(k) == 0) >= 0.49 for k in kernels)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test"]["accuracy"] <= 1 and metrics["optimize"]["steps"] == ["prune"]
    size = metrics["optimize"]["weights_size"]
    assert size["optimized"]["gzip_bytes"] < 0.85 * size["original"]["gzip_bytes"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # nothing partial


def test_clustering_leaves_at_most_n_unique_weights(run_dir) -> None:
    from toolkit.core.optimize_config import from_flags
    from toolkit.optimize.stage import optimize

    result = optimize(run_dir, from_flags(cluster=8, epochs=1), run_dir / "clustered")
    assert result.layers and all(row["unique_weights"] <= 8 for row in result.layers)


def test_structured_2_4_refuses_a_layer_that_cannot_take_it(run_dir) -> None:
    from toolkit.core.modelio import load_model
    from toolkit.core.optimize_config import PruneConfig
    from toolkit.optimize import prune
    from toolkit.optimize.bridge import to_tf_keras

    model = to_tf_keras(load_model(run_dir).model)
    with pytest.raises(UserError, match=r"'block0_conv0'.*1 input channels.*--skip block0_conv0"):
        prune.apply(model, PruneConfig(structured="2:4"), 10)
    config = PruneConfig(structured="2:4", skip_layers=["block0_conv0"])
    wrapped, callbacks = prune.apply(model, config, 10)
    assert callbacks and len(wrapped.layers) == len(model.layers)
    with pytest.raises(UserError, match="'nope' is not a layer"):
        prune.apply(model, PruneConfig(sparsity=0.5, skip_layers=["nope"]), 10)


def test_an_optimized_run_cannot_be_pruned_again(cli, pruned) -> None:
    proc = cli("optimize", str(pruned.out_dir), "--prune", "0.5", "--epochs", "1")
    one_error_line(proc, "already optimized")


def test_cli_refuses_sparsity_outside_0_1(cli, tmp_path) -> None:
    one_error_line(cli("optimize", str(tmp_path), "--prune", "1.5"), "--prune")


@pytest.mark.slow
def test_qat_exports_to_tflite_int8_and_onnx_qdq_that_run(run_dir, tmp_path) -> None:
    import onnx

    from toolkit.core.optimize_config import from_flags
    from toolkit.optimize.stage import optimize
    from toolkit.pipeline.exporting import run_export
    from toolkit.runtimes import open_runner

    result = optimize(run_dir, from_flags(qat=True, epochs=1), run_dir / "qat")
    assert result.model_kind == "saved_model" and (result.out_dir / "saved_model.pb").is_file()
    export_dir = tmp_path / "export"
    _, report = run_export(result.out_dir, formats=["tflite", "onnx"],
                           precisions=["fp32", "int8"], out=export_dir, latency_runs=2)  # fmt: skip
    ops = {n.op_type for n in onnx.load(str(export_dir / "model-fp32.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # tf2onnx turned fake-quant into QDQ
    x = np.random.default_rng(0).uniform(0, 16, (4, 8, 8, 1)).astype("float32")
    for name in ("model-int8.tflite", "model-fp32.onnx"):
        with open_runner(export_dir / name) as runner:
            assert runner.predict(x).shape == (4, 10)
    for art in report.artifacts:
        assert art.error is None and art.agreement >= 0.8, art
    with pytest.raises(UserError, match=r"SavedModel|already optimized"):
        optimize(result.out_dir, from_flags(prune=0.5), tmp_path / "again")


def test_variant_file_names_parse_only_known_step_tags() -> None:
    from toolkit.core.artifacts import parse

    variant = parse("prune+cluster-int8.tflite")
    assert variant is not None and variant.name == "prune+cluster-tflite-int8"
    assert variant.filename == "prune+cluster-int8.tflite" and variant.fmt.name == "tflite-int8"
    assert parse("qat-fp32.onnx").name == "qat-onnx-fp32"
    assert parse("prune-int8-float-io.tflite").fmt.name == "tflite-int8-float-io"
    odd = ("model-int8.tflite", "cluster+prune-int8.tflite", "prune+prune-int8.tflite",
           "prune-int9.tflite", "prune.keras", "prune-fp32.keras")  # fmt: skip
    for plain_or_odd in odd:
        assert parse(plain_or_odd) is None, plain_or_odd


def test_recipe_optimize_section_runs_and_export_shows_both_in_one_report(tmp_path) -> None:
    import yaml

    from toolkit.core.report import ARTIFACT_KEYS
    from toolkit.pipeline.exporting import run_export, run_validate
    from toolkit.pipeline.training import run_training
    from toolkit.validate.render import comparisons, ordered

    recipe = tmp_path / "tiny-pruned.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "optimize": {"prune": {"sparsity": 0.5},
                                                           "epochs": 1}}))  # fmt: skip
    result = run_training(str(recipe), runs_dir=tmp_path / "runs")
    run = result.run_dir
    assert result.optimized is not None and result.optimized.steps == ["prune"]
    assert (run / "optimized" / "model.keras").is_file()

    _, report = run_export(run, formats=["tflite-int8"], latency_runs=2)
    export_dir = run / "export"
    assert (export_dir / "prune-int8.tflite").is_file() and (
        export_dir / "model-int8.tflite"
    ).is_file()
    names = [a.name for a in ordered(report)]
    assert names.index("prune-tflite-int8") > names.index("tflite-int8")  # beside its twin
    row = report.artifact("prune-tflite-int8", "litert:xnnpack")
    assert row.error is None and row.variant == "prune" and row.base_name == "tflite-int8"
    plain = report.artifact("tflite-int8", "litert:xnnpack")
    assert row.gzip_bytes < plain.gzip_bytes and row.latency_ms and row.agreement is not None
    data = json.loads((export_dir / "report.json").read_text())
    for entry in data["artifacts"]:
        assert set(ARTIFACT_KEYS) <= set(entry)  # the DESIGN.md keys, unchanged
        assert entry.get("variant") == ("prune" if entry["name"].startswith("prune-") else None)
    pairs = {(c["name"], c["base"]) for c in comparisons(report)}
    assert ("prune-tflite-int8", "tflite-int8") in pairs
    markdown = (export_dir / "report.md").read_text()
    assert "What optimization bought" in markdown and "| prune-tflite-int8 |" in markdown

    again = run_validate(export_dir, latency_runs=0)  # re-runnable from disk: files are found
    assert sorted(a.name for a in again.artifacts) == sorted(names)
    _, dense_only = run_export(run, formats=["tflite-int8"], out=tmp_path / "plain",
                               latency_runs=0, optimized=False)  # fmt: skip
    assert [a.variant for a in dense_only.artifacts] == [None] * len(dense_only.artifacts)


def _colour_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3 classes of 32x32 RGB images, each brighter in one channel: learnable in a few steps
    from smooth features (a random colour per image, faint pixel noise)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.uniform(0, 100, (n, 1, 1, 3)) + rng.normal(0, 5, (n, 32, 32, 3))
    for c in range(3):
        x[y == c, :, :, c] += 120
    return np.clip(x, 0, 255).astype("float32"), y


@pytest.mark.slow
def test_mobilenet_v2_bridges_exactly_and_its_qat_model_runs_as_int8_tflite_and_onnx_qdq(
    tmp_path,
) -> None:
    """alpha 0.35 at 32x32: the bridge is exact both ways, QAT fine-tunes, and the QAT model's
    TFLite int8 and ONNX QDQ conversions predict what it predicts (LiteRT, ONNX Runtime)."""
    import keras
    import onnx
    import tensorflow as tf
    import tf_keras

    from toolkit.builders import BuildContext, build_model
    from toolkit.optimize import qat
    from toolkit.optimize.bridge import to_keras, to_tf_keras
    from toolkit.pipeline.exporting import run_export

    x, y = _colour_images(96, 0)
    rescale = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")
    ctx = BuildContext((32, 32, 3), "classification", 3, preprocess=[rescale])
    model = build_model("mobilenet_v2", ctx, {"alpha": 0.35})
    # A few steps leave MobileNet's BatchNorm statistics (momentum 0.99) near their fresh
    # values and inference-mode outputs near-uniform, where int8 rounding flips the top-1 at
    # random: with momentum 0 they follow the data and a short training gives clear answers.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()  # as training does: a fixed outcome
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=12, verbose=0)

    def diff(a, b) -> float:
        return float(np.max(np.abs(np.asarray(a(x[:16], training=False))
                                   - np.asarray(b(x[:16], training=False)))))  # fmt: skip

    legacy = to_tf_keras(model)
    assert diff(model, legacy) <= 1e-6
    assert diff(model, to_keras(legacy)) <= 1e-6

    tf_keras.utils.set_random_seed(0)
    aware = qat.apply(legacy)
    assert qat.foldable_batchnorms(legacy)  # BN folds into its conv in QAT, as converters do
    qat.init_ranges(aware, x, batch_size=32)  # what the optimize stage does before fine-tuning
    aware.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    aware.fit(x, y, batch_size=32, epochs=1, verbose=0)  # QAT: 1 epoch, 3 steps
    qat.save(aware, tmp_path / "qat")
    predicted = np.argmax(np.asarray(aware(x, training=False)), axis=1)
    assert np.mean(predicted == y) >= 0.8  # a real classifier: top-1 agreement means something

    data = tmp_path / "colours.npz"  # its 20 % test split: 80 images, 56 never trained on
    held_x, held_y = _colour_images(304, 1)
    np.savez(data, x=np.concatenate([x, held_x]), y=np.concatenate([y, held_y]))
    export_dir = tmp_path / "export"
    _, report = run_export(tmp_path / "qat", formats=["tflite-int8", "onnx-fp32"],
                           data=f"npz:{data}", calib_samples=64, out=export_dir,
                           latency_runs=2)  # fmt: skip
    ops = {n.op_type for n in onnx.load(str(export_dir / "model-fp32.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ from the fake-quant graph
    runtimes = {(a.name, a.runtime) for a in report.artifacts}
    assert {("tflite-int8", "litert"), ("onnx-fp32", "onnxruntime")} <= runtimes
    for art in report.artifacts:  # agreement: top-1 vs the QAT Keras model (the reference)
        assert art.error is None and art.agreement >= 0.9, art.summary()


def _row(name: str, runtime: str, value: float, size: int, gzip_size: int, variant=None):
    from toolkit.core.report import ArtifactResult

    fmt, precision = ("keras", "fp32") if name.endswith("keras-fp32") else ("tflite", "int8")
    return ArtifactResult(name, fmt, precision, f"/x/{name}", size, gzip_size, runtime, "cpu",
                          {"name": "accuracy", "value": value}, drop=0.99 - value, agreement=1.0,
                          max_abs_diff=0.0, latency_ms={"p50": 1.0, "p90": 1.2},
                          variant=variant)  # fmt: skip


def test_report_puts_each_optimized_row_beside_its_plain_twin_and_compares_them() -> None:
    from toolkit.core.report import Report
    from toolkit.validate.render import comparisons, ordered, to_markdown

    report = Report(
        reference={"name": "keras-fp32", "metric": {"name": "accuracy", "value": 0.99}},
        artifacts=[_row("keras-fp32", "keras", 0.99, 400, 380),
                   _row("tflite-int8", "litert", 0.99, 100, 90),
                   _row("onnx-int8", "onnxruntime", 0.98, 110, 95),
                   _row("prune-tflite-int8", "litert", 0.985, 100, 45, "prune"),
                   _row("prune-onnx-int8", "onnxruntime", 0.97, 110, 50, "prune")],
        versions={},
    )  # fmt: skip
    assert [a.name for a in ordered(report)] == [
        "keras-fp32", "tflite-int8", "prune-tflite-int8", "onnx-int8", "prune-onnx-int8",
    ]  # fmt: skip
    (first, second) = comparisons(report)
    assert first["base"] == "tflite-int8" and first["gzip"] == pytest.approx(0.5)
    assert first["delta"] == pytest.approx(-0.005) and second["base"] == "onnx-int8"
    markdown = to_markdown(report)
    assert (
        "## What optimization bought" in markdown and "| prune-onnx-int8 | onnx-int8 |" in markdown
    )
    data = report.to_dict()
    assert "variant" not in data["artifacts"][1] and data["artifacts"][3]["variant"] == "prune"
    assert Report.from_dict(data).artifacts[3].base_name == "tflite-int8"
    plain = Report(report.reference, report.artifacts[:3], {})
    assert comparisons(plain) == [] and "What optimization bought" not in to_markdown(plain)
