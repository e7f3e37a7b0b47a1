"""The search: widths around seed proposals, projected onto the budget, trained from scratch.

* :mod:`.space` samples and decodes candidates (multipliers around a start, one common scale
  factor bisected onto the budget, rejections);
* :mod:`.evaluate` trains one candidate (shared by every backend);
* :mod:`._backend` is the backend interface (:class:`SearchBackend`, :class:`SearchEvents`),
  :mod:`.backends` the registry (:data:`BACKENDS`) of :mod:`.optuna_backend` (default) and
  :mod:`.ray_backend`; :mod:`.samplers` the samplers and early-stopping rules by name;
* :mod:`.finalize` retrains the winner and the baselines and exports them;
* :mod:`.run` ties it together (:func:`run_search`, :func:`export_run`, :func:`load_run`);
  :func:`run_worker` joins an Optuna study from another process.

The run directory's trial format is :mod:`nas_prune.rundir`'s.

The package is also callable: ``nas_prune.search(...)`` is the Python API's search
(:func:`nas_prune.api.search`, imported when called, as the API is the layer above).
"""

from __future__ import annotations

import importlib
import sys
import types

from ..rundir import CSV_FIELDS, STATES, TrialRecord, read_records, write_records
from ._backend import Location, SearchBackend, SearchEvents
from .backends import BACKENDS, get_backend
from .evaluate import Outcome, SearchSetup, train_candidate
from .optuna_backend import OptunaBackend, run_worker
from .ray_backend import RayBackend
from .run import SearchResult, export_run, load_run, run_search
from .samplers import EARLY_STOPPING, SAMPLERS
from .space import Candidate, CandidateSpace, widths_summary

__all__ = ["BACKENDS", "CSV_FIELDS", "EARLY_STOPPING", "SAMPLERS", "STATES", "Candidate",
           "CandidateSpace", "Location", "OptunaBackend", "Outcome", "RayBackend",
           "SearchBackend", "SearchEvents", "SearchResult", "SearchSetup", "TrialRecord",
           "export_run", "get_backend", "load_run", "read_records", "run_search", "run_worker",
           "train_candidate", "widths_summary", "write_records"]

_API = "nas_prune.api"  # a layer above: imported at call time (tests/test_import_layers.py)


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        """``nas_prune.search(...)``: :func:`nas_prune.api.search`."""
        return importlib.import_module(_API).search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
