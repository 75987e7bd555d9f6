"""Load any model a user hands to `keras-edge export MODEL`, safely, as a Keras 3 model.

Accepted: a run directory (model.keras), a Keras 3 `.keras` zip, a Keras 2 / tf.keras `.h5`
file, a SavedModel directory. Files are checked (size, magic bytes) before any loader sees
them, so a bad file gives one line naming it instead of a library traceback. Nothing is ever
unpickled: `.keras` and HDF5 configs are JSON, and Lambda code is refused unless `safe_mode` is
off. Heavy imports (keras, tensorflow, h5py) happen inside functions.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError

ACCEPTED = (
    "a .keras file, a .h5/.hdf5 file, a SavedModel directory (with saved_model.pb) "
    "or a run directory (with model.keras)"
)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Keys Keras 3 translates itself when reading legacy configs: never drop them.
_ALWAYS_KEPT = {"name", "dtype", "trainable", "input_shape", "input_dim", "batch_input_shape"}
# Legacy keys whose dropping cannot change outputs: switches that only pick a kernel.
_PERF_ONLY = {"fused", "implementation"}


@dataclass
class LoadedModel:
    """A Keras 3 model plus what was found beside it; `notes` says what loading changed."""

    model: Any
    path: Path
    kind: str  # "run" | "keras" | "h5" | "saved_model"
    input_spec: dict | None = None
    input_spec_path: Path | None = None  # where `input_spec` was read (copied into exports)
    recipe_path: Path | None = None
    notes: list[str] = field(default_factory=list)


DEFAULT_MAX_MODEL_BYTES = 2 * 1024**3
MAX_MODEL_BYTES_ENV = "KERAS_EDGE_MAX_MODEL_BYTES"
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_bytes(text: str, what: str = MAX_MODEL_BYTES_ENV) -> int:
    """'500000', '300M', '2G' or '1.5GiB' -> bytes; anything else is a UserError naming `what`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match or float(match.group(1)) * _UNITS[match.group(2).upper()] < 1:
        raise UserError(f"{what} expects a size in bytes such as 500000, 300M or 2G; got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def max_model_bytes() -> int:
    """The largest model file any loader accepts: $KERAS_EDGE_MAX_MODEL_BYTES, else 2 GiB.

    `keras-edge --max-model-bytes N` sets the variable for one command.
    """
    raw = os.environ.get(MAX_MODEL_BYTES_ENV, "").strip()
    return parse_bytes(raw) if raw else DEFAULT_MAX_MODEL_BYTES


def check_model_size(target: str | Path, max_bytes: int | None = None) -> None:
    """Refuse a model file (or SavedModel directory) larger than the bound, before reading it."""
    _check_size(Path(target), max_model_bytes() if max_bytes is None else max_bytes)


def load_model(
    path: str | Path, *, safe_mode: bool = True, max_bytes: int | None = None
) -> LoadedModel:
    """Load a single-input model of any accepted kind; every user-fixable failure is a UserError.

    `max_bytes` defaults to `max_model_bytes()` (2 GiB unless $KERAS_EDGE_MAX_MODEL_BYTES).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"model file not found: {path}")
    kind, target = _classify(path)
    check_model_size(target, max_bytes)
    notes: list[str] = []
    if kind in ("run", "keras"):
        model = _load_keras(target, safe_mode)
    elif kind == "h5":
        model = _load_h5(target, safe_mode, notes)
    else:
        model = _wrap_saved_model(target, target)
        notes.append("SavedModel serving_default signature wrapped in a Keras 3 TFSMLayer")
    model_input_shape(model, source=target)  # single input, fixed shape: what export needs
    from toolkit.data.preprocess import find_input_spec

    spec = find_input_spec(path if kind == "run" else target)
    recipe = path / "recipe.yaml" if kind == "run" else None
    return LoadedModel(
        model=model,
        path=path,
        kind=kind,
        input_spec=spec[1] if spec else None,
        input_spec_path=spec[0] if spec else None,
        recipe_path=recipe if recipe is not None and recipe.is_file() else None,
        notes=notes,
    )


def model_input_shape(model: Any, *, source: Path | None = None) -> tuple[int, ...]:
    """The per-sample input shape (batch dim removed); export needs every other dim fixed."""
    where = f"{source}: " if source else ""
    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        inputs = []
    if not inputs:
        raise UserError(f"{where}the model has no defined input; build it on a keras.Input")
    if len(inputs) > 1:
        raise UserError(
            f"{where}the model has {len(inputs)} inputs; only single-input models can be exported"
        )
    shape = tuple(inputs[0].shape)[1:]
    if any(d is None for d in shape):
        raise UserError(
            f"{where}input shape {shape} has unknown dimensions besides the batch; "
            "rebuild the model on keras.Input(shape=...) with fixed sizes"
        )
    return tuple(int(d) for d in shape)


def _classify(path: Path) -> tuple[str, Path]:
    """Which loader a path needs, and the file or directory that loader reads."""
    if path.is_dir():
        if (path / "model.keras").is_file():
            return "run", path / "model.keras"
        if (path / "saved_model.pb").is_file():
            return "saved_model", path
        raise UserError(
            f"cannot load {path}: this directory is none of the accepted kinds; expected {ACCEPTED}"
        )
    if path.name == "saved_model.pb":
        return "saved_model", path.parent
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return "keras", path
    if suffix in (".h5", ".hdf5"):
        return "h5", path
    raise UserError(
        f"cannot load {path}: unknown model kind {suffix or '(no suffix)'!r}; expected {ACCEPTED}"
    )


def _check_size(target: Path, max_bytes: int) -> None:
    files = [p for p in target.rglob("*") if p.is_file()] if target.is_dir() else [target]
    size = sum(p.stat().st_size for p in files)
    if size > max_bytes:
        raise UserError(
            f"cannot load {target}: it is {size / 2**20:.1f} MiB, larger than the "
            f"{max_bytes / 2**20:.1f} MiB bound; raise it with --max-model-bytes or "
            f"${MAX_MODEL_BYTES_ENV} if you trust the file"
        )


def _invalid(path: Path) -> UserError:
    return UserError(f"cannot load {path}: not a valid Keras file")


def _lambda_refused(path: Path) -> UserError:
    return UserError(
        f"cannot load {path}: it contains a Lambda layer with Python code; "
        "pass --unsafe to load it if you trust the file"
    )


def _reason(exc: Exception) -> str:
    """One line of a loader's message; Keras messages carry whole configs, keep the cause."""
    reason = str(exc).rsplit("Exception encountered:", 1)[-1].strip()
    return reason.splitlines()[0][:300] if reason else type(exc).__name__


def _load_error(path: Path, exc: Exception) -> UserError:
    text = str(exc)
    if "Lambda" in text and "safe_mode" in text:
        return _lambda_refused(path)
    if "safe_mode=False" in text:  # another refusal of safe deserialization, e.g. a TFSMLayer
        first = _reason(exc).split(". ")[0]
        return UserError(f"cannot load {path}: {first}; pass --unsafe if you trust the file")
    if isinstance(exc, (zipfile.BadZipFile, EOFError, UnicodeDecodeError, json.JSONDecodeError)):
        return _invalid(path)
    return UserError(f"cannot load {path}: {_reason(exc)}")


def _load_keras(path: Path, safe_mode: bool) -> Any:
    """A Keras 3 zip: checked to be a zip with config.json before Keras opens it."""
    import keras

    import toolkit.core.layers  # noqa: F401  registers the zoo's custom layers (FusedLSTM)

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names:
                raise _invalid(path)
            unsafe = [
                n for n in names if n.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", n)
            ]
            if unsafe:  # zip-slip: never let a member name point outside an extraction dir
                raise UserError(f"cannot load {path}: unsafe member name {unsafe[0]!r} in the zip")
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _invalid(path) from exc
    try:
        return keras.saving.load_model(path, safe_mode=safe_mode, compile=False)
    except Exception as exc:
        raise _load_error(path, exc) from exc


def _read_h5_config(path: Path) -> tuple[set[str], str]:
    """Class names in an HDF5 file's JSON model config, and its Keras version; never unpickles."""
    with open(path, "rb") as handle:
        if handle.read(8) != HDF5_SIGNATURE:
            raise _invalid(path)
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: h5.attrs[k] for k in h5.attrs if k in ("model_config", "keras_version")}
            weights_only = "layer_names" in h5.attrs or bool({"layers", "vars"} & set(h5.keys()))
    except (OSError, ValueError, KeyError) as exc:
        raise _invalid(path) from exc
    raw = attrs.get("model_config")
    if raw is None:
        if weights_only:
            raise UserError(
                f"cannot load {path}: it holds weights only; build the model in code, call "
                "model.load_weights() on it and save it with model.save('model.keras')"
            )
        raise _invalid(path)
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(path) from exc
    version = attrs.get("keras_version", b"?")
    version = version.decode() if isinstance(version, bytes) else str(version)
    return set(re.findall(r'"class_name":\s*"([^"]+)"', text)), version


