"""The Optuna backend (the default): an in-process study in an Optuna storage.

* Storage: ``sqlite:///RUN/study.db`` by default, or any URL Optuna accepts; relational
  storages get heartbeats, so a trial whose process died is marked ``FAIL`` by whichever process
  looks next and is enqueued again. The study opens in ``optuna-dashboard`` and with
  ``optuna.load_study``; every trial carries its widths, FLOPs, params, FLOPs ratio, validation
  curve, epochs, wall time, seed method and role as user attributes.
* The study's user attributes hold the run's resolved config and candidate space
  (``nas_prune_setup``) and the trial total (``n_trials``), so ``nas-prune worker``
  (:func:`run_worker`) can join from another process or machine with nothing but the storage URL.
* Samplers and early-stopping rules come from :mod:`nas_prune.search.samplers`; the seed and
  uniform trials report their curves but are never stopped (they are the baselines of the final
  table), and multi-objective studies have no early stopping (Optuna cannot stop them).
* ``n_trials`` counts every trial of the study (the enqueued seed and uniform trials, rejected
  ones, and those of other workers), except trials that were interrupted: a resumed or joined
  study runs only what is missing. Trials left ``RUNNING`` by a killed process are marked
  ``FAIL`` (reason ``interrupted``) on ``--resume`` and enqueued again with the same parameters.
* The sampler's state is not pickled (a pickle in the run directory would run code when loaded);
  instead the sampler is re-seeded with ``random_seed + number of trials already in the study``.
  TPE, CMA-ES and NSGA-II rebuild their model from the stored trials, so a resumed study continues
  the same search; its random draws differ from an uninterrupted run's. A worker seeds from its
  host and process id (so two workers never draw the same points) and is not reproducible.
* Reading a study never creates one: a missing SQLite file, a database that is not one, a wrong
  or missing study name are one-line errors naming the storage and the study.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import Config
from ..errors import UserError
from ..rundir import (
    ARTIFACTS,
    SEARCH_JSON,
    SETUP_JSON,
    STUDY_DB,
    TrialRecord,
    read_json,
    write_records,
)
from ..train import resolve_device
from ._backend import Location, SearchBackend, SearchEvents, mask_url
from .evaluate import SearchSetup, candidate_attrs, train_candidate, worker_name
from .fidelity import known_results, rung_step
from .samplers import check_early_stopping, check_sampler, make_early_stopping, make_sampler
from .space import START

ATTR_SETUP = "nas_prune_setup"
ATTR_TOTAL = "n_trials"
ATTR_RUN_DIR = "run_dir"
HEARTBEAT_S = 30
GRACE_S = 120
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


class TrialFailed(Exception):
    """Raised by the objective so that Optuna records the trial as FAIL and carries on."""


# ---- storage -------------------------------------------------------------------------------
def default_storage(run_dir: str | Path) -> str:
    return f"sqlite:///{(Path(run_dir) / STUDY_DB).resolve()}"


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (None for other storages, ``:memory:``)."""
    if _scheme(url) != "sqlite" or ":///" not in url:
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def journal_file(url: str) -> Path | None:
    """The log file of a ``journal:///PATH`` URL (None for other storages)."""
    if _scheme(url) != "journal":
        return None
    path = url.split("://", 1)[1] if "://" in url else url.split(":", 1)[1]
    return Path(path[1:] if path.startswith("//") else path)


