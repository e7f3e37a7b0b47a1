"""The Optuna backend (the default): an in-process study in an Optuna storage.

* Storage: ``sqlite:///RUN/study.db`` by default, or any URL Optuna accepts; relational
  storages get heartbeats, so a trial whose process died is marked ``FAIL`` by whichever process
  looks next and is enqueued again. The study opens in ``optuna-dashboard`` and with
  ``optuna.load_study``; every trial carries its widths, FLOPs, params, FLOPs ratio, validation
  curve, epochs, wall time, seed method and role as user attributes.
* The study's user attributes hold the run's resolved config and candidate space
  (``nas_prune_setup``) and the trial total (``n_trials``), so ``nas-prune worker`` can join from
  another process or machine with nothing but the storage URL.
* Samplers: ``tpe`` (seeded), ``cmaes`` (needs the ``cmaes`` package), ``random``, ``nsga2``;
  with ``objective: multi`` the default ``tpe`` becomes NSGA-II. Early stopping: ``median``
  (Optuna's MedianPruner), ``halving`` (SuccessiveHalvingPruner) or ``none``; the seed and uniform
  trials report their curves but are never stopped (they are the baselines of the final table),
  and multi-objective studies have no early stopping (Optuna cannot stop them).
* ``n_trials`` counts every trial of the study (the enqueued seed and uniform trials, rejected
  ones, and those of other workers), except trials that were interrupted: a resumed or joined
  study runs only what is missing. Trials left ``RUNNING`` by a killed process are marked
  ``FAIL`` (reason ``interrupted``) on ``--resume`` and enqueued again with the same parameters.
* The sampler's state is not pickled (a pickle in the run directory would run code when loaded);
  instead the sampler is re-seeded with ``random_seed + number of trials already in the study``.
  TPE, CMA-ES and NSGA-II rebuild their model from the stored trials, so a resumed study continues
  the same search; its random draws differ from an uninterrupted run's. A worker seeds from its
  host and process id (so two workers never draw the same points) and is not reproducible.
"""

from __future__ import annotations

import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import UserError
from ..rundir import TrialRecord
from .evaluate import SearchSetup, candidate_attrs, train_candidate, worker_name

SAMPLERS = ("tpe", "cmaes", "random", "nsga2")
EARLY_STOPPING = ("median", "halving", "none")
ATTR_SETUP = "nas_prune_setup"
ATTR_TOTAL = "n_trials"
ATTR_RUN_DIR = "run_dir"
HEARTBEAT_S = 30
GRACE_S = 120
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


class TrialFailed(Exception):
    """Raised by the objective so that Optuna records the trial as FAIL and carries on."""


# ---- storage, sampler, early stopping ------------------------------------------------------
def default_storage(run_dir: str | Path) -> str:
    return f"sqlite:///{(Path(run_dir) / 'study.db').resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage; relational ones with heartbeats and re-enqueueing of dead trials."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in _RDB_SCHEMES:
        try:
            return optuna.storages.get_storage(url)
        except Exception as exc:
            raise UserError(f"search.storage: {url!r} is not a storage Optuna can open "
                            f"({type(exc).__name__}); use sqlite:///PATH or a database URL"
                            ) from None
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                              heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S,
                                              heartbeat_stale_trial_callback=_requeue_stale)
    except Exception as exc:  # sqlalchemy errors vary by database
        raise UserError(f"search.storage: cannot open {url!r} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]})") from None


def make_sampler(name: str, *, seed: int, objective: str, n_trials: int,
                 n_baselines: int) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise UserError(f"search.sampler: {name!r}; choose one of {', '.join(SAMPLERS)}")
    if objective == "multi":
        if name == "cmaes":
            raise UserError("search.sampler: cmaes cannot optimise two objectives; use nsga2, "
                            "tpe (which then means nsga2) or random")
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=_population(n_trials))
    if name == "tpe":
        # Random start-up trials after the baselines; Optuna's default of 10 would leave short
        # searches (the quick-start's 8 trials) without any model-based proposal.
        startup = max(n_baselines + 1, min(10, n_trials // 2))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise UserError("search.sampler: cmaes needs the cmaes package; pip install cmaes "
                            "or choose tpe") from None
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_baselines,
                                            warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=_population(n_trials))


def _population(n_trials: int) -> int:
    """NSGA-II population: at least 4, at most Optuna's default 50, about 3 generations."""
    return max(4, min(50, n_trials // 3))


def effective_sampler(name: str, objective: str) -> str:
    return "nsga2" if objective == "multi" and name == "tpe" else name


def make_early_stopping(name: str, *, objective: str, n_baselines: int,
                        warmup_epochs: int = 0) -> optuna.pruners.BasePruner:
    """The early-stopping rule. ``warmup_epochs``: the median rule judges no trial before this
    many epochs (the first epochs of a from-scratch run are too noisy to rank candidates)."""
    if name not in EARLY_STOPPING:
        raise UserError(f"search.early_stopping: {name!r}; choose one of "
                        f"{', '.join(EARLY_STOPPING)}")
    if name == "none" or objective == "multi":
        return optuna.pruners.NopPruner()
    if name == "median":
        # The baselines run to the end and form the first reference curves.
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, n_baselines),
                                           n_warmup_steps=max(0, warmup_epochs))
    return optuna.pruners.SuccessiveHalvingPruner()


