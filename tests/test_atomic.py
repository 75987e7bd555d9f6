"""Atomic outputs (issue #8): a killed or interrupted stage never leaves a file that looks whole.

Real processes are killed with SIGKILL at several points of `keras-edge export` (validation
included: the export dir appears only together with its report) and interrupted with SIGINT
(Ctrl-C) during `keras-edge train`; afterwards the output either does not exist or every
artifact in it opens and runs in its runtime. Leftover hidden partial directories of a killed
run are removed by the next run of the same stage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _badinput
import numpy as np
import pytest
import yaml
from _badinput import TAB_RECIPE, record

from toolkit.core.errors import UserError
from toolkit.core.rundir import atomic_dir, atomic_write_bytes, stale_leftovers

tiny_models = _badinput.tiny_models  # the session fixture, shared with the other modules
REPO = Path(__file__).resolve().parents[1]


def _start(*args: str | Path, cwd: Path, stderr: Any = subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, "-m", "toolkit", *map(str, args)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        preexec_fn=_sigint_default,
    )  # fmt: skip


def _sigint_default() -> None:
    """Start the child with SIGINT at its default, as from a terminal.

    A suite launched as a background job of a non-interactive shell (`make test &`) inherits
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler in the child.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _partials(parent: Path, name: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.*.partial")) if parent.is_dir() else []


def _wait_for(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 120) -> bool:
    """Poll until `condition()` (True) or the process ended (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("timed out waiting for the process to reach the kill point")


def _artifacts_all_run(folder: Path) -> list[str]:
    """Open every artifact of an export dir in its runtime and run one sample; return names."""
    from toolkit.runtimes import open_runner

    names = []
    for path in sorted(folder.glob("model*")):
        if path.suffix not in (".tflite", ".onnx", ".keras"):
            continue
        with open_runner(path) as runner:
            out = runner.predict(np.zeros((1, *runner.inputs[0].shape[1:]), np.float32))
        assert np.isfinite(out).all(), path
        names.append(path.name)
    if (folder / "report.json").exists():
        json.loads((folder / "report.json").read_text())  # whole JSON or absent
    return names


KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    # the hidden temp dir was created (model and data loaded, conversion starting)
    "temp dir appeared": lambda out: bool(_partials(out.parent, out.name)),
    # a first artifact file sits in the temp dir (the next conversion is running)
    "first artifact written": lambda out: any(
        p.suffix in (".tflite", ".onnx")
        for d in _partials(out.parent, out.name)
        for p in d.iterdir()
    ),
    # every artifact sits in the temp dir: validation runs there (slow: --latency-runs below)
    "validating the staged artifacts": lambda out: any(
        {"model-fp32.onnx", "model-fp32.tflite"} <= {p.name for p in d.iterdir()}
        for d in _partials(out.parent, out.name)
    ),
}  # fmt: skip
VALIDATING = "validating the staged artifacts"


def test_kill_9_during_export_leaves_nothing_that_looks_complete(tiny_models, tmp_path) -> None:
    from toolkit.pipeline.exporting import run_export

    out = tmp_path / "exp" / "out"
    killed_partials: list[Path] = []
    for point, reached in KILL_POINTS.items():
        before = set(_partials(out.parent, out.name))
        proc = _start(
            "export", tiny_models["run"], "--out", out, "--force", "--formats", "tflite,onnx",
            "--precisions", "fp32", "--latency-runs", "200000", cwd=tmp_path,
        )  # fmt: skip
        hit = _wait_for(proc, lambda reached=reached: reached(out))
        if point == VALIDATING:
            time.sleep(1.0)  # well inside validation (200,000 latency runs per artifact)
        proc.kill()
        proc.wait()
        assert hit, f"export ended before '{point}': {proc.stderr.read()[-1500:]}"
        assert proc.returncode == -signal.SIGKILL
        if point == VALIDATING:  # artifacts without their report are never published
            assert not out.exists(), list(out.iterdir())
        if out.exists():  # only ever the complete set of artifacts
            assert _artifacts_all_run(out) == ["model-fp32.onnx", "model-fp32.tflite"]
            state = "export dir complete, every artifact runs"
        else:
            state = "no export dir"
        visible = [p.name for p in out.parent.iterdir() if not p.name.startswith(".")]
        assert visible in ([], ["out"]), visible
        now = set(_partials(out.parent, out.name))
        assert not before & now, "a later run should remove the dead run's temp dir"
        killed_partials += sorted(now)
        record(f"SIGKILL during export: {point}", "export", state)
    assert killed_partials, "the kills before the rename should have left hidden temp dirs"
    # a re-run with --force works and removes whatever the dead processes left
    run_export(tiny_models["run"], formats=["tflite"], precisions=["fp32"], out=out, force=True,
               latency_runs=1)  # fmt: skip
    assert _artifacts_all_run(out) == ["model-fp32.tflite"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    record("re-run after SIGKILL (stale .partial dirs)", "export --force", "ok, leftovers removed")


def test_failed_budget_publishes_the_dir_with_its_report(tiny_models, tmp_path) -> None:
    """The gate fails after publishing: the user needs the report to see why (exit 1)."""
    from toolkit.core.errors import GateFailed
    from toolkit.pipeline.exporting import run_export

    out = tmp_path / "gated"
    with pytest.raises(GateFailed, match="outside --max-drop"):
        run_export(tiny_models["run"], formats=["tflite"], precisions=["fp32"], out=out,
                   max_drop=-1.0, latency_runs=1)  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").is_file() and (out / "model-fp32.tflite").is_file()
    assert {row["path"] for row in report["artifacts"]} == {str(out / "model-fp32.tflite")}
    assert [p.name for p in tmp_path.iterdir()] == ["gated"]  # no temp dir left
    # validation that fails outright publishes nothing and keeps the previous export
    with pytest.raises(UserError):
        run_export(tiny_models["run"], formats=["onnx"], precisions=["fp32"], out=out,
                   force=True, latency_runs=1, runtimes=["litert"])  # fmt: skip
    assert (out / "model-fp32.tflite").is_file() and not (out / "model-fp32.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["gated"]
    record("failed budget / failed validation", "export", "exit 1 with report / old dir kept")


def test_ctrl_c_during_train_leaves_no_run_dir(tmp_path: Path) -> None:
    recipe = {**TAB_RECIPE, "name": "slow", "train": {"epochs": 2000, "batch_size": 4,
                                                    "tensorboard": False}}  # fmt: skip
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    runs = tmp_path / "runs"
    log = tmp_path / "train.err"  # the per-epoch progress lines go to stderr
    with log.open("w") as err:
        proc = _start("train", tmp_path / "r.yaml", "--runs-dir", runs, cwd=tmp_path, stderr=err)
        # Signal once model.fit is past its first epochs, so the interrupt lands mid-training.
        in_fit = _wait_for(proc, lambda: "epoch 3/" in log.read_text())
        assert in_fit and bool(_partials(runs, "slow")), log.read_text()[-1500:]
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    stderr = log.read_text()
    assert proc.returncode == 130, stderr[-1500:]
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert not runs.exists() or list(runs.iterdir()) == [], list(runs.iterdir())
    record("Ctrl-C (SIGINT) during training", "train", "exit 130, no run dir, temp dir removed")


def test_interrupted_write_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = atomic_write_bytes(tmp_path / "report.json", b'{"old": true}')

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b'{"new": tr')
    assert target.read_bytes() == b'{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    record("interrupt while writing a file", "atomic_write_bytes", "old file intact, no temp")


def test_failed_stage_keeps_the_previous_output(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with atomic_dir(final) as work:
        (work / "model.keras").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(final, force=True) as work:
        (work / "model.keras").write_text("v2, half")
        raise RuntimeError("conversion failed")
    assert (final / "model.keras").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    with pytest.raises(UserError, match="--force"), atomic_dir(final):
        pass


def test_outputs_get_normal_permissions(tmp_path: Path) -> None:
    """Temp files are 0600/0700; renamed results follow the umask like any other file."""
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_dir(tmp_path / "run") as work:
        atomic_write_bytes(work / "metrics.json", b"{}")
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "run" / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_our_dead_leftovers_are_removed(tmp_path: Path) -> None:
    dead, live = _dead_pid(), os.getppid()
    names = {
        f".run.{dead}.abc123.partial": True,  # a killed run
        f".run.old-{dead}": True,  # killed between the two renames of --force
        f".run.{live}.abc123.partial": False,  # a live process is still writing it
        f".run.{os.getpid()}.zzz.partial": False,  # ours
        f".run2.{dead}.abc.partial": False,  # another output's
        f".run.{dead}.abc.tmp": False,  # not our directory pattern
        "run.partial": False,  # not hidden
    }
    for name in names:
        (tmp_path / name).mkdir()
    assert {p.name for p in stale_leftovers(tmp_path / "run")} == {
        n for n, stale in names.items() if stale
    }
    with atomic_dir(tmp_path / "run") as work:
        (work / "x").write_text("x")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"run"} | {n for n, stale in names.items() if not stale}


def test_cli_train_is_deterministic(tmp_path: Path) -> None:
    """Same recipe + seed + data -> the same metrics, end to end through the CLI (in-process)."""
    from _badinput import invoke

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(TAB_RECIPE))
    metrics = []
    for name in ("a", "b"):
        result = invoke("train", recipe, "--runs-dir", tmp_path, "--name", name, "--seed", "3")
        assert result.exit_code == 0, result.output[-1500:]
        data = json.loads((tmp_path / name / "metrics.json").read_text())
        metrics.append({k: v for k, v in data.items() if "time" not in k and "seconds" not in k})
    assert metrics[0]["test"] == metrics[1]["test"]
