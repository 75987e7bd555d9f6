"""The FastAPI app: /v1/predict, /v1/model, /v1/drift, /healthz, /readyz, /metrics, /docs.

Every client mistake is `{"error": "<one sentence>"}` with a 4xx code; anything unexpected is
a 500 with a generic message (the traceback goes to the server log, never to the client).
One pure-ASGI guard in front of the routes enforces the body size limit and the API key and
records every answer in the metrics, including the ones the routes never see.
"""

import hmac
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.serve.inputs import RequestError, from_image, from_json, top_k_from

LOG = logging.getLogger("keras_edge.serve")
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
DEFAULT_MAX_BODY = 8 << 20  # 8 MiB: a large photo, or a JSON batch of small inputs


@dataclass
class Options:
    max_batch: int = 1
    max_wait_ms: float = 5.0
    max_body_bytes: int = DEFAULT_MAX_BODY
    api_key: str | None = None
    top_k: int = 3
    window: int = 500
    drift_threshold: float | None = None
    log_dir: Path | None = None
    sample: float = 0.1


def _error_body(status: int, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    import json

    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="keras-edge"'))
    return body, headers


class Guard:
    """Body limit (Content-Length, then bytes as they arrive), API key, metrics per answer."""

    def __init__(self, app: Any, metrics: Any, max_body: int, api_key: str | None) -> None:
        self.app, self.metrics, self.max_body, self.api_key = app, metrics, max_body, api_key

    async def _reject(self, send: Any, status: int, message: str) -> None:
        body, headers = _error_body(status, message)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _key_ok(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"x-api-key", b"")
        auth = headers.get(b"authorization", b"")
        if not given and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return hmac.compare_digest(given, self.api_key.encode())  # type: ignore[union-attr]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]
        path = scope.get("path", "")

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            if self.api_key is not None and path not in OPEN_PATHS and not self._key_ok(headers):
                await self._reject(send_status, 401, "missing or wrong API key: send X-API-Key")
            elif length is not None and not length.isdigit():
                await self._reject(send_status, 400, "the Content-Length header is not a number")
            elif length is not None and int(length) > self.max_body:
                limit = f"{self.max_body} bytes"
                await self._reject(send_status, 413, f"request body over the {limit} limit")
            else:
                await self.app(scope, self._limited(receive), send_status)
        finally:
            self.metrics.observe_request(path, status[0], time.perf_counter() - start)

    def _limited(self, receive: Any) -> Any:
        seen = [0]

        async def limited() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise RequestError(413, f"request body over the {self.max_body} bytes limit")
            return message

        return limited


def create_app(served: Any, options: Options | None = None) -> Any:
    """A FastAPI app serving `served` (a source.Served)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    from toolkit.serve.batching import Inference
    from toolkit.serve.drift import DriftWindow
    from toolkit.serve.logs import RequestLog
    from toolkit.serve.metrics import Metrics
    from toolkit.serve.outputs import answers

    opts = options or Options()
    metrics = Metrics(opts.max_batch)
    reference = served.drift_reference
    if reference is not None and opts.drift_threshold is not None:
        reference = {
            **reference,
            "threshold": {**reference["threshold"], "psi": opts.drift_threshold},
        }
    window = DriftWindow(reference, opts.window)
    inference = Inference(
        served.predict,
        max_batch=opts.max_batch,
        max_wait_ms=opts.max_wait_ms,
        observe=metrics.observe_inference,
    )
    request_log = RequestLog(opts.log_dir, opts.sample) if opts.log_dir else None
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        await inference.start()
        await inference.run(np.zeros((1, *served.shape), np.float32))  # warm the runtime up
        state["ready"] = True
        yield
        state["ready"] = False
        await inference.stop()

    app = FastAPI(
        title=f"keras-edge serve: {served.name}",
        lifespan=lifespan,
        description="Predictions from a validated artifact, with drift monitoring.",
        redoc_url=None,
    )

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, err: HTTPException) -> JSONResponse:
        message = err.detail if isinstance(err.detail, str) else "bad request"
        return JSONResponse({"error": message}, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        first = (err.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _crash(_: Request, err: Exception) -> JSONResponse:
        LOG.exception("inference failed")
        return JSONResponse(
            {"error": f"internal error ({type(err).__name__}); see the server log"}, status_code=500
        )

    body_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["inputs"],
                        "properties": {
                            "inputs": {
                                "type": "array",
                                "description": f"one sample {list(served.shape)} or a "
                                "batch of them, raw values in the input spec's value_range",
                            },
                            "top_k": {"type": "integer", "minimum": 1},
                        },
                    }
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }

    async def _parse(request: Request) -> tuple[np.ndarray, int]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        top_k = request.query_params.get("top_k")
        if top_k is not None and (not top_k.isdigit() or int(top_k) < 1):
            raise RequestError(422, f"top_k must be a positive integer; got {top_k!r}")
        default = int(top_k) if top_k is not None else opts.top_k
        if kind == "application/json":
            body = await request.body()
            return from_json(body, served.shape), top_k_from(body, default)
        if kind == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=4, max_part_size=opts.max_body_bytes)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise RequestError(422, 'multipart upload needs an image in the field "file"')
            return from_image(await upload.read(), served.spec), default
        if kind.startswith("image/"):
            return from_image(await request.body(), served.spec), default
        raise RequestError(
            415,
            f"unsupported content type {kind or '(none)'!r}; send "
            "application/json, multipart/form-data or image/*",
        )

    @app.post("/v1/predict", openapi_extra=body_doc, summary="Predict one sample or a batch")
    async def predict(request: Request) -> JSONResponse:
        if not state["ready"]:
            raise RequestError(503, "the model is still loading")
        x, top_k = await _parse(request)
        start = time.perf_counter()
        raw = await inference.run(x)
        result, probs = answers(
            raw, served.postprocess, served.labels, top_k, host_softmax=served.host_softmax
        )
        window.add(x, probs)
        if request_log is not None:
            request_log.write(served.name, served.sha256, x, result, probs)
        return JSONResponse(
            {
                "model": served.name,
                "sha256": served.sha256,
                "predictions": result,
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
            }
        )

    @app.get("/v1/model", summary="Manifest, input spec, labels and validation row")
    async def model() -> dict[str, Any]:
        return {
            "name": served.name,
            "file": served.path.name,
            "sha256": served.sha256,
            "runtime": served.runner.name,
            "provider": served.runner.provider,
            "input": served.spec,
            "labels": served.labels,
            "postprocess": served.postprocess,
            "host_softmax": served.host_softmax,
            "validation": served.validation,
            "manifest": served.manifest,
            "drift_reference": reference,
            "notes": served.notes,
            "batching": {"max_batch": opts.max_batch, "max_wait_ms": opts.max_wait_ms},
        }

    @app.get("/v1/drift", summary="PSI and KS per feature and output drift of the window")
    async def drift() -> dict[str, Any]:
        return window.report()

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and warmed up")
    async def readyz() -> JSONResponse:
        ok = state["ready"]
        return JSONResponse(
            {"status": "ready" if ok else "loading", "model": served.name},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics_route() -> Response:
        metrics.set_drift(window.report())
        body, content_type = metrics.text()
        return Response(body, media_type=content_type)

    app.state.window, app.state.metrics = window, metrics
    return Guard(app, metrics, opts.max_body_bytes, opts.api_key)
