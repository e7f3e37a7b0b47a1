"""Searches across processes: a killed search resumed, and a worker joining a running study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas_prune.cli import main
from nas_prune.rundir import read_json

from .test_search_common import read_csv, search, storage_of, tiny_args
from .test_search_optuna import TrainCounter

pytestmark = pytest.mark.slow


def _start(tmp_path: Path, run: Path, *flags: str, epochs: int = 1, train: int = 400):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "nas_prune.cli", "search",
           *tiny_args(tmp_path, run, epochs=epochs, train=train), *flags]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _study(run: Path) -> optuna.Study | None:
    # Open the storage only once a trial record exists: opening it while the search process is
    # still creating the SQLite schema races with it ("table version_info already exists").
    if not (run / "trials.jsonl").is_file():
        return None
    try:
        return optuna.load_study(study_name=run.name, storage=storage_of(run))
    except Exception:  # the database is being created
        return None


def _wait_for(proc: subprocess.Popen, run: Path, finished: int, timeout: float = 120):
    """Poll the study until ``finished`` trials have finished; returns the study."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = _study(run)
        if study is not None:
            done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
            if len(done) >= finished:
                return study
        if proc.poll() is not None:
            raise AssertionError(f"search ended early:\n{proc.stdout.read()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("timed out waiting for trials")


def test_resume_after_sigkill_does_not_retrain_finished_trials(tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    run, total = tmp_path / "run", 10
    # slower trials (4 epochs, 800 images, no early stopping) so the kill lands mid-search
    flags = ("--n-trials", str(total), "--early-stopping", "none")
    proc = _start(tmp_path, run, *flags, epochs=4, train=800)
    _wait_for(proc, run, finished=3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = {t.number: t for t in _study(run).get_trials()}
    finished = {n for n, t in before.items() if t.state.is_finished()}
    running = {n for n, t in before.items() if t.state == TrialState.RUNNING}
    assert 3 <= len(finished) < total

    # export works on the interrupted study: records, best.yaml, no weights
    assert main(["export", str(run)]) == 0
    assert len(read_csv(run)) == len(finished)
    assert (run / "best.yaml").is_file() and not (run / "best.pt").exists()
    assert main(["export", str(run), "--onnx"]) == 2
    capsys.readouterr()

    counter = TrainCounter(monkeypatch)
    assert search(tmp_path, run, *flags, "--resume", epochs=4, train=800) == 0
    out = capsys.readouterr().out
    assert "resuming study" in out

    trials = _study(run).get_trials()
    by_number = {t.number: t for t in trials}
    for n in finished:  # untouched: same state and times
        assert by_number[n].state == before[n].state
        assert by_number[n].datetime_start == before[n].datetime_start
        assert by_number[n].datetime_complete == before[n].datetime_complete
    for n in running:  # failed as interrupted and queued again with the same parameters
        assert by_number[n].state == TrialState.FAIL
        assert by_number[n].user_attrs["fail_reason"].startswith("interrupted")
        retries = [t for t in trials if t.user_attrs.get("retry_of") == n]
        params = before[n].params or before[n].system_attrs.get("fixed_params")
        if params:  # killed after it had parameters: they are fixed in its retry
            assert len(retries) == 1
            assert {k: retries[0].params[k] for k in params} == params
        else:  # killed before sampling: nothing to repeat, a new point is sampled
            assert not retries
    new = [t for t in trials if t.number not in before]
    trained = [t for t in new if t.user_attrs.get("state_detail") != "REJECTED"]
    assert counter.search_calls == len(trained)  # nothing finished was trained again
    counted = [t for t in trials if t.state.is_finished() and t.number not in running]
    assert len(counted) == total
    assert len(read_csv(run)) == total + len(running)
    assert read_json(run / "search.json")["resumed"]
    assert (run / "best.pt").is_file()


def test_a_worker_joins_the_study_of_a_running_search(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    proc = _start(tmp_path, run, "--n-trials", "6", epochs=3, train=600)
    study = _wait_for(proc, run, finished=1)
    rc = main(["worker", "--storage", storage_of(run), "--study", study.study_name,
               "--n-trials", "2", "--device", "cpu"])
    assert rc == 0
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert "joined study" in capsys.readouterr().out
    trials = _study(run).get_trials()
    assert all(t.state.is_finished() for t in trials)
    workers = {t.user_attrs.get("worker", "").rsplit(":", 1)[-1] for t in trials}
    assert str(os.getpid()) in workers  # this process's trials
    assert str(proc.pid) in workers  # the search process's trials
    mine = [t for t in trials if t.user_attrs.get("worker", "").endswith(f":{os.getpid()}")]
    assert len(mine) == 2
    assert len(trials) >= 6
