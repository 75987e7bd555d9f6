"""`keras-edge predict ARTIFACT INPUT...` and `keras-edge inspect ARTIFACT`.

Both work on any artifact the runtimes can open: a run directory or .keras file, a .tflite
(LiteRT) or an .onnx (ONNX Runtime) file, so a user can check a converted file directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from toolkit.core.errors import UserError


def resolve_artifact(path: Path) -> Path:
    """A run directory means its model.keras; anything else must be an existing file."""
    if path.is_dir():
        model = path / "model.keras"
        if model.is_file():
            return model
        raise UserError(f"{path} is a directory without model.keras; give a model file")
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    return path


def _labels(spec: dict[str, Any] | None, n: int) -> list[str]:
    labels = (spec or {}).get("labels") or []
    return labels if len(labels) == n else [str(i) for i in range(n)]


def predict_command(
    artifact: Path = typer.Argument(..., help="Run dir, .keras, .tflite or .onnx file."),
    inputs: list[Path] = typer.Argument(..., help="Images, .npy arrays or .csv tables."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Classes to show per input."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
    provider: str | None = typer.Option(
        None, "--provider", help="LiteRT delegate (xnnpack|reference) or ONNX Runtime provider."
    ),
) -> None:
    """Run a model on input files and print the top classes (or the regression values)."""
    import numpy as np

    from toolkit.core.tasks import get_task
    from toolkit.data.inputs import find_input_spec, load_inputs
    from toolkit.runtimes import open_runner

    model_path = resolve_artifact(artifact)
    spec = find_input_spec(model_path)
    runner = open_runner(model_path, provider=provider)
    try:
        shape = tuple(int(d) for d in runner.inputs[0].shape[1:])
        batch, names = load_inputs(inputs, shape, spec)
        outputs = np.asarray(runner.predict(batch))
    finally:
        runner.close()
    task = get_task((spec or {}).get("task", "classification"))
    width = int(np.prod(outputs.shape[1:])) if outputs.ndim > 1 else 1
    labels = _labels(spec, 2 if width == 1 and task.classifies else width)
    if task.decode is not None:  # detection: raw outputs -> NMS-decoded boxes per input
        labels = list((spec or {}).get("labels") or [])
        outputs = task.decode(outputs, shape, len(labels))
    results = [
        {"input": name, **task.view(row, labels, top_k)}
        for name, row in zip(names, outputs, strict=True)
    ]
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    for item in results:
        typer.echo(f"{item['input']}: {_shown(item)}")


def _shown(item: dict[str, Any]) -> str:
    """One prediction as text, whichever view the task gave (top classes, labels, values)."""
    if "boxes" in item:
        return "; ".join(f"{b['label']} ({b['score']:.3f}) at {b['box']}"
                         for b in item["boxes"]) or "(no boxes)"  # fmt: skip
    if "top" in item or "labels" in item:
        picked = item.get("top", item.get("labels")) or []
        return ", ".join(f"{t['label']} ({t['score']:.3f})" for t in picked) or "(none)"
    if "value" in item:
        return ", ".join(f"{v:.4f}" for v in item["value"])
    return f"score {item['score']:.4f}"


def _details(path: Path) -> dict[str, Any]:
    """Format-specific facts read from the file: ops, params, estimated MACs (TFLite, ONNX)."""
    from toolkit.core.model_stats import artifact_stats

    try:  # the runtime already loaded the file; a graph it runs but we cannot parse is foreign
        return artifact_stats(path) or {}
    except Exception as exc:
        raise UserError(f"{path}: loads, but its graph cannot be read for stats: {exc}") from exc


def inspect_command(
    artifact: Path = typer.Argument(..., help="Run dir, .keras, .tflite or .onnx file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show an artifact's inputs, outputs (dtype, quantization), size, ops and input spec."""
    import hashlib
    from dataclasses import asdict

    from toolkit.data.inputs import find_input_spec
    from toolkit.runtimes import open_runner

    path = resolve_artifact(artifact)
    runner = open_runner(path)
    try:
        info: dict[str, Any] = {
            "path": str(path),
            "runtime": runner.name,
            "size_bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "inputs": [asdict(t) for t in runner.inputs],
            "outputs": [asdict(t) for t in runner.outputs],
        }
        if runner.name == "keras":
            info["params"] = int(runner.model.count_params())
            info["layers"] = len(runner.model.layers)
    finally:
        runner.close()
    info.update(_details(path))
    if path.suffix.lower() == ".tflite":
        info["tflm"] = _tflm_details(path)
    info["input_spec"] = find_input_spec(path)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    out = Console()
    table = Table(title=str(path), header_style="bold", show_lines=False)
    table.add_column("tensor")
    table.add_column("name")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("quantization (scale, zero point)")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            q = t.get("quantization")
            table.add_row(kind[:-1], t["name"], str(t["shape"]), t["dtype"], str(q) if q else "")
    out.print(table)
    out.print(f"runtime {info['runtime']}, {info['size_bytes']:,} bytes, sha256 {info['sha256']}")
    if "layers" in info:
        out.print(f"{info['params']:,} parameters in {info['layers']} layers")
    elif "params" in info:
        out.print(
            f"{info['params']:,} parameters, ~{info['macs']:,} MACs per sample (conv/matmul ops)",
            highlight=False,
        )
    if info.get("bytes"):
        parts = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in info["bytes"].items())
        out.print(f"bytes: {parts}", highlight=False)
    if info.get("ops"):
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(info["ops"].items()))
        out.print(f"ops: {ops}", highlight=False)
    if info.get("tflm"):
        out.print(_tflm_line(info["tflm"]), highlight=False)
    spec = info["input_spec"]
    if spec:
        labels = spec.get("labels") or []
        out.print(
            f"input spec: {spec.get('kind')} {spec.get('task')}, raw shape {spec.get('shape')}, "
            f"value range {spec.get('value_range')}, normalize {spec.get('normalize')}, "
            f"{len(labels)} labels",
            highlight=False,
        )


