"""Evaluating one candidate, the same way for every backend.

A candidate's widths become an :class:`~nas_prune.widths.ArchSpec`, which is trained from scratch
with :func:`nas_prune.scratch.train_spec` under the run's config and scored on the validation
split after every epoch.

Epochs follow the config's budget rule (:func:`nas_prune.train.budget_epochs`; Scratch-B by
default: base epochs x base FLOPs / candidate FLOPs, rounded to the nearest epoch, at least the
base epochs and capped at ``train.max_budget_scale``, 2x by default). When the budget is on FLOPs
and the objective is single, every candidate meets the budget (within the tolerance, or a seed
method's 1%), so all of them get the Scratch-B epochs *of the target FLOPs*: with few base epochs
the rounding would otherwise turn a 1% FLOPs difference into a whole epoch (3 base epochs at a
0.55 budget: 0.545 of the FLOPs trains 6 epochs, 0.551 trains 5) and bias the ranking.
Multi-objective candidates and params budgets use each candidate's own FLOPs.

``on_epoch(epoch, val_acc) -> stop`` lets a backend's early-stopping rule end a weak run (state
``PRUNED``). Any failure (a diverged loss, CUDA out of memory, any exception) becomes state
``FAIL`` with its reason instead of an exception, so the search goes on.

Every trial is initialised and shuffled with the run's ``random_seed``: candidates are compared
under common random numbers, which lowers the noise of their differences.

:class:`SearchSetup` is everything a trial needs, as plain data: the resolved config and the
candidate space. It travels in an Optuna study's user attributes (for ``nas-prune worker``) and
in a Ray trial's config.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import scratch
from .._callables import first_line
from ..config import Config, from_dict, to_dict
from ..errors import UserError
from ..families import Widths
from ..seeding import search_seeds
from ..train import budget_epochs, resolve_device
from ..widths import ArchSpec, SearchSpace
from .fidelity import Rung, train_rungs
from .space import Candidate, CandidateSpace

SETUP_FORMAT = 1


@dataclass
class SearchSetup:
    """The resolved config, the candidate space and the seed methods of one search."""

    cfg: Config
    cspace: CandidateSpace
    methods: list[str]
    # one-shot screening's chosen candidates (params, widths, score, pick), enqueued as trials
    # after the seed and uniform ones (nas_prune.search.screening)
    screened: list[dict[str, Any]] = field(default_factory=list)

    @property
    def space(self) -> SearchSpace:
        return self.cspace.space

    @property
    def base_flops(self) -> int:
        return self.space.base_cost("flops")

    @property
    def base_params(self) -> int:
        return self.space.base_cost("params")

    @property
    def base_cost(self) -> int:
        return self.space.base_cost(self.cspace.metric)

    def to_dict(self) -> dict[str, Any]:
        out = {"format": SETUP_FORMAT, "config": to_dict(self.cfg),
               "candidate_space": self.cspace.to_dict(), "methods": list(self.methods)}
        if self.screened:
            out["screened"] = [dict(c) for c in self.screened]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, device: str | None = None) -> SearchSetup:
        if data.get("format") != SETUP_FORMAT:
            raise UserError(f"search setup format {data.get('format')!r}: this nas-prune reads "
                            f"format {SETUP_FORMAT}; use the version that wrote the run")
        cfg_data = dict(data["config"])
        if device is not None:
            cfg_data["device"] = device
        return cls(cfg=from_dict(Config, cfg_data), methods=list(data["methods"]),
                   cspace=CandidateSpace.from_dict(data["candidate_space"]),
                   screened=[dict(c) for c in data.get("screened") or []])

    def spec(self, widths: Mapping[str, int], **provenance: Any) -> ArchSpec:
        """The architecture of a width vector, carrying the base FLOPs Scratch-B needs."""
        latency = {"latency_device": self.space.latency.info} \
            if self.cspace.metric == "latency" else {}
        return self.space.spec(widths, provenance={"base_flops": self.base_flops,
                                                   "budget": self.cfg.seed_method.budget,
                                                   "budget_metric": self.cspace.metric,
                                                   **latency, **provenance})

    def epochs_for(self, widths: Mapping[str, int], base_epochs: int | None = None) -> int:
        """Training epochs of a candidate under the budget rule (see the module docstring)."""
        tc = self.cfg.train if base_epochs is None else \
            dataclasses.replace(self.cfg.train, epochs=int(base_epochs))
        flops = self.space.count(widths)[0]
        if self.cspace.objective == "single" and self.cspace.metric == "flops":
            flops = self.cspace.target  # every candidate is at the budget: equal epochs
        return budget_epochs(tc, base_flops=self.base_flops, flops=flops)

    def rungs(self) -> list[Rung]:
        """The fidelity rungs (``search.rungs``); empty for a single-fidelity search."""
        return [Rung(epochs=r.epochs, seeds=r.seeds) for r in self.cfg.search.rungs]

    def warmup_epochs(self) -> int:
        """Half the epochs of a candidate at the budget: the median early-stopping rule judges
        no trial before that (a from-scratch run's first epochs are too noisy to rank)."""
        return self.epochs_for(next(iter(self.cspace.starts.values()))) // 2

    def cost_attrs(self, widths: Mapping[str, int], latency: Any = None) -> dict[str, Any]:
        """Widths, FLOPs, params and the cost ratio in the budget metric. With the latency
        metric the cost ratio is measured against the base network, interleaved (``latency``,
        a :class:`~nas_prune.latency.Ratio`, else measured now); the network's own latency and
        its interquartile range are recorded beside it."""
        flops, params = self.space.count(widths)
        out = {"widths": dict(widths), "flops": flops, "params": params,
               "flops_ratio": flops / self.base_flops}
        metric = self.cspace.metric
        if metric == "latency":
            r = latency if latency is not None else self.space.latency.measure_ratio(widths)[0]
            m = r.candidate
            out.update({"latency_ms": round(m.median_ns / 1e6, 5),
                        "latency_iqr_ms": round((m.q75_ns - m.q25_ns) / 1e6, 5),
                        "cost_ratio": r.value, "latency_ratio_low": round(r.low, 5),
                        "latency_ratio_high": round(r.high, 5)})
            return out
        out["cost_ratio"] = (flops if metric == "flops" else params) / self.base_cost
        return out


@dataclass
class Outcome:
    """What training a candidate gave.

    ``val_acc`` is the last epoch's validation accuracy of a single-fidelity trial, or the top
    rung's value (the mean over its seeds) of a multi-fidelity one. ``epochs`` counts the epochs
    this process trained (reused measurements cost none); ``measurements`` holds every training
    behind the value, keyed by (rung, seed), so a duplicate width vector can reuse them.
    """

    state: str  # COMPLETE | PRUNED | FAIL
    val_curve: list[float] = field(default_factory=list)
    epochs: int = 0
    epochs_planned: int = 0
    wall_time: float = 0.0
    reason: str = ""
    rung_values: list[float] = field(default_factory=list)
    measurements: list[dict[str, Any]] = field(default_factory=list)

    @property
    def val_acc(self) -> float | None:
        if self.rung_values:
            return self.rung_values[-1]
        return self.val_curve[-1] if self.val_curve else None

    @property
    def best_val_acc(self) -> float | None:
        if self.rung_values:
            return max(self.rung_values)
        return max(self.val_curve) if self.val_curve else None

    @property
    def reused_from(self) -> list[int]:
        return sorted({int(m["from_trial"]) for m in self.measurements
                       if m.get("from_trial") is not None})

    def attrs(self) -> dict[str, Any]:
        return {"val_acc": self.val_acc, "best_val_acc": self.best_val_acc,
                "val_curve": list(self.val_curve), "epochs": self.epochs,
                "epochs_planned": self.epochs_planned, "wall_time": round(self.wall_time, 3),
                "reason": self.reason, "rung_values": list(self.rung_values),
                "measurements": list(self.measurements), "reused_from": self.reused_from}


def worker_name() -> str:
    """host:pid of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def candidate_attrs(cand: Candidate, setup: SearchSetup) -> dict[str, Any]:
    """The attributes known before training (user attributes of an Optuna trial)."""
    out: dict[str, Any] = {"role": cand.role, "seed_method": cand.seed_method,
                           "scale": cand.scale, "worker": worker_name()}
    if cand.widths is not None:
        out.update(setup.cost_attrs(cand.widths, cand.latency))
    else:
        out["reason"] = cand.reason
    return out


def train_candidate(widths: Widths, setup: SearchSetup, *, role: str = "search",
                    seed_method: str | None = None,
                    on_epoch: Callable[[int, float], bool] | None = None,
                    on_rung: Callable[[int, float], bool] | None = None,
                    known: Mapping[tuple[int, int], dict[str, Any]] | None = None) -> Outcome:
    """Train ``widths`` from scratch under the run's config; never raises for a failed trial.

    Single fidelity (no ``search.rungs``): one run of the candidate's epochs on the search seed,
    ``on_epoch(epoch, val_acc) -> stop`` after each epoch. Multi-fidelity: the rungs of
    :mod:`nas_prune.search.fidelity`, ``on_rung(rung, value) -> stop`` after each rung.
    ``known``: measurements of these widths that earlier trials made, keyed by (rung, seed)
    (:func:`nas_prune.search.fidelity.known_results`); they are reused, not trained again.
    """
    t0 = time.perf_counter()
    out = Outcome(state="FAIL")
    known = known or {}
    try:
        spec = setup.spec(widths, seed_method=seed_method, role=role)
        rungs = setup.rungs()
        if rungs:
            _train_rungs(spec, widths, setup, rungs, out, on_rung, known)
        else:
            _train_single(spec, widths, setup, out, on_epoch, known)
    except torch.OutOfMemoryError as exc:
        out.state, out.reason = "FAIL", f"out of memory: {first_line(exc)}"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as exc:  # any failure is a failed trial, never a failed search
        out.state, out.reason = "FAIL", f"{type(exc).__name__}: {first_line(exc)}"
    out.wall_time = time.perf_counter() - t0
    return out


def _measure(spec: ArchSpec, setup: SearchSetup, *, epochs: int, seed: int,
             on_epoch: Callable[[int, float], bool] | None = None) -> dict[str, Any]:
    """One complete (or early-stopped) training on one seed: a measurement dict."""
    def hook(epoch: int, acc: float, loss: float) -> bool:
        if on_epoch is None:
            return False
        return bool(on_epoch(epoch, float(acc))) and epoch + 1 < epochs  # last one completes

    t0 = time.perf_counter()
    result, _ = scratch.train_spec(spec, setup.cfg, epochs=epochs, exact_epochs=True,
                                   device=resolve_device(setup.cfg.device), seed=seed,
                                   on_epoch=hook)
    # the result's curve: the same values the hook saw, or a user function's returned value
    curve = [float(a) for a in result.val_acc]
    status = "ok"
    if result.status == "diverged":
        status = f"diverged: {result.reason}"
    elif result.status == "stopped":
        status = "stopped"
    elif not curve or not math.isfinite(curve[-1]):
        status = "no validation accuracy (empty validation split?)"
    return {"seed": seed, "epochs": epochs, "epochs_run": result.epochs_run,
            "val_acc": curve[-1] if curve else None, "val_curve": curve, "status": status,
            "wall_time": round(time.perf_counter() - t0, 3)}


def _train_single(spec: ArchSpec, widths: Widths, setup: SearchSetup, out: Outcome,
                  on_epoch: Callable[[int, float], bool] | None,
                  known: Mapping[tuple[int, int], dict[str, Any]]) -> None:
    seed = search_seeds(setup.cfg)[0]
    out.epochs_planned = setup.epochs_for(widths)
    m = known.get((0, seed))
    if m is None or int(m.get("epochs", -1)) != out.epochs_planned:
        m = {**_measure(spec, setup, epochs=out.epochs_planned, seed=seed, on_epoch=on_epoch),
             "rung": 0}
        out.epochs = int(m["epochs_run"])
    out.measurements = [m]
    out.val_curve = list(m["val_curve"])
    if m["status"] == "ok":
        out.state = "COMPLETE"
    elif m["status"] == "stopped":
        out.state = "PRUNED"
        out.reason = f"early stopping after epoch {m['epochs_run']} of {out.epochs_planned}"
    else:
        out.reason = m["status"]


def _train_rungs(spec: ArchSpec, widths: Widths, setup: SearchSetup, rungs: list[Rung],
                 out: Outcome, on_rung: Callable[[int, float], bool] | None,
                 known: Mapping[tuple[int, int], dict[str, Any]]) -> None:
    epochs = [setup.epochs_for(widths, base_epochs=r.epochs) for r in rungs]
    out.epochs_planned = sum(e * r.seeds for e, r in zip(epochs, rungs, strict=True))
    usable = {k: m for k, m in known.items() if int(m.get("epochs", -1)) == epochs[k[0]]}
    res = train_rungs(rungs, lambda r: search_seeds(setup.cfg, r.seeds),
                      lambda k, r, seed: _measure(spec, setup, epochs=epochs[k], seed=seed),
                      known=usable, on_rung=on_rung)
    out.state, out.reason = res.state, res.reason
    out.rung_values, out.measurements = res.rung_values, res.measurements
    out.epochs = sum(int(m.get("epochs_run") or 0) for m in res.measurements
                     if m.get("from_trial") is None)
    done = [m for m in res.measurements if m.get("val_curve")]
    out.val_curve = list(done[-1]["val_curve"]) if done else []

