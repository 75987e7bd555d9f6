"""The validate stage: every artifact measured in the runtime that will run it (stage, rendering).

`toolkit.validate(...)` calls `toolkit.validate.stage.validate`;
importing this package loads no TensorFlow.
"""

from toolkit.core import callable_stage

callable_stage(__name__, "toolkit.validate.stage:validate")
