"""Screening as a fidelity of the search: many candidates scored with shared weights, the best
few (and a few random ones) trained from scratch.

With ``search.screening.population`` > 0, before its trials a search

1. gets the network its candidates' weights come from (``search.screening.score``):
   ``shared`` trains the weight-sharing network (:func:`nas_prune.oneshot.train_shared`,
   sandwich rule, ``search.screening.epochs``) on its training split, or loads it from
   ``RUN/oneshot/shared.pt`` (a resumed search never trains it again; a checkpoint of another
   space or code version is refused, naming both); ``base`` takes the trained base network of
   the first seed method that has one (from ``RUN/bases``, where the proposal left it, or
   ``seed_method.base_checkpoint``: no training) and cuts each candidate from it with the
   channels that method's proposal ranked highest
   (:class:`nas_prune.oneshot.BaseNetCandidates`; filter L1 norms where no proposal scores are
   at hand);
2. draws ``population`` candidates from its own candidate space (a random start, random
   multipliers in ``[multiplier_low, multiplier_high]``, projected onto the budget; duplicates
   drawn again; under a latency budget on the space's predicted latency, never measured:
   each trial measures its candidate when it decodes it, as every latency trial does), or
   chooses them by aging evolution on the score (``strategy: evolution``, :func:`evolve`),
   and screens each (:func:`nas_prune.oneshot.screen`: BatchNorm recalibrated on
   fixed training batches, accuracy on a fixed validation subset);
3. enqueues the ``promote`` best by screening score and ``random_checks`` others drawn at random
   (so the rank correlation is not measured on the promoted top alone) as trials, after the
   seed and uniform trials; they go through the rungs and early stopping like any trial.

After the trials, :func:`correlation` gives Spearman and Kendall (with n) between the screening
score and each trial's validation accuracy at the top rung, over the screened trials that
completed it; ``search.json`` records it under ``screening``. Everything screened is in
``RUN/oneshot/screened.jsonl``.

**Cost**, in trainings of the base network (``train.epochs`` epochs at the base widths, by
FLOPs) and in trials (:func:`trial_base_trainings`: one search trial's epochs under the budget
rule and the rungs, each rung weighted by the share of trials successive halving is expected to
promote to it, :func:`rung_reach`): the weight-sharing training (``shared``: its recorded
``cost_base_trainings``, which :func:`nas_prune.oneshot.planned_sandwich_cost` predicts exactly
before training; ``base``: nothing) and the screening's forward passes
(:func:`nas_prune.oneshot.screening_cost`). ``nas-prune compare`` deducts both from the
``oneshot`` arm's trials (:func:`planned_cost`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._io import write_atomic, write_json
from ..budget import check_budget, uniform_widths
from ..errors import UserError
from ..oneshot import (
    FORWARD_PER_TRAINING_PASS,
    BaseNetCandidates,
    SharedNet,
    load_shared,
    planned_sandwich_cost,
    planned_screening_images,
    save_shared,
    screen,
    screening_cost,
    screening_data,
    train_shared,
)
from ..rundir import BASES
from ..scratch import data_for, resolve_space
from ..seeds import SEED_METHODS, SeedContext, get_method, parse_methods, trained_base
from ..surgery import filter_l1_scores
from ..train import budget_epochs, resolve_device
from ..widths import SearchSpace
from .fidelity import rung_step
from .space import MULT, START, UNIFORM, CandidateSpace

__all__ = ["COST_UNIT", "ONESHOT_DIR", "SHARED_PT", "ScreeningCost", "base_method",
           "check_base_score", "check_shared_checkpoint", "correlation", "draw", "evolve",
           "measured_base_trainings", "planned_cost", "rung_reach", "run_screening",
           "trial_base_trainings"]

ONESHOT_DIR = "oneshot"
SHARED_PT = "shared.pt"
SCREENED = "screened.jsonl"
_MAX_DRAWS = 20  # draws per wanted candidate before giving up on finding new ones
COST_UNIT = (f"trainings of the base network (train.epochs epochs at the base widths), by "
             f"FLOPs; a training step counted as {FORWARD_PER_TRAINING_PASS} forward passes")


# ---- what screening costs, against a trial -------------------------------------------------
def _trial_runs(space: SearchSpace, cfg: Any) -> tuple[int, list[tuple[int, int]]]:
    """(FLOPs, [(epochs, seeds) per rung]) of a trial's candidate: uniform scaling at the budget
    (under a FLOPs budget every candidate is at it), each rung's epochs under the budget rule
    and its seeds (one rung of ``train.epochs`` on one seed without rungs)."""
    sm, train = cfg.seed_method, cfg.train
    flops = check_budget(space, sm.budget, "flops") if sm.metric == "flops" else \
        space.cost(uniform_widths(space, sm.budget, sm.metric), "flops")
    runs = [(r.epochs, r.seeds) for r in cfg.search.rungs] or [(train.epochs, 1)]
    return flops, [(budget_epochs(dataclasses.replace(train, epochs=int(e)),
                                  base_flops=space.base_cost("flops"), flops=flops), int(n))
                   for e, n in runs]


def _trial_plan(space: SearchSpace, cfg: Any) -> tuple[int, int]:
    """(FLOPs, planned epochs) of a trial's candidate: every rung and its seeds
    (:func:`_trial_runs`)."""
    flops, runs = _trial_runs(space, cfg)
    return flops, sum(e * n for e, n in runs)


def rung_reach(cfg: Any) -> list[float]:
    """The expected fraction of a search trial that reaches each rung under the configured
    early stopping: with ``search.early_stopping: halving`` over rungs, Optuna's successive
    halving promotes the top ``1 / eta`` of the trials at a rung (``reduction_factor`` eta), so
    ``1 / eta ** k`` reach rung ``k``; otherwise (no rungs, or another rule, whose stops depend
    on the values) every rung, the full schedule."""
    s = cfg.search
    n = max(1, len(s.rungs))
    if s.rungs and s.early_stopping == "halving":
        return [1.0 / rung_step(k, s.reduction_factor) for k in range(n)]
    return [1.0] * n


def trial_base_trainings(space: SearchSpace, cfg: Any, *, full: bool = False) -> float:
    """One search trial's compute in trainings of the base network, by FLOPs: its epochs
    (Scratch-E or Scratch-B, every rung and seed) at its FLOPs (:func:`_trial_runs`), each rung
    weighted by the fraction of trials expected to reach it (:func:`rung_reach`; ``full``: the
    whole schedule). It is a plan, made before anything trains; ``nas-prune compare`` reports
    what each arm measured."""
    flops, runs = _trial_runs(space, cfg)
    reach = [1.0] * len(runs) if full else rung_reach(cfg)
    epochs = sum(e * n * f for (e, n), f in zip(runs, reach, strict=True))
    return epochs * flops / (space.base_cost("flops") * cfg.train.epochs)


def measured_base_trainings(records: Iterable[Any], *, base_flops: int,
                            base_epochs: int) -> float:
    """What trial records actually trained, in trainings of the base network by FLOPs: every
    measurement trained here (not one reused from an earlier trial, ``from_trial``), pruned and
    failed ones included, its ``epochs_run`` at the candidate's FLOPs over ``base_epochs``
    (``train.epochs``) at ``base_flops``. A record without measurements counts its ``epochs``
    (those it trained itself)."""
    total = 0.0
    for r in records:
        flops = getattr(r, "flops", None)
        ratio = flops / base_flops if flops else float(getattr(r, "flops_ratio", None) or 0.0)
        ms = getattr(r, "measurements", None) or []
        epochs = sum(int(m.get("epochs_run") or 0) for m in ms
                     if m.get("from_trial") is None) if ms else int(getattr(r, "epochs", 0) or 0)
        total += epochs * ratio / base_epochs
    return total


@dataclass(frozen=True)
class ScreeningCost:
    """Screening's compute beside a trial's, in trainings of the base network (by FLOPs)."""

    score: str  # shared | base
    trial: float  # one trial (:func:`trial_base_trainings`)
    network: float  # the weight-sharing training (0 for score: base)
    screening: float  # the screening's forward passes
    candidates: int  # screened

    @property
    def network_trials(self) -> float:
        return self.network / self.trial if self.trial > 0 else 0.0

    @property
    def screening_trials(self) -> float:
        return self.screening / self.trial if self.trial > 0 else 0.0

    @property
    def trials(self) -> float:
        """The whole of it, in trials."""
        return self.network_trials + self.screening_trials

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "unit": COST_UNIT, "candidates": self.candidates,
                "trial_base_trainings": round(self.trial, 6),
                "network_base_trainings": round(self.network, 6),
                "screening_base_trainings": round(self.screening, 6),
                "network_trials": round(self.network_trials, 4),
                "screening_trials": round(self.screening_trials, 4),
                "trials": round(self.trials, 4)}


def planned_cost(cfg: Any, space: SearchSpace, *, n_train: int, n_val: int) -> ScreeningCost:
    """What screening will cost a search of ``cfg``, before anything is trained: the
    weight-sharing training exactly as :func:`nas_prune.oneshot.train_shared` will record it,
    and ``population`` candidates screened at the FLOPs of a trial's candidate."""
    sc, train = cfg.search.screening, cfg.train
    flops, _ = _trial_plan(space, cfg)
    network = 0.0 if sc.score == "base" else planned_sandwich_cost(
        space, n_train=n_train, train=train, oneshot=sc, seed=cfg.random_seed)
    images = planned_screening_images(sc, n_train=n_train, n_val=n_val)
    screening = screening_cost(space, [flops] * sc.population, images=images, n_train=n_train,
                               base_epochs=train.epochs)
    return ScreeningCost(score=sc.score, trial=trial_base_trainings(space, cfg),
                         network=network, screening=screening, candidates=sc.population)