# ---- trials <-> records --------------------------------------------------------------------
def is_interrupted(ft: FrozenTrial) -> bool:
    """A FAIL without a recorded reason: its process died (or was stopped) mid-trial."""
    return ft.state == TrialState.FAIL and (
        "fail_reason" not in ft.user_attrs
        or str(ft.user_attrs["fail_reason"]).startswith("interrupted"))


def record_of(ft: FrozenTrial, backend: str = "optuna") -> TrialRecord | None:
    """The backend-independent record of a finished trial (None while running or waiting)."""
    ua = ft.user_attrs
    if ft.state == TrialState.COMPLETE:
        state = "COMPLETE"
    elif ft.state == TrialState.PRUNED:
        state = "REJECTED" if ua.get("state_detail") == "REJECTED" else "PRUNED"
    elif ft.state == TrialState.FAIL:
        state = "FAIL"
    else:
        return None
    reason = str(ua.get("fail_reason") or ua.get("reason") or "")
    if state == "FAIL" and not reason:
        reason = "interrupted: the process running it stopped"
    val_acc = ua.get("val_acc")
    if state == "COMPLETE" and ft.values:
        val_acc = float(ft.values[0])
    return TrialRecord(
        number=ft.number, state=state, role=str(ua.get("role", "search")),
        seed_method=ua.get("seed_method"), widths=ua.get("widths"), flops=ua.get("flops"),
        params=ua.get("params"), flops_ratio=ua.get("flops_ratio"), val_acc=val_acc,
        best_val_acc=ua.get("best_val_acc"), val_curve=list(ua.get("val_curve") or []),
        epochs=int(ua.get("epochs") or 0), wall_time=float(ua.get("wall_time") or 0.0),
        datetime_start=ft.datetime_start.isoformat() if ft.datetime_start else None,
        datetime_complete=ft.datetime_complete.isoformat() if ft.datetime_complete else None,
        reason=reason, backend=backend, epochs_planned=int(ua.get("epochs_planned") or 0),
        cost_ratio=ua.get("cost_ratio"), scale=ua.get("scale"), trial_params=dict(ft.params),
        worker=str(ua.get("worker", "")))


def records_of(study: optuna.Study) -> list[TrialRecord]:
    return [r for ft in study.get_trials(deepcopy=False) if (r := record_of(ft)) is not None]


# ---- study lifecycle -----------------------------------------------------------------------
def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return name in optuna.study.get_all_study_names(storage)


def create_study(setup: SearchSetup, storage: optuna.storages.BaseStorage, name: str, *,
                 run_dir: str | Path, n_trials: int) -> optuna.Study:
    """A new study with the run's setup in its user attributes and the baselines enqueued."""
    directions = ["maximize"] if setup.cspace.objective == "single" else ["maximize", "minimize"]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    with warnings.catch_warnings():  # experimental since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_acc"] if len(directions) == 1
                               else ["val_acc", "cost_ratio"])
    study.set_user_attr(ATTR_SETUP, setup.to_dict())
    study.set_user_attr(ATTR_TOTAL, int(n_trials))
    study.set_user_attr(ATTR_RUN_DIR, str(Path(run_dir).resolve()))
    for params, role, method in setup.cspace.baseline_points():
        study.enqueue_trial(params, user_attrs={"role": role, "seed_method": method})
    return study


def load_study(storage: optuna.storages.BaseStorage, name: str | None) -> optuna.Study:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UserError(f"--study: no study {name!r} in this storage; check the name "
                        f"(nas-prune writes it to RUN/search.json)") from None
    except ValueError as exc:  # several studies and no name
        raise UserError(f"--study: {exc}".splitlines()[0]) from None
    if ATTR_SETUP not in study.user_attrs:
        raise UserError(f"study {study.study_name!r} was not created by nas-prune search "
                        f"(no {ATTR_SETUP} user attribute)")
    return study


def stored_setup(study: optuna.Study, *, device: str | None = None) -> SearchSetup:
    return SearchSetup.from_dict(study.user_attrs[ATTR_SETUP], device=device)


def _trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number)


def _requeue(study: optuna.Study, ft: FrozenTrial) -> None:
    user_attrs = {"retry_of": ft.number}
    for key in ("role", "seed_method"):
        if key in ft.user_attrs:
            user_attrs[key] = ft.user_attrs[key]
    # an enqueued trial killed before it sampled holds its parameters as fixed ones only;
    # a sampled trial killed before its first suggestion has none and is simply re-sampled
    params = dict(ft.params) or dict(ft.system_attrs.get("fixed_params") or {})
    if params:
        study.enqueue_trial(params, user_attrs=user_attrs)


