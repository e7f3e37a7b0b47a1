"""Many workers on one study, with real processes and real servers: Optuna's journal file, a
throw-away PostgreSQL cluster on 127.0.0.1, a worker killed with SIGKILL mid-trial (re-run once by
another process), and each trial's architecture YAML as an Optuna artifact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from nas_prune.rundir import read_json
from nas_prune.search.optuna_backend import _surplus, is_interrupted, is_superseded, progress_counts
from nas_prune.testing.postgres import postgres_missing, postgres_server

from .test_search_common import search, tiny_args

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# ---- a throw-away PostgreSQL server --------------------------------------------------------
@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL cluster on 127.0.0.1 for this module (nas_prune.testing.postgres)."""
    why = postgres_missing()
    if why:
        pytest.skip(why)
    with postgres_server() as server:
        yield server["url"]


# ---- helpers -----------------------------------------------------------------------------------
def _search(tmp_path: Path, run: Path, storage: str, *flags: str, epochs: int = 3,
            train: int = 600) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "nas_prune.cli", "search",
           *tiny_args(tmp_path, run, epochs=epochs, train=train), "--storage", storage,
           "--study", run.name, "--early-stopping", "none", *flags]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _worker(storage: str, study: str, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "nas_prune.cli", "worker", "--storage", storage, "--study",
           study, "--device", "cpu", *flags]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _load(storage: str, name: str) -> optuna.Study | None:
    from nas_prune.search.optuna_backend import open_storage

    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage))
    except Exception:  # not created yet
        return None


def _wait(storage: str, name: str, ready, procs: list[subprocess.Popen],
          timeout: float = 240) -> optuna.Study:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = _load(storage, name)
        if study is not None and ready(study.get_trials(deepcopy=False)):
            return study
        for p in procs:
            if p.poll() is not None and p.returncode != 0:
                raise AssertionError(f"a process failed:\n{p.stdout.read()}")
        if all(p.poll() is not None for p in procs):
            raise AssertionError("every process ended before the study was ready:\n"
                                 + "\n".join(p.stdout.read()[-2000:] for p in procs))
        time.sleep(0.1)
    for p in procs:
        p.kill()
    raise AssertionError("timed out waiting for the study")


def _finish(procs: list[subprocess.Popen], timeout: float = 400) -> list[str]:
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out[-3000:]
        outs.append(out)
    return outs


def _pid(t) -> str:
    return str(t.user_attrs.get("worker", "")).rsplit(":", 1)[-1]


def _counted(trials) -> list:
    """Trials that count toward the total: everything but the interrupted and the superseded
    (one that a worker started when another had just taken the last place)."""
    return [t for t in trials if not (is_interrupted(t) or is_superseded(t))]


def _many_workers(tmp_path: Path, storage: str, total: int, workers: int) -> None:
    run = tmp_path / tmp_path.name  # the study's name: unique on a shared server
    # trials of a few seconds each (6 epochs of 4,000 images), so that the search alone needs
    # far longer for its total than a worker process needs to start
    search_proc = _search(tmp_path, run, storage, "--n-trials", str(total), train=4000)
    # workers join as soon as the study exists; with this many trials left for one process
    # they start well before it could finish them (a stopped process could hold a database
    # lock, so nothing is paused here)
    _wait(storage, run.name, lambda ts: len(ts) > 0, [search_proc])
    procs = [_worker(storage, run.name) for _ in range(workers)]
    outs = _finish([search_proc, *procs])
    trials = _load(storage, run.name).get_trials()
    assert all(t.state.is_finished() for t in trials)
    assert len(_counted(trials)) == total
    pids = {_pid(t) for t in trials}
    assert pids == {str(p.pid) for p in [search_proc, *procs]}, pids  # all four ran trials
    assert all(f"joined study {run.name!r}" in o for o in outs[1:])
    info = read_json(run / "search.json")
    assert sum(info["state_counts"].values()) == total


# ---- tests -----------------------------------------------------------------------------------
def test_a_trial_past_the_total_is_surplus_by_its_number():
    """Two workers that both saw one place left both start a trial: the one the storage numbered
    later is the surplus, whichever process checks first; an interrupted trial ahead frees its
    place."""
    study = optuna.create_study()
    first = [study.ask() for _ in range(3)]  # total 4: three running, one place left
    a, b = study.ask(), study.ask()  # both workers took it
    assert _surplus(b, 4)
    assert not _surplus(a, 4)  # the order of the checks does not matter
    b.set_user_attr("superseded", True)
    b.set_user_attr("fail_reason", "superseded: over the total")
    study.tell(b, state=TrialState.FAIL)
    assert progress_counts(study) == (0, 4, 0)  # the superseded trial does not count
    study.tell(first[0], state=TrialState.FAIL)  # its process died: interrupted, re-enqueued
    c = study.ask()
    assert not _surplus(c, 4)


