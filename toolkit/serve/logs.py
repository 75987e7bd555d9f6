"""Sampled request logging to JSONL, and reading such logs back for `keras-edge monitor`.

One line per logged sample: time, model name and sha256, the raw input the model saw (after
image decoding) and its class probabilities or answer. Sampling keeps the cost bounded; the
inputs are what an offline drift report (or a retraining set) needs.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError


class RequestLog:
    """Append a `sample` fraction of served samples to DIR/requests-<pid>.jsonl."""

    def __init__(self, directory: Path, sample: float, seed: int | None = None) -> None:
        if not 0.0 < sample <= 1.0:
            raise UserError(f"--sample must be in (0, 1]; got {sample}")
        self.path = directory / f"requests-{os.getpid()}.jsonl"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.path.open("a").close()
        except OSError as err:
            raise UserError(f"cannot write request logs to {directory}: {err}") from None
        self.sample = sample
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.written = 0

    def write(
        self,
        model: str,
        sha256: str,
        x: np.ndarray,
        answers: list[dict[str, Any]],
        probabilities: np.ndarray | None,
    ) -> None:
        lines = []
        with self._lock:
            picked = [i for i in range(len(x)) if self._rng.random() < self.sample]
        for i in picked:
            record = {
                "time": round(time.time(), 3),
                "model": model,
                "sha256": sha256,
                "input": np.round(x[i].astype(np.float64), 6).tolist(),
                "answer": answers[i],
            }
            if probabilities is not None:
                record["probabilities"] = np.round(probabilities[i], 6).tolist()
            lines.append(json.dumps(record, separators=(",", ":")) + "\n")
        if lines:
            with self._lock, self.path.open("a", encoding="utf-8") as fh:
                fh.writelines(lines)
                self.written += len(lines)


def read_logs(directory: Path) -> tuple[np.ndarray, np.ndarray | None, list[str], list[float]]:
    """All JSONL lines under DIR -> (inputs, probabilities or None, model sha256s, times).

    Unreadable lines (a line cut by a crash) are skipped, not fatal; a directory with no
    usable line is a UserError."""
    if not directory.is_dir():
        raise UserError(f"log directory not found: {directory}")
    files = sorted(directory.glob("*.jsonl"))
    inputs, probs, shas, times = [], [], [], []
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                    x = np.asarray(record["input"], dtype=np.float64)
                except (ValueError, KeyError, TypeError):
                    continue
                if inputs and x.shape != inputs[0].shape:
                    continue
                inputs.append(x)
                probs.append(record.get("probabilities"))
                shas.append(str(record.get("sha256", "")))
                times.append(float(record.get("time", 0.0)))
    if not inputs:
        raise UserError(
            f"{directory} holds no request log lines (*.jsonl from serve --log-requests)"
        )
    have = [p for p in probs if p is not None]
    stacked = np.asarray(have, dtype=np.float64) if len(have) == len(probs) else None
    return np.stack(inputs), stacked, shas, times
