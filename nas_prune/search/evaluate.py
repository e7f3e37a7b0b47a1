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
from ..config import Config, from_dict, to_dict
from ..errors import UserError
from ..families import Widths
from ..train import budget_epochs, resolve_device
from ..widths import ArchSpec, SearchSpace
from .space import Candidate, CandidateSpace

SETUP_FORMAT = 1


@dataclass
class SearchSetup:
    """The resolved config, the candidate space and the seed methods of one search."""

    cfg: Config
    cspace: CandidateSpace
    methods: list[str]

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
        return {"format": SETUP_FORMAT, "config": to_dict(self.cfg),
                "candidate_space": self.cspace.to_dict(), "methods": list(self.methods)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, device: str | None = None) -> SearchSetup:
        if data.get("format") != SETUP_FORMAT:
            raise UserError(f"search setup format {data.get('format')!r}: this nas-prune reads "
                            f"format {SETUP_FORMAT}; use the version that wrote the run")
        cfg_data = dict(data["config"])
        if device is not None:
            cfg_data["device"] = device
        return cls(cfg=from_dict(Config, cfg_data), methods=list(data["methods"]),
                   cspace=CandidateSpace.from_dict(data["candidate_space"]))

    def spec(self, widths: Mapping[str, int], **provenance: Any) -> ArchSpec:
        """The architecture of a width vector, carrying the base FLOPs Scratch-B needs."""
        return self.space.spec(widths, provenance={"base_flops": self.base_flops,
                                                   "budget": self.cfg.seed_method.budget,
                                                   "budget_metric": self.cspace.metric,
                                                   **provenance})

    def epochs_for(self, widths: Mapping[str, int], base_epochs: int | None = None) -> int:
        """Training epochs of a candidate under the budget rule (see the module docstring)."""
        tc = self.cfg.train if base_epochs is None else \
            dataclasses.replace(self.cfg.train, epochs=int(base_epochs))
        flops = self.space.count(widths)[0]
        if self.cspace.objective == "single" and self.cspace.metric == "flops":
            flops = self.cspace.target  # every candidate is at the budget: equal epochs
        return budget_epochs(tc, base_flops=self.base_flops, flops=flops)

    def warmup_epochs(self) -> int:
        """Half the epochs of a candidate at the budget: the median early-stopping rule judges
        no trial before that (a from-scratch run's first epochs are too noisy to rank)."""
        return self.epochs_for(next(iter(self.cspace.starts.values()))) // 2

    def cost_attrs(self, widths: Mapping[str, int]) -> dict[str, Any]:
        flops, params = self.space.count(widths)
        cost = flops if self.cspace.metric == "flops" else params
        return {"widths": dict(widths), "flops": flops, "params": params,
                "flops_ratio": flops / self.base_flops, "cost_ratio": cost / self.base_cost}


@dataclass
class Outcome:
    """What training a candidate gave."""

    state: str  # COMPLETE | PRUNED | FAIL
    val_curve: list[float] = field(default_factory=list)
    epochs: int = 0
    epochs_planned: int = 0
    wall_time: float = 0.0
    reason: str = ""

    @property
    def val_acc(self) -> float | None:
        return self.val_curve[-1] if self.val_curve else None

    @property
    def best_val_acc(self) -> float | None:
        return max(self.val_curve) if self.val_curve else None

    def attrs(self) -> dict[str, Any]:
        return {"val_acc": self.val_acc, "best_val_acc": self.best_val_acc,
                "val_curve": list(self.val_curve), "epochs": self.epochs,
                "epochs_planned": self.epochs_planned, "wall_time": round(self.wall_time, 3),
                "reason": self.reason}


def worker_name() -> str:
    """host:pid of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def candidate_attrs(cand: Candidate, setup: SearchSetup) -> dict[str, Any]:
    """The attributes known before training (user attributes of an Optuna trial)."""
    out: dict[str, Any] = {"role": cand.role, "seed_method": cand.seed_method,
                           "scale": cand.scale, "worker": worker_name()}
    if cand.widths is not None:
        out.update(setup.cost_attrs(cand.widths))
    else:
        out["reason"] = cand.reason
    return out


def train_candidate(widths: Widths, setup: SearchSetup, *, role: str = "search",
                    seed_method: str | None = None,
                    on_epoch: Callable[[int, float], bool] | None = None) -> Outcome:
    """Train ``widths`` from scratch under the run's config; never raises for a failed trial."""
    cfg = setup.cfg
    t0 = time.perf_counter()
    out = Outcome(state="FAIL")
    try:
        device = resolve_device(cfg.device)
        spec = setup.spec(widths, seed_method=seed_method, role=role)
        out.epochs_planned = setup.epochs_for(widths)

        def hook(epoch: int, acc: float, loss: float) -> bool:
            out.val_curve.append(float(acc))
            out.epochs = epoch + 1
            if on_epoch is None:
                return False
            stop = bool(on_epoch(epoch, float(acc)))
            return stop and epoch + 1 < out.epochs_planned  # the last epoch always completes

        result, _ = scratch.train_spec(spec, cfg, epochs=out.epochs_planned, exact_epochs=True,
                                       device=device, seed=cfg.random_seed, on_epoch=hook)
        out.epochs = result.epochs_run
        if result.status == "diverged":
            out.reason = f"diverged: {result.reason}"
        elif result.status == "stopped":
            out.state = "PRUNED"
            out.reason = (f"early stopping after epoch {result.epochs_run} of "
                          f"{out.epochs_planned}")
        elif out.val_acc is None or not math.isfinite(out.val_acc):
            out.reason = "no validation accuracy (empty validation split?)"
        else:
            out.state = "COMPLETE"
    except torch.OutOfMemoryError as exc:
        out.reason = f"out of memory: {_first_line(exc)}"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as exc:  # any failure is a failed trial, never a failed search
        out.reason = f"{type(exc).__name__}: {_first_line(exc)}"
    out.wall_time = time.perf_counter() - t0
    return out


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:limit]
