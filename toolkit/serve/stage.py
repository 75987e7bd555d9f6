"""The serve stage: `serve(target, ...)` runs an HTTP server for an artifact, export or bundle.

The model is loaded (and a bundle's sha256s checked) before uvicorn starts, so a tampered
bundle or a missing file is a one-line error, not a server that answers 500s. With
`workers > 1` each uvicorn worker process loads its own copy through `app_from_env`; metrics
and drift windows are then per worker.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError
from toolkit.serve.app import DEFAULT_MAX_BODY, Options

CONFIG_ENV = "KERAS_EDGE_SERVE_CONFIG"


@dataclass
class ServeConfig:
    target: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    model: str | None = None
    threads: int | None = None
    max_batch: int = 1
    max_wait_ms: float = 5.0
    max_body_bytes: int = DEFAULT_MAX_BODY
    api_key_file: str | None = None
    top_k: int = 3
    window: int = 500
    drift_threshold: float | None = None
    log_requests: str | None = None
    sample: float = 0.1

    def check(self) -> None:
        """Reject bad values with one sentence each, before anything is loaded."""
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port must be 0..65535; got {self.port}")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            if self.host != "localhost":
                raise UserError(f"--host must be an IP address; got {self.host!r}") from None
        for name, value, low in (
            ("--workers", self.workers, 1),
            ("--max-batch", self.max_batch, 1),
            ("--top-k", self.top_k, 1),
            ("--window", self.window, 30),
            ("--max-body-bytes", self.max_body_bytes, 1024),
        ):
            if value < low:
                raise UserError(f"{name} must be at least {low}; got {value}")
        if self.max_wait_ms < 0:
            raise UserError(f"--max-wait-ms must be >= 0; got {self.max_wait_ms}")
        if self.drift_threshold is not None and self.drift_threshold <= 0:
            raise UserError(f"--drift-threshold must be > 0; got {self.drift_threshold}")
        if not 0 < self.sample <= 1:
            raise UserError(f"--sample must be in (0, 1]; got {self.sample}")

    def options(self) -> Options:
        return Options(
            max_batch=self.max_batch,
            max_wait_ms=self.max_wait_ms,
            max_body_bytes=self.max_body_bytes,
            api_key=read_api_key(self.api_key_file),
            top_k=self.top_k,
            window=self.window,
            drift_threshold=self.drift_threshold,
            log_dir=Path(self.log_requests) if self.log_requests else None,
            sample=self.sample,
        )


def read_api_key(path: str | None) -> str | None:
    """The key is the file's first line; an empty or unreadable file is an error, not 'no key'."""
    if path is None:
        return None
    try:
        key = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the API key file {path}: {err}") from None
    if not key or len(key[0].strip()) < 8:
        raise UserError(f"the API key file {path} must hold a key of at least 8 characters")
    return key[0].strip()


def build(config: ServeConfig) -> tuple[Any, Any]:
    """(ASGI app, Served) for a config: loads and checks the model."""
    from toolkit.serve.app import create_app
    from toolkit.serve.source import load

    config.check()
    options = config.options()
    served = load(config.target, config.model, config.threads)
    return create_app(served, options), served


def app_from_env() -> Any:
    """uvicorn factory for worker processes: the config travels in $KERAS_EDGE_SERVE_CONFIG."""
    return build(ServeConfig(**json.loads(os.environ[CONFIG_ENV])))[0]


def serve(config: ServeConfig, announce: Any = print) -> None:
    """Load, then serve until interrupted."""
    app, served = build(config)
    run_server(app, served, config, announce)


def run_server(app: Any, served: Any, config: ServeConfig, announce: Any = print) -> None:
    """Serve a built app until interrupted; uvicorn logs (and 500 tracebacks) go to stderr."""
    import uvicorn

    where = f"http://{config.host}:{config.port}"
    for note in served.notes:
        announce(f"note: {note}")
    batching = (
        f"dynamic batching up to {config.max_batch} within {config.max_wait_ms:g} ms"
        if config.max_batch > 1
        else "no batching"
    )
    announce(
        f"serving {served.name} ({served.runner.name} {served.runner.provider}, "
        f"sha256 {served.sha256[:12]}) on {where}: {batching}; docs at {where}/docs"
    )
    log = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "err": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["err"], "level": "INFO"},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "keras_edge": {"handlers": ["err"], "level": "INFO"},
        },
    }
    if config.workers > 1:
        os.environ[CONFIG_ENV] = json.dumps(asdict(config))
        uvicorn.run(
            "toolkit.serve.stage:app_from_env",
            factory=True,
            host=config.host,
            port=config.port,
            workers=config.workers,
            log_config=log,
            timeout_graceful_shutdown=5,
        )
        return
    uvicorn.run(
        app, host=config.host, port=config.port, log_config=log, timeout_graceful_shutdown=5
    )
