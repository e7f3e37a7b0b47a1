"""The Ray Tune backend, for GPU machines and clusters.

The same candidate space and sampler as the Optuna backend run inside Ray Tune:

* Ray's ``OptunaSearch`` (as :class:`~nas_prune.search._ray_study.StudySearch`) with the
  candidate space as a define-by-run function (:meth:`CandidateSpace.suggest`), the configured
  Optuna sampler (seeded), and the seed and uniform baselines as ``points_to_evaluate``, so they
  are the first trials. It asks and tells an Optuna study in ``search.storage`` (default
  ``RUN/study.db``) and records each finished trial there as the Optuna backend does, so a Ray
  search is also an Optuna study: ``optuna-dashboard`` and ``nas-prune export/report`` read it.
* Early stopping from per-epoch ``tune.report`` calls, or one per rung with ``search.rungs``
  (:data:`SCHEDULERS`): ``halving`` is ASHA (asynchronous successive halving, with the config's
  reduction factor), ``hyperband`` asynchronous Hyperband (ASHA over 3 brackets), ``median``
  Ray's median stopping rule (the rule of Optuna's MedianPruner), ``none`` a FIFO scheduler.
  Multi-objective searches are never stopped early.
  Unlike the Optuna backend, Ray's schedulers may also stop a baseline trial; the final table
  retrains the baselines anyway.
* A function trainable with ``reuse_actors=True``: the data set is loaded once per worker process
  (:func:`nas_prune.scratch.data_for` caches it) and never shipped; trials receive the config and
  candidate space as one JSON string. ``tune.with_resources`` gives every trial
  ``gpus_per_trial`` GPUs (fractions allowed, trials then share a device), ``cpus_per_trial``
  CPUs and the custom ``resources`` (trials then run only on nodes that have them);
  ``max_concurrent`` trials run at once. :meth:`RayBackend.check` validates them (and that Ray
  is installed) before any base network trains. Each trial records the Ray node that ran it.
* Without ``search.ray.address`` a local Ray starts with its dashboard on
  ``dashboard_host:dashboard_port``; with ``auto`` or ``ray://HOST:PORT`` it joins a cluster (on
  which nas-prune must be installed) and reports that cluster's dashboard.
* Results live under ``RUN/ray/tune`` (``RunConfig(storage_path=...)``); ``--resume`` continues
  them with ``Tuner.restore`` (also after the driver was killed: unfinished trials and those
  that errored, e.g. on a worker that died, start again;
  a trial the driver recorded finished after Tune's last saved state replays its result from
  ``RUN/ray/finished.json`` instead of training again). A driver-side callback turns every
  finished trial into a :class:`~nas_prune.rundir.TrialRecord` and rewrites
  ``RUN/trials.csv``/``.jsonl``.

A rejected trial is told to the study as PRUNED and a failed one as FAIL, as in the Optuna
backend; their records keep ``val_acc`` empty and Tune's schedulers see an objective of 0.
Ray is imported only in this module and :mod:`~nas_prune.search._ray_study`. Imports run one
way: this module -> :mod:`._ray_study` (the searcher, imported inside a Ray run) ->
:mod:`._ray_records` (decoding a trial's setup and results; no Ray), which this module also uses.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from .._io import write_json
from ..config import Config
from ..errors import UserError
from ..rundir import SETUP_JSON, TrialRecord, read_json, read_records, write_records
from ._backend import Location, SearchBackend, SearchEvents
from ._ray_records import record_from_result, setup_of
from .evaluate import SearchSetup, candidate_attrs, train_candidate, worker_name
from .optuna_backend import journal_file, load_study, sqlite_file, study_location, study_url
from .samplers import check_early_stopping, make_sampler

log = logging.getLogger(__name__)

EXPERIMENT = "tune"
METRIC = "objective"
FINISHED = "finished.json"
#: seconds between Tune's saves of the experiment state (its default adapts from 10 s up):
#: trials created after the last save are unknown to a restored experiment (a trial running
#: then is started afresh under its number), so save often (the cost of a save was not
#: measured here; Tune warns when one is slow)
CHECKPOINT_S = "1"


def experiment_dir(run_dir: str | Path) -> Path:
    return Path(run_dir).resolve() / "ray" / EXPERIMENT


# ---- the trainable (runs in Ray worker processes) ------------------------------------------
#: what Tune adds to every reported result (left out when a finished result is replayed)
_TUNE_KEYS = frozenset((
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "config",
    "time_since_restore", "iterations_since_restore", "experiment_tag", "should_checkpoint"))


def run_trial(config: dict[str, Any], setup_json: str, finished: str = "{}") -> None:
    """One Ray trial: decode, train with per-epoch reports, report the outcome.

    ``finished``: Ray trial id -> the last result of trials the driver recorded as finished
    before it stopped (JSON). Tune restarts a trial that finished after its last saved state;
    such a trial reports its recorded result again instead of training a second time."""
    import ray
    import torch
    from ray import tune

    done = json.loads(finished).get(tune.get_context().get_trial_id())
    if done is not None:
        tune.report({**done, "replayed": True})
        return
    setup = setup_of(setup_json)
    torch.set_num_threads(max(1, int(setup.cfg.search.ray.cpus_per_trial)))
    cspace = setup.cspace
    cand = cspace.decode(config)
    attrs = candidate_attrs(cand, setup)
    if cand.widths is not None:
        attrs["widths"] = json.dumps(cand.widths)
    base = {k: v for k, v in attrs.items() if v is not None}
    base.setdefault("cost_ratio", 1.0)
    base["node"] = ray.get_runtime_context().get_node_id()
    if cand.rejected:
        tune.report({**base, METRIC: 0.0, "state": "REJECTED", "reason": cand.reason})
        return
    planned: dict[str, int] = {}

    def on_epoch(epoch: int, acc: float) -> bool:
        # The last epoch is reported with the outcome below, so a trial reports once per epoch.
        if epoch + 1 < planned.get("n", 0):
            tune.report({**base, METRIC: acc, "val_acc": acc, "epoch": epoch + 1,
                         "epochs_planned": planned["n"], "state": "RUNNING"})
        return False

    n_rungs = len(setup.rungs())

    def on_rung(k: int, value: float) -> bool:
        # one report per rung below the top (training_iteration = k + 1): ASHA decides there
        if k + 1 < n_rungs:
            tune.report({**base, METRIC: value, "val_acc": value, "rung": k,
                         "rung_values": json.dumps(rungs_so_far + [value]),
                         "n_rungs": n_rungs, "state": "RUNNING"})
            rungs_so_far.append(value)
        return False

    rungs_so_far: list[float] = []
    planned["n"] = setup.epochs_for(cand.widths)
    out = train_candidate(cand.widths, setup, role=cand.role, seed_method=cand.seed_method,
                          on_epoch=None if n_rungs else on_epoch, on_rung=on_rung)
    result = {**base, **{k: v for k, v in out.attrs().items() if v is not None},
              "val_curve": json.dumps(out.val_curve), "state": out.state,
              "rung_values": json.dumps(out.rung_values),
              "measurements": json.dumps(out.measurements),
              "reused_from": json.dumps(out.reused_from),
              METRIC: out.val_acc if out.state == "COMPLETE" else 0.0}
    tune.report(result)


# ---- the driver ----------------------------------------------------------------------------
def _trial_number(tag: str) -> int | None:
    """Tune's experiment tag (and trial folder) carries the 1-based index of the trial."""
    m = re.match(r"(\d+)(_|$)", tag)
    return int(m.group(1)) - 1 if m else None


