"""keras-edge-toolkit: data -> Keras model -> int8 TFLite / ONNX proven in the runtime that runs it.

The public Python API is the stage entry points, imported on first use so that `import toolkit`
stays cheap (TensorFlow loads only when a stage runs):

    toolkit.train(recipe, runs_dir)          -> TrainResult        (train/)
    toolkit.optimize(run_dir, config)        -> OptimizeResult     (optimize/)
    toolkit.export(model, data=..., ...)     -> (ExportResult, Report)  convert + validate
    toolkit.validate(artifacts, data, reference=...) -> Report     (validate/)
    toolkit.package(export_dir, target)      -> BundleResult       (package/)
    toolkit.check(report, baseline)          -> CheckResult        (check/)

`toolkit.train` etc. are the stage packages themselves, made callable (see
`core.callable_stage`), so `toolkit.train.stage` stays importable too.
"""

from __future__ import annotations

import importlib
from typing import Any

from toolkit.core import __version__

STAGES = ("train", "optimize", "validate", "package", "check", "convert")
__all__ = ["__version__", "export", *STAGES]


def __getattr__(name: str) -> Any:
    if name in STAGES:
        return importlib.import_module(f"toolkit.{name}")
    if name == "export":
        from toolkit.pipeline.exporting import run_export

        return run_export
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