def open_storage(url: str, *, who: str = "search.storage",
                 heartbeat: tuple[int, int] | None = (HEARTBEAT_S, GRACE_S)
                 ) -> optuna.storages.BaseStorage:
    """An Optuna storage; relational ones with heartbeats (``heartbeat`` = (interval, grace)
    seconds; None: none, for a study only one process asks and tells) and re-enqueueing of dead
    trials.

    ``journal:///PATH`` is Optuna's :class:`~optuna.storages.JournalStorage` on a log file (file
    locks, no database server: several processes on one machine or a shared file system); it
    has no heartbeat, so trials of dead workers on this host are found by process id instead
    (:func:`fail_dead_local_trials`). Creates a missing SQLite or journal file (and its
    folder): readers check :func:`sqlite_file` / :func:`journal_file` first.
    """
    shown = mask_url(url)
    journal = journal_file(url)
    if journal is not None:
        from optuna.storages.journal import JournalFileBackend

        try:
            journal.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        except Exception as exc:  # a damaged or unwritable log
            raise UserError(f"{who}: cannot open the journal {journal} ({_error_line(exc)}); "
                            f"check the path") from None
    if _scheme(url) not in _RDB_SCHEMES:
        try:
            return optuna.storages.get_storage(url)
        except Exception as exc:
            raise UserError(f"{who}: {shown!r} is not a storage Optuna can open "
                            f"({type(exc).__name__}); use sqlite:///PATH, journal:///PATH or "
                            f"a database URL") from None
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_file(url)
    if _scheme(url) == "sqlite":
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat is None:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                              heartbeat_interval=heartbeat[0],
                                              grace_period=heartbeat[1],
                                              heartbeat_stale_trial_callback=_requeue_stale)
    except Exception as exc:  # sqlalchemy errors vary by database
        raise UserError(f"{who}: cannot open {shown} ({_error_line(exc)}); "
                        f"{'restore the file' if path else 'check the URL'}") from None


def _error_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:160]}"


def open_study(url: str, name: str | None, *, who: str, flag: str = "--study",
               heartbeat: tuple[int, int] = (HEARTBEAT_S, GRACE_S)
               ) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """An existing study created by ``nas-prune search``, and its storage.

    Every way of not finding one (no database file, not a database, no such study, several
    studies and no name) is a one-line :class:`UserError` that starts with ``who`` and names the
    storage and the study in words; ``flag`` is the option that chooses the study. Creates
    nothing.
    """
    shown = mask_url(url)
    path = sqlite_file(url) or journal_file(url)
    if path is not None and not path.is_file():
        what = f"study {name!r}" if name else "study"
        kind = "journal" if journal_file(url) else "database"
        raise UserError(f"{who}: no {what} in {shown}; the {kind} file {path} does not "
                        f"exist; check --storage (nas-prune search writes it to RUN/search.json)")
    storage = open_storage(url, who=who, heartbeat=heartbeat)
    try:
        names = optuna.study.get_all_study_names(storage)
        if name is None:
            if not names:
                raise UserError(f"{who}: no study in {shown}; check --storage")
            if len(names) > 1:
                raise UserError(f"{who}: {shown} holds {len(names)} studies "
                                f"({', '.join(map(repr, names))}); choose one with {flag}")
            name = names[0]
        if name not in names:
            held = f"it holds {', '.join(map(repr, names))}" if names else "it holds none"
            raise UserError(f"{who}: no study {name!r} in {shown}; {held}; check {flag} "
                            f"(nas-prune writes it to RUN/search.json)")
        study = optuna.load_study(study_name=name, storage=storage)
        attrs = study.user_attrs
    except UserError:
        raise
    except Exception as exc:  # a damaged database fails on its first query
        raise UserError(f"{who}: cannot read study {name!r} in {shown} ({_error_line(exc)}); "
                        f"restore the database") from None
    if ATTR_SETUP not in attrs:
        raise UserError(f"{who}: study {name!r} in {shown} was not created by nas-prune search "
                        f"(no {ATTR_SETUP} user attribute)")
    return study, storage


# ---- trials <-> records --------------------------------------------------------------------
def is_interrupted(ft: FrozenTrial) -> bool:
    """A FAIL without a recorded reason: its process died (or was stopped) mid-trial."""
    return ft.state == TrialState.FAIL and (
        "fail_reason" not in ft.user_attrs
        or str(ft.user_attrs["fail_reason"]).startswith("interrupted"))


