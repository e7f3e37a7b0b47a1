"""The Ray backend on a real two-node cluster, and a driver killed with SIGKILL then resumed.

Real processes: ``ray start --head`` and ``ray start --address`` (a second node on this machine,
with its own CPU count and a custom resource), ``nas-prune search`` as a subprocess. Each test
keeps its Ray processes in their own temporary folder (``RAY_TMPDIR``) and stops only those.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

from nas_prune.rundir import read_records
from nas_prune.search.optuna_backend import records_of

from .test_search_common import read_csv, storage_of, tiny_args

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

RAY = [sys.executable, "-m", "ray.scripts.scripts"]
NAS_PRUNE = [sys.executable, "-m", "nas_prune.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_ray(env: dict[str, str], tmp: str) -> None:
    """Stop every Ray process of this test: those whose command line or environment names its
    RAY_TMPDIR."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if tmp.encode() in seen:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)
    time.sleep(1)


@pytest.fixture
def ray_tmp():
    """A short RAY_TMPDIR (Ray's socket paths must stay under 108 characters)."""
    pytest.importorskip("ray")
    tmp = tempfile.mkdtemp(prefix="nr", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    yield env, tmp
    _stop_ray(env, tmp)


def _nodes(dashboard: int, token: str) -> dict[str, dict]:
    """node id -> node, from the dashboard's state API as a client sees it: 401 without the
    token, 200 with it."""
    url = f"http://127.0.0.1:{dashboard}/api/v0/nodes?detail=1"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        return {n["node_id"]: n for n in json.loads(r.read())["data"]["result"]["result"]}


def _run(cmd: list[str], env: dict[str, str], timeout: float = 600) -> str:
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=timeout, check=False)
    assert out.returncode == 0, out.stdout[-3000:]
    return out.stdout


def test_a_search_on_a_two_node_cluster_runs_trials_on_both_nodes(tmp_path, ray_tmp):
    env, _ = ray_tmp
    port, dashboard = _free_port(), _free_port()
    # a cluster with token authentication, as docs/scaling-out.md sets one up: every node, the search
    # and the dashboard's clients share the token (here in RAY_AUTH_TOKEN, not ~/.ray)
    env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    _run([*RAY, "start", "--head", "--port", str(port), "--num-cpus", "1",
          "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
          "--disable-usage-stats"], env, timeout=180)
    _run([*RAY, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1",
          "--resources", json.dumps({"second_node": 1}), "--disable-usage-stats"], env,
         timeout=180)
    nodes = _nodes(dashboard, env["RAY_AUTH_TOKEN"])
    assert len(nodes) == 2
    second = {i for i, n in nodes.items() if "second_node" in n.get("resources_total", {})}
    assert len(second) == 1
    env["RAY_ADDRESS"] = f"127.0.0.1:{port}"  # what `--address auto` finds

    # two trials at a time, one CPU each: a node each
    run = tmp_path / "run"
    out = _run([*NAS_PRUNE, "search", *tiny_args(tmp_path, run, epochs=3, train=1500),
                "--backend", "ray", "--address", "auto", "--n-trials", "4",
                "--cpus-per-trial", "1", "--max-concurrent", "2",
                "--early-stopping", "none"], env)
    assert f"Ray dashboard: http://127.0.0.1:{dashboard}" in out
    records = read_records(run)
    assert [r.number for r in records] == [0, 1, 2, 3]
    ran_on = {r.node for r in records if r.state != "REJECTED"}
    assert ran_on == set(nodes), (ran_on, set(nodes))
    # the study holds the same trials, with where they ran
    study = optuna.load_study(study_name=run.name, storage=storage_of(run))
    assert {r.number: r.node for r in records_of(study)} == {r.number: r.node for r in records}

    # a custom resource pins every trial to the node that has it
    run2 = tmp_path / "run2"
    _run([*NAS_PRUNE, "search", *tiny_args(tmp_path, run2), "--backend", "ray",
          "--address", "auto", "--n-trials", "3", "--max-concurrent", "2",
          "--early-stopping", "none", "--set", 'search.ray.resources={"second_node": 1}'], env)
    pinned = {r.node for r in read_records(run2) if r.state != "REJECTED"}
    assert pinned == second


