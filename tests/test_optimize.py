"""The optimize stage: pruning, clustering and QAT on a real (tiny) run, outputs and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolkit.errors import UserError

TINY = {
    "name": "tiny",
    "dataset": {"name": "digits", "image_size": [8, 8], "max_samples": 400},
    "model": {"builder": "cnn", "args": {"filters": [8, 16], "dense": 16}},
    "train": {"epochs": 2, "batch_size": 32, "tensorboard": False},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from toolkit.recipe import parse_recipe
    from toolkit.train import train

    return train(parse_recipe(TINY), tmp_path_factory.mktemp("runs")).run_dir


@pytest.fixture(scope="module")
def pruned(run_dir):
    from toolkit.optimize.config import from_flags
    from toolkit.optimize.stage import optimize

    return optimize(run_dir, from_flags(prune=0.5, epochs=1), run_dir / "pruned")


def _user_error(proc, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-1500:]


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
    from toolkit.optimize.config import from_flags

    with pytest.raises(UserError, match=needle):
        from_flags(**flags)


def test_recipe_section_parses_and_names_bad_keys() -> None:
    from toolkit.optimize.config import OptimizeConfig, parse_optimize

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
    from toolkit.optimize.config import from_flags
    from toolkit.optimize.stage import optimize

    result = optimize(run_dir, from_flags(cluster=8, epochs=1), run_dir / "clustered")
    assert result.layers and all(row["unique_weights"] <= 8 for row in result.layers)


def test_structured_2_4_refuses_a_layer_that_cannot_take_it(run_dir) -> None:
    from toolkit.modelio import load_model
    from toolkit.optimize import prune
    from toolkit.optimize.bridge import to_tf_keras
    from toolkit.optimize.config import PruneConfig

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
    _user_error(proc, "already optimized")


def test_cli_refuses_sparsity_outside_0_1(cli, tmp_path) -> None:
    _user_error(cli("optimize", str(tmp_path), "--prune", "1.5"), "--prune")


@pytest.mark.slow
def test_qat_exports_to_tflite_int8_and_onnx_qdq_that_run(run_dir, tmp_path) -> None:
    import onnx

    from toolkit.optimize.config import from_flags
    from toolkit.optimize.stage import optimize
    from toolkit.pipeline import run_export
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