def is_superseded(ft: FrozenTrial) -> bool:
    """A trial that does not count: one past the study's total (:func:`_surplus`), or a Ray
    trial run again after its worker died (:mod:`nas_prune.search._ray_study`)."""
    return bool(ft.user_attrs.get("superseded"))


def _counts(ft: FrozenTrial) -> bool:
    """Whether a trial counts toward the study's total, now or once it runs."""
    return not (is_interrupted(ft) or is_superseded(ft))


def _surplus(trial: optuna.Trial, total: int) -> bool:
    """Whether ``total`` trials that count were already ahead of this one when it was created.

    Workers decide to start a trial from counts that another process can change before the
    trial exists, so two of them can take the last place at once. The storage gives out trial
    numbers in order, and the trials ahead of one can only stop counting (an interrupted one),
    never start: so the trials with ``total`` counting ones ahead of them are exactly the
    surplus, and the study never holds more than its total. (One ahead that is interrupted
    later is enqueued again, so the total is still reached.) A re-enqueued interrupted trial
    always runs: it may be a seed or uniform baseline, which the search needs; in the rare race
    where a fresh trial took its place first the study holds one trial more than its total."""
    if "retry_of" in trial.user_attrs:  # an interrupted trial run again replaces it: it runs
        return False
    ahead = sum(1 for ft in trial.study.get_trials(deepcopy=False)
                if ft.number < trial.number and _counts(ft))
    return ahead >= total


def record_of(ft: FrozenTrial, backend: str = "optuna") -> TrialRecord | None:
    """The backend-independent record of a finished trial (None while running or waiting).

    A Ray search's study (:mod:`nas_prune.search._ray_study`) keeps Tune's trial number, the
    backend and the Ray node in user attributes; its superseded trials have no record."""
    ua = ft.user_attrs
    if ua.get("superseded"):
        return None
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
        number=int(ua.get("ray_number", ft.number)), state=state,
        role=str(ua.get("role", "search")),
        seed_method=ua.get("seed_method"), widths=ua.get("widths"), flops=ua.get("flops"),
        params=ua.get("params"), flops_ratio=ua.get("flops_ratio"), val_acc=val_acc,
        best_val_acc=ua.get("best_val_acc"), val_curve=list(ua.get("val_curve") or []),
        epochs=int(ua.get("epochs") or 0), wall_time=float(ua.get("wall_time") or 0.0),
        datetime_start=ft.datetime_start.isoformat() if ft.datetime_start else None,
        datetime_complete=ft.datetime_complete.isoformat() if ft.datetime_complete else None,
        reason=reason, backend=str(ua.get("backend", backend)),
        epochs_planned=int(ua.get("epochs_planned") or 0),
        cost_ratio=ua.get("cost_ratio"), scale=ua.get("scale"), trial_params=dict(ft.params),
        latency_ms=ua.get("latency_ms"), latency_iqr_ms=ua.get("latency_iqr_ms"),
        worker=str(ua.get("worker", "")), node=str(ua.get("node", "")),
        rung_values=list(ua.get("rung_values") or []),
        measurements=list(ua.get("measurements") or []))


def records_of(study: optuna.Study) -> list[TrialRecord]:
    """The records of the study's finished trials; where several have one number (a Ray
    trial run again after its worker died), the latest."""
    out = {r.number: r for ft in study.get_trials(deepcopy=False)
           if (r := record_of(ft)) is not None}
    return sorted(out.values(), key=lambda r: r.number)


# ---- study lifecycle -----------------------------------------------------------------------
def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return name in optuna.study.get_all_study_names(storage)


