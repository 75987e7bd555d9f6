"""The package stage: an export dir + a target profile -> a device bundle (dir + zip).

`toolkit.package(...)` calls `toolkit.package.stage.package`;
importing this package loads no TensorFlow.
"""

from toolkit.core import callable_stage

callable_stage(__name__, "toolkit.package.stage:package")
