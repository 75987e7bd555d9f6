"""`keras-edge train --distribute`: MultiWorkerMirroredStrategy with real worker processes on
loopback, the chief alone writing the run dir, and cluster mistakes as one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from toolkit.core.errors import UserError

# No dropout: its random masks differ per replica; the rest is the same math on 1 or 2 workers.
RECIPE = {
    "name": "dist-mlp",
    "dataset": {"name": "digits", "image_size": [8, 8]},
    "preprocess": {"normalize": "standardize"},
    "model": {"builder": "mlp", "args": {"hidden": [64]}},
    "train": {"epochs": 3, "batch_size": 64, "tensorboard": False, "dropout": 0.0,
              "optimizer": {"name": "adam", "learning_rate": 0.003}},
}  # fmt: skip
RUN_FILES = {"model.keras", "metrics.json", "history.csv", "recipe.yaml", "input_spec.json"}


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _train(*args: str, tmpdir: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_CONFIG", None)
    if tmpdir is not None:  # the worker's own temp dir, to see what it leaves there
        tmpdir.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    return subprocess.Popen([sys.executable, "-m", "toolkit", "train", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cluster": {"worker": ["127.0.0.1:5000", "127.0.0.1:5000"]},
          "task": {"type": "worker", "index": 0}}, "names 127.0.0.1:5000 twice"),
        ({"cluster": {"worker": ["127.0.0.1:5000"]}, "task": {"type": "worker", "index": 1}},
         "index 1 is outside cluster.worker"),
        ({"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}},
         "is not HOST:PORT"),
        ({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}, "names no workers"),
        ({"task": {}}, "needs"),
    ],
)  # fmt: skip
def test_bad_clusters_are_one_line(config, message) -> None:
    from toolkit.train.distribute import check_cluster

    with pytest.raises(UserError, match=message):
        check_cluster(config)


def test_tf_config_from_flags_and_env(monkeypatch) -> None:
    from toolkit.train.distribute import read_tf_config, tf_config_from_flags

    text = tf_config_from_flags("10.0.0.1:2222,10.0.0.2:2222", 1)
    assert json.loads(text) == {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
                                "task": {"type": "worker", "index": 1}}  # fmt: skip
    with pytest.raises(UserError, match="needs --worker-index"):
        tf_config_from_flags("10.0.0.1:2222", None)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match="TF_CONFIG is not JSON"):
        read_tf_config()
    monkeypatch.delenv("TF_CONFIG")
    with pytest.raises(UserError, match="set TF_CONFIG or pass"):
        read_tf_config()


def test_cli_host_named_twice_exits_2(cli, tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    proc = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"),
               "--workers", "127.0.0.1:5000,127.0.0.1:5000", "--worker-index", "0")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: TF_CONFIG names 127.0.0.1")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_two_workers_match_one_and_only_the_chief_writes(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    shared = tmp_path / "shared-runs"  # as if both hosts mounted the same runs dir
    hosts = ",".join(f"127.0.0.1:{p}" for p in _ports(2))
    temps = [tmp_path / f"tmp{i}" for i in (0, 1)]
    workers = [_train(str(path), "--runs-dir", str(shared), "--workers", hosts,
                      "--worker-index", str(i), tmpdir=temps[i]) for i in (0, 1)]  # fmt: skip
    single = _train(str(path), "--runs-dir", str(tmp_path / "single"))
    outs = [w.communicate(timeout=600)[0] for w in workers]
    single_out = single.communicate(timeout=600)[0]
    assert [w.returncode for w in workers] == [0, 0], outs
    assert single.returncode == 0, single_out
    assert "worker 1 finished; the chief (worker 0) wrote the run dir" in outs[1]

    assert sorted(os.listdir(shared)) == ["dist-mlp"]  # no partial, backup or worker dirs
    run_dir = shared / "dist-mlp"
    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
    assert (run_dir / "plots").is_dir()
    multi = json.loads((run_dir / "metrics.json").read_text())
    assert multi["distribute"] == {"strategy": "multi-worker", "workers": 2, "replicas": 2,
                                   "communication": "auto"}  # fmt: skip
    assert multi["epochs_run"] == 3
    one = json.loads((tmp_path / "single" / "dist-mlp" / "metrics.json").read_text())
    assert "distribute" not in one
    # same recipe, same global batch of 64 (32 per worker): the same model within 1 pp
    print(f"test accuracy: 1 worker {one['test']['accuracy']:.4f}, "
          f"2 workers {multi['test']['accuracy']:.4f}")  # fmt: skip
    assert abs(multi["test"]["accuracy"] - one["test"]["accuracy"]) <= 0.01
    assert multi["test"]["accuracy"] > 0.85
    # the other worker's scratch run dir and its backup are removed once training finished
    assert list(temps[1].glob("keras-edge-*")) == []


@pytest.mark.slow
def test_a_killed_distributed_run_resumes_from_its_backup(tmp_path) -> None:
    import signal
    import time

    recipe = {**RECIPE, "train": {**RECIPE["train"], "epochs": 12},
              "distribute": {"strategy": "mirrored"}}  # fmt: skip
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    runs = tmp_path / "runs"
    proc = _train(str(path), "--runs-dir", str(runs))
    deadline = time.monotonic() + 300
    meta = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(runs.glob(".dist-mlp.backup-*/training_metadata.json"))
        try:
            done = json.loads(found[0].read_text()).get("epoch", 0) if found else 0
        except ValueError:  # caught mid-write
            done = 0
        if done >= 2:
            meta = found[0]
            break
        time.sleep(0.05)
    assert meta is not None, proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = json.loads(meta.read_text())["epoch"]  # epochs finished before the kill
    assert not (runs / "dist-mlp").exists()
    again = _train(str(path), "--runs-dir", str(runs))
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0, out
    history = (runs / "dist-mlp" / "history.csv").read_text().splitlines()
    epochs = [int(line.split(",")[0]) for line in history[1:]]
    assert epochs[0] >= saved and epochs[-1] == 11  # resumed where it stopped, finished
    assert not list(runs.glob(".dist-mlp.backup-*"))  # removed once the run finished