def create_study(setup: SearchSetup, storage: optuna.storages.BaseStorage, name: str, *,
                 run_dir: str | Path, n_trials: int, enqueue: bool = True) -> optuna.Study:
    """A new study with the run's setup in its user attributes and (``enqueue``) the
    baselines enqueued."""
    directions = ["maximize"] if setup.cspace.objective == "single" else ["maximize", "minimize"]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    with warnings.catch_warnings():  # experimental since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_acc"] if len(directions) == 1
                               else ["val_acc", "cost_ratio"])
    study.set_user_attr(ATTR_SETUP, setup.to_dict())
    study.set_user_attr(ATTR_TOTAL, int(n_trials))
    study.set_user_attr(ATTR_RUN_DIR, str(Path(run_dir).resolve()))
    for params, role, method in setup.cspace.baseline_points() if enqueue else []:
        study.enqueue_trial(params, user_attrs={"role": role, "seed_method": method})
    for c in setup.screened if enqueue else []:  # one-shot screening's picks
        study.enqueue_trial(c["params"], user_attrs={"role": "search",
                                                     "seed_method": c["params"].get(START),
                                                     "screen_score": c["score"],
                                                     "screen_pick": c["pick"]})
    return study


def stored_setup(study: optuna.Study, *, device: str | None = None) -> SearchSetup:
    """The run's config and candidate space, from the study's user attributes."""
    try:
        return SearchSetup.from_dict(study.user_attrs[ATTR_SETUP], device=device)
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"study {study.study_name!r}: its {ATTR_SETUP} user attribute is not a "
                        f"nas-prune search setup ({type(exc).__name__}: {exc})"[:300]) from None


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def fail_dead_local_trials(study: optuna.Study, storage: optuna.storages.BaseStorage
                           ) -> list[int]:
    """RUNNING trials of worker processes on this host that no longer exist: marked FAIL
    ('interrupted: worker died') and enqueued again, once each. For storages without heartbeats
    (the journal); a process on another host cannot be checked this way."""
    host = socket.gethostname()
    dead = []
    for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = str(ft.user_attrs.get("worker", ""))
        name, _, pid = who.rpartition(":")
        if name != host or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        storage.set_trial_user_attr(_trial_id(storage, study, ft.number), "fail_reason",
                                    f"interrupted: worker {who} died")
        study.tell(ft.number, state=TrialState.FAIL, skip_if_finished=True)
        _requeue(study, ft)
        dead.append(ft.number)
    return dead


