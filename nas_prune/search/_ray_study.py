"""Ray Tune's ``OptunaSearch`` that keeps a nas-prune Optuna study: a Ray search is a study too.

Ray's searcher asks and tells an Optuna study (``storage=``: by default the run directory's
``study.db``, or ``search.storage``); this subclass also writes each finished trial's record into
the study's user attributes, in the vocabulary of the Optuna backend
(:func:`~nas_prune.search.optuna_backend.record_of` reads both), tells the study the state the
Optuna backend would (a rejected or early-stopped trial is PRUNED, a raised one FAIL with its
reason) and stores the trial's architecture YAML as an Optuna artifact. ``optuna-dashboard`` and
``nas-prune export/report`` then read a Ray search the same way as an Optuna one.

Trial numbers are Tune's (the order trials were created); the study keeps them as the
``ray_number`` user attribute because its own numbers can drift after a restore (a trial asked
after Tune's last saved state is asked again). This module imports Ray at import time: only
:mod:`nas_prune.search.ray_backend` imports it, inside a Ray run; it imports nothing from
that module (what both need is in :mod:`._ray_records`). It lives at module level so
that Tune can pickle the searcher into its experiment state (``Tuner.restore``).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from ..rundir import TrialRecord
from ._ray_records import record_from_result, setup_of
from .evaluate import SearchSetup
from .optuna_backend import artifact_store, upload_architecture

log = logging.getLogger(__name__)

#: user attributes (besides those of :func:`study_attrs`) that mark a Ray trial in the study
ATTR_NUMBER, ATTR_TRIAL_ID, ATTR_SUPERSEDED = "ray_number", "ray_trial_id", "superseded"


def study_attrs(rec: TrialRecord) -> dict[str, Any]:
    """The user attributes that :func:`~nas_prune.search.optuna_backend.record_of` turns back
    into ``rec`` (None values left out)."""
    attrs: dict[str, Any] = {
        "role": rec.role, "seed_method": rec.seed_method, "widths": rec.widths,
        "flops": rec.flops, "params": rec.params, "flops_ratio": rec.flops_ratio,
        "val_acc": rec.val_acc, "best_val_acc": rec.best_val_acc, "val_curve": rec.val_curve,
        "epochs": rec.epochs, "wall_time": rec.wall_time, "epochs_planned": rec.epochs_planned,
        "cost_ratio": rec.cost_ratio, "scale": rec.scale, "latency_ms": rec.latency_ms,
        "latency_iqr_ms": rec.latency_iqr_ms, "worker": rec.worker, "node": rec.node,
        "rung_values": rec.rung_values, "measurements": rec.measurements, "backend": "ray",
        ATTR_NUMBER: rec.number}
    if rec.state == "FAIL":
        attrs["fail_reason"] = rec.reason
    elif rec.state == "REJECTED":
        attrs.update(state_detail="REJECTED", reason=rec.reason)
    elif rec.state == "PRUNED":
        attrs.update(state_detail="early-stopped", reason=rec.reason)
    return {k: v for k, v in attrs.items() if v is not None}


class StudySearch(OptunaSearch):
    """``OptunaSearch`` whose study holds nas-prune's trial records (see the module)."""

    def __init__(self, *, setup_json: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._setup_json = setup_json
        self._numbers: dict[str, int] = {}  # Ray trial id -> Tune's trial number
        self._stores: list[Any] = []  # the artifact store, looked up once (None: none)

    def _setup_study(self, mode: str | list) -> None:
        # Tuner.restore sets the searcher up again before it loads its saved state: the
        # baselines must not be enqueued a second time in a study that already has trials
        points = self._points_to_evaluate
        if points and self._storage is not None and self._study_name in \
                optuna.study.get_all_study_names(self._storage):
            study = optuna.load_study(study_name=self._study_name, storage=self._storage)
            if study.get_trials(deepcopy=False):
                self._points_to_evaluate = []
        try:
            super()._setup_study(mode)
        finally:
            self._points_to_evaluate = points

    def _setup(self) -> SearchSetup:
        return setup_of(self._setup_json)

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if params is not None and trial_id not in self._numbers:
            # Tune creates a trial for every suggestion, in order: this is its number
            self._numbers[trial_id] = len(self._numbers)
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr(ATTR_NUMBER, self._numbers[trial_id])
            ot_trial.set_user_attr(ATTR_TRIAL_ID, trial_id)
        return params

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self._ot_trials:
            return
        self._completed_trials.add(trial_id)
        ot_trial = self._ot_trials[trial_id]
        storage = self._ot_study._storage
        frozen = storage.get_trial(ot_trial._trial_id)
        if frozen.state.is_finished():
            return  # told before the driver stopped, and replayed since
        setup = self._setup()
        number = self._numbers.get(trial_id, frozen.number)
        rec = record_from_result(
            number, dict(frozen.params), dict(result or {}), setup=setup,
            error="Ray trial error (see the trial's error.txt under RUN/ray)" if error else None)
        try:
            for key, value in study_attrs(rec).items():
                ot_trial.set_user_attr(key, value)
            if rec.widths is not None:
                self._upload(ot_trial, setup, rec)
            values: Any = None
            state = TrialState.FAIL
            if rec.state == "COMPLETE":
                state = TrialState.COMPLETE
                values = ([rec.val_acc, rec.cost_ratio] if setup.cspace.objective == "multi"
                          else rec.val_acc)
            elif rec.state in ("PRUNED", "REJECTED"):
                state = TrialState.PRUNED
            self._ot_study.tell(ot_trial, values, state=state)
        except Exception as exc:  # the search goes on; the run directory keeps the record
            log.warning("could not record Ray trial %s in the Optuna study: %s", number, exc)

    def _upload(self, ot_trial: optuna.Trial, setup: SearchSetup, rec: TrialRecord) -> None:
        if not self._stores:
            self._stores.append(artifact_store(self._ot_study))
        if self._stores[0] is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                upload_architecture(ot_trial, setup, rec.widths, self._stores[0],
                                    number=rec.number)

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles the searcher: no store handle
        state = self.__dict__.copy()
        state["_stores"] = []
        return state


def record_rerun(study: optuna.Study, trial_id: str, rec: TrialRecord, setup: SearchSetup
                 ) -> bool:
    """A trial that errored (its worker died) and that a resumed experiment ran again under
    the same Ray trial id: a new finished study trial with ``rec`` and the same number, which
    readers take over the failed one (Tune's searcher no longer hears of a trial it saw
    fail). Returns whether it was one."""
    mine = [ft for ft in study.get_trials(deepcopy=False)
            if ft.user_attrs.get(ATTR_TRIAL_ID) == trial_id
            and not ft.user_attrs.get(ATTR_SUPERSEDED)]
    if not mine or mine[-1].state != TrialState.FAIL or rec.state == "FAIL":
        return False
    old = mine[-1]  # finished trials cannot be changed: the new one, later, replaces it
    attrs = {**study_attrs(rec), ATTR_TRIAL_ID: trial_id, "retry_of": old.number}
    values: Any = None
    state = TrialState.PRUNED
    if rec.state == "COMPLETE":
        state = TrialState.COMPLETE
        values = ([rec.val_acc, rec.cost_ratio] if setup.cspace.objective == "multi"
                  else [rec.val_acc])
    study.add_trial(optuna.trial.create_trial(
        state=state, values=values, params=old.params, distributions=old.distributions,
        user_attrs=attrs))
    return True


def supersede_unfinished(study: optuna.Study) -> list[int]:
    """Fail the study's trials that are still running after a whole Ray run: trials asked
    after Tune's last saved state before a driver stopped, whose number Tune gave to a later
    trial. Marked ``superseded`` (readers skip them); returns their study numbers."""
    storage = study._storage
    out = []
    for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tid = ft._trial_id
        storage.set_trial_user_attr(tid, ATTR_SUPERSEDED, True)
        storage.set_trial_user_attr(tid, "fail_reason", "interrupted: the Ray driver stopped "
                                    "before Tune saved this trial; a later trial took its number")
        storage.set_trial_state_values(tid, TrialState.FAIL)
        out.append(ft.number)
    return out
