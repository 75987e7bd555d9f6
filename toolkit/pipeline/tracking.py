"""Experiment tracking with MLflow (`--track mlflow[:URI]` on train, tune, optimize, export).

Tracking reads what a stage already wrote (recipe.yaml, history.csv, metrics.json,
report.json, plots) after the stage returned, so the stages stay free of tracking code and a
run tracked late looks the same as one tracked live. Runs of one recipe share an experiment
named after the recipe; a tune study is a parent run with one child run per trial. The
default store is a sqlite file under the runs dir (`RUNS/mlflow.db`, artifacts beside it in
`RUNS/mlartifacts/`), so nothing leaves the machine unless URI says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError

MAX_PARAM = 500  # characters kept of one param value (mlflow refuses longer ones)


def tracking_uri(spec: str, runs_dir: Path | str) -> str:
    """`mlflow` -> sqlite under the runs dir; `mlflow:URI` -> URI (a bare .db path -> sqlite)."""
    kind, _, uri = spec.partition(":")
    if kind != "mlflow":
        raise UserError(
            f"--track expects mlflow or mlflow:URI (e.g. mlflow:sqlite:///m.db); got {spec!r}"
        )
    if not uri:
        root = Path(runs_dir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{root / 'mlflow.db'}"
    if "://" not in uri:  # a plain file path: a sqlite store there
        path = Path(uri).expanduser().resolve()
        if not path.parent.is_dir():
            raise UserError(f"--track {spec}: folder {path.parent} does not exist")
        return f"sqlite:///{path}"
    return uri


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a local sqlite store go beside the .db file (not into ./mlruns)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def check_track(spec: str, runs_dir: Path | str) -> str:
    """Resolve `--track` and open its store before a stage runs, so a typo or an unreachable
    server is one line at the start, not after an hour of training. Returns the URI."""
    uri = tracking_uri(spec, runs_dir)
    client(uri)
    return uri


def client(uri: str) -> Any:
    import logging
    import os

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" chatter
    # mlflow retries an unreachable server for minutes by default; fail within seconds
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    from mlflow.tracking import MlflowClient

    try:
        handle = MlflowClient(tracking_uri=uri)
        handle.search_experiments(max_results=1)  # fail here, in one line, not mid-run
    except Exception as err:
        line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"--track: cannot open MLflow store {uri}: {line}") from None
    return handle


def experiment_id(handle: Any, name: str, uri: str) -> str:
    found = handle.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    root = _artifact_root(uri)
    location = f"{root}/{name}" if root else None
    return handle.create_experiment(name, artifact_location=location)


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """A nested recipe as dotted params: {"train.optimizer.name": "adam", ...}."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    text = json.dumps(data) if isinstance(data, (list, tuple)) else str(data)
    return {prefix.rstrip("."): text[:MAX_PARAM]}


