"""What a server serves: one artifact, the preferred artifact of an export dir, or a bundle.

Everything the endpoints need is gathered once at start-up: the runner, the input spec, labels,
how outputs are post-processed, the validation row, the sha256 and the drift reference. A
bundle is checked file by file against its manifest first; a changed file refuses the start.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError

# Export dir without --model: the first of these present is served (small, fast, validated).
PREFERRED = (
    "model-int8.tflite",
    "model-fp16.tflite",
    "model-dynamic.tflite",
    "model-fp32.tflite",
    "model-int8.onnx",
    "model-fp32.onnx",
    "model.keras",
)
REFERENCE_SAMPLES = 1000  # inputs the drift reference is computed from (export dirs)
REFERENCE_BYTES = 64 << 20  # ... at most this much float32 input data, whatever the size


@dataclass
class Served:
    """A model ready to answer requests; `predict` returns float outputs (N, ...)."""

    name: str
    path: Path
    sha256: str
    runner: Any
    spec: dict[str, Any]
    labels: list[str]
    postprocess: str  # classes | values | score | labels (core.tasks' `output`)
    host_softmax: bool = False
    validation: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    drift_reference: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.spec["shape"])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.runner.predict(np.asarray(x, dtype=np.float32))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if (
        not rel
        or Path(rel).is_absolute()
        or ".." in Path(rel).parts
        or root.resolve() not in (path.parents)
    ):
        raise UserError(f"manifest path {rel!r} leaves the bundle {root}; refusing to serve it")
    return path


def verify_bundle(bundle: Path, manifest: dict[str, Any]) -> int:
    """Every file the manifest lists must match its sha256; raises naming each changed file."""
    files = manifest.get("files") or {}
    if not files:
        raise UserError(f"{bundle}/manifest.json lists no file hashes; refusing to serve it")
    bad = []
    for rel, digest in sorted(files.items()):
        path = _inside(bundle, rel)
        if not path.is_file():
            bad.append(f"{rel} is missing")
        elif sha256_file(path) != digest:
            bad.append(f"{rel} does not match its sha256")
    if bad:
        raise UserError(
            f"bundle integrity check failed ({'; '.join(bad)}): {bundle} was modified or "
            "corrupted; refusing to serve it (re-copy or re-package the bundle)"
        )
    return len(files)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object")
    return data


def _open(path: Path, provider: str | None = None, threads: int | None = None) -> Any:
    from toolkit.runtimes import open_runner

    kwargs = {"num_threads": threads} if threads and path.suffix != ".keras" else {}
    return open_runner(path, provider=provider, **kwargs)


def _onnx_provider(entry: dict[str, Any]) -> str:
    """The bundle's preferred ONNX Runtime provider that this machine has (else CPU)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted = [p for p in entry.get("providers") or [] if p in available]
    return wanted[0] if wanted else "CPUExecutionProvider"


def from_bundle(bundle: Path, threads: int | None = None) -> Served:
    manifest = _read_json(bundle / "manifest.json")
    verify_bundle(bundle, manifest)
    models = manifest.get("models") or []
    entry = next((m for m in models if m.get("primary")), models[0] if models else None)
    if entry is None:
        raise UserError(f"{bundle}/manifest.json lists no model")
    path = _inside(bundle, entry["file"])
    provider = entry.get("delegate") if entry["runtime"] == "litert" else _onnx_provider(entry)
    runner = _open(path, provider, threads if threads is not None else entry.get("threads"))
    output = manifest.get("output") or {}
    return Served(
        name=f"{manifest.get('name')}:{entry['name']}",
        path=path,
        sha256=manifest["files"][entry["file"]],
        runner=runner,
        spec=dict(manifest["input"]),
        labels=list(manifest.get("labels") or []),
        postprocess=output.get("postprocess") or "classes",
        host_softmax=entry.get("postprocess") == "softmax",
        validation=entry.get("validation"),
        manifest=manifest,
        drift_reference=manifest.get("drift"),
    )


def _validation_row(path: Path) -> dict[str, Any] | None:
    """This file's row of the report.json beside it (the runtime's default provider first)."""
    report = path.parent / "report.json"
    if not report.is_file():
        return None
    rows = [
        a
        for a in _read_json(report).get("artifacts", [])
        if Path(a.get("path", "")).name == path.name
    ]
    rows.sort(key=lambda a: a.get("provider") not in ("xnnpack", "CPUExecutionProvider"))
    return rows[0] if rows else None