def _tflm_details(path: Path) -> dict[str, Any] | None:
    """Microcontroller facts: measured TFLM arena, flash estimate, stripped size (docs/mcu.md),
    measured in a child process. None without tflite-micro; {"error": ...} when TFLM cannot
    run the model."""
    import tempfile

    from toolkit.package.mcu.strip import schema_floor, strip_model
    from toolkit.runtimes.tflm import tflm_available
    from toolkit.runtimes.tflm_arena import measure_arena_isolated

    if not tflm_available():
        return None
    content = path.read_bytes()
    if len(content) > 16 << 20:  # no microcontroller flashes this; bisection would take a while
        return {"error": f"not measured: {len(content):,} bytes is over any MCU's flash"}
    try:
        stripped = strip_model(content)
        floor = schema_floor(content)
    except Exception as exc:  # LiteRT loaded it; a graph our editor cannot rewrite is foreign
        return {"error": f"cannot strip {path.name} for TFLM: {type(exc).__name__}"}
    with tempfile.TemporaryDirectory(prefix="keras-edge-inspect-") as work:
        flashed = Path(work) / "model.tflite"
        flashed.write_bytes(stripped)
        measured = measure_arena_isolated(flashed)
    if "error" in measured:
        return {"error": measured["error"].replace("model.tflite", path.name)}
    return {**measured, "schema_floor_bytes": floor}


def _tflm_line(tflm: dict[str, Any]) -> str:
    if "error" in tflm:
        return f"tflm: {tflm['error']}"
    return (
        f"tflm: arena {tflm['arena_bytes']:,} bytes measured (TFLM record "
        f"{tflm['recorded_bytes']:,} = {tflm['head_bytes']:,} activations + "
        f"{tflm['tail_bytes']:,} persistent); flash "
        f"~{tflm['flash_estimate_bytes']:,} bytes (model {tflm['model_bytes']:,} stripped, schema "
        f"floor {tflm['schema_floor_bytes']:,}, + TFLM code estimate)"
    )


def register(app: typer.Typer, guarded: Callable[..., Any]) -> None:
    app.command("predict")(guarded(predict_command))
    app.command("inspect")(guarded(inspect_command))
