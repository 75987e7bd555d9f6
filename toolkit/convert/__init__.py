"""Convert: a Keras model -> artifacts, one per row of the format table.

`convert()` only converts; measuring the artifacts is `toolkit.validate.stage`'s job. Importing this
package does not import TensorFlow: each exporter imports it when called.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.convert.calibration import atomic_write_bytes, check_model, temp_path_beside
from toolkit.core import callable_stage
from toolkit.core.errors import UserError
from toolkit.core.formats import BY_NAME, FORMATS, Format, get, help_table, select

__all__ = [
    "BY_NAME",
    "EXPORTERS",
    "FORMATS",
    "Format",
    "convert",
    "export_keras",
    "export_onnx",
    "export_tflite",
    "get",
    "help_table",
    "select",
]


def export_tflite(model: Any, filepath: str | Path, precision: str = "fp32", **kw: Any) -> Path:
    """See `toolkit.convert.tflite.export_tflite` (imported lazily: it pulls TensorFlow)."""
    from toolkit.convert.tflite import export_tflite as _export

    return _export(model, filepath, precision, **kw)


def export_onnx(model: Any, filepath: str | Path, precision: str = "fp32", **kw: Any) -> Path:
    """See `toolkit.convert.onnx.export_onnx` (imported lazily: it pulls TensorFlow, tf2onnx)."""
    from toolkit.convert.onnx import export_onnx as _export

    return _export(model, filepath, precision, **kw)


def export_keras(
    model: Any, filepath: str | Path, precision: str = "fp32", *, calibration: Any = None
) -> Path:
    """Save the Keras model itself (the reference artifact), atomically."""
    del calibration  # the reference needs none; accepted so every exporter takes the same call
    if precision != "fp32":
        raise UserError(f"keras has no {precision!r} precision; keras precisions: fp32")
    model = check_model(model)
    filepath = Path(filepath)
    if filepath.suffix != ".keras":
        raise UserError(f"expected a filepath ending in .keras; got {str(filepath)!r}")
    tmp = temp_path_beside(filepath, ".keras")
    try:
        model.save(tmp)
        atomic_write_bytes(filepath, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    return filepath


# Table format -> exporter. Each takes (model, filepath, precision, *, calibration=..., **opts).
EXPORTERS: dict[str, Callable[..., Path]] = {
    "keras": export_keras,
    "tflite": export_tflite,
    "onnx": export_onnx,
}


def _check_options(fmt: Format, exporter: Callable[..., Path], opts: dict[str, Any]) -> None:
    """Unknown exporter options are a user mistake: name them and the accepted ones."""
    target = exporter
    if exporter in (export_tflite, export_onnx):  # the lazy wrappers hide the real signature
        module = importlib.import_module(f"toolkit.convert.{fmt.format}")
        target = getattr(module, f"export_{fmt.format}")
    params = inspect.signature(target).parameters
    accepted = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "calibration"]
    unknown_opts = sorted(set(opts) - set(accepted))
    if unknown_opts:
        raise UserError(
            f"{fmt.name} export does not take {', '.join(unknown_opts)}; "
            f"it takes: {', '.join(accepted) or 'no options'}"
        )


def convert(
    model: Any,
    fmt: Format | str,
    out_dir: str | Path,
    calibration: np.ndarray | None = None,
    **opts: Any,
) -> Path:
    """Write one artifact (`fmt`, a table row or its name) into `out_dir`; return its path.

    `opts` go to the exporter (e.g. `denylisted_nodes` for tflite, `opset` or
    `nodes_to_exclude` for onnx).
    """
    if isinstance(fmt, str):
        fmt = get(fmt)
    if fmt.format not in EXPORTERS:  # a table row without an exporter is a bug, not user input
        raise KeyError(f"no exporter registered for format {fmt.format!r}")
    if fmt.needs_calibration and calibration is None:
        raise UserError(
            f"{fmt.name} needs calibration data (representative raw inputs, a few hundred "
            "samples) and none was given"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exporter = EXPORTERS[fmt.format]
    _check_options(fmt, exporter, opts)
    return exporter(model, out_dir / fmt.filename, fmt.precision, calibration=calibration, **opts)


callable_stage(__name__, "toolkit.convert.stage:export")  # `toolkit.convert(model, formats, out)`
