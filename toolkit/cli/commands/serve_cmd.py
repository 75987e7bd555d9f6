"""`keras-edge serve ARTIFACT|EXPORT_DIR|BUNDLE` and `keras-edge monitor LOG_DIR --bundle B`.

FastAPI, uvicorn and the runtimes are imported inside the commands: `keras-edge --help` stays
fast. Serving a .tflite or .onnx needs no TensorFlow at all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer


def serve_command(
    target: Path = typer.Argument(
        ..., help="A .tflite/.onnx/.keras file, an export dir or a bundle."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0: all)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    workers: int = typer.Option(1, "--workers", help="uvicorn worker processes."),
    model: str | None = typer.Option(
        None, "--model", help="Export dir: the file to serve (default: the int8 .tflite)."
    ),
    max_batch: int = typer.Option(
        1, "--max-batch", help="Dynamic batching: run up to N queued samples as one batch."
    ),
    max_wait_ms: float = typer.Option(
        5.0, "--max-wait-ms", help="Dynamic batching: wait at most T ms to fill a batch."
    ),
    max_body_bytes: int = typer.Option(8 << 20, "--max-body-bytes", help="Request size limit."),
    api_key_file: Path | None = typer.Option(
        None,
        "--api-key-file",
        help="Require this key (X-API-Key or Bearer) on every endpoint "
        "but /healthz, /readyz and the docs.",
    ),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads."),
    top_k: int = typer.Option(3, "--top-k", help="Classes per prediction (default)."),
    window: int = typer.Option(500, "--window", help="Drift: samples in the rolling window."),
    drift_threshold: float | None = typer.Option(
        None, "--drift-threshold", help="Drift: PSI threshold (default: the manifest's, 0.2)."
    ),
    log_requests: Path | None = typer.Option(
        None, "--log-requests", help="Append sampled requests to DIR/requests-<pid>.jsonl."
    ),
    sample: float = typer.Option(0.1, "--sample", help="Fraction of samples to log."),
) -> None:
    """Serve a model over HTTP: /v1/predict, /v1/model, /v1/drift, /metrics, /docs."""
    from toolkit.core.progress import console
    from toolkit.serve.stage import ServeConfig, build, run_server

    config = ServeConfig(
        target=str(target),
        host=host,
        port=port,
        workers=workers,
        model=model,
        threads=threads,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_body_bytes=max_body_bytes,
        top_k=top_k,
        window=window,
        drift_threshold=drift_threshold,
        sample=sample,
        api_key_file=str(api_key_file) if api_key_file else None,
        log_requests=str(log_requests) if log_requests else None,
    )
    # Only loading runs under the CLI's error policy and output capture: a long-running server
    # must log to the real stderr, not into the capture's temporary file.
    app, served = _GUARDED["fn"](build, heavy=False)(config)
    run_server(
        app, served, config, lambda text: console.print(text, highlight=False, soft_wrap=True)
    )


def monitor_command(
    log_dir: Path = typer.Argument(..., help="Directory of serve --log-requests JSONL files."),
    bundle: Path = typer.Option(..., "--bundle", "-b", help="The bundle that was served."),
    out: Path | None = typer.Option(None, "--out", help="Report dir (default: LOG_DIR)."),
    threshold: float | None = typer.Option(
        None, "--threshold", help="PSI threshold (default: the manifest's)."
    ),
    fail_on_drift: bool = typer.Option(
        False, "--fail-on-drift", help="Exit 1 when drift is found (a CI or cron gate)."
    ),
) -> None:
    """Offline drift report (drift.md, drift.json, drift.png) from sampled request logs."""
    from toolkit.core.errors import GateFailed
    from toolkit.core.progress import console
    from toolkit.serve.monitor import monitor

    result = monitor(log_dir, bundle, out, threshold)
    report = result.report
    console.print(
        f"{report['samples']} samples: {report['status']} (max input PSI "
        f"{report.get('max_input_psi', 0):.4f}, output PSI {report.get('max_output_psi', 0):.4f})"
        f" -> {result.markdown}",
        highlight=False,
        soft_wrap=True,
    )
    if fail_on_drift and report.get("drift"):
        raise GateFailed(f"drift detected in {report['samples']} logged samples")


_GUARDED: dict[str, Callable[..., Any]] = {}


def register(app: typer.Typer, guarded: Callable[..., Any]) -> None:
    _GUARDED["fn"] = guarded
    app.command("serve")(serve_command)  # guards its loading step itself (above)
    app.command("monitor")(guarded(monitor_command, heavy=False))
