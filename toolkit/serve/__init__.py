"""The serve stage: an HTTP inference server for an artifact, export dir or bundle, with
drift monitoring (`keras-edge serve`), and offline drift reports from request logs
(`keras-edge monitor`).

`toolkit.serve(config)` calls `toolkit.serve.stage.serve`; importing this package loads
neither FastAPI nor TensorFlow.
"""

from toolkit.core import callable_stage

callable_stage(__name__, "toolkit.serve.stage:serve")
