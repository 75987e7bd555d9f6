"""Library warnings and C++ log lines are captured and counted, not mixed into our output.

Without --debug, a MobileNetV2 export prints no third-party "Warning"/"WARNING"/"INFO:" line
and ends with "N library warnings hidden; --debug shows them"; with --debug they show.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import numpy as np
import pytest

from toolkit.core import quiet
from toolkit.core.errors import UserError

NOISE = ("Warning", "WARNING", "INFO:")


@pytest.fixture
def hidden():
    quiet.HIDDEN.reset()
    yield quiet.HIDDEN
    quiet.HIDDEN.reset()
    quiet.set_debug(False)


def _library_noise() -> None:
    """What the libraries do: C++ lines on fd 2, a Python warning, a root-logger warning."""
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    warnings.warn("the float32 number 1e-09 will be truncated to 1e-07", UserWarning, stacklevel=1)
    logging.getLogger("noisy.lib").warning("Please consider to run pre-processing")
    sys.stderr.write("WARNING: a Python write to sys.stderr\n")


def test_captured_hides_and_counts_while_our_console_shows(hidden, capfd):
    from toolkit.core.progress import console

    with quiet.captured():
        _library_noise()
        with quiet.captured():  # nested (a converter inside a command): one capture
            os.write(2, b"W0000 absl line\n")
        console.print("validate tflite-int8 litert/xnnpack: ok")
    out, err = capfd.readouterr()
    assert "validate tflite-int8" in err
    assert not any(word in out + err for word in NOISE), out + err
    assert hidden.count >= 4
    assert any("truncated to 1e-07" in line for line in hidden.text)
    assert hidden.summary() == f"{hidden.count} library warnings hidden; --debug shows them"


def test_debug_captures_nothing(hidden, capfd):
    quiet.set_debug(True)
    with quiet.captured():
        os.write(2, b"INFO: shown under --debug\n")
    assert "INFO: shown under --debug" in capfd.readouterr().err
    assert hidden.count == 0 and hidden.summary() is None


def test_a_crash_replays_what_was_hidden_a_user_error_does_not(hidden, capfd):
    with pytest.raises(ZeroDivisionError), quiet.captured():
        os.write(2, b"context a bug report needs\n")
        _ = 1 / 0
    assert "context a bug report needs" in capfd.readouterr().err
    with pytest.raises(UserError), quiet.captured():
        os.write(2, b"noise before a user error\n")
        raise UserError("bad flag")
    assert "noise before a user error" not in capfd.readouterr().err
    assert os.write(2, b"") == 0  # fd 2 is back


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """keras.applications MobileNetV2 (alpha 0.35, 96x96, random weights) and an npz of data."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("mnv2")
    model = keras.applications.MobileNetV2(
        alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=10
    )
    model.save(root / "mnv2.keras")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (100, 96, 96, 3)).astype(np.float32)
    np.savez(root / "data.npz", x=x, y=np.arange(100) % 10)
    return root


def _noisy_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(word in line for word in NOISE)]


@pytest.mark.slow
def test_mobilenet_export_prints_no_library_noise(cli, mobilenet):
    args = ("--data", f"npz:{mobilenet / 'data.npz'}", "--max-eval-samples", "8",
            "--calib-samples", "16", "--latency-runs", "1",
            "--runtimes", "litert:xnnpack,onnxruntime:cpu")  # fmt: skip
    proc = cli("export", str(mobilenet / "mnv2.keras"), "--out", str(mobilenet / "quiet"), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _noisy_lines(proc.stdout) == [] and _noisy_lines(proc.stderr) == [], proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("validate tflite-int8 litert/xnnpack") for line in lines)
    assert any(line.startswith("artifact ") for line in lines)  # our table
    assert any(line.startswith("wrote ") for line in lines)
    closing = [line for line in lines if "library warnings hidden" in line]
    assert len(closing) == 1 and closing[0].endswith("hidden; --debug shows them"), lines[-5:]
    assert int(closing[0].split()[0]) > 0

    loud = ("--out", str(mobilenet / "loud"), "--formats", "tflite-fp32,onnx-dynamic")
    shown = cli("--debug", "export", str(mobilenet / "mnv2.keras"), *loud, *args)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "INFO: Created TensorFlow Lite XNNPACK delegate" in shown.stderr
    assert "Please consider to run pre-processing before quantization" in shown.stderr
    assert len(_noisy_lines(shown.stderr)) >= 2
    assert "library warnings hidden" not in shown.stderr
