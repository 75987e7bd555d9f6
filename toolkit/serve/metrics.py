"""Prometheus metrics for one server (its own registry, so two apps in a process never mix).

Request counts by path and status code, errors by code, latency and inference histograms,
batch sizes, and the drift gauges, refreshed from the drift window at each scrape.
"""

from __future__ import annotations

from typing import Any

PATHS = (
    "/v1/predict",
    "/v1/model",
    "/v1/drift",
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/openapi.json",
)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    def __init__(self, max_batch: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "keras_edge_requests",
            "HTTP requests by path and status code",
            ["path", "code"],
            registry=r,
        )
        self.errors = Counter(
            "keras_edge_errors", "Requests answered 4xx/5xx, by code", ["code"], registry=r
        )
        self.latency = Histogram(
            "keras_edge_request_duration_seconds",
            "Wall time of a request, by path",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "keras_edge_inference_duration_seconds",
            "Runtime time of one (possibly batched) inference call",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        buckets = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch})
        self.batch = Histogram(
            "keras_edge_batch_size",
            "Samples per inference call",
            buckets=[float(b) for b in buckets],
            registry=r,
        )
        self.samples = Counter("keras_edge_samples", "Samples predicted", registry=r)
        self.psi = Gauge(
            "keras_edge_drift_psi",
            "PSI of the window vs the reference, per input feature/channel",
            ["feature"],
            registry=r,
        )
        self.ks = Gauge(
            "keras_edge_drift_ks",
            "KS statistic of the window vs the reference, per input feature/channel",
            ["feature"],
            registry=r,
        )
        self.output_psi = Gauge(
            "keras_edge_output_drift_psi",
            "PSI of predicted classes (kind=class) and confidences (kind=confidence)",
            ["kind"],
            registry=r,
        )
        self.drifted = Gauge(
            "keras_edge_drift_detected",
            "1 when a drift statistic is over its "
            "threshold, 0 when not, -1 while the window warms up",
            registry=r,
        )
        self.window = Gauge(
            "keras_edge_drift_window_samples", "Samples in the drift window", registry=r
        )
        self.threshold = Gauge("keras_edge_drift_psi_threshold", "PSI threshold", registry=r)

    def observe_inference(self, size: int, seconds: float) -> None:
        self.inference.observe(seconds)
        self.batch.observe(size)
        self.samples.inc(size)

    def observe_request(self, path: str, code: int, seconds: float) -> None:
        path = path if path in PATHS else "other"
        self.requests.labels(path, str(code)).inc()
        self.latency.labels(path).observe(seconds)
        if code >= 400:
            self.errors.labels(str(code)).inc()

    def set_drift(self, report: dict[str, Any]) -> None:
        self.window.set(report.get("samples") or 0)
        self.threshold.set((report.get("threshold") or {}).get("psi", 0.0))
        self.drifted.set(-1 if report.get("drift") is None else int(bool(report["drift"])))
        for feature in report.get("features") or []:
            self.psi.labels(feature["name"]).set(feature["psi"])
            self.ks.labels(feature["name"]).set(feature["ks"])
        outputs = report.get("outputs") or {}
        for kind in ("class", "confidence"):
            if f"{kind}_psi" in outputs:
                self.output_psi.labels(kind).set(outputs[f"{kind}_psi"])

    def text(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
