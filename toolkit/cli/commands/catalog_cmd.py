"""`keras-edge builders` and `keras-edge datasets`: what the registries hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.table import Table

from toolkit.core.progress import console


def _out() -> Any:
    # Catalog tables are the command's output: print them to stdout.
    from rich.console import Console

    return Console() if console.is_terminal else Console(width=160)


def builders_command() -> None:
    """List model builders: name, tasks, input, arguments with defaults."""
    from toolkit.builders import list_builders

    table = Table(title="builders", header_style="bold")
    for col in ("name", "task", "input", "params", "about"):
        table.add_column(col, overflow="fold")
    for info in list_builders():
        params = ", ".join(f"{k}={v!r}" for k, v in info.params().items())
        table.add_row(info.name, "/".join(info.tasks), info.inputs, params, info.description)
    _out().print(table)


def datasets_command() -> None:
    """List datasets: built-in names and the PREFIX:PATH kinds for your own data."""
    from toolkit.data import list_datasets

    table = Table(title="datasets", header_style="bold")
    for col in ("name", "kind", "task", "about"):
        table.add_column(col, overflow="fold")
    for row in list_datasets():
        table.add_row(row["name"], row["kind"], row["task"], row["description"])
    _out().print(table)


def register(app: typer.Typer, guarded: Callable[..., Any]) -> None:
    app.command("builders")(guarded(builders_command, heavy=False))
    app.command("datasets")(guarded(datasets_command, heavy=False))