def scalars(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numeric leaves of a metrics dict (lists such as confusion matrices left out)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(scalars(value, f"{prefix}{key}."))
        elif _number(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def _number(value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(float(value))


def _log(
    handle: Any,
    run_id: str,
    params: dict[str, str],
    metrics: dict[str, float],
    steps: list[tuple[str, float, int]] | None = None,
) -> None:
    import time

    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    entries = [Metric(k, v, now, 0) for k, v in metrics.items()]
    entries += [Metric(k, v, now, step) for k, v, step in steps or []]
    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):  # mlflow caps a batch at 100 params, 1000 metrics
        handle.log_batch(run_id, params=items[i : i + 100])
    for i in range(0, len(entries), 1000):
        handle.log_batch(run_id, metrics=entries[i : i + 1000])


def _artifacts(handle: Any, run_id: str, folder: Path, names: list[str]) -> list[str]:
    logged = []
    for name in names:
        path = folder / name
        if path.is_dir():
            handle.log_artifacts(run_id, str(path), artifact_path=name)
        elif path.is_file():
            handle.log_artifact(run_id, str(path))
        else:
            continue
        logged.append(name)
    return logged


def _run_recipe(run_dir: Path) -> dict[str, Any]:
    import yaml

    path = run_dir / "recipe.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def track_train(spec: str, run_dir: Path, runs_dir: Path | str) -> str:
    """Log a finished run dir: the resolved recipe as params, each epoch of history.csv,
    metrics.json's test/val numbers, and model.keras, recipe, metrics and plots as artifacts."""
    import csv

    uri = tracking_uri(spec, runs_dir)
    handle = client(uri)
    recipe = _run_recipe(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    exp = experiment_id(handle, str(recipe.get("name") or run_dir.name), uri)
    run = handle.create_run(
        exp,
        run_name=run_dir.name,
        tags={"keras-edge.stage": "train", "keras-edge.run_dir": str(run_dir)},
    )
    run_id = run.info.run_id
    steps: list[tuple[str, float, int]] = []
    with (run_dir / "history.csv").open(newline="") as handle_csv:
        for row in csv.DictReader(handle_csv):
            epoch = int(float(row.pop("epoch", len(steps))))
            steps += [(k, float(v), epoch) for k, v in row.items() if _finite(v)]
    picked = {k: metrics[k] for k in ("test", "val") if isinstance(metrics.get(k), dict)}
    extra = {k: metrics[k] for k in ("train_seconds", "params", "epochs_run") if k in metrics}
    _log(handle, run_id, flatten(recipe), {**scalars(picked), **scalars(extra)}, steps)
    _artifacts(
        handle,
        run_id,
        run_dir,
        ["model.keras", "recipe.yaml", "metrics.json", "history.csv", "input_spec.json", "plots"],
    )
    handle.set_terminated(run_id)
    return (
        f"tracked: MLflow run {run_id} (experiment {recipe.get('name') or run_dir.name!r}) in {uri}"
    )


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """report.json rows as metrics: `<artifact>/<runtime>[/<provider>]/<field>`."""
    out: dict[str, float] = {}
    ref = (report.get("reference") or {}).get("metric") or {}
    if isinstance(ref.get("value"), (int, float)):
        out[f"reference/{ref.get('name', 'metric')}"] = float(ref["value"])
    for row in report.get("artifacts", []):
        key = "/".join(
            str(p) for p in (row.get("name"), row.get("runtime"), row.get("provider")) if p
        )
        fields = {
            "size_bytes": row.get("size_bytes"),
            "gzip_bytes": row.get("gzip_bytes"),
            "drop": row.get("drop"),
            "agreement": row.get("agreement"),
            "max_abs_diff": row.get("max_abs_diff"),
        }
        metric = row.get("metric") or {}
        if metric.get("name"):
            fields[str(metric["name"])] = metric.get("value")
        for name, value in (row.get("latency_ms") or {}).items():
            fields[f"latency_{name}_ms"] = value
        out.update(scalars({k: v for k, v in fields.items() if v is not None}, f"{key}/"))
    return {k.replace(":", "_"): v for k, v in out.items()}


def track_export(
    spec: str, export_dir: Path, runs_dir: Path | str, params: dict[str, Any], gate: str = "passed"
) -> str:
    """Log a finished export: every report.json row as metrics (artifact x runtime), the
    export options as params, report.json/.md, plots and the artifact files as artifacts."""
    uri = tracking_uri(spec, runs_dir)
    handle = client(uri)
    run_dir = export_dir.parent if (export_dir.parent / "recipe.yaml").is_file() else export_dir
    name = str(_run_recipe(run_dir).get("name") or run_dir.name)
    exp = experiment_id(handle, name, uri)
    run = handle.create_run(
        exp,
        run_name=f"{run_dir.name}-export",
        tags={
            "keras-edge.stage": "export",
            "keras-edge.gate": gate,
            "keras-edge.export_dir": str(export_dir),
        },
    )
    report_path = export_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    shown = {
        k: json.dumps(v) if isinstance(v, list) else str(v)
        for k, v in params.items()
        if v is not None
    }
    _log(handle, run.info.run_id, shown, report_metrics(report))
    files = sorted(p.name for p in export_dir.iterdir() if p.is_file() or p.name == "plots")
    bundles = run_dir / "bundles"
    _artifacts(handle, run.info.run_id, export_dir, files)
    if bundles.is_dir():
        _artifacts(handle, run.info.run_id, bundles, sorted(p.name for p in bundles.glob("*.zip")))
    handle.set_terminated(run.info.run_id)
    return f"tracked: MLflow run {run.info.run_id} (experiment {name!r}) in {uri}"


def track_optimize(spec: str, result: Any, run_dir: Path, runs_dir: Path | str) -> str:
    """Log an optimize result: its steps, optimized vs dense test metrics, sizes, the model."""
    uri = tracking_uri(spec, runs_dir)
    handle = client(uri)
    name = str(_run_recipe(run_dir).get("name") or run_dir.name)
    exp = experiment_id(handle, name, uri)
    run = handle.create_run(
        exp,
        run_name=f"{run_dir.name}-{'+'.join(result.steps)}",
        tags={"keras-edge.stage": "optimize"},
    )
    metrics = {
        **scalars({"test": result.metrics.get("test", {})}),
        **scalars({"dense": result.reference}),
        **scalars({"size": result.size}),
    }
    _log(handle, run.info.run_id, {"steps": "+".join(result.steps)}, metrics)
    out = Path(result.out_dir)
    _artifacts(handle, run.info.run_id, out, sorted(p.name for p in out.iterdir()))
    handle.set_terminated(run.info.run_id)
    return f"tracked: MLflow run {run.info.run_id} (experiment {name!r}) in {uri}"


def track_tune(spec: str, recipe: Any, result: Any) -> str:
    """A study as a parent run (search settings, best value, best-recipe.yaml) with one child
    run per trial (its sampled values, validation/test metric and state)."""
    uri = tracking_uri(spec, Path(result.out_dir).parent)
    handle = client(uri)
    exp = experiment_id(handle, recipe.name, uri)
    parent = handle.create_run(
        exp, run_name=result.study or f"{recipe.name}-tune", tags={"keras-edge.stage": "tune"}
    )
    pid = parent.info.run_id
    best = result.best or {}
    _log(
        handle,
        pid,
        flatten(recipe.model_dump(mode="json")),
        scalars(
            {
                "best": {
                    "val_" + result.metric: best.get("value"),
                    "test_" + result.metric: best.get("test"),
                },
                "trials": {k.lower(): v for k, v in result.counts.items()},
            }
        ),
    )
    for row in result.trials:
        child = handle.create_run(
            exp,
            run_name=f"trial-{row['trial']}",
            tags={
                "mlflow.parentRunId": pid,
                "keras-edge.stage": "trial",
                "keras-edge.state": row["state"],
            },
        )
        values = {
            k: json.dumps(v) if isinstance(v, (list, dict)) else str(v)
            for k, v in row["values"].items()
        }
        numbers = {
            "val_" + result.metric: row["value"],
            "test_" + result.metric: row["test"],
            "seconds": row["seconds"],
            "int8_kb": row["int8_kb"],
        }
        _log(
            handle,
            child.info.run_id,
            values,
            scalars({k: v for k, v in numbers.items() if v is not None}),
        )
        handle.set_terminated(child.info.run_id, "FINISHED" if row["state"] != "FAIL" else "FAILED")
    _artifacts(handle, pid, Path(result.out_dir), ["best-recipe.yaml", "trials.csv", "tune.json"])
    handle.set_terminated(pid)
    return f"tracked: MLflow run {pid} with {len(result.trials)} trial runs in {uri}"