def _now() -> str:
    return _dt.datetime.now().isoformat()


def finished_path(run_dir: str | Path) -> Path:
    """RUN/ray/finished.json: Ray trial id -> last result, of every trial recorded finished."""
    return Path(run_dir).resolve() / "ray" / FINISHED


def _make_callback(setup: SearchSetup, run_dir: Path,
                   on_record: Callable[[TrialRecord], None] | None, study: Any = None):
    from ray.tune import Callback

    from ._ray_study import record_rerun

    class RecordCallback(Callback):
        """Driver side: one record per finished trial; rewrites RUN/trials.csv and .jsonl and
        RUN/ray/finished.json (what a restarted trial replays, :func:`run_trial`)."""

        def __init__(self) -> None:
            self.records = {r.number: r for r in read_records(run_dir)}
            self.started: dict[str, str] = {}
            self.numbers: dict[str, int] = {}
            self.finished: dict[str, Any] = read_json(finished_path(run_dir)) or {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[trial.trial_id] = _now()

        def _finish(self, trial, error: str | None) -> None:
            number = _trial_number(str(getattr(trial, "experiment_tag", "")))
            if number is None:
                number = self.numbers.setdefault(trial.trial_id, len(self.numbers))
            last = dict(trial.last_result or {})
            if last.get("replayed") and number in self.records:
                return  # recorded before the driver stopped; nothing was trained again
            rec = record_from_result(number, dict(trial.config), last, setup=setup,
                                     error=error, start=self.started.get(trial.trial_id),
                                     end=_now())
            if error is None:  # first: a finished trial is never recorded without its replay
                self.finished[trial.trial_id] = {k: v for k, v in last.items()
                                                 if k not in _TUNE_KEYS}
                write_json(finished_path(run_dir), self.finished)
            self.records[rec.number] = rec
            write_records(run_dir, self.records.values())
            if error is None and study is not None:
                try:  # an errored trial run again on resume (its searcher is not told)
                    record_rerun(study, trial.trial_id, rec, setup)
                except Exception as exc:  # the run directory keeps the record
                    log.warning("could not record Ray trial %s in the study: %s", number, exc)
            if on_record is not None:
                on_record(rec)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._finish(trial, None)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._finish(trial, _error_line(trial))

        def __reduce__(self):  # Tune pickles its run config; rebuilt fresh on restore
            return (_NoopCallback, ())

    return RecordCallback()


class _NoopCallback:
    """What a pickled record callback becomes: a no-op (the driver attaches a fresh one)."""

    def __getattr__(self, name: str):
        if name.startswith("on_") or name in ("setup", "get_state", "set_state"):
            return lambda *a, **k: None
        raise AttributeError(name)


def _error_line(trial) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [x for x in Path(path).read_text().splitlines() if x.strip()]
        if lines:
            return f"Ray trial error: {lines[-1][:300]}"
    return "Ray trial error (see the trial's error.txt under RUN/ray)"


def init_ray(setup: SearchSetup) -> tuple[bool, str | None]:
    """Start or join Ray; returns (started here, dashboard URL)."""
    import ray

    rc = setup.cfg.search.ray
    if ray.is_initialized():
        try:  # Ray keeps the URL of the running instance privately
            from ray._private.worker import get_dashboard_url

            return False, _dashboard_url(get_dashboard_url())
        except Exception:
            return False, None
    try:
        if rc.address:
            ctx = ray.init(address=rc.address)
        else:
            ctx = ray.init(include_dashboard=True, dashboard_host=rc.dashboard_host,
                           dashboard_port=rc.dashboard_port)
    except ConnectionError as exc:
        hint = "start the cluster or drop --address to run locally"
        if os.environ.get("RAY_AUTH_MODE", "") != "token" and _token_file().is_file():
            # a client without RAY_AUTH_MODE=token is refused by a token cluster, and Ray
            # reports it as an unreachable address
            hint = ("if the cluster uses token authentication (`ray start --head` turns it on "
                    "when a token exists), run with RAY_AUTH_MODE=token (the token is in "
                    "~/.ray/auth_token); else start the cluster or drop --address to run "
                    "locally")
        raise UserError(f"search.ray.address: cannot reach Ray at {rc.address!r} "
                        f"({str(exc).splitlines()[0][:160]}); {hint}") from None
    return True, _dashboard_url(getattr(ctx, "dashboard_url", None))


def _token_file() -> Path:
    """Where Ray keeps the cluster token (RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def dashboard_auth(url: str, timeout: float = 5.0) -> str:
    """'token' when the dashboard answers 401 without a token (Ray's token authentication,
    which a local Ray 2.60 turns on: it creates ~/.ray/auth_token), 'none' when it answers, 'unknown' when
    it cannot be reached."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v0/nodes?limit=1", timeout=timeout):
            return "none"
    except urllib.error.HTTPError as exc:
        return "token" if exc.code == 401 else "unknown"
    except (OSError, ValueError):
        return "unknown"


