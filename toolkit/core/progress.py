"""Rich progress for long loops: a Keras callback for epochs and a generic bar."""

from __future__ import annotations

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
