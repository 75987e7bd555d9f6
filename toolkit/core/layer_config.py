"""What a layer class's constructor accepts: the test for translating configs between Keras
versions (legacy .h5 -> Keras 3, Keras 3 -> tf_keras) by filtering keys, not by fixed lists."""

from __future__ import annotations

import inspect


def constructor_keywords(cls: type) -> set[str]:
    """Named parameters of `__init__` along the class's MRO (without `self`)."""
    keys: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        keys |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return keys - {"self"}
