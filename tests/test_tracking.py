"""`--track mlflow`: train, export and tune logged to MLflow, read back through its client API."""

from __future__ import annotations

import json

import pytest
import yaml

from toolkit.core.errors import UserError

RECIPE = {
    "name": "tracked-mlp",
    "dataset": {"name": "digits", "image_size": [8, 8], "max_samples": 400},
    "preprocess": {"normalize": "standardize"},
    "model": {"builder": "mlp", "args": {"hidden": [16]}},
    "train": {"epochs": 2, "batch_size": 32, "tensorboard": False,
              "optimizer": {"name": "adam", "learning_rate": 0.003}},
}  # fmt: skip


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_track_spec_errors(tmp_path) -> None:
    from toolkit.pipeline.tracking import tracking_uri

    assert tracking_uri("mlflow", tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert tracking_uri("mlflow:http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"
    assert tracking_uri(f"mlflow:{tmp_path}/m.db", tmp_path).endswith("/m.db")
    with pytest.raises(UserError, match="--track expects mlflow"):
        tracking_uri("wandb", tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        tracking_uri("mlflow:/nonexistent-dir/m.db", tmp_path)


def test_unreachable_tracking_server_is_one_line_before_any_work(tmp_path) -> None:
    import socket

    from toolkit.pipeline.tracking import check_track

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=f"cannot open MLflow store http://127.0.0.1:{port}"):
        check_track(f"mlflow:http://127.0.0.1:{port}", tmp_path)


def test_report_rows_become_metrics() -> None:
    from toolkit.pipeline.tracking import report_metrics

    report = {
        "reference": {"name": "keras", "metric": {"name": "accuracy", "value": 0.9}},
        "artifacts": [{"name": "tflite-int8", "runtime": "litert", "provider": "xnnpack",
                       "metric": {"name": "accuracy", "value": 0.88}, "drop": 0.02,
                       "size_bytes": 100, "latency_ms": {"p50": 0.1, "p90": None},
                       "agreement": None}],
    }  # fmt: skip
    assert report_metrics(report) == {
        "reference/accuracy": 0.9,
        "tflite-int8/litert/xnnpack/accuracy": 0.88,
        "tflite-int8/litert/xnnpack/drop": 0.02,
        "tflite-int8/litert/xnnpack/size_bytes": 100.0,
        "tflite-int8/litert/xnnpack/latency_p50_ms": 0.1,
    }


def test_cli_bad_track_exits_2_before_training(cli, tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    proc = cli("train", str(path), "--runs-dir", str(tmp_path), "--track", "tensorboard")
    assert proc.returncode == 2 and "--track expects mlflow" in proc.stderr
    assert not (tmp_path / "tracked-mlp").exists()


@pytest.mark.slow
def test_train_then_export_tracked_and_read_back(cli, tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    runs = tmp_path / "runs"
    proc = cli("train", str(path), "--runs-dir", str(runs), "--track", "mlflow")
    assert proc.returncode == 0, proc.stderr
    run_dir = runs / "tracked-mlp"
    proc = cli("export", str(run_dir), "--formats", "tflite", "--precisions", "fp32,int8",
               "--latency-runs", "3", "--track", "mlflow")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "tracked: MLflow run" in proc.stdout + proc.stderr

    client = _client(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked-mlp")  # one experiment per recipe
    assert experiment is not None
    runs_found = {r.data.tags["keras-edge.stage"]: r for r in
                  client.search_runs([experiment.experiment_id])}  # fmt: skip
    assert set(runs_found) == {"train", "export"}

    train = runs_found["train"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert train.data.metrics["test.accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert train.data.params["train.optimizer.learning_rate"] == "0.003"
    assert train.data.params["model.builder"] == "mlp"
    history = client.get_metric_history(train.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [0, 1]  # one point per epoch
    names = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"model.keras", "recipe.yaml", "metrics.json", "plots"} <= names

    export = runs_found["export"]
    report = json.loads((run_dir / "export" / "report.json").read_text())
    assert report["artifacts"]
    for row in report["artifacts"]:
        if row.get("metric", {}).get("value") is None:
            continue
        key = "/".join(p for p in (row["name"], row["runtime"], row.get("provider")) if p)
        value = export.data.metrics[f"{key}/{row['metric']['name']}"]
        assert value == pytest.approx(row["metric"]["value"])
        assert export.data.metrics[f"{key}/size_bytes"] == row["size_bytes"]
    names = {a.path for a in client.list_artifacts(export.info.run_id)}
    assert {"report.json", "report.md", "model-int8.tflite"} <= names


@pytest.mark.slow
def test_tune_is_a_parent_run_with_a_child_per_trial(tmp_path) -> None:
    from toolkit.core.recipe import parse_recipe
    from toolkit.pipeline.tracking import track_tune
    from toolkit.pipeline.tuning import tune

    space = {"train.optimizer.learning_rate": {"low": 0.001, "high": 0.01}}
    search = {"trial_epochs": 1, "prune": False, "params": space}
    recipe = parse_recipe({**RECIPE, "search": search})
    result = tune(recipe, trials=2, out_dir=tmp_path / "runs" / "tracked-mlp-tune")
    line = track_tune("mlflow", recipe, result)
    assert "with 2 trial runs" in line
    client = _client(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked-mlp")
    found = client.search_runs([experiment.experiment_id])
    parents = [r for r in found if r.data.tags["keras-edge.stage"] == "tune"]
    children = [r for r in found if r.data.tags["keras-edge.stage"] == "trial"]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    best = max(children, key=lambda c: c.data.metrics["val_accuracy"])
    assert parents[0].data.metrics["best.val_accuracy"] == best.data.metrics["val_accuracy"]
    assert "best-recipe.yaml" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