def dashboard_lines(url: str | None) -> list[str]:
    """What a user needs to open the Ray dashboard, in lines to print."""
    if not url:
        return ["Ray dashboard: not available"]
    auth = dashboard_auth(url)
    if auth != "token":
        return [f"Ray dashboard: {url}"]
    return [f"Ray dashboard: {url} (token authentication is on: the page asks for the token)",
            "  the token: `ray get-auth-token` (kept in ~/.ray/auth_token); API clients send "
            "'Authorization: Bearer <token>'",
            "  without authentication (a trusted machine only): set RAY_AUTH_MODE=disabled "
            "before the search starts Ray"]


def _dashboard_url(url: str | None) -> str | None:
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def run_ray(setup: SearchSetup, *, run_dir: str | Path, resume: bool, n_trials: int,
            timeout: float | None = None,
            on_record: Callable[[TrialRecord], None] | None = None,
            on_message: Callable[[str], None] | None = None) -> list[TrialRecord]:
    """Run (or resume) the search with Ray Tune; returns every trial's record."""
    import optuna
    import ray
    from ray import tune

    from ._ray_study import StudySearch, supersede_unfinished
    from .optuna_backend import create_study, open_storage, study_exists

    say = on_message or (lambda _msg: None)
    run_dir = Path(run_dir).resolve()
    cfg = setup.cfg
    rc = cfg.search.ray  # checked by RayBackend.check
    if cfg.device.startswith("cuda"):
        # Ray shows each trial only its own GPU(s): "cuda" is the one it was given
        setup = dataclasses.replace(setup, cfg=dataclasses.replace(cfg, device="cuda"))
        cfg = setup.cfg
    if cfg.data.root:  # trials may run in another working directory
        setup = dataclasses.replace(setup, cfg=dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, root=str(Path(cfg.data.root).resolve()))))
    # the study this search records into (the searcher asks and tells it; one process only)
    loc = study_location(cfg, run_dir)
    storage = open_storage(loc.storage, heartbeat=None)
    if not study_exists(storage, loc.study_name):
        create_study(setup, storage, loc.study_name, run_dir=run_dir, n_trials=n_trials,
                     enqueue=False)  # OptunaSearch enqueues the baselines itself
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", CHECKPOINT_S)
    started, url = init_ray(setup)
    for line in dashboard_lines(url):
        say(line)
    try:
        cspace = setup.cspace
        multi = cspace.objective == "multi"
        metric: str | list[str] = [METRIC, "cost_ratio"] if multi else METRIC
        mode: str | list[str] = ["max", "min"] if multi else "max"
        # the seed and uniform baselines first, then one-shot screening's picks (if any)
        points = [p for p, _, _ in cspace.baseline_points()] + \
            [dict(c["params"]) for c in setup.screened]
        sampler = make_sampler(cfg.search.sampler, seed=cfg.random_seed,
                               objective=cspace.objective, n_trials=n_trials,
                               n_baselines=len(points))
        setup_json = json.dumps(setup.to_dict())
        searcher = StudySearch(space=cspace.suggest, metric=metric, mode=mode,
                               points_to_evaluate=points, sampler=sampler,
                               storage=storage, study_name=loc.study_name,
                               setup_json=setup_json)
        finished = json.dumps(read_json(finished_path(run_dir)) or {}) if resume else "{}"
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, setup_json=setup_json, finished=finished),
            {"cpu": rc.cpus_per_trial, "gpu": rc.gpus_per_trial, **rc.resources})
        study = optuna.load_study(study_name=loc.study_name, storage=storage)
        callback = _make_callback(setup, run_dir, on_record, study)
        path = experiment_dir(run_dir)
        if resume and tune.Tuner.can_restore(str(path)):
            say(f"resuming the Ray Tune experiment in {path} (trials it had not finished "
                f"start again; those recorded finished since its last save are not retrained)")
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True, restart_errored=False)
            _attach(tuner, callback)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher, scheduler=scheduler(setup), num_samples=n_trials,
                    max_concurrent_trials=rc.max_concurrent, time_budget_s=timeout,
                    reuse_actors=True),
                run_config=tune.RunConfig(
                    name=EXPERIMENT, storage_path=str(path.parent), callbacks=[callback],
                    verbose=0, failure_config=tune.FailureConfig(max_failures=0)))
        t0 = time.monotonic()
        tuner.fit()
        records = sorted(callback.records.values(), key=lambda r: r.number)
        timed_out = timeout is not None and time.monotonic() - t0 >= 0.99 * timeout
        if len(records) < n_trials and not timed_out:
            # Tune ends fit() quietly on Ctrl-C after saving its state; so do we
            raise KeyboardInterrupt(f"Ray Tune stopped after {len(records)} of {n_trials} "
                                    f"trials; continue with --resume")
        lost = supersede_unfinished(study)
        if lost:
            say(f"{len(lost)} trial(s) created after Tune's last saved state were lost when "
                f"the driver stopped; marked failed in the study: {', '.join(map(str, lost))}")
        return records
    finally:
        if started:
            ray.shutdown()


