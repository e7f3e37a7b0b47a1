"""The search-backend interface: what runs the trials of a search and reads them back.

A backend owns where a search's trials live (an Optuna study, a Ray Tune experiment) and how they
run; everything else (seed proposals, the candidate space, the final retraining, the run
directory's other files) is :mod:`nas_prune.search.run`'s. Lifecycle, as called by
:func:`~nas_prune.search.run_search`:

1. ``check(cfg)``: first of all, before any base network trains or a seed method proposes; every
   backend-specific setting is validated here (one-line :class:`UserError` naming the key);
2. ``location(cfg, run_dir)``: where this search's trials live, in words and as the
   ``study_name``/``storage`` entries of ``RUN/search.json``;
3. ``stored(cfg, run_dir)``: the setup this run directory's study or experiment was started with,
   or ``None`` when there is none yet (the search then proposes and starts one);
4. ``run(setup, run_dir, resume=..., events=...)``: create (``resume=False``) or continue
   (``resume=True``, ``stored`` found one) the study or experiment and run its trials until the
   config's ``n_trials`` / ``timeout``; returns every trial's record.

``nas-prune export`` and ``report`` call only ``load(run_dir, info, storage=...)``, which never
trains. Backends are registered in :data:`nas_prune.search.backends.BACKENDS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config import Config
from ..rundir import TrialRecord
from ..seeds import ProposalRun
from .evaluate import SearchSetup


class SearchEvents:
    """What a search reports while it runs. The CLI overrides these to print; no-ops here."""

    def message(self, text: str) -> None:
        """A line of progress (resuming, waiting, the dashboard URL...)."""

    def proposal(self, name: str, run: ProposalRun, cost_ratio: float) -> None:
        """A seed method (or uniform) proposed ``run.proposal.widths``."""

    def trial(self, record: TrialRecord) -> None:
        """A trial of this process finished (any state)."""

    def final(self, name: str, seed: int, run: dict[str, Any]) -> None:
        """One final retraining run finished (``run`` has test_acc, val_acc, status...)."""


@dataclass(frozen=True)
class Location:
    """Where a search's trials live."""

    label: str  # in words, for messages: "study 'run' in sqlite:///..." (no password)
    study_name: str | None = None
    storage: str | None = None  # the full URL; search.json records it with the password masked


def mask_url(url: str | None) -> str | None:
    """A storage URL without its password (search.json must not hold credentials)."""
    if not url or "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


class SearchBackend(ABC):
    """One way of running a search's trials; see the module docstring for the call order."""

    name: ClassVar[str]
    #: config keys (dotted) that ``--resume`` may change in general but this backend cannot
    #: continue with when they change -> why, and the fix (the error message's tail)
    fixed_on_resume: ClassVar[dict[str, str]] = {}
    #: whether trials run in this process; False: a ``train.function`` given in Python must be
    #: importable by its path, as the trial processes import it
    in_process: ClassVar[bool] = True

    @abstractmethod
    def check(self, cfg: Config) -> None:
        """Validate the backend's settings of ``cfg``; called before anything trains."""

    @abstractmethod
    def location(self, cfg: Config, run_dir: Path) -> Location:
        """Where the trials of a search with ``cfg`` in ``run_dir`` live (creates nothing)."""

    @abstractmethod
    def stored(self, cfg: Config, run_dir: Path) -> SearchSetup | None:
        """The setup of the study or experiment the run directory already holds, else None.

        Raises :class:`UserError` when its records cannot be read, or when ``cfg`` changes
        something this backend cannot continue with.
        """

    @abstractmethod
    def run(self, setup: SearchSetup, run_dir: Path, *, resume: bool,
            events: SearchEvents) -> list[TrialRecord]:
        """Start (or, with ``resume``, continue) the study or experiment and run its trials;
        returns the records of every trial it holds. Rewrites RUN/trials.csv/.jsonl as trials
        finish and reports each trial of this process to ``events.trial``."""

    @abstractmethod
    def load(self, run_dir: Path, info: dict[str, Any], *, storage: str | None = None
             ) -> tuple[SearchSetup, list[TrialRecord], str]:
        """(setup, records, where they were read from in words) of a finished or interrupted
        search; ``info`` is its RUN/search.json, ``storage`` a URL given by the user. Never
        trains; unreadable records are a :class:`UserError` naming what could not be read."""
