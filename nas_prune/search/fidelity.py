"""Multi-fidelity search: rungs of complete schedules, and how well each rung ranks.

A truncated long schedule is a poor fidelity: the first epochs of a cosine run are taken at a
high learning rate and say little about where it ends. So a rung here is a *complete* schedule:
``epochs`` base epochs (scaled by the budget rule as every candidate is) trained to the end of
its own learning-rate schedule, measured ``seeds`` times (repeated measures; the rung's value is
the mean validation accuracy over its seeds). Rungs go from cheap to expensive; the last rung's
value is the trial's objective.

A trial trains rung 0, reports its value at step ``eta ** 0`` and asks the early-stopping rule
whether to go on; then rung 1 (a fresh training from scratch, not a continuation) at step
``eta ** 1``, and so on. With ``search.early_stopping: halving`` that rule is Optuna's
``SuccessiveHalvingPruner(min_resource=1, reduction_factor=eta)`` (asynchronous successive
halving: a trial goes on when it is in the top ``1 / eta`` of the trials that reached its rung),
with ``hyperband`` Optuna's ``HyperbandPruner`` over the same steps, with ``none`` every trial
trains every rung, which is how to *measure* a rung before trusting it: :func:`rank_correlations`
gives, for each rung, the Spearman and Kendall correlation of its value with the top rung's over
the trials that have both (with n).

Every measurement is keyed by (rung, seed): a trial whose width vector was already measured at a
rung and seed (a sampler's duplicate, or another worker's) reuses that value instead of training
again (:func:`known_results`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import check_rungs  # the config's rule for search.rungs; re-exported

__all__ = ["Rung", "RungsOutcome", "check_rungs", "curve_correlations", "fidelity_summary",
           "known_results", "rank_correlations", "rung_step", "train_rungs"]


@dataclass(frozen=True)
class Rung:
    """One fidelity: a complete schedule of ``epochs`` base epochs, over ``seeds`` seeds."""

    epochs: int
    seeds: int = 1

    def to_dict(self) -> dict[str, int]:
        return {"epochs": self.epochs, "seeds": self.seeds}


def rung_step(k: int, reduction_factor: int) -> int:
    """The step (Optuna's resource) rung ``k`` reports its value at: ``eta ** k``."""
    return reduction_factor ** k


def _key(widths: Mapping[str, int]) -> str:
    return json.dumps(dict(widths), sort_keys=True)


def known_results(widths: Mapping[str, int], trials: Iterable[Mapping[str, Any]]
                  ) -> dict[tuple[int, int], dict[str, Any]]:
    """Measurements of ``widths`` that earlier trials already made, keyed by (rung, seed).

    ``trials``: each with ``widths``, ``measurements`` (a list of dicts with ``rung``, ``seed``,
    ``epochs``, ``val_acc``, ``val_curve``, ``status``) and ``number``. Only finished measurements
    (status ``ok``) count; a failed one is trained again.
    """
    key = _key(widths)
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for t in trials:
        if not t.get("widths") or _key(t["widths"]) != key:
            continue
        for m in t.get("measurements") or []:
            if m.get("status") == "ok" and m.get("val_acc") is not None:
                out.setdefault((int(m["rung"]), int(m["seed"])),
                               {**m, "from_trial": t.get("number")})
    return out


def rank_correlations(trials: Iterable[Mapping[str, Any]], n_rungs: int
                      ) -> list[dict[str, Any]]:
    """For each rung below the top: Spearman and Kendall correlation of its value with the top
    rung's, over the trials that measured both (``rung_values``: a list, one value per rung
    reached). Correlations need n >= 3 distinct pairs; otherwise they are None."""
    from scipy.stats import kendalltau, spearmanr

    rows = [list(t.get("rung_values") or []) for t in trials]
    out = []
    for k in range(n_rungs - 1):
        pairs = [(v[k], v[n_rungs - 1]) for v in rows if len(v) >= n_rungs
                 and v[k] is not None and v[n_rungs - 1] is not None]
        rho = tau = None
        if len(pairs) >= 3 and len({p[0] for p in pairs}) > 1 and len({p[1] for p in pairs}) > 1:
            xs, ys = zip(*pairs, strict=True)
            rho = float(spearmanr(xs, ys).statistic)
            tau = float(kendalltau(xs, ys).statistic)
        out.append({"rung": k, "vs_rung": n_rungs - 1, "n": len(pairs), "spearman": rho,
                    "kendall": tau})
    return out


def curve_correlations(curves: Iterable[Sequence[float]]) -> list[dict[str, Any]]:
    """For a single-fidelity search: how well epoch ``e`` of a (truncated) schedule ranks the
    trials that ran to the end, as Spearman/Kendall of ``curve[e]`` with ``curve[-1]`` over the
    complete curves of the most common length (the rule early stopping relies on)."""
    from collections import Counter

    curves = [list(c) for c in curves if c]
    if not curves:
        return []
    length = Counter(len(c) for c in curves).most_common(1)[0][0]
    full = [c for c in curves if len(c) == length]
    values = [{"rung_values": [c[e] for e in range(length)]} for c in full]
    out = rank_correlations(values, length)
    for row in out:
        row["epoch"] = row.pop("rung") + 1
        row["vs_epoch"] = row.pop("vs_rung") + 1
    return out


@dataclass
class RungsOutcome:
    """What training a candidate through the rungs gave: one value per rung reached (the mean
    validation accuracy over the rung's seeds) and every measurement behind them."""

    state: str = "FAIL"  # COMPLETE | PRUNED | FAIL
    rung_values: list[float] = field(default_factory=list)
    measurements: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    wall_time: float = 0.0

    @property
    def val_acc(self) -> float | None:
        return self.rung_values[-1] if self.rung_values else None

    @property
    def trained(self) -> int:
        """Measurements trained here (not reused from an earlier trial)."""
        return sum(1 for m in self.measurements if m.get("from_trial") is None)


def train_rungs(rungs: Sequence[Rung], seeds_of: Callable[[Rung], list[int]],
                measure: Callable[[int, Rung, int], dict[str, Any]], *,
                known: Mapping[tuple[int, int], dict[str, Any]] | None = None,
                on_rung: Callable[[int, float], bool] | None = None) -> RungsOutcome:
    """Go up the rungs: at rung ``k`` measure every seed of ``seeds_of(rung)`` (reusing
    ``known[(k, seed)]`` where an earlier trial measured it), report the mean to ``on_rung(k,
    value) -> stop`` and stop early (``PRUNED``) when it says so, below the top rung.

    ``measure(k, rung, seed)`` trains one complete schedule and returns a measurement dict with at
    least ``status`` (``ok`` or the failure) and ``val_acc``; a failed measurement fails the
    trial with its reason.
    """
    t0 = time.perf_counter()
    out = RungsOutcome()
    known = known or {}
    for k, rung in enumerate(rungs):
        values = []
        for seed in seeds_of(rung):
            m = known.get((k, seed))
            if m is None:
                m = {**measure(k, rung, seed), "rung": k, "seed": seed}
            out.measurements.append(m)
            if m.get("status") != "ok" or m.get("val_acc") is None \
                    or not math.isfinite(float(m["val_acc"])):
                out.reason = f"rung {k}, seed {seed}: {m.get('reason') or m.get('status')}"
                out.wall_time = time.perf_counter() - t0
                return out
            values.append(float(m["val_acc"]))
        out.rung_values.append(sum(values) / len(values))
        if k + 1 < len(rungs) and on_rung is not None and on_rung(k, out.rung_values[-1]):
            out.state = "PRUNED"
            out.reason = f"early stopping after rung {k} of {len(rungs)}"
            break
    else:
        out.state = "COMPLETE"
    out.wall_time = time.perf_counter() - t0
    return out


def fidelity_summary(rungs: Sequence[Rung], reduction_factor: int,
                     records: Iterable[Any]) -> dict[str, Any]:
    """What a run's fidelities were and how well each ranked (for RUN/search.json and the
    report): per rung, how many trials reached it, and the rank correlations with the top rung
    over the trials that reached the top (with successive halving those are the promoted ones,
    a sample cut off at the bottom: correlations there understate how well a rung ranks all
    candidates); for a single fidelity, each epoch of the schedule against its end."""
    records = list(records)
    if rungs:
        reached = [sum(1 for r in records if len(r.rung_values or []) > k)
                   for k in range(len(rungs))]
        values = [{"rung_values": list(r.rung_values)} for r in records if r.rung_values]
        return {"mode": "rungs", "rungs": [r.to_dict() for r in rungs],
                "reduction_factor": reduction_factor, "reached": reached,
                "correlations": rank_correlations(values, len(rungs))}
    curves = [r.val_curve for r in records if r.state == "COMPLETE" and r.val_curve]
    return {"mode": "epochs", "correlations": curve_correlations(curves)}