def draw(cspace: CandidateSpace, n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Up to ``n`` distinct candidates of the search's space: ``{"params", "widths"}`` each."""
    starts = list(cspace.starts)
    out: list[dict[str, Any]] = []
    seen: set[tuple[int, ...]] = set()
    for _ in range(n * _MAX_DRAWS):
        if len(out) >= n:
            break
        params: dict[str, Any] = {START: rng.choice(starts)}
        params.update({f"{MULT}{g}": rng.uniform(cspace.low, cspace.high)
                       for g in cspace.groups})
        c = cspace.decode_predicted(params)
        if c.widths is None:
            continue
        key = tuple(c.widths.values())
        if key not in seen:
            seen.add(key)
            out.append({"params": params, "widths": dict(c.widths)})
    return out


def _screening_space(cspace: CandidateSpace, say) -> tuple[CandidateSpace, dict | None]:
    """The candidate space screening draws from: ``cspace`` itself, or under a latency budget
    a copy whose target is corrected once by the uniform start's measured over predicted
    latency (as a trial's correction is, against the budget), so that a predictor biased one
    way does not put every screened candidate off the band the trials measure."""
    if cspace.metric != "latency":
        return cspace, None
    name = UNIFORM if UNIFORM in cspace.starts else next(iter(cspace.starts))
    start = cspace.starts[name]
    r, source = cspace.space.latency.measure_ratio(start)
    base = cspace.space.base_cost("latency")
    predicted = cspace.space.cost(start, "latency") / base
    view = copy.copy(cspace)
    view.target = max(1, int(round(cspace.target * predicted / r.value)))
    info = {"start": name, "predicted_ratio": round(predicted, 5),
            "measured_ratio": round(r.value, 5), "measured_from": source,
            "budget_ratio": round(cspace.target / base, 5),
            "screening_target_ratio": round(view.target / base, 5)}
    say(f"screening: the {name} start measured {r.value:.3f} of the base latency at "
        f"predicted {predicted:.3f}; candidates are drawn on predicted latency against "
        f"{view.target / base:.3f}")
    return view, info


def _mutate(params: Mapping[str, Any], cspace: CandidateSpace, rng: random.Random,
            rate: float) -> dict[str, Any]:
    """A copy of ``params`` with each gene (every group's multiplier, and the start where
    there are several) drawn again with probability ``rate``; at least one always is."""
    genes = ([START] if len(cspace.starts) > 1 else []) + [f"{MULT}{g}" for g in cspace.groups]
    chosen = [k for k in genes if rng.random() < rate] or [rng.choice(genes)]
    out = dict(params)
    for k in chosen:
        out[k] = rng.choice(list(cspace.starts)) if k == START \
            else rng.uniform(cspace.low, cspace.high)
    return out


def evolve(cspace: CandidateSpace, n: int, rng: random.Random,
           score: Callable[[Mapping[str, int]], float], *, size: int, tournament: int,
           mutation: float) -> list[dict[str, Any]]:
    """Up to ``n`` distinct candidates chosen by aging (regularized) evolution on ``score``
    (Real et al., 2019): the first ``size`` are random draws (:func:`draw`); after them each
    cycle draws ``tournament`` of the ``size`` youngest candidates, mutates the params of the
    best of them (:func:`_mutate`), projects the child onto the budget and scores it, and the
    oldest leaves the alive set. Each candidate is ``{"params", "widths", "score", "parent"}``
    (``parent``: the index of the candidate it mutates, None for a random draw)."""
    out = draw(cspace, min(size, n), rng)
    for c in out:
        c["score"], c["parent"] = float(score(c["widths"])), None
    seen = {tuple(c["widths"].values()) for c in out}
    alive = deque(range(len(out)))
    for _ in range(max(n - len(out), 0) * _MAX_DRAWS):
        if len(out) >= n or not alive:
            break
        entrants = rng.sample(list(alive), min(tournament, len(alive)))
        parent = max(entrants, key=lambda i: (out[i]["score"], -i))
        params = _mutate(out[parent]["params"], cspace, rng, mutation)
        c = cspace.decode_predicted(params)
        if c.widths is None or tuple(c.widths.values()) in seen:
            continue  # off the budget, or screened already: mutate again
        seen.add(tuple(c.widths.values()))
        out.append({"params": params, "widths": dict(c.widths),
                    "score": float(score(c.widths)), "parent": parent})
        alive.append(len(out) - 1)
        if len(alive) > size:
            alive.popleft()
    return out


def check_shared_checkpoint(cfg: Any, run_dir: str | Path) -> None:
    """Refuse, before anything is written, a run directory whose weight-sharing checkpoint
    belongs to another space or code version."""
    path = Path(run_dir) / ONESHOT_DIR / SHARED_PT
    if path.is_file():
        load_shared(resolve_space(cfg)[2], path)


def base_method(methods: Iterable[str]) -> str | None:
    """The seed method whose trained base network ``score: base`` cuts candidates from: the
    first one that trains a base network (None when only baselines are seeded)."""
    return next((m for m in methods if m != UNIFORM and SEED_METHODS[m].needs_base), None)


def check_base_score(cfg: Any, space: SearchSpace) -> None:
    """Refuse ``score: base`` where there is no base network to cut candidates from, or where
    the space reaches above it."""
    if cfg.search.screening.score != "base" or not cfg.search.screening.population:
        return
    methods = parse_methods(cfg.seed_method.name)
    if base_method(methods) is None:
        raise UserError(f"search.screening.score: base cuts candidates from a seed method's "
                        f"trained base network, and {', '.join(methods)} trains none; seed a "
                        f"method with a base network (l1norm, slimming, ...) or use "
                        f"search.screening.score: shared")
    wide = space.widened_groups()
    if wide:
        raise UserError(f"search.screening.score: base cuts candidates from the base network, "
                        f"and space {space.name} widens {', '.join(wide)} above it "
                        f"(max_multiplier); use search.screening.score: shared")


def _shared(setup: Any, data: Any, run_dir: Path, say) -> tuple[SharedNet, dict[str, Any]]:
    cfg = setup.cfg
    path = run_dir / ONESHOT_DIR / SHARED_PT
    if path.is_file():
        shared, record = load_shared(setup.space, path)
        say(f"screening: weight-sharing network loaded from {path} (not trained again)")
        return shared.to(data.device), {**record, "loaded": True}
    say(f"screening: training the weight-sharing network ({cfg.search.screening.epochs} "
        f"epoch(s), sandwich rule)")
    shared = SharedNet(setup.space, seed=cfg.random_seed)
    record = train_shared(shared, data, cfg.train, cfg.search.screening, seed=cfg.random_seed)
    save_shared(shared, path, record)
    say(f"screening: weight-sharing network trained in {record['wall_time']:.0f} s "
        f"({record['cost_base_trainings']:.2f} trainings of the base network)")
    return shared, {**record, "loaded": False}


def _base(setup: Any, data: Any, run_dir: Path, importance: Mapping[str, Any] | None, say
          ) -> tuple[BaseNetCandidates, dict[str, Any]]:
    """Candidates cut from the first seed method's trained base network (from the cache its
    proposal filled, or its checkpoint), channels by its proposal's scores, else L1 norms."""
    cfg, sm = setup.cfg, setup.cfg.seed_method
    name = base_method(setup.methods)
    if name is None:
        raise UserError("search.screening.score: base needs a seed method with a base network; "
                        "use search.screening.score: shared")
    method = get_method(name, sm.options.get(name))
    ctx = SeedContext(space=setup.space, data=data, train=cfg.train, device=data.device,
                      seed=cfg.random_seed, samples=sm.samples, metric=sm.metric)
    t0 = time.perf_counter()
    model, source, train_s, info = trained_base(method, ctx, epochs=sm.base_epochs,
                                                checkpoint=sm.base_checkpoint,
                                                cache_dir=run_dir / BASES, data_cfg=cfg.data)
    scores = (importance or {}).get(name)
    if scores is not None and all(g in scores and scores[g].numel() == w
                                  for g, w in setup.space.base_widths().items()):
        order = f"{name} importance (its proposal's channel scores)"
    else:
        scores, order = filter_l1_scores(model, setup.space.family), "L1 norm of each filter"
    cost = sm.base_epochs / cfg.train.epochs if source == "trained" else 0.0
    record = {"method": name, "source": source, "order": order,
              "base_val_acc": info.get("val_acc"), "train_s": round(train_s, 2),
              "load_s": round(time.perf_counter() - t0 - train_s, 2),
              "cost_base_trainings": cost}
    how = f"trained now, {train_s:.0f} s" if source == "trained" else f"{source}, no training"
    say(f"screening: candidates cut from {name}'s base network ({how}), channels by {order}")
    return BaseNetCandidates(setup.space, model, scores), record


def run_screening(setup: Any, run_dir: str | Path, *, say=lambda _m: None,
                  importance: Mapping[str, Mapping[str, torch.Tensor]] | None = None
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Screen the population and choose the trials to enqueue; see the module docstring.

    ``importance``: the seed proposals' channel scores by method (``score: base`` orders the
    base network's channels by them; without them, by filter L1 norms).
    Returns (the chosen: ``params``, ``widths``, ``score``, ``pick`` = top | random each, in
    that order) and the summary for ``search.json``.
    """
    cfg = setup.cfg
    sc = cfg.search.screening
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    data = data_for(cfg.data, device, setup.space.spec(setup.space.base_widths()))
    if sc.score == "base":
        source, record = _base(setup, data, run_dir, importance, say)
        network_cost = record["cost_base_trainings"]
    else:
        shared, record = _shared(setup, data, run_dir, say)
        shared.model.eval()
        source, network_cost = shared, float(record.get("cost_base_trainings") or 0.0)
    rng = random.Random(cfg.random_seed)
    t0 = time.perf_counter()
    sdata = screening_data(data, sc, seed=cfg.random_seed)
    cspace, latency_info = _screening_space(setup.cspace, say)
    with torch.no_grad():
        if sc.strategy == "evolution":
            pop = evolve(cspace, sc.population, rng,
                         lambda w: screen(source.extract(w), sdata), size=sc.evolution_size,
                         tournament=sc.tournament, mutation=sc.mutation)
        else:
            pop = draw(cspace, sc.population, rng)
            for c in pop:
                c["score"] = screen(source.extract(c["widths"]), sdata)
    if not pop:
        raise UserError("search.screening.population: no candidate of the space lands on the "
                        "budget; widen search.multiplier_low/high or search.tolerance")
    seconds = time.perf_counter() - t0
    order = sorted(range(len(pop)), key=lambda i: (-pop[i]["score"], i))
    top = order[: sc.promote]
    # the random checks come from the random draws (under evolution: its first ones), so that
    # the correlation is also measured on candidates the score did not choose
    rest = [i for i in order[sc.promote:] if pop[i].get("parent") is None]
    checks = rng.sample(rest, min(sc.random_checks, len(rest)))
    chosen = [{**pop[i], "pick": "top"} for i in top] + \
        [{**pop[i], "pick": "random"} for i in checks]
    picks = {i: "top" for i in top} | {i: "random" for i in checks}
    lines = [json.dumps({"widths": c["widths"], "params": c["params"], "score": c["score"],
                         "pick": picks.get(i), "parent": c.get("parent")})
             for i, c in enumerate(pop)]
    write_atomic(run_dir / ONESHOT_DIR / SCREENED, "\n".join(lines) + "\n")
    scores = [c["score"] for c in pop]
    cost = ScreeningCost(
        score=sc.score, trial=trial_base_trainings(setup.space, cfg), network=network_cost,
        screening=screening_cost(setup.space, [setup.space.cost(c["widths"], "flops")
                                               for c in pop],
                                 images=sdata.images, n_train=len(data.train),
                                 base_epochs=cfg.train.epochs),
        candidates=len(pop))
    summary = {"score": sc.score, "strategy": sc.strategy, "population": sc.population,
               "screened": len(pop),
               "promoted": len(top), "random_checks": len(checks),
               "screen_seconds": round(seconds, 2),
               "score_range": [min(scores), max(scores)], "cost": cost.to_dict(),
               "settings": {k: getattr(sc, k) for k in ("recal_batches", "recal_batch_size",
                                                        "val_images")}}
    if latency_info is not None:
        summary["latency"] = latency_info
    if sc.strategy == "evolution":
        first = [c["score"] for c in pop if c.get("parent") is None]
        summary["evolution"] = {
            "size": sc.evolution_size, "tournament": sc.tournament, "mutation": sc.mutation,
            "random_draws": len(first), "mutations": len(pop) - len(first),
            "best_score_random_draws": max(first), "best_score": max(scores)}
    if sc.score == "base":
        summary["base_network"] = record
    else:
        summary["shared_training"] = {k: record.get(k) for k in
                                      ("epochs", "steps", "wall_time", "cost_base_trainings",
                                       "loaded", "train_loss")}
    write_json(run_dir / ONESHOT_DIR / "screening.json", summary)
    how = f"{sc.score}, evolution" if sc.strategy == "evolution" else sc.score
    say(f"screening ({how}): {len(pop)} candidates screened in {seconds:.0f} s (scores "
        f"{min(scores):.3f}-{max(scores):.3f}); {len(top)} promoted, {len(checks)} random "
        f"checks; cost {cost.trials:.2f} trials ({cost.network_trials:.2f} "
        f"{'weight-sharing training' if sc.score == 'shared' else 'base network'}, "
        f"{cost.screening_trials:.2f} screening)")
    return chosen, summary


def correlation(screened: Iterable[Mapping[str, Any]], records: Iterable[Any]
                ) -> dict[str, Any]:
    """Spearman and Kendall (tau-b, ties handled) between the screening score and the
    top-rung validation accuracy, over the screened candidates whose trial completed; also per
    pick (top, random), with n each. Correlations need n >= 3 and some spread, else None."""
    from scipy.stats import kendalltau, spearmanr

    by_widths = {json.dumps(dict(c["widths"]), sort_keys=True): c for c in screened}
    pairs: list[tuple[float, float, str]] = []
    for r in sorted(records, key=lambda r: r.number):  # the first trial of a screened vector
        if getattr(r, "state", None) != "COMPLETE" or r.val_acc is None or not r.widths \
                or getattr(r, "role", "search") != "search":  # not a seed or uniform baseline
            continue
        c = by_widths.pop(json.dumps(dict(r.widths), sort_keys=True), None)
        if c is not None:
            pairs.append((float(c["score"]), float(r.val_acc), str(c.get("pick"))))

    def corr(ps: list[tuple[float, float, str]]) -> dict[str, Any]:
        xs, ys = [p[0] for p in ps], [p[1] for p in ps]
        ok = len(ps) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1
        return {"n": len(ps),
                "spearman": float(spearmanr(xs, ys).statistic) if ok else None,
                "kendall": float(kendalltau(xs, ys).statistic) if ok else None}

    out = corr(pairs)
    # picks with no completed trial of their widths: pruned or failed trials, and under a
    # latency budget picks the trial's measurement moved off the widths screened
    out["picks_without_a_completed_trial"] = sum(1 for c in by_widths.values()
                                                 if c.get("pick") in ("top", "random"))
    out["by_pick"] = {k: corr([p for p in pairs if p[2] == k]) for k in ("top", "random")}
    out["pairs"] = [{"score": p[0], "val_acc": p[1], "pick": p[2]} for p in pairs]
    return out
