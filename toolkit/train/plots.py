"""Training plots (matplotlib, Agg backend: works headless, never opens a window)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    from toolkit.core.rundir import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_history(history: dict[str, list[float]], out_dir: Path) -> list[Path]:
    """One PNG per metric (loss, accuracy, ...) with train and validation curves."""
    plt = _pyplot()
    written = []
    names = sorted({k.removeprefix("val_") for k in history if k not in ("epoch", "learning_rate")})
    for name in names:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if key in history:
                ax.plot(range(1, len(history[key]) + 1), history[key], label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, Path(out_dir) / f"{name}.png"))
    return written


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path) -> Path:
    import numpy as np

    plt = _pyplot()
    data = np.asarray(matrix)
    size = max(3.5, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = data.max() / 2 if data.size else 0
    for (i, j), value in np.ndenumerate(data):
        color = "white" if value > threshold else "black"
        ax.text(j, i, str(value), ha="center", va="center", fontsize=8, color=color)
    return _save(fig, path)