def _attach(tuner, callback) -> None:
    """Put a fresh record callback on a restored Tuner (pickled callbacks become no-ops)."""
    internal = getattr(tuner, "_local_tuner", None)  # Tuner has no public setter for this
    if internal is None or not hasattr(internal, "get_run_config"):
        raise UserError("--resume: this Ray version's restored Tuner has no run config to "
                        "attach the trial records to; start a new run directory")
    run_config = internal.get_run_config()
    run_config.callbacks = [c for c in (run_config.callbacks or [])
                            if not isinstance(c, _NoopCallback)] + [callback]


def _fifo(setup: SearchSetup):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _max_t(setup: SearchSetup) -> int:
    train = setup.cfg.train
    return max(train.epochs, int(train.epochs * train.max_budget_scale))


def _asha(setup: SearchSetup):
    from ray.tune.schedulers import ASHAScheduler

    n_rungs = len(setup.rungs())
    if n_rungs:  # one report per rung: ASHA over the rungs of complete schedules
        return ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode="max",
                             max_t=n_rungs, grace_period=1,
                             reduction_factor=setup.cfg.search.reduction_factor)
    return ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode="max",
                         max_t=_max_t(setup), grace_period=max(1, setup.warmup_epochs()),
                         reduction_factor=setup.cfg.search.reduction_factor)


