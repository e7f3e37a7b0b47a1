"""The Ray Tune backend on a local Ray: records, best.yaml, and the dashboard's HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta

from nas_prune import build_model, load_spec
from nas_prune.cli import main
from nas_prune.rundir import read_json
from nas_prune.search.optuna_backend import records_of

from .test_search_common import read_csv, search, storage_of

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _token() -> str | None:
    """Ray's token as a client finds it: RAY_AUTH_TOKEN, else ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip() if path.is_file() else None


class DashboardProbe(threading.Thread):
    """Polls the dashboard as a client while the search runs: its health, its answer without
    and with the token, and the trial actors its state API lists while they run (Tune runs a
    function trainable in an ``ImplicitFunc`` actor)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.base = f"http://127.0.0.1:{port}"
        self.answers: dict[str, int] = {}
        self.running_trials: set[str] = set()
        self.classes: set[str] = set()
        self.stop = threading.Event()

    def _get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=3) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:  # 401: token authentication is on
            return exc.code, b""

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for path in ("/api/gcs_healthz", "/api/v0/nodes"):
                    self.answers.setdefault(path, self._get(path)[0])
                token = _token()
                status, body = self._get("/api/v0/actors?detail=1&limit=1000", token)
                self.answers["actors with token"] = status
                if status == 200:
                    for actor in json.loads(body)["data"]["result"]["result"]:
                        self.classes.add(str(actor.get("class_name")))
                        if actor.get("class_name") == "ImplicitFunc" and \
                                actor.get("state") == "ALIVE":
                            self.running_trials.add(actor["actor_id"])
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)


def test_ray_search_runs_trials_records_them_and_serves_the_dashboard(tmp_path: Path,
                                                                        capsys) -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("another Ray instance is running in this process")
    port = _free_port()
    probe = DashboardProbe(port)
    probe.start()
    run = tmp_path / "run"
    try:
        rc = search(tmp_path, run, "--backend", "ray", "--n-trials", "3",
                    "--cpus-per-trial", "1", "--early-stopping", "halving",
                    extra=[f"search.ray.dashboard_port={port}"])
    finally:
        probe.stop.set()
        probe.join(timeout=5)
    assert rc == 0
    out = capsys.readouterr().out
    assert f"Ray dashboard: http://127.0.0.1:{port}" in out
    assert probe.answers.get("/api/gcs_healthz") == 200
    # the dashboard as a client sees it: with token authentication on (Ray's default for local
    # clusters in 2.60) the API answers 401 without the token, 200 with it, and the search
    # tells the user how to get the token
    if probe.answers.get("/api/v0/nodes") == 401:
        assert "ray get-auth-token" in out and "RAY_AUTH_MODE=disabled" in out
    assert probe.answers.get("actors with token") == 200
    assert probe.running_trials, f"no trial actor seen running: {probe.classes}"

    rows = read_csv(run)
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert (rows[0]["role"], rows[0]["seed_method"]) == ("seed", "random")
    assert (rows[1]["role"], rows[1]["seed_method"]) == ("uniform", "uniform")
    assert json.loads(rows[0]["widths"]) == load_spec(run / "proposals/random.yaml").widths
    assert all(r["backend"] == "ray" for r in rows)
    assert all(r["state"] in ("COMPLETE", "PRUNED", "REJECTED") for r in rows)
    # the trials ran in one reused worker process (the data set was loaded once)
    workers = {json.loads(line)["worker"] for line in (run / "trials.jsonl").open()}
    assert len(workers) == 1
    best = load_spec(run / "best.yaml")
    assert sum(p.numel() for p in build_model(run / "best.yaml").parameters()) == best.params
    info = read_json(run / "search.json")
    assert info["backend"] == "ray" and info["finished"]
    assert (run / "ray" / "tune").is_dir()

    assert info["study_name"] == run.name and info["storage"] == storage_of(run)

    # the search is an Optuna study too: the same records, with Tune's numbers, the Ray node,
    # and each trial's architecture YAML as an artifact
    study = optuna.load_study(study_name=run.name, storage=storage_of(run))
    by_number = {r.number: r for r in records_of(study)}
    assert sorted(by_number) == [0, 1, 2]
    for row in rows:
        rec = by_number[int(row["number"])]
        assert (rec.state, rec.role, rec.backend) == (row["state"], row["role"], "ray")
        assert json.dumps(rec.widths) == row["widths"] and rec.node
    metas = get_all_artifact_meta(study.trials[0], storage=study._storage)
    assert [m.filename for m in metas] == [f"trial-{by_number[0].number}.yaml"]
    assert all(t.state.is_finished() for t in study.trials)

    # export reads the study alone (the run's records and Ray's results deleted) ...
    (run / "trials.jsonl").unlink()
    shutil.move(run / "ray", tmp_path / "ray-results")
    assert main(["export", str(run)]) == 0
    assert "from study" in capsys.readouterr().out
    again = read_csv(run)
    assert [(r["number"], r["state"], r["widths"]) for r in again] == \
        [(r["number"], r["state"], r["widths"]) for r in rows]
    # ... and Ray's result files alone, for a run without its study
    shutil.move(tmp_path / "ray-results", run / "ray")
    (run / "trials.jsonl").unlink()
    (run / "study.db").rename(tmp_path / "study.db")
    assert main(["export", str(run)]) == 0
    again = read_csv(run)
    assert [r["number"] for r in again] == [r["number"] for r in rows]
    assert [r["widths"] for r in again] == [r["widths"] for r in rows]
    assert all(r["datetime_start"] and r["datetime_complete"] for r in again)


def test_a_ray_search_trains_the_screened_picks(tmp_path: Path, capsys) -> None:
    """One-shot screening runs in the driver; its picks go to Ray Tune after the baselines,
    as points to evaluate, and the correlation is recorded as with the optuna backend."""
    from .test_search_screening import SCREEN

    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("another Ray instance is running in this process")
    run = tmp_path / "run"
    assert search(tmp_path, run, "--backend", "ray", "--n-trials", "4", "--cpus-per-trial", "1",
                  "--final-seeds", "1", extra=SCREEN) == 0
    assert "screening (shared):" in capsys.readouterr().out
    screened = [json.loads(x) for x in (run / "oneshot" / "screened.jsonl").open()]
    picks = [c["widths"] for c in screened if c["pick"]]
    assert len(picks) == 2
    trials = [json.loads(x) for x in (run / "trials.jsonl").open()]
    assert all(t["backend"] == "ray" for t in trials)
    assert all(w in [t["widths"] for t in trials] for w in picks)
    corr = read_json(run / "search.json")["screening"]["correlation"]
    assert corr["n"] + corr["picks_without_a_completed_trial"] == 2
