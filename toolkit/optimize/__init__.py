"""Pruning, weight clustering and quantization-aware training for Keras 3 models.

tfmot only accepts tf_keras models, so `bridge` rebuilds a Keras 3 model as tf_keras (and
back); `stage.optimize(run_dir, config)` runs the steps and writes RUN/optimized/. The recipe
section and CLI flags are `config.OptimizeConfig`. Importing this package loads no TensorFlow.
"""

from typing import Any

from toolkit.optimize.config import OptimizeConfig, from_flags, parse_optimize

__all__ = ["OptimizeConfig", "from_flags", "optimize", "parse_optimize"]


def optimize(*args: Any, **kwargs: Any) -> Any:
    """`toolkit.optimize.stage.optimize`, imported on first use (it pulls in TensorFlow)."""
    from toolkit.optimize.stage import optimize as run

    return run(*args, **kwargs)
