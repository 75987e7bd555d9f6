"""The two failure kinds the CLI turns into exit codes.

A `UserError` is something the user can fix (bad path, bad recipe, bad data): the CLI prints its
one-line message and exits 2, without a traceback unless `--debug`. A `GateFailed` is a measured
result outside its budget: exit 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class UserError(Exception):
    """A problem with the user's input; the message says what was wrong and what to do."""

    exit_code = 2


class GateFailed(Exception):
    """An accuracy budget or regression gate was not met; `details` holds what was measured
    when no report was published (e.g. the budget ladder when no rung qualified)."""

    exit_code = 1

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest known name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """A uniform 'unknown builder/dataset/...' error with a suggestion and the list of names."""
    names = sorted(choices)
    return UserError(f"unknown {kind} {name!r}{suggest(name, names)}; known: {', '.join(names)}")


def validation_message(err: Any, what: str, source: str) -> str:
    """A pydantic ValidationError as one line naming the bad key, the problem and the value."""
    problems = err.errors()
    first = problems[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    got = first.get("input")
    got_text = "" if isinstance(got, dict) or first["type"] == "missing" else f", got {got!r}"
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{what} {source}: {where}: {message}{got_text}{more}"
