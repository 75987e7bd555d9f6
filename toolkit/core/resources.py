"""Where the built-in recipes (models/) and target profiles (export/) live.

In a wheel they are package data under toolkit/_builtin/; in a source checkout (editable
install) they sit at the repository root. A user's own file is accepted by path anywhere a
built-in name is.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.core.errors import UserError, unknown

_PACKAGE = Path(__file__).resolve().parents[1]  # toolkit/


def builtin_dir(kind: str) -> Path:
    """The directory holding built-in `models` (recipes) or `export` (targets)."""
    for candidate in (_PACKAGE / "_builtin" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise UserError(f"the toolkit's built-in {kind}/ directory is missing; reinstall the package")


def builtin_names(kind: str) -> list[str]:
    """Names (file stems) of the built-in YAML files of a kind."""
    return sorted(p.stem for p in builtin_dir(kind).glob("*.yaml"))


def resolve_yaml(name_or_path: str, kind: str, what: str) -> Path:
    """A built-in name (`digits-cnn`) or a path to a YAML file -> an existing path."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in name_or_path:
        if not path.is_file():
            raise UserError(f"{what} file not found: {name_or_path}")
        return path
    builtin = builtin_dir(kind) / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    raise unknown(what, name_or_path, builtin_names(kind))
