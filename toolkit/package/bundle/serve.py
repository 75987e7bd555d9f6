#!/usr/bin/env python3
"""Serve this bundle's model over HTTP on the device: `python serve.py [--host H] [--port P]`.

Needs fastapi, uvicorn, numpy, Pillow, the bundle's runtime and two small pure-Python helpers
(prometheus-client for /metrics, python-multipart for image uploads): requirements-serve.txt.
Not the toolkit, not TensorFlow. The model runs through run.py beside it, so answers equal
`run.py --json`. Every file's sha256 is checked before serving; a changed bundle refuses to
start (exit 1). Endpoints: POST /v1/predict, GET /v1/model, /v1/drift, /healthz, /readyz,
/metrics, /docs. Drift: PSI and KS per input channel/feature and output-distribution PSI
of a rolling window against the reference statistics in manifest.json.
"""

import argparse
import asyncio
import functools
import hmac
import io
import json
import os
import random
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _load(name: str):
    """A module of this bundle by path (not sys.path): run.py and drift.py beside this file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"keras_edge_bundle_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load("run")  # the model, image decoding and the integrity check run.py uses


@functools.lru_cache(maxsize=1)
def _detector():
    """detect.py (detection bundles only): loaded on the first detection request."""
    return _load("detect")


drift_math = _load("drift")  # the drift statistics (numpy only)
reference_stats = drift_math.reference_stats

MAX_BATCH, MAX_PIXELS = 256, 4096 * 4096


def class_probabilities(raw: np.ndarray, model, entry: dict) -> np.ndarray:
    """Raw outputs -> class probabilities exactly as run.py computes them."""
    scores = run.dequantize(raw, model.outputs[0]).reshape(len(raw), -1).astype(np.float64)
    if entry.get("postprocess") == "softmax":  # the bundle moved the softmax out of the model
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    return run.probabilities(scores)


# ---- the server -------------------------------------------------------------------------
class Problem(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def parse_json(body: bytes, shape: tuple) -> np.ndarray:
    try:
        data = json.loads(body, parse_constant=lambda name: float("nan"))
    except (ValueError, UnicodeDecodeError) as err:
        raise Problem(400, f"the body is not valid JSON ({err})") from None
    if not isinstance(data, dict) or "inputs" not in data:
        raise Problem(422, 'expected a JSON object {"inputs": [...]} (one sample or a batch)')
    try:  # numpy settles the common type in C; a mixed (object) result is walked for the culprit
        x = np.asarray(data["inputs"])
    except (ValueError, OverflowError):
        x = np.asarray([None], dtype=object)
    if x.dtype.kind == "O":
        stack = [data["inputs"]]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, bool) or not isinstance(item, (int, float)):
                raise Problem(422, f"inputs must hold numbers only; found {type(item).__name__}")
        try:
            x = np.asarray(data["inputs"], dtype=np.float64)
        except (ValueError, OverflowError):
            raise Problem(
                422, "inputs are ragged (every sample and row must have one length) or too large"
            ) from None
    elif x.dtype.kind not in "iuf":
        found = {"b": "bool", "U": "str", "S": "str"}.get(x.dtype.kind, x.dtype.name)
        raise Problem(422, f"inputs must hold numbers only; found {found}")
    x = x.astype(np.float64)
    x = x[None] if tuple(x.shape) == shape else x
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or not len(x):
        want = "x".join(map(str, shape))
        raise Problem(
            422,
            f"inputs have shape {'x'.join(map(str, x.shape))}; the model takes "
            f"one sample of {want} or a batch N x {want}",
        )
    if len(x) > MAX_BATCH:
        raise Problem(413, f"a batch of {len(x)} samples; at most {MAX_BATCH} per request")
    if not np.isfinite(x).all() or np.abs(x).max() > np.finfo(np.float32).max:
        raise Problem(422, "inputs contain NaN, infinite or out-of-float32 values")
    return x.astype(np.float32)


def parse_image(content: bytes, spec: dict) -> np.ndarray:
    from PIL import Image

    if spec.get("kind") != "image":
        raise Problem(415, f"this model takes {spec['shape']} arrays as JSON, not images")
    try:
        with Image.open(io.BytesIO(content)) as probe:
            width, height = probe.size
    except (OSError, ValueError) as err:
        raise Problem(422, f"not a readable image ({type(err).__name__})") from None
    if width * height > MAX_PIXELS:
        raise Problem(413, f"the image is {width}x{height} pixels; at most {MAX_PIXELS} pixels")
    try:
        return run.load_image(io.BytesIO(content), spec)[0][None]
    except (run.BundleError, OSError, ValueError, Image.DecompressionBombError):
        raise Problem(422, "not a readable image: truncated or corrupt") from None


def create_app(
    bundle: Path = HERE,
    api_key: str | None = None,
    max_body: int = 8 << 20,
    window_size: int = 500,
    log_dir: Path | None = None,
    sample: float = 0.1,
):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
    )
    from starlette.exceptions import HTTPException

    manifest = run.load_manifest(bundle)
    run.verify(bundle, manifest)  # every file, before anything is served
    entry = run.pick(manifest, None)
    model = run.Model(run.inside(bundle, entry["file"]), entry)
    spec, labels = manifest["input"], manifest.get("labels") or []
    sha, name = manifest["files"][entry["file"]], f"{manifest['name']}:{entry['name']}"
    shape, reference = tuple(spec["shape"]), manifest.get("drift")
    lock, window = threading.Lock(), deque(maxlen=window_size)
    reg = CollectorRegistry()
    requests = Counter("keras_edge_requests", "HTTP requests", ["path", "code"], registry=reg)
    latency = Histogram(
        "keras_edge_request_duration_seconds", "Request time", ["path"], registry=reg
    )
    psi_g = Gauge("keras_edge_drift_psi", "Input PSI", ["feature"], registry=reg)
    ks_g = Gauge("keras_edge_drift_ks", "Input KS", ["feature"], registry=reg)
    out_g = Gauge("keras_edge_output_drift_psi", "Output PSI", ["kind"], registry=reg)
    drift_g = Gauge("keras_edge_drift_detected", "1 drift, 0 none, -1 warming up", registry=reg)
    log_path = log_dir / f"requests-{os.getpid()}.jsonl" if log_dir else None
    if log_path:
        log_dir.mkdir(parents=True, exist_ok=True)

    def infer(x: np.ndarray) -> tuple[list, np.ndarray | None]:
        with lock:  # one interpreter: one inference at a time
            raw = model.run_float(x)
        post = (manifest.get("output") or {}).get("postprocess") or "classes"
        if post == "boxes":  # a detector: the boxes run.py prints (detect.py beside this file)
            detect = _detector()
            size = manifest["input"]["shape"][:2]
            rows = detect.decode(run.dequantize_all(raw, model.outputs), size, len(labels))
            return [{"boxes": detect.boxes_json(r, labels)} for r in rows], None
        if post in ("values", "score", "labels"):
            values = run.dequantize(raw, model.outputs[0]).reshape(len(raw), -1)
            return [
                {"value": [float(v) for v in r]}
                if post == "values"
                else {"score": float(r.mean())}
                if post == "score"
                else {
                    "labels": [
                        labels[i] if i < len(labels) else str(i) for i in np.flatnonzero(r >= 0.5)
                    ]
                }
                for r in values
            ], None
        probs, result = class_probabilities(raw, model, entry), []
        for row in probs:
            top = [
                {
                    "label": labels[i] if i < len(labels) else str(i),
                    "index": int(i),
                    "score": round(float(row[i]), 6),
                }
                for i in np.argsort(-row, kind="stable")
            ]
            result.append({**top[0], "top": top})
        return result, probs

    def drift_report() -> dict:
        if reference is None:
            return {"status": "unavailable", "drift": None, "samples": 0}
        with lock:
            rows = list(window)
        x = np.stack([r[0] for r in rows]) if rows else np.zeros((0, 1, 1))
        p = np.stack([r[1] for r in rows]) if rows and rows[0][1] is not None else None
        return drift_math.compare(reference, x, p)

    app = FastAPI(title=f"{name} (bundle serve.py)", redoc_url=None)

    @app.exception_handler(Problem)
    async def _problem(_, err: Problem):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def _http(_, err: HTTPException):
        detail = err.detail if isinstance(err.detail, str) else "bad request"
        return JSONResponse({"error": detail}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _crash(_, err: Exception):
        return JSONResponse({"error": f"internal error ({type(err).__name__})"}, status_code=500)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        start, path = time.perf_counter(), request.url.path
        length = request.headers.get("content-length", "0" if request.method == "GET" else "")
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        given = given or (auth[7:].strip() if auth[:7].lower() == "bearer " else "")
        if (
            api_key
            and path not in ("/healthz", "/readyz", "/docs", "/openapi.json")
            and (not hmac.compare_digest(given.encode(), api_key.encode()))
        ):
            response = JSONResponse({"error": "missing or wrong API key: send X-API-Key"}, 401)
        elif not length.isdigit() or int(length) > max_body:
            response = JSONResponse(
                {"error": f"request body over the {max_body} bytes limit (or no Content-Length)"},
                413,
            )
        else:
            response = await call_next(request)
        known = path if path.startswith(("/v1/", "/healthz", "/readyz", "/metrics")) else "other"
        requests.labels(known, str(response.status_code)).inc()
        latency.labels(known).observe(time.perf_counter() - start)
        return response

    @app.post("/v1/predict")
    async def predict(request: Request):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            x = parse_json(await request.body(), shape)
        elif kind == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=4, max_part_size=max_body)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise Problem(422, 'multipart upload needs an image in the field "file"')
            x = parse_image(await upload.read(), spec)
        elif kind.startswith("image/"):
            x = parse_image(await request.body(), spec)
        else:
            raise Problem(
                415,
                f"unsupported content type {kind or '(none)'!r}; send "
                "application/json, multipart/form-data or image/*",
            )
        top_k = request.query_params.get("top_k", "3")
        if not top_k.isdigit() or int(top_k) < 1:
            raise Problem(422, f"top_k must be a positive integer; got {top_k!r}")
        top_k = int(top_k)
        result, probs = await asyncio.get_running_loop().run_in_executor(None, infer, x)
        for r in result:
            if "top" in r:
                r["top"] = r["top"][:top_k]
        sampled = drift_math.sample_positions(x)
        with lock:
            window.extend((sampled[i], None if probs is None else probs[i]) for i in range(len(x)))
        if log_path:
            lines = [
                json.dumps(
                    {
                        "time": round(time.time(), 3),
                        "model": name,
                        "sha256": sha,
                        "input": np.round(x[i].astype(float), 6).tolist(),
                        "answer": result[i],
                        "probabilities": None if probs is None else np.round(probs[i], 6).tolist(),
                    }
                )
                + "\n"
                for i in range(len(x))
                if random.random() < sample
            ]
            with lock, log_path.open("a", encoding="utf-8") as fh:
                fh.writelines(lines)
        return {"model": name, "sha256": sha, "predictions": result}

    @app.get("/v1/model")
    async def info():
        return {
            "name": name,
            "file": entry["file"],
            "sha256": sha,
            "input": spec,
            "labels": labels,
            "validation": entry.get("validation"),
            "manifest": manifest,
        }

    @app.get("/v1/drift")
    async def drift():
        return drift_report()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready", "model": name}

    @app.get("/metrics")
    async def metrics():
        report = drift_report()
        drift_g.set(-1 if report.get("drift") is None else int(report["drift"]))
        for f in report.get("features") or []:
            psi_g.labels(f["name"]).set(f["psi"])
            ks_g.labels(f["name"]).set(f["ks"])
        for kind in ("class", "confidence"):
            if (report.get("outputs") or {}).get(f"{kind}_psi") is not None:
                out_g.labels(kind).set(report["outputs"][f"{kind}_psi"])
        return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key-file", help="require this key (X-API-Key or Bearer)")
    parser.add_argument("--max-body-bytes", type=int, default=8 << 20)
    parser.add_argument("--window", type=int, default=500, help="drift window (samples)")
    parser.add_argument("--log-requests", metavar="DIR", help="append sampled requests (JSONL)")
    parser.add_argument("--sample", type=float, default=0.1, help="fraction of samples to log")
    args = parser.parse_args(argv)
    try:
        key = None
        if args.api_key_file:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip().splitlines()[0]
        log_dir = Path(args.log_requests) if args.log_requests else None
        app = create_app(HERE, key, args.max_body_bytes, args.window, log_dir, args.sample)
    except run.BundleError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except (OSError, IndexError) as err:
        print(f"error: cannot read the API key file: {err}", file=sys.stderr)
        return run.USAGE
    import uvicorn

    print(f"serving {app.title} on http://{args.host}:{args.port} (docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
