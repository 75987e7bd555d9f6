"""Rich progress for long loops: a Keras callback for epochs, a generic bar, and one bar
across a pipeline's stages (`overall`: an export's conversion and validation share it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Progress and tables go to stderr so stdout stays clean for machine-readable output.
console = Console(stderr=True)


def progress_bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=transient,
        disable=not console.is_terminal and not console.is_jupyter,
    )


def epoch_callback(epochs: int, description: str = "train") -> Any:
    """A keras Callback driving a rich bar; prints one line per epoch when not on a terminal."""
    import keras

    class RichEpochs(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.bar = progress_bar()
            self.bar.start()
            self.task = self.bar.add_task(description, total=epochs, status="")

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            shown = {k: v for k, v in (logs or {}).items() if k != "learning_rate"}
            status = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
            self.bar.update(self.task, completed=epoch + 1, status=status)
            if self.bar.disable:
                console.print(f"epoch {epoch + 1}/{epochs}  {status}", highlight=False)

        def on_train_end(self, logs: dict | None = None) -> None:
            self.bar.stop()

    return RichEpochs()


_OVERALL: list[tuple[Progress, Any]] = []  # the open `overall` bar and its task


@contextmanager
def overall(description: str) -> Iterator[None]:
    """One bar for every stage run inside: each `StageBar` adds its steps to the total, so
    the count and the ETA cover the whole command, and the status names the current step."""
    bar = progress_bar()
    bar.start()
    _OVERALL.append((bar, bar.add_task(description, total=0, status="")))
    try:
        yield
    finally:
        _OVERALL.pop()
        bar.stop()


class StageBar:
    """A stage's steps: on the `overall` bar when one is open, else on a bar of its own.
    Off a terminal the bar is silent (`disable`); stages then print one line per step."""

    def __init__(self, description: str, total: int) -> None:
        self._owned = not _OVERALL
        if self._owned:
            self.bar = progress_bar()
            self.task = self.bar.add_task(description, total=total, status="")
            self._prefix = ""
        else:
            self.bar, self.task = _OVERALL[-1]
            known = next(t for t in self.bar.tasks if t.id == self.task).total or 0
            self.bar.update(self.task, total=known + total)
            self._prefix = f"{description}: "

    @property
    def disable(self) -> bool:
        return bool(self.bar.disable)

    def start(self) -> None:
        if self._owned:
            self.bar.start()

    def stop(self) -> None:
        if self._owned:
            self.bar.stop()

    def status(self, text: str) -> None:
        self.bar.update(self.task, status=self._prefix + text)

    def advance(self) -> None:
        self.bar.advance(self.task)

    def __enter__(self) -> StageBar:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
