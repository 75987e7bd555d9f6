"""The check stage: a fresh report.json against a committed baseline (the CI regression gate).

`toolkit.check(...)` calls `toolkit.check.stage.check`;
importing this package loads no TensorFlow.
"""

from toolkit.core import callable_stage

callable_stage(__name__, "toolkit.check.stage:check")
