"""The reference runtime: the Keras model itself, in inference mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.batching import batch_size_for
from toolkit.core.errors import UserError
from toolkit.runtimes.base import Runner, TensorSpec, by_name

_SUFFIXES = (".keras", ".h5", ".hdf5")


def _spec(tensor: Any, fallback: str) -> TensorSpec:
    shape = tuple(-1 if d is None else int(d) for d in tensor.shape)
    dtype = getattr(tensor, "dtype", "float32")
    dtype = getattr(dtype, "name", dtype)
    return TensorSpec(name=getattr(tensor, "name", None) or fallback, shape=shape, dtype=str(dtype))


class KerasRunner(Runner):
    """Runs a Keras 3 model (a `.keras` file or a model object) in inference mode.

    Inference mode matters: BatchNormalization and Dropout behave differently in training mode,
    and that is the behaviour every converted artifact reproduces.
    """

    probe_batches = False  # the float reference: batch-size rounding is not a finding

    name = "keras"

    def __init__(self, path_or_model: str | Path | Any) -> None:
        import keras

        if isinstance(path_or_model, (str, Path)):
            path = Path(path_or_model)
            if not path.is_file():
                raise UserError(f"Keras model not found: {path}")
            if path.suffix not in _SUFFIXES:
                raise UserError(
                    f"expected a Keras model file ({', '.join(_SUFFIXES)}); got {path.name!r}"
                )
            from toolkit.core.modelio import check_model_size

            check_model_size(path)
            try:
                model = keras.saving.load_model(path, safe_mode=True, compile=False)
            except Exception as exc:  # a corrupt or foreign file: say which and why
                raise UserError(f"cannot load Keras model {path}: {exc}") from exc
            self.path: Path | None = path
        else:
            model = path_or_model
            self.path = None
        if not hasattr(model, "inputs") or not model.inputs:
            raise UserError(
                f"expected a built Keras model with known inputs; got {type(model).__name__}"
            )
        self.model = model
        self.provider = keras.backend.backend()  # "tensorflow" here; jax/torch also work
        self.inputs = [_spec(t, f"input_{i}") for i, t in enumerate(model.inputs)]
        outputs = [_spec(t, f"output_{i}") for i, t in enumerate(model.outputs)]
        names = list(getattr(model, "output_names", None) or [])
        if len(names) == len(outputs):  # the names the converters give the artifacts' outputs
            outputs = [TensorSpec(n, o.shape, o.dtype) for n, o in zip(names, outputs, strict=True)]
        self._order = by_name(outputs)
        self.outputs = [outputs[i] for i in self._order]
        self._chunk = batch_size_for(self.inputs[0].shape[1:])

    def _run(self, x: np.ndarray) -> np.ndarray:
        # predict_on_batch runs the compiled predict function in inference mode without
        # model.predict's per-call data-adapter overhead (0.8 ms vs 7 ms eager at batch 1 on a
        # tiny CNN); chunking bounds memory on large evaluation sets.
        parts = []
        for start in range(0, len(x), self._chunk):
            out = self.model.predict_on_batch(x[start : start + self._chunk])
            if isinstance(out, dict):
                out = [out[k] for k in sorted(out)] if len(out) > 1 else next(iter(out.values()))
            if isinstance(out, (list, tuple)) and len(out) > 1:  # several heads: flat, by name
                out = np.concatenate([np.asarray(out[i]).reshape(len(out[i]), -1)
                                      for i in self._order], axis=1)  # fmt: skip
            elif isinstance(out, (list, tuple)):
                out = out[0]
            parts.append(np.asarray(out))
        return np.concatenate(parts)

    def close(self) -> None:
        self.model = None
