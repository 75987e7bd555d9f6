"""The built wheel carries models/ and export/ and its installed CLI trains from elsewhere."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_trains(tmp_path) -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "wheel_check.sh")],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for recipe in ("'digits-cnn.yaml'", "'tabular-mlp.yaml'"):  # recipes shipped as package data
        assert recipe in proc.stdout
    assert "wheel check passed" in proc.stdout
