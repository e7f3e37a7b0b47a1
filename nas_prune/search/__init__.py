"""The search: widths around seed proposals, projected onto the budget, trained from scratch.

* :mod:`.space` samples and decodes candidates (multipliers around a start, one common scale
  factor bisected onto the budget, rejections);
* :mod:`.evaluate` trains one candidate (shared by both backends);
* :mod:`.optuna_backend` (default) and :mod:`.ray_backend` run the trials;
* :mod:`.records` is the run directory's backend-independent trial format;
* :mod:`.finalize` retrains the winner and the baselines and exports them;
* :mod:`.run` ties it together (:func:`run_search`, :func:`run_worker`, :func:`export_run`).
"""

from __future__ import annotations

from ..rundir import CSV_FIELDS, STATES, TrialRecord, read_records, write_records
from .evaluate import Outcome, SearchSetup, train_candidate
from .run import (
    BACKENDS,
    SearchEvents,
    SearchResult,
    export_run,
    load_run,
    run_search,
    run_worker,
)
from .space import Candidate, CandidateSpace, widths_summary

__all__ = ["BACKENDS", "CSV_FIELDS", "STATES", "Candidate", "CandidateSpace", "Outcome",
           "SearchEvents", "SearchResult", "SearchSetup", "TrialRecord", "export_run",
           "load_run", "read_records", "run_search", "run_worker", "train_candidate",
           "widths_summary", "write_records"]
