"""Samplers and early-stopping rules by name: the registries behind ``search.sampler`` and
``search.early_stopping`` (and the CLI's ``--sampler`` / ``--early-stopping`` choices).

* :data:`SAMPLERS`: name -> factory of an Optuna sampler (both backends sample with one; Ray Tune
  through ``OptunaSearch``). ``tpe`` (seeded, random start-up trials after the baselines),
  ``cmaes`` (needs the ``cmaes`` package; single objective only), ``random``, ``nsga2``. With
  ``objective: multi`` the default ``tpe`` means NSGA-II (:func:`effective_sampler`).
* :data:`EARLY_STOPPING`: name -> factory of the Optuna backend's rule (an Optuna pruner):
  ``median`` (MedianPruner: the baselines form the first reference curves; no trial is judged
  before the warm-up epochs), ``halving`` (SuccessiveHalvingPruner with explicit
  ``min_resource`` and ``reduction_factor``), ``hyperband`` (HyperbandPruner), ``none``. With
  ``search.rungs`` they act between rungs of complete schedules (a rung's value reported at step
  ``reduction_factor ** k``); without, between epochs of one schedule. The Ray backend
  maps the same names to Ray Tune schedulers (:data:`nas_prune.search.ray_backend.SCHEDULERS`).
  Multi-objective searches are never stopped early (Optuna cannot report two objectives per
  epoch).

A factory takes keyword arguments only; an unknown name is a one-line error listing the valid
ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from ..config import SEARCH_EARLY_STOPPING, SEARCH_SAMPLERS
from ..errors import UserError

SamplerFactory = Callable[..., optuna.samplers.BaseSampler]
RuleFactory = Callable[..., optuna.pruners.BasePruner]


def _population(n_trials: int) -> int:
    """NSGA-II population: at least 4, at most Optuna's default 50, about 3 generations."""
    return max(4, min(50, n_trials // 3))


def _nsga2(*, seed: int, objective: str, n_trials: int, n_baselines: int):
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=_population(n_trials))


def _tpe(*, seed: int, objective: str, n_trials: int, n_baselines: int):
    if objective == "multi":
        return _nsga2(seed=seed, objective=objective, n_trials=n_trials, n_baselines=n_baselines)
    # Random start-up trials after the baselines; Optuna's default of 10 would leave short
    # searches (the quick-start's 8 trials) without any model-based proposal.
    startup = max(n_baselines + 1, min(10, n_trials // 2))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _cmaes(*, seed: int, objective: str, n_trials: int, n_baselines: int):
    if objective == "multi":
        raise UserError("search.sampler: cmaes cannot optimise two objectives; use nsga2, tpe "
                        "(which then means nsga2) or random")
    try:
        import cmaes  # noqa: F401
    except ImportError:
        raise UserError("search.sampler: cmaes needs the cmaes package; pip install cmaes or "
                        "choose tpe") from None
    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_baselines,
                                        warn_independent_sampling=False)


def _random(*, seed: int, objective: str, n_trials: int, n_baselines: int):
    return optuna.samplers.RandomSampler(seed=seed)


# Rule factories: ``n_rungs`` > 0 for a multi-fidelity search (a trial reports its rung ``k`` at
# step ``reduction_factor ** k``, see nas_prune.search.fidelity), 0 for per-epoch reports.
def _median(*, n_baselines: int, warmup_epochs: int, n_rungs: int = 0,
            reduction_factor: int = 3):
    return optuna.pruners.MedianPruner(n_startup_trials=max(1, n_baselines),
                                       n_warmup_steps=0 if n_rungs else max(0, warmup_epochs))


def _halving(*, n_baselines: int, warmup_epochs: int, n_rungs: int = 0,
             reduction_factor: int = 3):
    # explicit resources: rung k at step eta ** k; per epoch, nothing judged before the warm-up
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1 if n_rungs else max(1, warmup_epochs),
        reduction_factor=reduction_factor, min_early_stopping_rate=0)


def _hyperband(*, n_baselines: int, warmup_epochs: int, n_rungs: int = 0,
               reduction_factor: int = 3):
    return optuna.pruners.HyperbandPruner(
        min_resource=1 if n_rungs else max(1, warmup_epochs),
        max_resource=reduction_factor ** (n_rungs - 1) if n_rungs else "auto",
        reduction_factor=reduction_factor)


def _none(*, n_baselines: int, warmup_epochs: int, n_rungs: int = 0, reduction_factor: int = 3):
    return optuna.pruners.NopPruner()


def _register(table: dict[str, Any], name: str, factory: Any, listed: tuple[str, ...]) -> None:
    if name in table:
        raise ValueError(f"{name!r} registered twice")
    if name not in listed:  # the config accepts only the names it lists
        raise ValueError(f"{name!r} is not listed in nas_prune.config ({', '.join(listed)}); "
                         f"add it there")
    table[name] = factory


SAMPLERS: dict[str, SamplerFactory] = {}
EARLY_STOPPING: dict[str, RuleFactory] = {}
for _name, _factory in (("tpe", _tpe), ("cmaes", _cmaes), ("random", _random),
                        ("nsga2", _nsga2)):
    _register(SAMPLERS, _name, _factory, SEARCH_SAMPLERS)
for _name, _factory in (("median", _median), ("halving", _halving),
                        ("hyperband", _hyperband), ("none", _none)):
    _register(EARLY_STOPPING, _name, _factory, SEARCH_EARLY_STOPPING)


def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        raise UserError(f"search.sampler: {name!r}; choose one of {', '.join(SAMPLERS)}")


def check_early_stopping(name: str, known: Any = None) -> None:
    """``name`` must be a rule of ``known`` (default :data:`EARLY_STOPPING`)."""
    known = EARLY_STOPPING if known is None else known
    if name not in known:
        raise UserError(f"search.early_stopping: {name!r}; choose one of {', '.join(known)}")


def make_sampler(name: str, *, seed: int, objective: str, n_trials: int,
                 n_baselines: int) -> optuna.samplers.BaseSampler:
    check_sampler(name)
    return SAMPLERS[name](seed=seed, objective=objective, n_trials=n_trials,
                          n_baselines=n_baselines)


def effective_sampler(name: str, objective: str) -> str:
    """The sampler that actually runs (recorded in search.json)."""
    return "nsga2" if objective == "multi" and name == "tpe" else name


def make_early_stopping(name: str, *, objective: str, n_baselines: int,
                        warmup_epochs: int = 0, n_rungs: int = 0,
                        reduction_factor: int = 3) -> optuna.pruners.BasePruner:
    """The Optuna backend's early-stopping rule. ``warmup_epochs``: per-epoch rules judge no
    trial before this many epochs (a from-scratch run's first epochs are too noisy to rank).
    ``n_rungs``: a multi-fidelity search's rungs, reported at steps ``reduction_factor ** k``."""
    check_early_stopping(name)
    if objective == "multi":
        name = "none"
    return EARLY_STOPPING[name](n_baselines=n_baselines, warmup_epochs=warmup_epochs,
                                n_rungs=n_rungs, reduction_factor=reduction_factor)


def effective_early_stopping(name: str, objective: str) -> str:
    """The rule that actually runs (recorded in search.json)."""
    return "none" if objective == "multi" else name


__all__ = ["EARLY_STOPPING", "SAMPLERS", "check_early_stopping", "check_sampler",
           "effective_early_stopping", "effective_sampler", "make_early_stopping",
           "make_sampler"]
