"""keras-edge-toolkit: data -> Keras model -> int8 TFLite / ONNX proven in the runtime that runs it.

The public Python API is the stage functions re-exported here lazily, so `import toolkit`
stays cheap (TensorFlow loads only when a stage runs).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
