"""Batched vs batch-1 accuracy passes on every artifact of a model (shared by two tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SLOW = 64  # samples for the rows validation itself samples (they run ~30-60x slower)


def batched_vs_batch1(model: Any, calibration: np.ndarray, x: np.ndarray, work: Path) -> list:
    """Convert `model` to every TFLite and ONNX artifact, then run `x` on each artifact x
    runtime twice: in the accuracy pass's batches (as validation runs them) and one sample at
    a time. Rows: (artifact, runtime, provider, equal, how the batched run went)."""
    from toolkit.convert import FORMATS
    from toolkit.convert.stage import write_artifacts
    from toolkit.runtimes import open_runner
    from toolkit.validate.isolation import batch_size
    from toolkit.validate.plan import runtimes_for, sampled_reason

    x_all = x
    formats = [f for f in FORMATS if f.format in ("tflite", "onnx")]
    optional = {f.name for f in formats}  # a precision that cannot apply is skipped, as in export
    paths = write_artifacts(model, formats, work, calibration=calibration, optional=optional)
    by_file = {f.filename: f for f in formats}
    step = batch_size(tuple(x.shape[1:]))
    rows = []
    for path in paths:
        fmt = by_file[path.name]
        for runtime, provider in runtimes_for(fmt):
            # The slow rows (reference kernels, TFLite Micro) on their first SLOW samples only,
            # as validation samples them; every other row on all of x.
            x = x_all[:SLOW] if sampled_reason((runtime, provider), fmt.precision) else x_all
            with open_runner(path, runtime=runtime, provider=provider) as runner:
                batched = np.concatenate(
                    [runner.predict(x[i : i + step]) for i in range(0, len(x), step)]
                )
                how = runner.batching
            with open_runner(path, runtime=runtime, provider=provider) as runner:
                single = np.concatenate([runner.predict(x[i : i + 1]) for i in range(len(x))])
            rows.append((fmt.name, runtime, provider, bool(np.array_equal(batched, single)), how))
    return rows


def assert_identical(rows: list) -> None:
    """Every accuracy pass equals batch 1, and LiteRT/ORT really ran batched where exact."""
    differ = [r for r in rows if not r[3]]
    assert not differ, differ
    batched = {(r[0], r[1]) for r in rows if r[4].startswith("batched")}
    # The float and int8 files run batched on XNNPACK and ORT: the test is not vacuous.
    for name, runtime in [("tflite-fp32", "litert"), ("tflite-int8", "litert"),
                          ("onnx-fp32", "onnxruntime"), ("onnx-int8", "onnxruntime")]:  # fmt: skip
        assert (name, runtime) in batched, rows
    # ORT's dynamic quantization takes one activation scale per batch: it must fall back.
    dynamic = [r for r in rows if r[0] == "onnx-dynamic"]
    assert dynamic and all(r[4].startswith("batch 1") for r in dynamic), dynamic
