"""Pruning, weight clustering and quantization-aware training for Keras 3 models.

tfmot only accepts tf_keras models, so `bridge` rebuilds a Keras 3 model as tf_keras (and
back); `stage.optimize(run_dir, config)` runs the steps and writes RUN/optimized/. The recipe
section and CLI flags are `core.optimize_config.OptimizeConfig`. Importing this package loads
no TensorFlow.
"""

from typing import Any

from toolkit.core import callable_stage
from toolkit.core.optimize_config import OptimizeConfig, from_flags, parse_optimize

__all__ = ["OptimizeConfig", "from_flags", "optimize", "parse_optimize"]


def optimize(*args: Any, **kwargs: Any) -> Any:
    """`toolkit.optimize.stage.optimize`, imported on first use (it pulls in TensorFlow)."""
    from toolkit.optimize.stage import optimize as run

    return run(*args, **kwargs)


callable_stage(__name__, "toolkit.optimize.stage:optimize")  # `toolkit.optimize(run_dir, cfg)`
