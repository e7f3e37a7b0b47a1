"""The Ray Tune backend on a local Ray: records, best.yaml, and the dashboard's HTTP API."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nas_prune import build_model, load_spec
from nas_prune.cli import main
from nas_prune.rundir import read_json

from .test_search_common import read_csv, search

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DashboardProbe(threading.Thread):
    """Polls the dashboard while the search runs; remembers the first answers."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.base = f"http://127.0.0.1:{port}"
        self.answers: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.answers) < 2:
            for path in ("/api/gcs_healthz", "/api/version"):
                if path in self.answers:
                    continue
                try:
                    with urllib.request.urlopen(self.base + path, timeout=2) as r:
                        self.answers[path] = r.status
                except urllib.error.HTTPError as exc:
                    # Ray >= 2.52 may require a token for most APIs: a 401 is still an answer
                    self.answers[path] = exc.code
                except OSError:
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
    assert probe.answers.get("/api/version") in (200, 401)

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

    # export rebuilds the records from Ray's result files alone
    (run / "trials.jsonl").unlink()
    assert main(["export", str(run)]) == 0
    again = read_csv(run)
    assert [r["number"] for r in again] == [r["number"] for r in rows]
    assert [r["widths"] for r in again] == [r["widths"] for r in rows]
    assert all(r["datetime_start"] and r["datetime_complete"] for r in again)
