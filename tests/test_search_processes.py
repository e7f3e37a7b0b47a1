"""Searches across processes: a killed search resumed, and a worker joining a running study."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
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


def _wait_for(proc: subprocess.Popen, run: Path, ready: Callable[[list], bool],
              timeout: float = 180) -> optuna.Study:
    """Poll the study until ``ready(trials)``; returns the study."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = _study(run)
        if study is not None and ready(study.get_trials(deepcopy=False)):
            return study
        if proc.poll() is not None:
            raise AssertionError(f"search ended early:\n{proc.stdout.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out waiting for trials")


def _finished(n: int) -> Callable[[list], bool]:
    return lambda trials: sum(t.state.is_finished() for t in trials) >= n


def _mid_trial(finished: int, planned: int) -> Callable[[list], bool]:
    """At least ``finished`` trials done and one RUNNING that has reported an epoch but has
    half its ``planned`` epochs left, so that a kill now lands inside it, not between trials."""
    def ready(trials: list) -> bool:
        running = [t for t in trials if t.state == TrialState.RUNNING
                   and 1 <= len(t.intermediate_values) <= planned // 2]
        return bool(running) and _finished(finished)(trials)

    return ready


def test_resume_after_sigkill_does_not_retrain_finished_trials(tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    run, total = tmp_path / "run", 7
    # no early stopping: every trial trains its 6 epochs (3 base epochs, Scratch-B x 2)
    flags = ("--n-trials", str(total), "--early-stopping", "none")
    proc = _start(tmp_path, run, *flags, epochs=3)
    _wait_for(proc, run, _mid_trial(finished=3, planned=6))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = {t.number: t for t in _study(run).get_trials()}
    finished = {n for n, t in before.items() if t.state.is_finished()}
    running = {n for n, t in before.items() if t.state == TrialState.RUNNING}
    assert 3 <= len(finished) < total
    assert len(running) == 1  # the kill landed inside a trial
    (killed,) = running
    assert before[killed].intermediate_values and before[killed].params

    # export works on the interrupted study: records, best.yaml, no weights
    assert main(["export", str(run)]) == 0
    assert len(read_csv(run)) == len(finished)
    assert (run / "best.yaml").is_file() and not (run / "best.pt").exists()
    assert main(["export", str(run), "--onnx"]) == 2
    capsys.readouterr()

    counter = TrainCounter(monkeypatch)
    assert search(tmp_path, run, *flags, "--resume", epochs=3) == 0
    out = capsys.readouterr().out
    assert "resuming study" in out

    trials = _study(run).get_trials()
    by_number = {t.number: t for t in trials}
    for n in finished:  # untouched: same state and times
        assert by_number[n].state == before[n].state
        assert by_number[n].datetime_start == before[n].datetime_start
        assert by_number[n].datetime_complete == before[n].datetime_complete
    # the killed trial: failed as interrupted, and run again once with the same parameters
    assert by_number[killed].state == TrialState.FAIL
    assert by_number[killed].user_attrs["fail_reason"].startswith("interrupted")
    assert f"interrupted trial(s) FAIL and queued them again: {killed}" in out
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1 and retries[0].params == before[killed].params
    assert retries[0].state.is_finished()
    new = [t for t in trials if t.number not in before]
    # a duplicate width vector reuses its twin's measurements instead of training
    trained = [t for t in new if t.user_attrs.get("state_detail") != "REJECTED"
               and not t.user_attrs.get("reused_from")]
    assert counter.search_calls == len(trained)  # nothing finished was trained again
    assert {t.number for t in trained} >= {retries[0].number}
    counted = [t for t in trials if t.state.is_finished() and t.number not in running]
    assert len(counted) == total
    assert len(read_csv(run)) == total + len(running)
    assert read_json(run / "search.json")["resumed"]
    assert (run / "best.pt").is_file()


def _interval(t) -> tuple[datetime, datetime]:
    return t.datetime_start, t.datetime_complete


def _runs_a_trial_of(pid: int) -> Callable[[list], bool]:
    return lambda trials: any(t.state == TrialState.RUNNING
                              and t.user_attrs.get("worker", "").endswith(f":{pid}")
                              for t in trials)


def test_a_worker_process_runs_trials_alongside_the_search_within_its_total(
        tmp_path: Path) -> None:
    run, total = tmp_path / "run", 8
    proc = _start(tmp_path, run, "--n-trials", str(total), "--early-stopping", "none",
                  epochs=3, train=600)
    study = _wait_for(proc, run, _mid_trial(finished=1, planned=6))
    # Hold the search inside its trial until the worker has started one, so that the two
    # overlap whatever the machine's speed (heartbeats tolerate 120 s of silence).
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        worker = subprocess.Popen(
            [sys.executable, "-m", "nas_prune.cli", "worker", "--storage", storage_of(run),
             "--study", study.study_name, "--n-trials", "2", "--device", "cpu"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _wait_for(worker, run, _runs_a_trial_of(worker.pid))
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    worker_out, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, worker_out
    assert f"joined study {study.study_name!r}" in worker_out
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out

    trials = _study(run).get_trials()
    assert all(t.state.is_finished() for t in trials)
    by_pid: dict[str, list] = {}
    for t in trials:
        by_pid.setdefault(t.user_attrs.get("worker", "").rsplit(":", 1)[-1], []).append(t)
    assert set(by_pid) == {str(proc.pid), str(worker.pid)}
    mine, theirs = by_pid[str(worker.pid)], by_pid[str(proc.pid)]
    # --n-trials 2 is the worker's most: the first is sure (the search waits for it), the
    # second only if the study still had room when the worker finished its first
    assert 1 <= len(mine) <= 2
    # the worker's trials ran while the search's did ...
    assert any(a0 < b1 and b0 < a1 for a0, a1 in map(_interval, mine)
               for b0, b1 in map(_interval, theirs))
    # ... and count in the search's total: the search ran only what was left
    assert len(trials) == total and len(theirs) == total - len(mine)
    assert len(read_csv(run)) == total
    info = read_json(run / "search.json")
    assert sum(info["state_counts"].values()) == total
    summary = re.search(r"^trials: (.*); wall time", out, re.M).group(1)  # "COMPLETE 7, ..."
    assert sum(int(part.split()[1]) for part in summary.split(", ")) == total
