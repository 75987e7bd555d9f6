"""Looking builders up by name: `keras-edge builders` prints them; `build_model` checks args.

Builder modules register themselves on import (see `base.register`); this module imports them
all on first lookup, so listing builders never needs a module name spelled twice.
"""

from __future__ import annotations

from typing import Any

from toolkit.builders.base import BUILDERS, BuildContext, BuilderInfo
from toolkit.core.errors import UserError, unknown

__all__ = ["BUILDERS", "BuildContext", "BuilderInfo", "build_model", "get_builder", "list_builders"]


def get_builder(name: str) -> BuilderInfo:
    _load_all()
    if name not in BUILDERS:
        raise unknown("builder", name, BUILDERS)
    return BUILDERS[name]


def list_builders() -> list[BuilderInfo]:
    _load_all()
    return [BUILDERS[n] for n in sorted(BUILDERS)]


def build_model(name: str, ctx: BuildContext, args: dict[str, Any]) -> Any:
    """Call a builder with checked keyword arguments (unknown ones name the builder's params)."""
    info = get_builder(name)
    if ctx.task not in info.tasks:
        raise UserError(
            f"builder {name!r} does not do {ctx.task}; it does: {', '.join(info.tasks)}"
        )
    params = info.params()
    bad = sorted(set(args) - set(params))
    if bad:
        raise UserError(
            f"builder {name!r} has no argument {bad[0]!r}; its arguments: {', '.join(params)}"
        )
    try:
        return info.fn(ctx, **args)
    except (TypeError, ValueError) as err:
        raise UserError(f"builder {name!r} could not build with {args}: {err}") from None


def _load_all() -> None:
    # Importing the modules registers their builders; they import keras lazily inside functions.
    from toolkit.builders import (  # noqa: F401
        audio,
        autoencoder,
        cnn,
        detection,
        mlp,
        mobilenet,
        mobilenet_v1,
        resnet,
        sequence,
        transformer,
    )
