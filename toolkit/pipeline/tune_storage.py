"""Shared optuna storage for `keras-edge tune --storage URL --study NAME [--workers N]`.

Several processes (or machines) tune one study by pointing at the same optuna storage: a
journal file or sqlite for processes on one host, PostgreSQL/MySQL for many hosts. This module
opens the storage with one-line errors, creates or joins the study (refusing a study that
another recipe created), keeps a heartbeat on each running trial and marks the trials of dead
workers FAIL, so a killed worker never blocks the study or eats its trial budget.

The heartbeat is our own (a trial user attribute refreshed by a thread) rather than optuna's,
because optuna's heartbeat exists only for RDB storage and a journal file must behave the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError
from toolkit.core.recipe import Recipe

HEARTBEAT_S = 10.0
MIN_GRACE_S = 30.0  # a loaded host can starve a heartbeat thread for seconds: never fail sooner
RUNNING_STATES = ("RUNNING", "WAITING")
FINISHED_STATES = ("COMPLETE", "PRUNED")


def mask(url: str) -> str:
    """The URL with any password replaced, safe to print."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or ("://" not in url and url.endswith((".journal", ".log")))


def _in_memory(url: str) -> bool:
    return url in ("sqlite://", "sqlite:///:memory:", "sqlite:///") or ":memory:" in url


def open_storage(url: str | None, workers: int = 1) -> Any:
    """An optuna storage for `url` (None: in memory). Errors are one clear line."""
    import optuna

    if url is None:
        if workers > 1:
            raise UserError("--workers needs a storage the workers can share (--storage URL)")
        return optuna.storages.InMemoryStorage()
    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:")).expanduser()
        if not path.parent.is_dir():
            raise UserError(f"--storage {url}: folder {path.parent} does not exist")
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise UserError(
            f"--storage {url!r} is not an optuna storage URL; use journal:PATH, "
            "sqlite:///PATH.db, postgresql://USER@HOST/DB or mysql://USER@HOST/DB"
        )
    if _in_memory(url) and workers > 1:
        raise UserError(
            f"--storage {url} is an in-memory sqlite database that --workers {workers} cannot "
            "share; use a file (sqlite:///study.db or journal:study.journal)"
        )
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine["connect_args"] = {"connect_timeout": 10}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except ModuleNotFoundError as err:
        raise UserError(f"--storage {mask(url)} needs the {err.name!r} driver: "
                        f"pip install {_driver(err.name)}") from None  # fmt: skip
    except Exception as err:  # sqlalchemy / driver errors: unreachable, refused, bad database
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise UserError(
            f"cannot open tuning storage {mask(url)}: {reason[0] if reason else type(err).__name__}"
        ) from None


def _driver(module: str | None) -> str:
    return {"psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}.get(
        module or "", module or "?"
    )


def fingerprint(recipe: Recipe) -> str:
    """A short hash of the resolved recipe: the identity a shared study is checked against."""
    text = json.dumps(recipe.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def study_names(storage: Any) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.study.get_all_study_summaries(storage)]


def open_study(
    storage: Any,
    name: str,
    recipe: Recipe,
    *,
    sampler: Any,
    pruner: Any,
    resume: bool,
    where: str,
) -> tuple[Any, bool]:
    """Create the study or join it; returns (study, created). Joining checks the recipe."""
    import optuna

    exists = name in study_names(storage)
    if resume and not exists:
        known = ", ".join(study_names(storage)) or "none"
        raise UserError(f"--resume: no study {name!r} in {where} (studies there: {known})")
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    attrs = study.user_attrs
    mine = fingerprint(recipe)
    if "recipe_fingerprint" not in attrs:
        study.set_user_attr("recipe", recipe.name)
        study.set_user_attr("recipe_fingerprint", mine)
        study.set_user_attr("recipe_yaml", recipe.to_yaml())
        return study, True
    if attrs["recipe_fingerprint"] != mine:
        raise UserError(
            f"study {name!r} in {where} was created by recipe {attrs.get('recipe')!r} "
            f"(fingerprint {attrs['recipe_fingerprint']}), not by this one ({recipe.name!r}, "
            f"{mine}); use another --study, or the same recipe and overrides"
        )
    return study, False


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    """Whether a local process runs; a zombie (killed, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def grace(heartbeat_s: float) -> float:
    """How long a trial may stay silent before it is failed: 3 heartbeats, at least 30 s."""
    return max(3 * heartbeat_s, MIN_GRACE_S)


def fail_dead_trials(study: Any, grace_s: float) -> list[int]:
    """Mark RUNNING trials whose worker is gone FAIL: its process is dead (same host) or its
    heartbeat is older than `grace_s` (any host). Returns the trial numbers it failed."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        beat = trial.user_attrs.get("heartbeat")
        if beat is None and trial.datetime_start is not None:
            beat = trial.datetime_start.timestamp()
        worker_host, _, pid = worker.rpartition(":")
        gone = worker_host == host and pid.isdigit() and not _alive(int(pid))
        if not (gone or (beat is not None and now - float(beat) > grace_s)):
            continue
        storage = study._storage  # optuna's storage API; the Study has no public setter
        try:
            why = f"worker {worker or '?'} " + ("died" if gone else f"silent for {grace_s:.0f} s")
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", why)
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            failed.append(trial.number)
        except Exception:  # another worker failed it first
            continue
    return failed


