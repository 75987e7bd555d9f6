"""Shared by the reliability tests (issue #8): in-process CLI calls, tiny models, a case log.

Every bad-input case calls `record(cls, command, outcome)`; with KERAS_EDGE_BADINPUT_LOG set,
cases are appended there as JSON lines and `python tests/_badinput.py LOG` prints the table
(class, cases, outcomes) the issue asks for, measured rather than hand-written.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

LOG_ENV = "KERAS_EDGE_BADINPUT_LOG"


def record(cls: str, command: str, outcome: str) -> None:
    """Count one case of a bad-input class (a no-op unless the log is enabled)."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"class": cls, "command": command, "outcome": outcome}) + "\n")


def table(path: str | Path) -> str:
    """The markdown table of every class in a log: cases and outcome counts."""
    cases: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        cases[(row["command"], row["class"])][row["outcome"]] += 1
    lines = [
        "| # | command | bad-input class | cases | outcomes (no traceback in any) |",
        "|---|---|---|---|---|",
    ]
    for i, ((command, cls), outcomes) in enumerate(sorted(cases.items()), 1):
        shown = ", ".join(f"{k} x{v}" for k, v in sorted(outcomes.items()))
        lines.append(f"| {i} | {command} | {cls} | {sum(outcomes.values())} | {shown} |")
    return "\n".join(lines)


def invoke(*args: Any) -> Any:
    """`keras-edge ARGS` in this process (typer's CliRunner): fast, same code path as a user."""
    from typer.testing import CliRunner

    from toolkit.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result: Any) -> str:
    """The one `error: ...` line of a user error, asserting exit 2 and no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"crashed: {result.exception!r}\n{result.output[-2000:]}"
    )
    assert result.exit_code == 2, result.output[-2000:]
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, result.output[-2000:]
    return lines[0]


def one_error_line(proc: Any, *needles: str, code: int = 2, alone: bool = False) -> str:
    """A real process's user error: exit `code`, no traceback, exactly one `error: ...` line
    holding every needle (with `alone`, nothing else on stderr either). Returns the line."""
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    if alone:
        assert lines == errors, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def outcome_of(result: Any) -> str:
    """Classify a CLI result; anything but a clean exit 0/1/2 fails the calling test."""
    if result.exit_code == 2:
        error_line(result)
        return "exit 2 (one-line error)"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"crashed: {result.exception!r}\n{result.output[-2000:]}"
    )
    assert result.exit_code in (0, 1), result.output[-2000:]
    assert "Traceback" not in result.output
    return f"exit {result.exit_code}"


def hidden_leftovers(folder: Path) -> list[Path]:
    """Hidden partial/temp entries (our naming) left in a folder."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name.startswith(".") and p.name != ".gitignore"]


TAB_RECIPE = {
    "name": "tab",
    "dataset": {"name": "wine"},
    "model": {"builder": "mlp", "args": {"hidden": [8]}},
    "train": {"epochs": 1, "batch_size": 32, "tensorboard": False},
}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained tabular run dir plus a tiny image model in every format (built once)."""
    import keras

    from toolkit.convert import convert
    from toolkit.core.recipe import parse_recipe
    from toolkit.train.stage import train

    root = tmp_path_factory.mktemp("tiny-models")
    run = train(parse_recipe(TAB_RECIPE), root / "runs").run_dir
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    image_model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    image_model.save(root / "image.keras")
    image_model.save(root / "image.h5")
    calib = np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 1)).astype("float32")
    return {
        "run": run,
        "keras": run / "model.keras",
        "image_keras": root / "image.keras",
        "image_h5": root / "image.h5",
        "tflite": convert(image_model, "tflite-fp32", root / "tfl"),
        "tflite_int8": convert(image_model, "tflite-int8", root / "tfl8", calibration=calib),
        "onnx": convert(image_model, "onnx-fp32", root / "onnx"),
    }


if __name__ == "__main__":
    print(table(sys.argv[1]))