@pytest.mark.slow
def test_journal_storage_with_four_processes_on_one_study(tmp_path):
    _many_workers(tmp_path, f"journal:///{tmp_path / 'journal.log'}", total=16, workers=3)


@pytest.mark.slow
def test_postgresql_with_the_search_and_three_workers(tmp_path, postgres_url):
    _many_workers(tmp_path, postgres_url, total=16, workers=3)


def _kill_mid_trial(tmp_path: Path, storage: str, *flags: str) -> None:
    run, total = tmp_path / tmp_path.name, 10
    # trials long enough (12 epochs of 4,000 images) that the search cannot finish before the
    # worker is in, and that the kill lands inside one of the worker's trials
    search_proc = _search(tmp_path, run, storage, "--n-trials", str(total), *flags, epochs=6,
                          train=4000)
    _wait(storage, run.name, lambda ts: len(ts) > 0, [search_proc])
    worker = _worker(storage, run.name)

    def mid_trial(trials) -> bool:  # the worker's trial has reported and has epochs left
        return any(t.state == TrialState.RUNNING and _pid(t) == str(worker.pid)
                   and 1 <= len(t.intermediate_values) <= 8 for t in trials)

    study = _wait(storage, run.name, mid_trial, [search_proc, worker])
    killed = next(t for t in study.get_trials() if t.state == TrialState.RUNNING
                  and _pid(t) == str(worker.pid))
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=60)
    _finish([search_proc])
    trials = {t.number: t for t in _load(storage, run.name).get_trials()}
    dead = trials[killed.number]
    # failed as interrupted: by Optuna's heartbeat check (no reason recorded) or by the
    # process-id check of the journal ("interrupted: worker HOST:PID died")
    assert is_interrupted(dead)
    retries = [t for t in trials.values() if t.user_attrs.get("retry_of") == killed.number]
    assert len(retries) == 1, "the killed trial is run again exactly once"
    retry = retries[0]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.params == killed.params and _pid(retry) != str(worker.pid)
    assert len(_counted(trials.values())) == total
    # no completed trial was trained twice: every completed trial has its own parameters
    done = [tuple(sorted(t.params.items())) for t in trials.values()
            if t.state == TrialState.COMPLETE]
    assert len(done) == len(set(done))


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_rerun_once_journal(tmp_path):
    _kill_mid_trial(tmp_path, f"journal:///{tmp_path / 'journal.log'}")


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_rerun_once_postgresql(tmp_path, postgres_url):
    # heartbeats every second, a worker silent for 3 s is dead
    _kill_mid_trial(tmp_path, postgres_url, "--set", "search.heartbeat_interval=1",
                    "--set", "search.grace_period=3")


def test_each_trial_architecture_is_an_optuna_artifact(tmp_path):
    from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta

    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "3") == 0
    storage = f"sqlite:///{run / 'study.db'}"
    study = optuna.load_study(study_name=run.name, storage=storage)
    store = FileSystemArtifactStore(str(run / "artifacts"))
    seen = 0
    for t in study.get_trials():
        if not t.user_attrs.get("widths"):
            continue
        metas = get_all_artifact_meta(t, storage=study._storage)
        assert len(metas) == 1 and metas[0].filename == f"trial-{t.number}.yaml"
        path = tmp_path / f"a{t.number}.yaml"
        download_artifact(artifact_store=store, file_path=str(path),
                          artifact_id=metas[0].artifact_id)
        arch = yaml.safe_load(path.read_text())
        assert arch["widths"] == t.user_attrs["widths"] and arch["provenance"]["trial"] == t.number
        seen += 1
    assert seen >= 3
    # optuna-dashboard serves the same artifacts with each trial
    pytest.importorskip("optuna_dashboard")
    import json
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    app = wsgi(storage, artifact_store=store)

    def get(path: str) -> tuple[str, bytes]:
        env: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
        setup_testing_defaults(env)
        status: list[str] = []
        body = b"".join(app(env, lambda s, h, *a: status.append(s)))
        return status[0], body

    sid = study._study_id
    status, body = get(f"/api/studies/{sid}")
    assert status.startswith("200")
    trial = json.loads(body)["trials"][-1]
    art = trial["artifacts"][0]
    status, body = get(f"/artifacts/{sid}/{trial['trial_id']}/{art['artifact_id']}")
    assert status.startswith("200") and b"widths:" in body