def _requeue_stale(study: optuna.Study, ft: FrozenTrial) -> None:
    """Heartbeat callback: a trial whose process died was marked FAIL; run it again."""
    _requeue(study, ft)


def fail_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Mark every RUNNING trial FAIL ('interrupted') and enqueue it again; returns the numbers.

    Only for ``--resume``, which assumes that no other process is running the study.
    """
    numbers = []
    for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(_trial_id(storage, study, ft.number), "fail_reason",
                                    "interrupted: still running when --resume started")
        study.tell(ft.number, state=TrialState.FAIL, skip_if_finished=True)
        numbers.append(ft.number)
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    for ft in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if is_interrupted(ft) and ft.number not in retried:
            _requeue(study, ft)
    return numbers


def progress_counts(study: optuna.Study) -> tuple[int, int, int]:
    """(finished trials that count, running, waiting); interrupted trials do not count."""
    done = running = waiting = 0
    for ft in study.get_trials(deepcopy=False):
        if ft.state == TrialState.RUNNING:
            running += 1
        elif ft.state == TrialState.WAITING:
            waiting += 1
        elif not is_interrupted(ft):
            done += 1
    return done, running, waiting


# ---- running trials ------------------------------------------------------------------------
def make_objective(setup: SearchSetup) -> Callable[[optuna.Trial], Any]:
    cspace = setup.cspace
    single = cspace.objective == "single"

    def objective(trial: optuna.Trial):
        try:
            params = cspace.suggest(trial)
            cand = cspace.decode(params)
            for key, value in candidate_attrs(cand, setup).items():
                trial.set_user_attr(key, value)
            if cand.rejected:
                trial.set_user_attr("state_detail", "REJECTED")
                raise optuna.TrialPruned(f"rejected: {cand.reason}")

            def on_epoch(epoch: int, acc: float) -> bool:
                if not single:  # Optuna cannot report intermediate values of two objectives
                    return False
                trial.report(acc, epoch)
                return cand.role == "search" and trial.should_prune()

            out = train_candidate(cand.widths, setup, role=cand.role,
                                  seed_method=cand.seed_method, on_epoch=on_epoch)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted: KeyboardInterrupt")
            raise
        except Exception as exc:  # a bug in decoding must not end the study either
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:300])
            raise TrialFailed(str(exc)) from exc
        for key, value in out.attrs().items():
            trial.set_user_attr(key, value)
        if out.state == "FAIL":
            trial.set_user_attr("fail_reason", out.reason)
            raise TrialFailed(out.reason)
        if out.state == "PRUNED":
            trial.set_user_attr("state_detail", "early-stopped")
            raise optuna.TrialPruned(out.reason)
        if single:
            return out.val_acc
        return out.val_acc, setup.cost_attrs(cand.widths)["cost_ratio"]

    return objective


def run_trials(study: optuna.Study, setup: SearchSetup, *, total: int | None,
               n_trials: int | None = None, timeout: float | None = None,
               on_record: Callable[[TrialRecord, optuna.Study], None] | None = None,
               wait_for_others: bool = True, poll_s: float = 2.0,
               on_wait: Callable[[int], None] | None = None) -> None:
    """Run trials until the study holds ``total`` counted trials (or this process ran
    ``n_trials``, or ``timeout`` seconds passed); then wait for other workers' running trials.
    """
    objective = make_objective(setup)
    deadline = None if timeout is None else time.monotonic() + timeout
    ran = 0
    last_wait = -1

    def after_trial(study: optuna.Study, ft: FrozenTrial) -> None:
        nonlocal ran
        ran += 1
        record = record_of(ft)
        if record is not None and on_record is not None:
            on_record(record, study)
        if total is not None:
            done, running, _ = progress_counts(study)
            if done + running >= total:
                study.stop()

    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        done, running, _ = progress_counts(study)
        limits = []
        if total is not None:
            limits.append(total - done - running)
        if n_trials is not None:
            limits.append(n_trials - ran)
        todo = min(limits) if limits else None
        if todo is None or todo > 0:
            study.optimize(objective, n_trials=todo, timeout=left, catch=(TrialFailed,),
                           callbacks=[after_trial], gc_after_trial=False)
            if total is None or (n_trials is not None and ran >= n_trials):
                return
            continue  # count again: other workers may have added or lost trials meanwhile
        if not wait_for_others or running == 0:
            return
        if on_wait is not None and running != last_wait:
            on_wait(running)
        last_wait = running
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # re-enqueues trials of dead workers
        time.sleep(poll_s)


def sampler_seed(base_seed: int, study: optuna.Study, *, worker: bool) -> int:
    n = len(study.get_trials(deepcopy=False))
    if worker:
        return (base_seed * 1_000_003 + zlib.crc32(worker_name().encode()) + n) % (2 ** 31)
    return (base_seed + n) % (2 ** 31)