def _median_rule(setup: SearchSetup):
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(time_attr="training_iteration", metric=METRIC, mode="max",
                              grace_period=max(1, setup.warmup_epochs()), min_samples_required=3)


#: ``search.early_stopping`` -> the Ray Tune scheduler (the names of
#: :data:`nas_prune.search.samplers.EARLY_STOPPING`).
def _hyperband(setup: SearchSetup):
    from ray.tune.schedulers import AsyncHyperBandScheduler

    # asynchronous Hyperband: ASHA over several brackets (no pausing, which function
    # trainables without checkpoints cannot do)
    n_rungs = len(setup.rungs())
    return AsyncHyperBandScheduler(
        time_attr="training_iteration", metric=METRIC, mode="max",
        max_t=n_rungs or _max_t(setup),
        grace_period=1 if n_rungs else max(1, setup.warmup_epochs()),
        reduction_factor=setup.cfg.search.reduction_factor, brackets=3)


SCHEDULERS: dict[str, Callable[[SearchSetup], Any]] = {
    "median": _median_rule, "halving": _asha, "hyperband": _hyperband, "none": _fifo}


def scheduler(setup: SearchSetup):
    """The configured scheduler; multi-objective searches are never stopped early."""
    rule = setup.cfg.search.early_stopping
    check_early_stopping(rule, SCHEDULERS)
    return _fifo(setup) if setup.cspace.objective == "multi" else SCHEDULERS[rule](setup)