class Heartbeat:
    """Refreshes a running trial's `heartbeat` attribute from a thread until stopped."""

    def __init__(self, trial: Any, interval_s: float = HEARTBEAT_S) -> None:
        self.trial, self.interval = trial, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tune-heartbeat")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.trial.set_user_attr("heartbeat", time.time())
            except Exception:  # the trial finished meanwhile, or storage hiccup: next beat
                continue

    def __enter__(self) -> Heartbeat:
        self.trial.set_user_attr("worker", worker_id())
        self.trial.set_user_attr("heartbeat", time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 1)


def counts(study: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name] = out.get(trial.state.name, 0) + 1
    return out


def run_worker(
    study: Any,
    objective: Any,
    budget: int,
    *,
    timeout_s: float | None,
    heartbeat_s: float,
) -> None:
    """Run trials until the study holds `budget` finished or in-flight trials. Counting the
    shared study (not this process's trials) lets any number of workers split one budget."""
    silent = grace(heartbeat_s)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while deadline is None or time.monotonic() < deadline:
        fail_dead_trials(study, silent)
        seen = counts(study)
        if sum(seen.get(s, 0) for s in (*FINISHED_STATES, *RUNNING_STATES)) >= budget:
            return
        study.optimize(_within_budget(study, objective, budget), n_trials=1, catch=())


def _within_budget(study: Any, objective: Any, budget: int) -> Any:
    """The objective, unless another worker created its trial between this worker's count
    and its own: the trial with the higher number is then pruned at once, unrun (tagged
    `over_budget`), so racing workers never run more than the budget."""
    import optuna

    def guarded(trial: Any) -> Any:
        counted = (*FINISHED_STATES, *RUNNING_STATES)
        before = sum(1 for t in study.get_trials(deepcopy=False)
                     if t.number < trial.number and t.state.name in counted)  # fmt: skip
        if before >= budget:
            trial.set_user_attr("over_budget", True)
            raise optuna.TrialPruned(f"trial {trial.number}: the study's budget was reached")
        return objective(trial)

    return guarded


def spawn_workers(n: int, argv: list[str], out: Path, log: Any = None, seed: int = 0) -> list[str]:
    """Start `n` worker processes (`keras-edge tune ... --worker-index i`), each logging to
    out/worker-<i>.log, and wait for all. Returns one note per worker that did not exit 0."""
    import signal
    import subprocess
    import sys

    procs = []
    try:
        for i in range(n):
            handle = (out / f"worker-{i}.log").open("w", encoding="utf-8")
            cmd = [sys.executable, "-m", "toolkit", "tune", *argv, "--seed", str(seed + i),
                   "--worker-index", str(i)]  # fmt: skip
            procs.append((subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT), handle))
            if log:
                log(f"worker {i}: pid {procs[-1][0].pid}, log {out / f'worker-{i}.log'}")
        while any(p.poll() is None for p, _ in procs):
            time.sleep(0.3)  # polling reaps a killed worker at once, so others see it dead
    finally:
        for proc, handle in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
            handle.close()
    notes = []
    for i, (proc, _) in enumerate(procs):
        if proc.returncode == 0:
            continue
        how = (f"was killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exited {proc.returncode}")  # fmt: skip
        tail = (out / f"worker-{i}.log").read_text(errors="replace").strip().splitlines()[-1:]
        notes.append(f"worker {i} (pid {proc.pid}) {how}" + (f": {tail[0]}" if tail else ""))
    return notes