def _wait_records(run: Path, n: int, proc: subprocess.Popen, timeout: float = 400,
                  state: str | None = None) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if (run / "trials.jsonl").is_file() and \
                len([r for r in read_records(run) if state in (None, r.state)]) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the search ended early: {proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} trials recorded in {timeout} s")


def _trial_worker(tmp: str, run: Path, proc: subprocess.Popen, timeout: float = 300) -> int:
    """The pid of the Ray worker running a trial, once the trial has reported an epoch."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        done = {r.number for r in read_records(run)} if (run / "trials.jsonl").is_file() \
            else set()
        for result in (run / "ray" / "tune").glob("*/result.json"):
            lines = result.read_text().splitlines()
            last = json.loads(lines[-1]) if lines else {}
            tag = int(result.parent.name.split("_")[3]) - 1  # run_trial_ID_N_...
            if last.get("state") == "RUNNING" and tag not in done:
                for proc in Path("/proc").iterdir():
                    try:
                        cmd = (proc / "cmdline").read_bytes()
                        mine = tmp.encode() in (proc / "environ").read_bytes()
                    except OSError:
                        continue
                    if cmd.startswith(b"ray::ImplicitFunc") and mine:
                        return int(proc.name)
        if proc.poll() is not None:
            raise AssertionError(f"the search ended early: {proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("no trial seen running")


def test_a_killed_driver_resumes_without_retraining_finished_trials(tmp_path, ray_tmp):
    """kill -9 of a worker mid-trial (the trial fails, the search goes on), then of the driver;
    --resume runs the errored and unfinished trials again and nothing finished."""
    env, tmp = ray_tmp
    run = tmp_path / "run"
    n = 6
    # trials of a few seconds: longer than Tune's 1 s between saves of its state, so a
    # restored experiment knows every trial that finished (a shorter one may be run again)
    args = [*tiny_args(tmp_path, run, epochs=4, train=4000,
                       extra=[f"search.ray.dashboard_port={_free_port()}"]),
            "--backend", "ray", "--n-trials", str(n), "--early-stopping", "none"]
    proc = subprocess.Popen([*NAS_PRUNE, "search", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_records(run, 1, proc)
        os.kill(_trial_worker(tmp, run, proc), signal.SIGKILL)
        _wait_records(run, 1, proc, state="FAIL")
        failed = [r for r in read_records(run) if r.state == "FAIL"]
        assert len(failed) == 1 and "Ray trial error" in failed[0].reason
        _wait_records(run, len(read_records(run)) + 1, proc)
        proc.send_signal(signal.SIGKILL)  # the driver alone; its local Ray dies with it
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {r.number: r for r in read_records(run)}
    assert 3 <= len(before) < n
    _stop_ray(env, tmp)  # whatever of the local Ray outlived its driver

    out = _run([*NAS_PRUNE, "search", *args, "--resume"], env)
    assert "resuming the Ray Tune experiment" in out
    after = {r.number: r for r in read_records(run)}
    assert sorted(after) == list(range(n)), out[-3000:]
    for number, rec in before.items():  # nothing finished was trained again
        if rec.state != "FAIL":
            assert after[number].to_dict() == rec.to_dict(), (number, out[-3000:])
    # the trial whose worker died ran again, with the same widths
    again = after[failed[0].number]
    assert again.state != "FAIL" and again.widths == failed[0].widths
    assert len(read_csv(run)) == n
    # the study: one record per number (the failed attempt superseded), the same records
    study = optuna.load_study(study_name=run.name, storage=storage_of(run))
    from_study = {r.number: r for r in records_of(study)}
    assert sorted(from_study) == list(range(n))
    assert all(from_study[k].widths == after[k].widths for k in after)
    assert all(from_study[k].state == after[k].state for k in after)
    info = json.loads((run / "search.json").read_text())
    assert info["finished"]