def _accepted_keys(cls: type) -> set[str]:
    """Constructor keywords a Keras 3 layer class takes, through its base classes."""
    from toolkit.core.layer_config import constructor_keywords

    return set(_ALWAYS_KEPT) | constructor_keywords(cls)


def _shims(names: set[str], dropped: dict[tuple[str, str], list[Any]]) -> dict[str, type]:
    """Stand-ins whose from_config filters legacy keys, then builds the real Keras 3 class."""
    import keras

    shims: dict[str, type] = {}
    for name in names:
        cls = getattr(keras.layers, name, None)
        if not isinstance(cls, type) or not issubclass(cls, keras.layers.Layer):
            continue
        if issubclass(cls, keras.Model):
            continue  # Functional/Sequential parse their own configs

        def from_config(_shim: type, config: dict, *, _cls: type = cls) -> Any:
            keep = _accepted_keys(_cls)
            for key in sorted(set(config) - keep):
                dropped.setdefault((_cls.__name__, key), []).append(config[key])
            return _cls.from_config({k: v for k, v in config.items() if k in keep})

        shims[name] = type(name, (cls,), {"from_config": classmethod(from_config)})
    return shims


def _load_h5(path: Path, safe_mode: bool, notes: list[str]) -> Any:
    """Keras 3 with key-dropping shims; tf_keras (wrapped as a SavedModel) when that fails."""
    import keras

    names, version = _read_h5_config(path)
    if safe_mode and "Lambda" in names:
        raise _lambda_refused(path)
    dropped: dict[tuple[str, str], list[Any]] = {}
    shims = _shims(names, dropped)
    try:
        with keras.saving.custom_object_scope(shims):
            model = keras.saving.load_model(
                path, compile=False, custom_objects=shims, safe_mode=safe_mode
            )
    except Exception as exc:
        notes.append(f"Keras 3 could not read it ({_reason(exc)}); trying tf_keras")
        return _via_tf_keras(path, notes, first_error=exc)
    if not dropped:
        return model
    listed = ", ".join(f"{cls} {key!r} ({len(v)}x)" for (cls, key), v in sorted(dropped.items()))
    notes.append(f"Keras 2 HDF5 (keras {version}): dropped keys {listed}")
    risky = [key for key, values in dropped.items() if not _harmless(key[1], values)]
    if risky:
        diff = _cross_check(model, path)
        if diff is None:
            notes.append("could not cross-check outputs with tf_keras; verify the export")
        elif diff > 1e-4:
            notes.append(f"dropping keys changed outputs (max abs diff {diff:.3g}); using tf_keras")
            return _via_tf_keras(path, notes)
        else:
            notes.append(f"outputs match tf_keras (max abs diff {diff:.2g})")
    return model


