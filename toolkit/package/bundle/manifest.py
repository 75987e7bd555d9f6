"""manifest.json: what a device developer needs to feed the model and trust its outputs.

Built from the export dir's input_spec.json and report.json; only values derived from those
inputs go in (no clock, no host paths), so the same export gives the same manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.core.targets import Target
from toolkit.core.tasks import get_task

MANIFEST_SCHEMA = 1
MAX_SAMPLE_BYTES = 1 << 20  # self-test inputs stay under ~1 MB whatever the input size


def input_spec_for(export_dir: Path, shape: list[int]) -> tuple[dict[str, Any], list[str]]:
    """input_spec.json beside the artifacts (or in the run dir); a plain guess otherwise."""
    from toolkit.data.preprocess import find_input_spec

    found = find_input_spec(export_dir)
    if found is not None:
        return found[1], []
    kind = "image" if len(shape) == 3 and shape[-1] in (1, 3) else "array"
    guess = {
        "kind": kind,
        "shape": shape,
        "dtype": "float32",
        "layout": "NHWC" if kind == "image" else "N...",
        "value_range": [0.0, 255.0],
    }
    return guess, ["no input_spec.json: images are assumed to be 0..255 pixels, NHWC"]


def selftest_samples(spec: dict[str, Any], shape: list[int], count: int) -> tuple[np.ndarray, str]:
    """A few raw test-split inputs (random ones in range when the dataset cannot be loaded)."""
    from toolkit.data import DataSpec, load_dataset

    per_sample = int(np.prod(shape)) * 4
    count = max(2, min(count, MAX_SAMPLE_BYTES // per_sample))
    dataset = dict(spec.get("dataset") or {})
    if dataset.get("name"):
        if dataset.get("image_size") is not None:
            dataset["image_size"] = tuple(dataset["image_size"])
        try:
            test = load_dataset(DataSpec(**dataset)).test
            x = test.take_x(min(count, len(test)), seed=0).astype(np.float32)
            if list(x.shape[1:]) == list(shape):
                return x, f"{len(x)} inputs from the {dataset['name']} test split"
        except (UserError, TypeError, OSError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            dataset["why"] = reason
    lo, hi = spec.get("value_range") or (0.0, 1.0)
    x = np.random.default_rng(0).uniform(lo, hi, size=(count, *shape)).astype(np.float32)
    why = f" ({dataset['why']})" if dataset.get("why") else ""
    return x, f"{count} random inputs in [{lo}, {hi}] (no test data{why})"


def validation_entry(row: Any, report: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    keys = (
        "runtime",
        "provider",
        "metric",
        "drop",
        "agreement",
        "max_abs_diff",
        "latency_ms",
        "size_bytes",
        "gzip_bytes",
        "flags",
    )
    out = {k: getattr(row, k) for k in keys}
    out["data"] = report.data
    if row.error:
        out["error"] = row.error
    return out


def build_manifest(
    name: str,
    target: Target,
    spec: dict[str, Any],
    entries: list[dict[str, Any]],
    labels: list[str],
    report: Any,
    edgetpu: Any,
    sample_text: str,
    version: str,
) -> dict[str, Any]:
    """Everything a device developer needs to feed the model and trust its outputs."""
    shape = spec.get("shape")
    channels = shape[-1] if shape and len(shape) == 3 else None
    color = (spec.get("dataset") or {}).get("color_mode") or {1: "grayscale", 3: "rgb"}.get(
        channels
    )
    keep = (
        "kind",
        "task",
        "shape",
        "dtype",
        "layout",
        "value_range",
        "normalize",
        "mean",
        "std",
        "scale",
        "offset",
        "feature_names",
    )
    input_spec = {k: spec[k] for k in keep if spec.get(k) is not None}
    input_spec["color_mode"] = color
    input_spec["normalization"] = "inside the model: feed raw values in value_range"
    out = entries[0]["outputs"][0]
    task = get_task(spec.get("task", "classification"))
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "name": name,
        "target": target.model_dump(
            include={"name", "description", "platform", "threads", "max_drop", "notes"}
        ),
        "input": input_spec,
        "output": {
            "task": task.name,
            "postprocess": task.output,  # what run.py does with the raw output (core.tasks)
            "shape": out["shape"],
            "classes": len(labels) or None,
        },
        "labels": labels,
        "models": entries,
        "selftest": sample_text,
        "reference": report.reference if report else None,
        "versions": {**(report.versions if report else {}), "packaged_with": version},
    }
    if edgetpu is not None:
        manifest["edgetpu"] = edgetpu.to_dict()
    return manifest
