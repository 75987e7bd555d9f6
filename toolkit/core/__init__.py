"""What every room shares: errors, atomic run dirs, resources, progress, quiet imports, the Task
registry and metrics, the format table, recipes, target profiles and the report data.

Nothing in core/ imports a stage; importing this package loads no TensorFlow.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"


def callable_stage(module_name: str, entry: str) -> None:
    """Make stage package `module_name` callable as its entry function (`toolkit.train(...)`).

    The public API is the stage functions under their stage names, but `toolkit.train` is also
    the package `toolkit/train/`: once any code imports the package, Python binds that name to
    the module. A callable module keeps both true (`toolkit.train(recipe)` and
    `toolkit.train.stage`) and stays light, since `entry` ("module:function") is imported on call.
    """
    module_path, _, attr = entry.partition(":")

    class StageModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(module_path), attr)(*args, **kwargs)

    sys.modules[module_name].__class__ = StageModule