# ---- reading results back (export) ---------------------------------------------------------
def collect_records(run_dir: str | Path, setup: SearchSetup) -> list[TrialRecord]:
    """RUN/trials.jsonl, completed by any trial only Ray's result files know about."""
    run_dir = Path(run_dir)
    records = {r.number: r for r in read_records(run_dir)}
    root = experiment_dir(run_dir)
    if not root.is_dir():
        return sorted(records.values(), key=lambda r: r.number)
    for trial_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        result_file, params_file = trial_dir / "result.json", trial_dir / "params.json"
        if not result_file.is_file() or not params_file.is_file():
            continue
        lines = [x for x in result_file.read_text(errors="replace").splitlines() if x.strip()]
        if not lines:
            continue
        try:
            last = json.loads(lines[-1])
            if not isinstance(last, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise UserError(f"{result_file}: the last line is not a Ray result "
                            f"({type(exc).__name__}); restore the file or delete the trial's "
                            f"folder") from None
        m = re.match(r".*?_[0-9a-f]{5,}_(\d+)_", trial_dir.name)
        number = int(m.group(1)) - 1 if m else None
        if number is None or number in records:
            continue
        error = None
        if (trial_dir / "error.txt").is_file():
            error = "Ray trial error (see error.txt)"
        elif last.get("state") == "RUNNING" and not last.get("done", False):
            error = "interrupted: the Ray run stopped during this trial"
        start = end = None
        if isinstance(last.get("timestamp"), (int, float)):
            stamp = float(last["timestamp"])
            end = _dt.datetime.fromtimestamp(stamp).isoformat()
            start = _dt.datetime.fromtimestamp(stamp - float(last.get("time_total_s") or 0))
            start = start.isoformat()
        records[number] = record_from_result(number, read_json(params_file) or {}, last,
                                             setup=setup, error=error, start=start, end=end)
    return sorted(records.values(), key=lambda r: r.number)


# ---- the backend ---------------------------------------------------------------------------
class RayBackend(SearchBackend):
    """Trials in a Ray Tune experiment under ``RUN/ray/tune``, on a local Ray or a cluster."""

    name = "ray"
    in_process = False
    fixed_on_resume: ClassVar[dict[str, str]] = {
        "search.n_trials": "a resumed Ray experiment keeps its trial count (Tuner.restore "
                           "cannot change it); drop --n-trials"}

    def check(self, cfg: Config) -> None:
        s, rc = cfg.search, cfg.search.ray
        if importlib.util.find_spec("ray") is None:
            raise UserError("search.backend: ray needs Ray Tune; pip install 'ray[tune]' or use "
                            "--backend optuna")
        make_sampler(s.sampler, seed=0, objective=s.objective, n_trials=s.n_trials,
                     n_baselines=1)
        check_early_stopping(s.early_stopping, SCHEDULERS)
        if rc.gpus_per_trial < 0:
            raise UserError(f"search.ray.gpus_per_trial: {rc.gpus_per_trial}; must be >= 0")
        if rc.cpus_per_trial <= 0:
            raise UserError(f"search.ray.cpus_per_trial: {rc.cpus_per_trial}; must be > 0")
        if rc.max_concurrent < 1:
            raise UserError(f"search.ray.max_concurrent: {rc.max_concurrent}; must be >= 1")
        if cfg.device.startswith("cuda") and rc.gpus_per_trial <= 0:
            raise UserError(f"search.ray.gpus_per_trial: device {cfg.device} needs GPUs per "
                            f"trial; set --gpus-per-trial (e.g. 1 or 0.5) or --device auto")

    def location(self, cfg: Config, run_dir: Path) -> Location:
        loc = study_location(cfg, run_dir)
        return dataclasses.replace(loc, label=f"Ray Tune experiment in "
                                               f"{experiment_dir(run_dir)}, recorded in "
                                               f"{loc.label}")

    def stored(self, cfg: Config, run_dir: Path) -> SearchSetup | None:
        if not experiment_dir(run_dir).is_dir():
            return None
        stored = read_json(Path(run_dir) / SETUP_JSON)
        if stored is None:
            raise UserError(f"run directory {run_dir}: it holds a Ray Tune experiment but no "
                            f"{SETUP_JSON}, so the search cannot be continued; start a new "
                            f"--run-dir")
        return SearchSetup.from_dict(stored)

    def run(self, setup: SearchSetup, run_dir: Path, *, resume: bool,
            events: SearchEvents) -> list[TrialRecord]:
        s = setup.cfg.search
        return run_ray(setup, run_dir=run_dir, resume=resume, n_trials=s.n_trials,
                       timeout=s.timeout, on_record=events.trial, on_message=events.message)

    def load(self, run_dir: Path, info: dict[str, Any], *, storage: str | None = None
             ) -> tuple[SearchSetup, list[TrialRecord], str]:
        stored = read_json(Path(run_dir) / SETUP_JSON)
        if stored is None:
            raise UserError(f"{run_dir}: no {SETUP_JSON}; the Ray search stopped before its "
                            f"first trial, or the file was deleted")
        setup = SearchSetup.from_dict(stored)
        files = collect_records(run_dir, setup)
        if info.get("study_name"):  # recorded in a study (Ray runs made before: not)
            url = study_url(run_dir, info, storage)
            path = sqlite_file(url) or journal_file(url)
            if path is None or path.is_file():
                # the study the searcher recorded into, read as an Optuna search's; trials
                # only the run directory's files know of (one whose tell failed) are kept
                setup, records, source = load_study(run_dir, info, storage=storage)
                known = {r.number for r in records}
                records += [r for r in files if r.number not in known]
                return setup, sorted(records, key=lambda r: r.number), source
        return (setup, files,
                f"RUN/trials.jsonl and the Ray results in {experiment_dir(run_dir)}")


__all__ = ["SCHEDULERS", "RayBackend", "collect_records", "experiment_dir", "init_ray",
           "run_ray", "run_trial", "scheduler", "worker_name"]
