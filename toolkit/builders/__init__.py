"""Model builders (Keras 3) registered by name; see `registry.py`."""

from toolkit.builders.registry import (
    BUILDERS,
    BuildContext,
    BuilderInfo,
    build_model,
    get_builder,
    list_builders,
)

__all__ = ["BUILDERS", "BuildContext", "BuilderInfo", "build_model", "get_builder", "list_builders"]
