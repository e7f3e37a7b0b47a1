"""Bad run directories, damaged records and wrong studies: one line on stderr, exit 2, no
traceback, and nothing overwritten. The cases that matter on the command line run the real CLI
in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

import nas_prune.search.run
import nas_prune.seeds._basenet
from nas_prune.cli import main
from nas_prune.rundir import read_records

from .test_search_common import search, storage_of, tiny_args


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "nas_prune.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished two-trial search (the seed proposal and uniform)."""
    tmp = tmp_path_factory.mktemp("finished")
    run = tmp / "run"
    assert main(["search", *tiny_args(tmp, run), "--n-trials", "2"]) == 0
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


# ---- --resume of what is not a run directory -----------------------------------------------
@pytest.mark.slow
def test_resume_of_a_missing_or_foreign_directory_is_refused(tmp_path: Path) -> None:
    typo = tmp_path / "rnus" / "search"
    proc = cli("search", "--resume", "--run-dir", str(typo), "--device", "cpu")
    assert_one_line_error(proc, f"--run-dir {typo}: no such directory")
    assert not typo.exists()
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    proc = cli("search", "--resume", "--run-dir", str(foreign), "--device", "cpu")
    assert_one_line_error(proc, f"--run-dir {foreign}: not a nas-prune run directory")
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]


def test_a_search_killed_while_proposing_resumes_from_its_cached_bases(
        tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    flags = ["--seed-method", "l1norm", "--n-trials", "2", "--set", "seed_method.base_epochs=1"]
    real_propose = nas_prune.search.run.propose

    def killed_at_uniform(method, *args, **kw):
        if method.name == "uniform":  # l1norm's base network is trained and cached by now
            raise KeyboardInterrupt
        return real_propose(method, *args, **kw)

    monkeypatch.setattr(nas_prune.search.run, "propose", killed_at_uniform)
    assert search(tmp_path, run, *flags) == 130
    assert (run / "config.yaml").is_file() and list((run / "bases").glob("*.pt"))
    assert not (run / "study.db").exists() and not (run / "search.json").exists()
    monkeypatch.setattr(nas_prune.search.run, "propose", real_propose)
    capsys.readouterr()

    base_trainings = []
    real_train = nas_prune.seeds._basenet.train
    monkeypatch.setattr(nas_prune.seeds._basenet, "train",
                        lambda *a, **k: base_trainings.append(1) or real_train(*a, **k))
    assert search(tmp_path, run, *flags, "--resume") == 0
    out = capsys.readouterr().out
    assert "--resume: no study 'run'" in out
    assert "cached base network" in out and not base_trainings
    assert len(read_records(run)) == 2 and (run / "best.yaml").is_file()


# ---- damaged or missing records ------------------------------------------------------------
def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database " * 200)


def _truncated(path: Path) -> None:  # the SQLite header survives, its pages do not
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\x00garbage" * ((len(data) - 100) // 8))


CASES = {
    "study.db garbage": ("study.db", _garbage, ["study.db"], ["study.db"]),
    "study.db truncated": ("study.db", _truncated, ["study.db"], ["study.db"]),
    "study.db missing": ("study.db", Path.unlink, ["study.db", "does not exist"],
                         ["holds 2 trial(s)", "no study 'run'"]),
    "search.json corrupt": ("search.json", lambda p: p.write_text('{"backend": "opt'),
                            ["search.json", "not valid JSON"], ["search.json"]),
    "setup.json corrupt": ("setup.json", lambda p: p.write_text("[1, 2"),
                           ["setup.json", "not valid JSON"], ["setup.json"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_export_and_resume_of_damaged_records_name_them_and_change_nothing(
        finished_run: Path, tmp_path: Path, case: str) -> None:
    name, damage, export_says, resume_says = CASES[case]
    run = _copy(finished_run, tmp_path)
    damage(run / name)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert_one_line_error(cli("export", str(run)), *export_says)
    assert_one_line_error(cli("search", "--resume", "--run-dir", str(run)), *resume_says)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before  # no trial record rewritten over the unreadable ones


@pytest.mark.slow
def test_export_rebuilds_the_trial_files_from_the_study_and_says_so(finished_run: Path,
                                                                      tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path)
    (run / "trials.jsonl").write_text("{cut off\n")
    (run / "trials.csv").unlink()
    proc = cli("export", str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "from study 'run' in sqlite:///" in proc.stdout and "rewritten" in proc.stdout
    assert len(read_records(run)) == 2 and (run / "trials.csv").is_file()


# ---- worker: the storage and the study in words --------------------------------------------
@pytest.mark.slow
def test_a_worker_on_a_missing_database_names_it_and_creates_nothing(tmp_path: Path) -> None:
    proc = cli("worker", "--storage", "sqlite:///missing.db", "--study", "foo", cwd=tmp_path)
    assert_one_line_error(proc, "worker: no study 'foo' in sqlite:///missing.db",
                          "does not exist")
    assert not (tmp_path / "missing.db").exists()


def test_worker_errors_name_the_storage_and_the_study(finished_run: Path, tmp_path: Path,
                                                      capsys) -> None:
    def worker_error(storage: str, *flags: str) -> str:
        assert main(["worker", "--storage", storage, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        return err[0]

    url = storage_of(finished_run)
    err = worker_error(url, "--study", "nope")
    assert f"worker: no study 'nope' in {url}; it holds 'run'; check --study" in err
    several = f"sqlite:///{tmp_path / 'several.db'}"
    for name in ("a", "b"):
        optuna.create_study(storage=several, study_name=name)
    err = worker_error(several)
    assert f"worker: {several} holds 2 studies ('a', 'b'); choose one with --study" in err
    err = worker_error(several, "--study", "a")
    assert f"study 'a' in {several} was not created by nas-prune search" in err
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(empty)
    assert f"worker: no study in {empty}" in worker_error(empty)


def test_a_moved_run_directory_still_reads_and_resumes_its_own_study(
        finished_run: Path, tmp_path: Path, capsys) -> None:
    moved = tmp_path / "renamed"
    shutil.copytree(finished_run, moved)
    (finished_run / "study.db").rename(finished_run / "study.db.away")  # not the old one
    try:
        assert main(["export", str(moved)]) == 0
        assert f"from study 'run' in sqlite:///{moved.resolve()}/study.db" in \
            capsys.readouterr().out
        assert main(["search", "--resume", "--run-dir", str(moved), "--n-trials", "3"]) == 0
        assert "resuming study 'run'" in capsys.readouterr().out
        assert len(read_records(moved)) == 3
    finally:
        (finished_run / "study.db.away").rename(finished_run / "study.db")
