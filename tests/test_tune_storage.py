"""`keras-edge tune --storage/--study/--workers/--resume`: one study shared by many processes.

Real worker processes against a journal file and a real PostgreSQL server (Debian's, started
here in a temp dir on loopback, stopped afterwards): trials are shared, never duplicated, the
best trial is reported, a killed worker's trial is marked FAIL while the study goes on, and
`--resume` finishes a study whose every worker was killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from toolkit.core.errors import UserError
from toolkit.core.recipe import parse_recipe

RECIPE = {
    "name": "share-tune",
    "dataset": {"name": "digits", "image_size": [8, 8], "max_samples": 300},
    "preprocess": {"normalize": "standardize"},
    "model": {"builder": "mlp", "args": {"hidden": [16]}},
    "train": {"epochs": 2, "batch_size": 32, "tensorboard": False,
              "optimizer": {"name": "adam", "learning_rate": 0.001}},
    "search": {"trial_epochs": 1, "prune": False,
               "params": {"train.optimizer.learning_rate": {"low": 0.0005, "high": 0.01,
                                                            "log": True}}},
}  # fmt: skip
PG_BIN = Path("/usr/lib/postgresql")


def _recipe_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "share-tune.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **changes}))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _tune(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "toolkit", "tune", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _study(url: str, name: str = "share-tune-tune"):
    import optuna

    from toolkit.pipeline.tune_storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(url))


def _kill_when_running(url: str, proc: subprocess.Popen, after: int = 0) -> tuple[int, int]:
    """Wait until trial number >= `after` runs with a known worker; SIGKILL that worker.
    Returns (trial number, pid)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            trials = _study(url).get_trials(deepcopy=False)
        except Exception:  # the study is not created yet
            trials = []
        for t in trials:
            if t.state.name == "RUNNING" and t.number >= after and "worker" in t.user_attrs:
                pid = int(str(t.user_attrs["worker"]).rsplit(":", 1)[1])
                os.kill(pid, signal.SIGKILL)
                return t.number, pid
        time.sleep(0.2)
    raise AssertionError("no trial started in time")


def _states(study) -> list[str]:
    return [t.state.name for t in study.trials]


def test_storage_errors_are_one_line() -> None:
    from toolkit.pipeline.tune_storage import open_storage

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=r"cannot open tuning storage postgresql://u:\*\*\*@"):
        open_storage(f"postgresql://u:secret@127.0.0.1:{port}/db")
    with pytest.raises(UserError, match="in-memory sqlite database that --workers 2 cannot"):
        open_storage("sqlite:///:memory:", workers=2)
    with pytest.raises(UserError, match="needs a storage the workers can share"):
        open_storage(None, workers=2)
    with pytest.raises(UserError, match="is not an optuna storage URL"):
        open_storage("db.sqlite")
    with pytest.raises(UserError, match="does not exist"):
        open_storage("journal:/nonexistent-dir/x.journal")


def test_study_of_another_recipe_and_missing_resume(tmp_path) -> None:
    import optuna

    from toolkit.pipeline.tune_storage import open_storage, open_study

    url = f"journal:{tmp_path / 's.journal'}"
    storage = open_storage(url)
    kw = {"sampler": optuna.samplers.RandomSampler(), "pruner": None, "where": url}
    with pytest.raises(UserError, match="--resume: no study 'x'"):
        open_study(storage, "x", parse_recipe(RECIPE), resume=True, **kw)
    _, created = open_study(storage, "x", parse_recipe(RECIPE), resume=False, **kw)
    assert created
    same = open_study(storage, "x", parse_recipe(RECIPE), resume=True, **kw)
    assert same[1] is False
    other = parse_recipe({**RECIPE, "train": {**RECIPE["train"], "batch_size": 64}})
    with pytest.raises(UserError, match=r"was created by recipe 'share-tune' .* not by this one"):
        open_study(storage, "x", other, resume=False, **kw)


