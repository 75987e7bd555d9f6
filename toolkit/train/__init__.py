"""The train stage: recipe -> runs/<name>/ (model.keras, input spec, history, metrics, plots).

`toolkit.train(...)` calls `toolkit.train.stage.train`;
importing this package loads no TensorFlow.
"""

from toolkit.core import callable_stage

callable_stage(__name__, "toolkit.train.stage:train")