def reference_split_inputs(ds: Any, count: int) -> tuple[np.ndarray, str]:
    """Up to `count` raw inputs: the test split (what validation measured on) first, topped up
    from the training then the validation split when it is smaller, so the reference of a
    small dataset is not noise. The same rule as the package stage's (bundle/deploy.py)."""
    parts, taken = [], []
    for name in ("test", "train", "val"):
        split, left = getattr(ds, name), count - sum(len(p) for p in parts)
        if left > 0 and len(split):
            parts.append(split.take_x(min(left, len(split)), seed=0).astype(np.float32))
            taken.append(f"{len(parts[-1])} {name}")
    return np.concatenate(parts), f"{sum(map(len, parts))} {ds.name} inputs ({' + '.join(taken)})"


def reference_from_dataset(
    spec: dict[str, Any], predict: Any, labels: list[str]
) -> tuple[dict[str, Any] | None, str | None]:
    """Drift reference from the test split the export was validated on (None + why if the
    dataset cannot be loaded here)."""
    from toolkit.data import DataSpec, load_dataset
    from toolkit.serve.drift import reference_stats
    from toolkit.serve.outputs import probabilities

    dataset = dict(spec.get("dataset") or {})
    if not dataset.get("name"):
        return None, "the input spec names no dataset: drift has no reference"
    if dataset.get("image_size") is not None:
        dataset["image_size"] = tuple(dataset["image_size"])
    per_sample = int(np.prod(spec.get("shape") or [1])) * 4
    count = max(100, min(REFERENCE_SAMPLES, REFERENCE_BYTES // max(1, per_sample)))
    try:
        x, source = reference_split_inputs(load_dataset(DataSpec(**dataset)), count)
    except (UserError, TypeError, OSError) as err:
        return None, f"drift has no reference: cannot load {dataset['name']} ({err})"
    probs = probabilities(predict(x), host_softmax=False) if labels else None
    return reference_stats(x, probs, names=spec.get("feature_names"), source=source), None


def from_artifact(path: Path, threads: int | None = None) -> Served:
    from toolkit.data.preprocess import find_input_spec

    runner = _open(path, None, threads)
    found = find_input_spec(path)
    notes = []
    if found is None:
        shape = [int(d) for d in runner.inputs[0].shape[1:]]
        kind = "image" if len(shape) == 3 and shape[-1] in (1, 3) else "array"
        spec: dict[str, Any] = {"kind": kind, "shape": shape, "value_range": [0.0, 255.0]}
        notes.append(f"no input_spec.json near {path}: images are taken as 0..255 pixels")
    else:
        spec = dict(found[1])
    from toolkit.core.tasks import get_task

    labels = list(spec.get("labels") or [])
    post = get_task(spec.get("task") or "classification").output
    served = Served(
        name=path.stem
        if path.parent.name != "export"
        else f"{path.parent.parent.name}:{path.name}",
        path=path,
        sha256=sha256_file(path),
        runner=runner,
        spec=spec,
        labels=labels,
        postprocess=post,
        validation=_validation_row(path),
        notes=notes,
    )
    served.drift_reference, why = reference_from_dataset(spec, served.predict, labels)
    served.notes += [why] if why else []
    return served


def load(target: str | Path, model: str | None = None, threads: int | None = None) -> Served:
    """ARTIFACT | EXPORT_DIR | BUNDLE -> Served (a UserError for anything else)."""
    path = Path(target)
    if not path.exists():
        raise UserError(f"nothing to serve at {path}: give an artifact, an export dir or a bundle")
    if path.is_dir() and (path / "manifest.json").is_file():
        if model is not None:
            raise UserError("--model picks a file of an export dir; a bundle serves its primary")
        return from_bundle(path, threads)
    if path.is_dir():
        names = [model] if model else list(PREFERRED)
        for name in names:
            if (path / name).is_file():
                return from_artifact(path / name, threads)
        raise UserError(
            f"{path} holds none of {', '.join(names)}; give an artifact file, an export dir "
            "(keras-edge export) or a bundle (keras-edge package)"
        )
    if model is not None:
        raise UserError("--model picks a file of an export dir; this is already a file")
    return from_artifact(path, threads)
