"""Optuna storages for multi-worker searches, side by side: SQLite vs journal vs PostgreSQL.

Two measurements, both in one run, written to one JSON file (``--out``):

1. **Storage overhead per trial.** For each storage (``sqlite:///FILE``, ``journal:///FILE``, a
   throw-away PostgreSQL server on 127.0.0.1, and Optuna's in-memory storage as the reference of
   no storage at all), a fresh study runs ``--trials`` trials of an objective that trains nothing
   but does the storage work of a nas-prune trial: the study set up as ``nas-prune search``
   makes it (setup and totals as study attributes, the baselines enqueued), a categorical
   ``start`` and one float ``m_<group>`` per group (12) suggested, the 9 user attributes known
   before training (widths, FLOPs, params, ratios, role, seed method, scale, worker), the
   architecture YAML uploaded as an Optuna artifact, the finished trials read back for
   reusable measurements, ``--epochs`` intermediate values reported (each followed by
   ``should_prune``), the 10 attributes of the outcome (val_curve and measurements lists
   included), and after each trial what the search process reads (the record, the progress
   counts, every record; the journal's dead-worker check). Storages are opened with nas-prune's
   ``open_storage``, so the relational ones have the heartbeats of a real run. The storages are
   interleaved (the order rotates) ``--repeats`` times, a fresh study each time; reported: the
   median ms per trial, the ratio to SQLite (paired per repeat, median) and the time above the
   in-memory reference. Every storage runs the same trials (same seeded sampler, values a
   function of the parameters): the benchmark checks that their parameters and states agree.
2. **Trials per hour with 1, 2, 4 worker processes on one study.** A real ``nas-prune search``
   on the tiny synthetic space of ``tests/test_search_common.tiny_args`` (``--early-stopping
   none``, ``--total-trials`` trials, ``--search-epochs``/``--train-size``) on the
   ``--worker-storage`` (journal by default); the search process is the first worker, the
   others are ``python -m nas_prune.cli worker`` processes started as soon as the study exists.
   Wall time runs from the first trial's start to the last trial's completion (the study's
   trial datetimes); reported: trials per hour and the speed-up over one process (paired per
   repeat, median), with each process's trial count. Every process runs with
   ``OMP_NUM_THREADS=1``; past ``os.cpu_count()`` processes no gain is expected.

Absolute numbers depend on the hardware and its load, both recorded in ``--out``.

    python benchmarks/storages.py                                  # 200 trials x 3, 1/2/4
    python benchmarks/storages.py --trials 20 --repeats 1 --workers 1 2 --total-trials 4 \\
        --out /tmp/st_smoke.json                                   # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import torch

from nas_prune._io import write_json
from nas_prune._meta import REPO_ROOT, code_version, hardware, now
from nas_prune.cli._common import table
from nas_prune.search.evaluate import worker_name
from nas_prune.search.optuna_backend import (
    ATTR_RUN_DIR,
    ATTR_SETUP,
    ATTR_TOTAL,
    GRACE_S,
    HEARTBEAT_S,
    _known,
    fail_dead_local_trials,
    is_interrupted,
    open_storage,
    progress_counts,
    record_of,
    records_of,
)
from nas_prune.search.samplers import (
    EARLY_STOPPING,
    SAMPLERS,
    make_early_stopping,
    make_sampler,
)
from nas_prune.search.space import MULT, START
from nas_prune.testing.postgres import postgres_missing, postgres_server

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STORAGES = ("sqlite", "journal", "postgresql")
REFERENCE = "memory"
# a VGG-like space of 12 groups; the starts are two seed methods and uniform scaling
BASE = dict(zip([f"conv{i}" for i in range(1, 13)],
                [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512], strict=True))
STARTS = ("l1", "slimming", "uniform")
LOW, HIGH = 0.5, 1.5


# ---- part 1: the storage work of a trial ---------------------------------------------------
def _value(params: dict[str, Any], epoch: int, epochs: int) -> float:
    """A validation accuracy, a function of the parameters only (same trials on every storage)."""
    mults = [params[f"{MULT}{g}"] for g in BASE]
    start = zlib.crc32(str(params[START]).encode()) % 7 / 100
    top = 0.6 + 0.25 * statistics.fmean(mults) / HIGH + start
    return round(top * (1 - 0.5 ** (epoch + 1)) + 0.002 * (epoch + 1) / epochs, 6)


def _costs(widths: dict[str, int]) -> tuple[int, int]:
    """(FLOPs, params) of a plain 3x3 conv stack on 32 px, halved after every second group."""
    flops = params = 0
    c_in, size = 3, 32
    for i, w in enumerate(widths.values()):
        params += 9 * c_in * w + w
        flops += 9 * c_in * w * size * size
        c_in = w
        if i % 2 == 1 and size > 2:
            size //= 2
    return flops, params


BASE_FLOPS, BASE_PARAMS = _costs(BASE)


def storage_work_objective(epochs: int, store: Any, tmp: Path):
    """The objective of a nas-prune trial without the training: the same storage calls."""
    from optuna.artifacts import upload_artifact

    def objective(trial: optuna.Trial) -> float:
        params: dict[str, Any] = {START: trial.suggest_categorical(START, list(STARTS))}
        for g in BASE:
            params[f"{MULT}{g}"] = trial.suggest_float(f"{MULT}{g}", LOW, HIGH)
        role = str(trial.user_attrs.get("role", "search"))
        widths = {g: max(2, int(round(BASE[g] * params[f"{MULT}{g}"] * 0.7))) for g in BASE}
        flops, n_params = _costs(widths)
        # candidate_attrs: known before training
        for key, value in {"role": role, "seed_method": str(params[START]), "scale": 0.7,
                           "worker": worker_name(), "widths": widths, "flops": flops,
                           "params": n_params, "flops_ratio": flops / BASE_FLOPS,
                           "cost_ratio": flops / BASE_FLOPS}.items():
            trial.set_user_attr(key, value)
        # the architecture YAML as an artifact (a file copy and a trial system attribute)
        path = tmp / f"trial-{trial.number}.yaml"
        path.write_text("widths:\n" + "".join(f"  {g}: {w}\n" for g, w in widths.items())
                        + f"provenance:\n  trial: {trial.number}\n")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                            mimetype="text/yaml", encoding="utf-8")
        path.unlink()
        _known(trial.study, widths)  # earlier trials' measurements of these widths
        curve: list[float] = []
        stopped = False
        for epoch in range(epochs):
            curve.append(_value(params, epoch, epochs))
            trial.report(curve[-1], epoch)
            if role == "search" and trial.should_prune() and epoch + 1 < epochs:
                stopped = True
                break
        measurement = {"seed": 0, "epochs": epochs, "epochs_run": len(curve),
                       "val_acc": curve[-1], "val_curve": list(curve),
                       "status": "stopped" if stopped else "ok", "wall_time": 0.0, "rung": 0}
        for key, value in {"val_acc": curve[-1], "best_val_acc": max(curve),
                           "val_curve": curve, "epochs": len(curve), "epochs_planned": epochs,
                           "wall_time": 0.0, "reason": "", "rung_values": [],
                           "measurements": [measurement], "reused_from": []}.items():
            trial.set_user_attr(key, value)
        if stopped:
            trial.set_user_attr("state_detail", "early-stopped")
            raise optuna.TrialPruned(f"early stopping after epoch {len(curve)} of {epochs}")
        return curve[-1]

    return objective


def open_bench_storage(kind: str, work: Path, tag: str, pg_url: str | None
                       ) -> optuna.storages.BaseStorage:
    if kind == REFERENCE:
        return optuna.storages.InMemoryStorage()
    url = {"sqlite": f"sqlite:///{work / f'{tag}.db'}",
           "journal": f"journal:///{work / f'{tag}.log'}", "postgresql": pg_url}[kind]
    return open_storage(url, heartbeat=(HEARTBEAT_S, GRACE_S))


def one_study(storage: optuna.storages.BaseStorage, name: str, args, work: Path
              ) -> dict[str, Any]:
    """Run ``args.trials`` storage-work trials in a new study; the timings and the trials."""
    from optuna.artifacts import FileSystemArtifactStore

    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    with warnings.catch_warnings():  # experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_acc"])
    study.set_user_attr(ATTR_SETUP, {"space": {"groups": BASE}, "starts": {
        s: BASE for s in STARTS}, "objective": "single", "note": "storages benchmark"})
    study.set_user_attr(ATTR_TOTAL, args.trials)
    study.set_user_attr(ATTR_RUN_DIR, str(work))
    for s in STARTS:  # the baselines go first, as in create_study
        study.enqueue_trial({START: s, **{f"{MULT}{g}": 1.0 for g in BASE}},
                            user_attrs={"role": "uniform" if s == "uniform" else "seed",
                                        "seed_method": s})
    study.sampler = make_sampler(args.sampler, seed=args.seed, objective="single",
                                 n_trials=args.trials, n_baselines=len(STARTS))
    study.pruner = make_early_stopping(args.early_stopping, objective="single",
                                       n_baselines=len(STARTS), warmup_epochs=args.epochs // 2)
    arts = work / f"{name}-artifacts"
    arts.mkdir()
    tmp = work / f"{name}-tmp"
    tmp.mkdir()
    stamps: list[float] = []
    journal = isinstance(storage, optuna.storages.JournalStorage)

    def after_trial(study: optuna.Study, ft: optuna.trial.FrozenTrial) -> None:
        # run_trials' callback and the search's on_record (less writing trials.csv)
        if journal:
            fail_dead_local_trials(study, storage)
        record_of(ft)
        progress_counts(study)
        records_of(study)
        stamps.append(time.perf_counter())

    objective = storage_work_objective(args.epochs, FileSystemArtifactStore(str(arts)), tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=args.trials, callbacks=[after_trial],
                       gc_after_trial=False)
        wall = time.perf_counter() - t0
    trials = study.get_trials(deepcopy=False)
    gaps = [(b - a) * 1000 for a, b in zip([t0, *stamps[:-1]], stamps, strict=True)]
    q = max(1, len(gaps) // 4)
    states = Counter(t.state.name for t in trials)
    signature = zlib.crc32(repr([(t.state.name, sorted(t.params.items()))
                                 for t in trials]).encode())
    shutil.rmtree(arts, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"ms_per_trial": wall * 1000 / args.trials, "wall_s": wall,
            "first_quarter_median_ms": statistics.median(gaps[:q]),
            "last_quarter_median_ms": statistics.median(gaps[-q:]),
            "states": dict(states), "signature": signature}


def storage_overhead(args, kinds: list[str], pg_url: str | None, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for r in range(args.repeats):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]  # rotate: no fixed position
        for kind in order:
            tag = f"overhead-{kind}-r{r}"
            storage = open_bench_storage(kind, work, tag, pg_url)
            res = one_study(storage, tag, args, work)
            res["position"] = order.index(kind)
            runs[kind].append(res)
            print(f"repeat {r + 1}/{args.repeats}: {kind:10s} {res['ms_per_trial']:8.2f} "
                  f"ms/trial  ({res['states']})", flush=True)
            engine = getattr(storage, "engine", None)  # RDBStorage: close its connections
            if engine is not None:
                engine.dispose()
            del storage
    same = all(len({run["signature"] for run in (runs[k][r] for k in kinds)}) == 1
               for r in range(args.repeats))
    median = {k: statistics.median(run["ms_per_trial"] for run in v) for k, v in runs.items()}
    ratios, above = {}, {}
    for k in kinds:
        if "sqlite" in runs:
            per = [a["ms_per_trial"] / b["ms_per_trial"]
                   for a, b in zip(runs[k], runs["sqlite"], strict=True)]
            ratios[k] = {"median": statistics.median(per), "per_repeat": per}
        if REFERENCE in runs:
            per = [a["ms_per_trial"] - b["ms_per_trial"]
                   for a, b in zip(runs[k], runs[REFERENCE], strict=True)]
            above[k] = {"median": statistics.median(per), "per_repeat": per}
    return {"trials": args.trials, "repeats": args.repeats, "epochs_reported": args.epochs,
            "sampler": args.sampler, "early_stopping": args.early_stopping, "seed": args.seed,
            "groups": len(BASE), "starts": list(STARTS),
            "heartbeat": {"interval_s": HEARTBEAT_S, "grace_s": GRACE_S,
                          "storages": "sqlite, postgresql (relational); journal and memory "
                                      "have none"},
            "work_per_trial": "suggest 1 categorical + 12 floats; 9 user attributes before "
                              "training; artifact upload; read of finished trials (_known); "
                              f"{args.epochs} x report + should_prune; 10 outcome attributes; "
                              "after the trial record_of, progress_counts, records_of (and "
                              "fail_dead_local_trials on the journal); trials.csv not written",
            "same_trials_on_every_storage": same,
            "median_ms_per_trial": median,
            "ratio_to_sqlite": ratios,
            "ms_above_memory": above,
            "runs": runs}


# ---- part 2: worker processes on one study --------------------------------------------------
def _tiny_args(tmp: Path, run: Path, epochs: int, train: int) -> list[str]:
    sys.path.insert(0, str(REPO_ROOT))
    try:
        from tests.test_search_common import tiny_args
    except ImportError as exc:
        raise SystemExit(f"cannot import tests.test_search_common.tiny_args ({exc}); run from a "
                         f"checkout with the test dependencies (pytest) installed") from None
    finally:
        sys.path.remove(str(REPO_ROOT))
    return tiny_args(tmp, run, epochs=epochs, train=train)


def _study_ready(url: str, name: str) -> bool:
    path = url.split(":///", 1)[1] if url.startswith(("journal:", "sqlite:")) else None
    if path is not None and not Path(path).is_file():
        return False  # do not create the file before the search does
    try:
        storage = open_storage(url)
        return name in optuna.study.get_all_study_names(storage)
    except Exception:  # being created
        return False


def _tail(log: Path, n: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def one_search(n_proc: int, url: str, name: str, args, work: Path) -> dict[str, Any]:
    """``nas-prune search`` plus ``n_proc - 1`` workers on one study; its timings."""
    run = work / name
    logs = [work / f"{name}-p{i}.log" for i in range(n_proc)]
    cmd = [sys.executable, "-m", "nas_prune.cli", "search",
           *_tiny_args(work, run, args.search_epochs, args.train_size), "--storage", url,
           "--study", name, "--early-stopping", "none", "--n-trials", str(args.total_trials)]
    procs: list[subprocess.Popen] = []
    files = []
    t0 = time.perf_counter()
    deadline = time.monotonic() + args.timeout
    try:
        files.append(open(logs[0], "w"))
        procs.append(subprocess.Popen(cmd, env=ENV, cwd=REPO_ROOT, stdout=files[0],
                                      stderr=subprocess.STDOUT))
        ready_s = None
        if n_proc > 1:
            while not _study_ready(url, name):
                if procs[0].poll() is not None:
                    raise RuntimeError(f"the search ended before its study existed:\n"
                                       f"{_tail(logs[0])}")
                if time.monotonic() > deadline:
                    raise RuntimeError("timed out waiting for the study")
                time.sleep(0.1)
            ready_s = time.perf_counter() - t0
            for i in range(1, n_proc):
                files.append(open(logs[i], "w"))
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "nas_prune.cli", "worker", "--storage", url,
                     "--study", name, "--device", "cpu"], env=ENV, cwd=REPO_ROOT,
                    stdout=files[i], stderr=subprocess.STDOUT))
        for i, p in enumerate(procs):
            left = max(1.0, deadline - time.monotonic())
            try:
                p.wait(timeout=left)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{n_proc} processes: timed out after {args.timeout} s"
                                   ) from None
            if p.returncode != 0:
                raise RuntimeError(f"process {i} ({'search' if i == 0 else 'worker'}) "
                                   f"exited {p.returncode}:\n{_tail(logs[i])}")
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    counted = [t for t in trials if not is_interrupted(t)]
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    span = (last - first).total_seconds()
    pids = [str(p.pid) for p in procs]
    per_proc = Counter(str(t.user_attrs.get("worker", "")).rsplit(":", 1)[-1] for t in trials)
    joined = {}
    for i, pid in enumerate(pids):
        mine = [t.datetime_start for t in trials
                if str(t.user_attrs.get("worker", "")).rsplit(":", 1)[-1] == pid]
        joined[f"p{i}"] = round((min(mine) - first).total_seconds(), 2) if mine else None
    states = Counter("REJECTED" if t.user_attrs.get("state_detail") == "REJECTED"
                     else t.state.name for t in trials)
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    shutil.rmtree(run, ignore_errors=True)
    for log in logs:
        log.unlink(missing_ok=True)
    return {"processes": n_proc, "trials_finished": len(trials), "trials_counted": len(counted),
            "states": dict(states), "span_s": span, "trials_per_hour": len(trials) / span * 3600,
            "process_wall_s": wall, "study_ready_s": ready_s,
            "trials_per_process": [per_proc.get(pid, 0) for pid in pids],
            "first_trial_after_first_s": joined,
            "mean_trial_s": busy / len(trials)}


def worker_scaling(args, url_of, work: Path) -> dict[str, Any]:
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.workers}
    counts = list(args.workers)
    for r in range(args.worker_repeats):
        order = counts[r % len(counts):] + counts[:r % len(counts)]
        for n in order:
            name = f"w{n}-r{r}"
            res = one_search(n, url_of(name), name, args, work)
            runs[n].append(res)
            print(f"repeat {r + 1}/{args.worker_repeats}: {n} process(es) "
                  f"{res['trials_finished']} trials in {res['span_s']:.1f} s = "
                  f"{res['trials_per_hour']:.0f}/h, per process {res['trials_per_process']}",
                  flush=True)
    median = {n: statistics.median(x["trials_per_hour"] for x in v) for n, v in runs.items()}
    speedup = {}
    if 1 in runs:
        for n in counts:
            per = [a["trials_per_hour"] / b["trials_per_hour"]
                   for a, b in zip(runs[n], runs[1], strict=True)]
            speedup[n] = {"median": statistics.median(per), "per_repeat": per}
    return {"storage": args.worker_storage, "total_trials": args.total_trials,
            "search_epochs": args.search_epochs, "train_size": args.train_size,
            "repeats": args.worker_repeats, "early_stopping": "none",
            "space": "tests/test_search_common.tiny_args (vgg_tiny, synthetic 1x12x12, "
                     "4 classes, budget 0.5, seed method random, sampler: the default)",
            "wall_time": "first trial's datetime_start to last trial's datetime_complete "
                         "(process start-up before the first trial not counted; "
                         "process_wall_s has it)",
            "env": {"OMP_NUM_THREADS": "1"},
            "median_trials_per_hour": median, "speedup_vs_1": speedup, "runs": runs}


# ---- report --------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("overhead", "workers"),
                   help="run one of the two measurements (default: both)")
    p.add_argument("--storages", nargs="+", choices=STORAGES, default=list(STORAGES),
                   help="storages of the overhead measurement (in-memory is always the "
                        "reference)")
    p.add_argument("--trials", type=int, default=200, help="trials per study (overhead)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6,
                   help="intermediate values each overhead trial reports")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="random",
                   help="sampler of the overhead studies (random: no model fitting, so the "
                        "difference is the storage's; nas-prune's default is tpe)")
    p.add_argument("--early-stopping", choices=sorted(EARLY_STOPPING), default="median",
                   help="rule of the overhead studies (median: nas-prune's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4],
                   help="process counts on one study (the search is the first)")
    p.add_argument("--worker-storage", choices=STORAGES, default="journal")
    p.add_argument("--total-trials", type=int, default=16, help="trials of each search")
    p.add_argument("--search-epochs", type=int, default=5, help="epochs of each search trial")
    p.add_argument("--train-size", type=int, default=2000,
                   help="synthetic training images of the search (with --search-epochs: "
                        "trials of a few seconds, so a worker's start-up does not dominate)")
    p.add_argument("--worker-repeats", type=int, default=None,
                   help="repeats of the worker measurement (default: --repeats)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per search")
    p.add_argument("--work", type=Path, default=None,
                   help="work folder (default: a new temporary one, removed after)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/storages.json"))
    args = p.parse_args(argv)
    args.worker_repeats = args.worker_repeats or args.repeats
    if args.repeats < 1 or args.worker_repeats < 1 or args.trials < 4 or args.epochs < 1:
        p.error("--repeats must be >= 1, --trials >= 4, --epochs >= 1")
    if args.total_trials < 3 or min(args.workers) < 1:
        p.error("--total-trials must be >= 3 (two baselines and a search trial), --workers >= 1")
    args.workers = sorted(set(args.workers))
    do_overhead, do_workers = args.only in (None, "overhead"), args.only in (None, "workers")
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)  # this process, as its children (ENV)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    cores = os.cpu_count() or 1
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    need_pg = (do_overhead and "postgresql" in args.storages) or \
        (do_workers and args.worker_storage == "postgresql")
    skipped: dict[str, str] = {}
    pg_reason = postgres_missing() if need_pg else None
    if pg_reason:
        skipped["postgresql"] = pg_reason
        print(f"skipping PostgreSQL: {pg_reason}", flush=True)
        if do_workers and args.worker_storage == "postgresql":
            raise SystemExit(f"--worker-storage postgresql: {pg_reason}")
    kinds = [REFERENCE, *(k for k in args.storages if k not in skipped)]

    own_work = args.work is None
    work = Path(tempfile.mkdtemp(prefix="nas-prune-storages-")) if own_work else args.work
    work.mkdir(parents=True, exist_ok=True)
    pg_info: dict[str, Any] | None = None
    overhead = workers = None
    try:
        with contextlib.ExitStack() as stack:
            if need_pg and not pg_reason:
                pg_info = stack.enter_context(postgres_server())
                print(f"PostgreSQL {pg_info['server_version']} on {pg_info['url']}", flush=True)
            pg_url = pg_info["url"] if pg_info else None
            if do_overhead:
                overhead = storage_overhead(args, kinds, pg_url, work / "overhead")
            if do_workers:
                def url_of(name: str) -> str:
                    if args.worker_storage == "postgresql":
                        return pg_url
                    ext = "db" if args.worker_storage == "sqlite" else "log"
                    return f"{args.worker_storage}:///{work / 'workers' / f'{name}.{ext}'}"

                (work / "workers").mkdir(parents=True, exist_ok=True)
                workers = worker_scaling(args, url_of, work / "workers")
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)

    out = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None
                                                       else sys.argv[1:])]),
        "finished": now(), "wall_s": round(time.perf_counter() - t_start, 1),
        "hardware": hardware("cpu"),
        "versions": {**code_version(), "optuna": optuna.__version__,
                     "sqlalchemy": _version("sqlalchemy"), "psycopg": _version("psycopg")},
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "cpu_count": cores,
        "note": f"this machine has {cores} cores (os.cpu_count()): no gain is expected from "
                f"more than {cores} processes; every process ran with OMP_NUM_THREADS=1; "
                f"SQLite and journal files on {tempfile.gettempdir() if own_work else work}",
        "postgresql": pg_info, "skipped": skipped,
        "storage_overhead": overhead, "workers": workers,
    }
    write_json(args.out, out)

    hw = out["hardware"]
    print(f"\n{hw['cpu']} x{cores}, load {load_start[0]:.1f} at start, "
          f"{out['load_average']['end'][0]:.1f} at end")
    if overhead:
        print(f"storage work of a nas-prune trial, {args.trials} trials x {args.repeats} "
              f"repeats, sampler {args.sampler}, early stopping {args.early_stopping}, "
              f"heartbeat {HEARTBEAT_S}/{GRACE_S} s on sqlite and postgresql")
        rows = []
        for k in kinds:
            ratio = overhead["ratio_to_sqlite"].get(k)
            above = overhead["ms_above_memory"].get(k)
            runs = overhead["runs"][k]
            rows.append([k + (" (reference)" if k == REFERENCE else ""),
                         f"{overhead['median_ms_per_trial'][k]:.2f}",
                         " ".join(f"{r['ms_per_trial']:.1f}" for r in runs),
                         f"{statistics.median(r['first_quarter_median_ms'] for r in runs):.1f}"
                         f" -> {statistics.median(r['last_quarter_median_ms'] for r in runs):.1f}",
                         f"{ratio['median']:.2f}x" if ratio else "-",
                         f"{above['median']:+.2f}" if above else "-"])
        print(table(rows, ["storage", "ms/trial", "per repeat", "first->last quarter",
                           "vs sqlite", "ms above memory"]))
        print(f"same trials (parameters, states) on every storage: "
              f"{overhead['same_trials_on_every_storage']}")
        for k, why in skipped.items():
            print(f"{k}: skipped ({why})")
    if workers:
        print(f"\n{args.total_trials} trials of a tiny search on {args.worker_storage}, "
              f"{args.search_epochs} epochs x {args.train_size} images, median of "
              f"{args.worker_repeats}; this machine has {cores} cores: no gain expected past "
              f"{cores} processes")
        rows = []
        for n, runs in workers["runs"].items():
            sp = workers["speedup_vs_1"].get(n)
            joins = [max(v) if None not in (v := list(r["first_trial_after_first_s"].values()))
                     else None for r in runs]
            known = [j for j in joins if j is not None]
            idle = len(joins) - len(known)
            rows.append([str(n), f"{statistics.median(r['span_s'] for r in runs):.1f}",
                         f"{workers['median_trials_per_hour'][n]:.0f}",
                         f"{sp['median']:.2f}x" if sp else "-",
                         f"{statistics.median(r['mean_trial_s'] for r in runs):.2f}",
                         (f"{statistics.median(known):.1f}" if known else "-")
                         + (f" ({idle} idle)" if idle else ""),
                         f"{statistics.median(r['process_wall_s'] for r in runs):.1f}",
                         " | ".join("/".join(map(str, r["trials_per_process"])) for r in runs)])
        print(table(rows, ["processes", "span s", "trials/h", "speed-up", "s/trial",
                           "last join s", "wall s", "trials per process"]))
        print("span: first trial's start to last trial's end; last join: first trial's start "
              "to the last process's first trial (idle: a process ran none); wall: search "
              "start to every process's exit")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