def reap_dead_workers(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Trials of dead workers failed and enqueued again: Optuna's heartbeat check for
    relational storages, the process-id check for the journal."""
    if isinstance(storage, optuna.storages.JournalStorage):
        fail_dead_local_trials(study, storage)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


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
        elif _counts(ft):
            done += 1
    return done, running, waiting


# ---- running trials ------------------------------------------------------------------------
def artifact_store(study: optuna.Study) -> Any:
    """Optuna's file-system artifact store in the run directory (``RUN/artifacts``), or None
    where this process cannot reach the run directory (a worker on another machine)."""
    from optuna.artifacts import FileSystemArtifactStore

    run_dir = study.user_attrs.get(ATTR_RUN_DIR)
    if not run_dir or not Path(run_dir).is_dir():
        return None
    path = Path(run_dir) / ARTIFACTS
    path.mkdir(exist_ok=True)
    return FileSystemArtifactStore(str(path))


def upload_architecture(trial: optuna.Trial, setup: SearchSetup, widths, store: Any, *,
                        number: int | None = None) -> None:
    """The trial's architecture YAML as an Optuna artifact, shown with the trial by
    ``optuna-dashboard --artifact-dir RUN/artifacts``; ``number``: the run's trial number
    where it is not the study's (a Ray trial)."""
    import tempfile

    from optuna.artifacts import upload_artifact

    number = trial.number if number is None else number
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{number}.yaml"
        setup.spec(widths, trial=number).save(path)
        with warnings.catch_warnings():  # artifacts are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                            mimetype="text/yaml", encoding="utf-8")


def make_objective(setup: SearchSetup, total: int | None = None
                   ) -> Callable[[optuna.Trial], Any]:
    """The study's objective; ``total``: the study's trial total, past which a trial that
    another worker's race let start ends at once, marked superseded (:func:`_surplus`)."""
    cspace = setup.cspace
    single = cspace.objective == "single"
    stores: dict[str, Any] = {}  # study name -> its artifact store, looked up once

    def objective(trial: optuna.Trial):
        if total is not None and _surplus(trial, total):
            trial.set_user_attr("superseded", True)
            trial.set_user_attr("fail_reason", f"superseded: the study already held its total "
                                               f"of {total} trials when this one started")
            raise TrialFailed("over the study's total")
        try:
            params = cspace.suggest(trial)
            cand = cspace.decode(params)
            for key, value in candidate_attrs(cand, setup).items():
                trial.set_user_attr(key, value)
            name = trial.study.study_name
            if name not in stores:
                stores[name] = artifact_store(trial.study)
            if cand.widths is not None and stores[name] is not None:
                upload_architecture(trial, setup, cand.widths, stores[name])
            if cand.rejected:
                trial.set_user_attr("state_detail", "REJECTED")
                raise optuna.TrialPruned(f"rejected: {cand.reason}")

            def on_epoch(epoch: int, acc: float) -> bool:
                if not single:  # Optuna cannot report intermediate values of two objectives
                    return False
                trial.report(acc, epoch)
                return cand.role == "search" and trial.should_prune()

            def on_rung(k: int, value: float) -> bool:
                if not single:
                    return False
                trial.report(value, rung_step(k, setup.cfg.search.reduction_factor))
                return cand.role == "search" and trial.should_prune()

            out = train_candidate(cand.widths, setup, role=cand.role,
                                  seed_method=cand.seed_method, on_epoch=on_epoch,
                                  on_rung=on_rung, known=_known(trial.study, cand.widths))
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
        return out.val_acc, setup.cost_attrs(cand.widths, cand.latency)["cost_ratio"]

    return objective


def _known(study: optuna.Study, widths) -> dict:
    """What earlier finished trials of the study measured for these widths (a duplicate)."""
    trials = [{"number": ft.number, "widths": ft.user_attrs.get("widths"),
               "measurements": ft.user_attrs.get("measurements")}
              for ft in study.get_trials(deepcopy=False,
                                         states=(TrialState.COMPLETE, TrialState.PRUNED))
              if ft.user_attrs.get("measurements")]
    return known_results(widths, trials)


def run_trials(study: optuna.Study, storage: optuna.storages.BaseStorage, setup: SearchSetup,
               *, total: int | None,
               n_trials: int | None = None, timeout: float | None = None,
               on_record: Callable[[TrialRecord, optuna.Study], None] | None = None,
               wait_for_others: bool = True, poll_s: float = 2.0,
               on_wait: Callable[[int], None] | None = None) -> None:
    """Run trials until the study holds ``total`` counted trials (or this process ran
    ``n_trials``, or ``timeout`` seconds passed); then wait for other workers' running trials.
    """
    objective = make_objective(setup, total)
    deadline = None if timeout is None else time.monotonic() + timeout
    ran = 0
    last_wait = -1

    def after_trial(study: optuna.Study, ft: FrozenTrial) -> None:
        nonlocal ran
        ran += 1
        if isinstance(storage, optuna.storages.JournalStorage):
            fail_dead_local_trials(study, storage)  # Optuna checks heartbeat storages itself
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
        reap_dead_workers(study, storage)  # re-enqueues trials of dead workers
        time.sleep(poll_s)


def sampler_seed(base_seed: int, study: optuna.Study, *, worker: bool) -> int:
    n = len(study.get_trials(deepcopy=False))
    if worker:
        return (base_seed * 1_000_003 + zlib.crc32(worker_name().encode()) + n) % (2 ** 31)
    return (base_seed + n) % (2 ** 31)


# ---- the backend ---------------------------------------------------------------------------
def _use_rules(study: optuna.Study, setup: SearchSetup, *, total: int, worker: bool) -> None:
    """The configured sampler (re-seeded, see the module docstring) and early-stopping rule."""
    search, cspace = setup.cfg.search, setup.cspace
    n_base = len(cspace.starts)
    study.sampler = make_sampler(search.sampler,
                                 seed=sampler_seed(setup.cfg.random_seed, study, worker=worker),
                                 objective=cspace.objective, n_trials=total, n_baselines=n_base)
    study.pruner = make_early_stopping(search.early_stopping, objective=cspace.objective,
                                       n_baselines=n_base, warmup_epochs=setup.warmup_epochs(),
                                       n_rungs=len(setup.rungs()),
                                       reduction_factor=search.reduction_factor)


def study_location(cfg: Config, run_dir: str | Path) -> Location:
    """``search.storage`` (default RUN/study.db) and ``search.study_name`` (default: the name
    RUN/search.json recorded, so a renamed run directory keeps its study; for a new search the
    run directory's name). The Optuna and the Ray backend keep their studies there."""
    url = cfg.search.storage or default_storage(run_dir)
    recorded = (read_json(Path(run_dir) / SEARCH_JSON) or {}).get("study_name")
    name = cfg.search.study_name or recorded or Path(run_dir).resolve().name
    return Location(f"study {name!r} in {mask_url(url)}", study_name=name, storage=url)


def study_url(run_dir: str | Path, info: dict[str, Any], storage: str | None) -> str:
    """The storage URL of a finished search's study: ``storage`` given by the user, else the
    configured one RUN/search.json recorded, else the run directory's own study.db, wherever
    the directory is now (search.json holds the absolute URL of where it was made)."""
    stored = read_json(Path(run_dir) / SETUP_JSON) or {}
    configured = (stored.get("config") or {}).get("search", {}).get("storage")
    url = storage or (info.get("storage") if configured else default_storage(run_dir))
    if not url or "***" in url:
        raise UserError(f"{run_dir}: the study's storage URL is not recorded in full; pass "
                        f"--storage URL")
    return url


def load_study(run_dir: str | Path, info: dict[str, Any], *, storage: str | None = None
               ) -> tuple[SearchSetup, list[TrialRecord], str]:
    """(setup, records, where from) of the study of a finished or interrupted search."""
    url = study_url(run_dir, info, storage)
    name = info.get("study_name")
    study, _ = open_study(url, name, who=f"{run_dir}", flag="study_name in search.json")
    setup = stored_setup(study)
    try:
        records = records_of(study)
    except Exception as exc:  # a damaged database can fail on any query
        raise UserError(f"{run_dir}: cannot read the trials of study {name!r} in "
                        f"{mask_url(url)} ({_error_line(exc)}); restore the database"
                        ) from None
    return setup, records, f"study {study.study_name!r} in {mask_url(url)}"


class OptunaBackend(SearchBackend):
    """Trials in an Optuna study (``search.storage``, default ``sqlite:///RUN/study.db``)."""

    name = "optuna"

    def check(self, cfg: Config) -> None:
        s = cfg.search
        check_sampler(s.sampler)
        make_sampler(s.sampler, seed=0, objective=s.objective, n_trials=s.n_trials,
                     n_baselines=1)  # e.g. cmaes with two objectives, or without its package
        check_early_stopping(s.early_stopping)

    def location(self, cfg: Config, run_dir: Path) -> Location:
        return study_location(cfg, run_dir)

    def stored(self, cfg: Config, run_dir: Path) -> SearchSetup | None:
        loc = self.location(cfg, run_dir)
        path = sqlite_file(loc.storage) or journal_file(loc.storage)
        if path is not None and not path.is_file():
            return None
        storage = open_storage(loc.storage, who=f"run directory {run_dir}")
        try:
            exists = study_exists(storage, loc.study_name)
        except Exception as exc:  # a damaged database fails on its first query
            raise UserError(f"run directory {run_dir}: cannot read {mask_url(loc.storage)} "
                            f"({_error_line(exc)}); restore the database or start a new "
                            f"--run-dir") from None
        if not exists:
            return None
        study, _ = open_study(loc.storage, loc.study_name, who=f"run directory {run_dir}")
        return stored_setup(study)

    def run(self, setup: SearchSetup, run_dir: Path, *, resume: bool,
            events: SearchEvents) -> list[TrialRecord]:
        cfg = setup.cfg
        loc = self.location(cfg, run_dir)
        total = cfg.search.n_trials
        heartbeat = (cfg.search.heartbeat_interval, cfg.search.grace_period)
        if resume:
            study, storage = open_study(loc.storage, loc.study_name,
                                        who=f"run directory {run_dir}", heartbeat=heartbeat)
            interrupted = fail_interrupted(study, storage)
            if interrupted:
                events.message(f"marked {len(interrupted)} interrupted trial(s) FAIL and queued "
                               f"them again: {', '.join(map(str, interrupted))}")
            done, _, waiting = progress_counts(study)
            events.message(f"resuming {loc.label}: {done} of {total} trials done, {waiting} "
                           f"queued")
            study.set_user_attr(ATTR_TOTAL, total)
        else:
            storage = open_storage(loc.storage, heartbeat=heartbeat)
            study = create_study(setup, storage, loc.study_name, run_dir=run_dir,
                                 n_trials=total)
        _use_rules(study, setup, total=total, worker=False)

        def on_record(record: TrialRecord, study: optuna.Study) -> None:
            write_records(run_dir, records_of(study))
            events.trial(record)

        run_trials(study, storage, setup, total=total, timeout=cfg.search.timeout,
                   on_record=on_record,
                   on_wait=lambda n: events.message(f"waiting for {n} trial(s) of other "
                                                    f"workers"))
        return records_of(study)

    def load(self, run_dir: Path, info: dict[str, Any], *, storage: str | None = None
             ) -> tuple[SearchSetup, list[TrialRecord], str]:
        return load_study(run_dir, info, storage=storage)


def run_worker(storage_url: str, study_name: str | None, *, device: str | None = None,
               n_trials: int | None = None, events: SearchEvents | None = None
               ) -> list[TrialRecord]:
    """Join an existing study and run trials in this process; returns the study's records.

    ``n_trials``: run at most this many; a worker never runs past the study's total (its
    trials count in the search's total, so the study never holds more than it asked for).
    """
    events = events or SearchEvents()
    study, _ = open_study(storage_url, study_name, who="worker")
    setup = stored_setup(study, device=device)
    search = setup.cfg.search
    # again with the run's heartbeat settings (the first open only read them)
    study, storage = open_study(storage_url, study.study_name, who="worker",
                                heartbeat=(search.heartbeat_interval, search.grace_period))
    if sqlite_file(storage_url) is not None:
        events.message("worker: SQLite serialises every write through one file lock and is "
                       "Optuna's documented trouble spot with several writers; for several "
                       "processes use journal:///PATH (one machine or a shared file system), "
                       "for several machines PostgreSQL (docs/scaling-out.md, 'Storages')")
    fn = setup.cfg.train.function
    if fn is not None:  # importable here and working, before a trial fails on it
        from ..trainfn import check_function, check_on_narrowest

        check_function(fn)
        if setup.cfg.train.function_check:
            done = check_on_narrowest(fn, setup.space, seed=setup.cfg.random_seed,
                                      device=resolve_device(setup.cfg.device))
            events.message(f"worker: train.function {fn} checked on the narrowest network "
                           f"(1 epoch): val_acc {done['val_acc']:.4f} in {done['wall_s']:.1f}s")
    total = int(study.user_attrs.get(ATTR_TOTAL, setup.cfg.search.n_trials))
    _use_rules(study, setup, total=total, worker=True)
    events.message(f"joined study {study.study_name!r} in {mask_url(storage_url)}: total "
                   f"{total} trials, device {resolve_device(setup.cfg.device)}")
    run_trials(study, storage, setup, total=total, n_trials=n_trials,
               on_record=lambda r, _s: events.trial(r), wait_for_others=False)
    return records_of(study)