def _harmless(key: str, values: list[Any]) -> bool:
    """True when Keras 3 behaves as every dropped value asked: a feature off, or groups=1."""
    if key in _PERF_ONLY:
        return True
    return all(v is None or v is False or (key == "groups" and v == 1) for v in values)


def _cross_check(model: Any, path: Path) -> float | None:
    """Max abs diff between the Keras 3 load and tf_keras' own load, or None if unavailable."""
    import numpy as np

    try:
        import tf_keras

        reference = tf_keras.models.load_model(path, compile=False)
        rng = np.random.default_rng(0)
        x = rng.random((2, *model_input_shape(model))).astype("float32")
        got, want = np.asarray(model.predict_on_batch(x)), np.asarray(reference(x, training=False))
    except Exception:
        return None
    return float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")


def _via_tf_keras(path: Path, notes: list[str], first_error: Exception | None = None) -> Any:
    """Load with tf_keras, save its inference function as a SavedModel, wrap it in Keras 3."""
    try:
        import tensorflow as tf
        import tf_keras

        reference = tf_keras.models.load_model(path, compile=False)
        if len(reference.inputs) != 1:
            raise UserError(
                f"cannot load {path}: the model has {len(reference.inputs)} inputs; "
                "only single-input models can be exported"
            )
        tensor = reference.inputs[0]
        spec = tf.TensorSpec(tensor.shape, tensor.dtype, name="input")
        module = tf.Module()
        module.variables_ = list(reference.variables)
        module.serve = tf.function(lambda x: reference(x, training=False), input_signature=[spec])
        out = tempfile.mkdtemp(prefix="keras-edge-h5-")
        atexit.register(shutil.rmtree, out, True)
        tf.saved_model.save(module, out, signatures={"serving_default": module.serve})
    except UserError:
        raise
    except Exception as exc:
        raise _load_error(path, first_error or exc) from exc
    notes.append(
        "loaded with tf_keras and wrapped as a SavedModel (TFSMLayer): outputs are the "
        "original model's, but per-layer structure is gone (no pruning/QAT)"
    )
    return _wrap_saved_model(Path(out), path)


def _wrap_saved_model(directory: Path, source: Path) -> Any:
    """A Keras 3 model around a SavedModel's serving signature (graph ops, no Python)."""
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise UserError(f"cannot load {source}: SavedModels need the tensorflow Keras backend")
    try:
        layer = keras.layers.TFSMLayer(str(directory), call_endpoint="serving_default")
    except Exception as exc:
        raise _load_error(source, exc) from exc
    args, kwargs = layer.call_endpoint_fn.structured_input_signature
    specs = tf.nest.flatten((args, kwargs))
    if len(specs) != 1:
        raise UserError(
            f"cannot load {source}: its serving signature has {len(specs)} inputs; "
            "only single-input models can be exported"
        )
    spec = specs[0]
    if spec.shape.rank is None or spec.shape.rank < 1:
        raise UserError(f"cannot load {source}: its input shape {spec.shape} is unknown")
    inputs = keras.Input(batch_shape=tuple(spec.shape.as_list()), dtype=spec.dtype.name)
    outputs = layer(inputs)
    if isinstance(outputs, dict) and len(outputs) == 1:
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name="saved_model")