def test_cli_bad_storage_exits_2(cli, tmp_path) -> None:
    proc = cli("tune", str(_recipe_file(tmp_path)), "--workers", "2", "--storage", "sqlite://")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "cannot share" in proc.stderr


@pytest.mark.slow
def test_journal_workers_share_trials_and_survive_a_killed_worker(tmp_path) -> None:
    journal = tmp_path / "study.journal"
    url = f"journal:{journal}"
    proc = _tune(str(_recipe_file(tmp_path)), "--storage", url, "--workers", "2",
                 "--trials", "3", "--out", str(tmp_path / "out"), "--heartbeat", "1")  # fmt: skip
    killed, pid = _kill_when_running(url, proc)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    assert f"(pid {pid}) was killed by SIGKILL" in out
    study = _study(url)
    assert sorted(_states(study)) == ["COMPLETE"] * 3 + ["FAIL"]
    assert study.trials[killed].state.name == "FAIL"
    assert "died" in study.trials[killed].user_attrs["fail_reason"]
    numbers = [t.number for t in study.trials]
    assert numbers == sorted(set(numbers))  # shared, not duplicated
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2  # both workers ran trials of the one study
    tune_json = yaml.safe_load((tmp_path / "out" / "tune.json").read_text())
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    assert tune_json["best"]["trial"] == best.number and tune_json["study"] == "share-tune-tune"
    assert (tmp_path / "out" / "best-recipe.yaml").is_file()
    assert f" {best.number} * " in out  # the table marks the best trial


@pytest.mark.slow
def test_resume_finishes_a_study_whose_worker_was_killed(tmp_path) -> None:
    url = f"journal:{tmp_path / 'study.journal'}"
    recipe = str(_recipe_file(tmp_path))
    common = ["--storage", url, "--trials", "2", "--out", str(tmp_path / "out")]
    proc = _tune(recipe, *common)
    killed, _ = _kill_when_running(url, proc, after=1)  # trial 0 done, trial 1 in flight
    proc.wait(timeout=60)
    assert _states(_study(url))[killed] == "RUNNING"  # nobody has noticed yet
    again = _tune(recipe, *common, "--resume")
    out, _ = again.communicate(timeout=400)
    assert again.returncode == 0, out
    study = _study(url)
    assert sorted(_states(study)) == ["COMPLETE"] * 2 + ["FAIL"]
    assert study.trials[killed].state.name == "FAIL"
    assert "2 complete, 1 fail" in out and "best (trial" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server: initdb in a temp dir, loopback only, stopped after."""
    versions = sorted(PG_BIN.glob("*/bin/initdb")) if PG_BIN.is_dir() else []
    if not versions:
        pytest.skip("PostgreSQL server binaries are absent (.ci/run installs postgresql)")
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed")
    bindir = versions[-1].parent
    data = Path(tempfile.mkdtemp(prefix="keras-edge-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the postgres user
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    pgdata, port = data / "db", _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", "tune")
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    run(str(bindir / "pg_ctl"), "-D", str(pgdata), "-o", opts, "-l", str(data / "log"), "-w",
        "start")  # fmt: skip
    try:
        yield f"postgresql+psycopg2://tune@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
def test_postgres_workers_share_one_study(tmp_path, postgres_url) -> None:
    proc = _tune(str(_recipe_file(tmp_path)), "--storage", postgres_url, "--study", "pg",
                 "--workers", "2", "--trials", "3", "--out", str(tmp_path / "out"))  # fmt: skip
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    study = _study(postgres_url, "pg")
    # the budget is the study's, not per worker: a trial another worker raced past it is
    # pruned unrun
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert [t.number for t in done] == [0, 1, 2], _states(study)
    assert all(t.user_attrs.get("over_budget") for t in study.trials if t not in done)
    assert len({t.user_attrs["worker"] for t in done}) == 2
    assert "study 'pg' in postgresql+psycopg2://tune@127.0.0.1" in out and "3 complete" in out
    best = max(done, key=lambda t: t.value)  # pruned trials have no value
    assert f" {best.number} * " in out  # the table marks the best trial
