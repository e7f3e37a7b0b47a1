"""Screening as a fidelity of the search: many candidates scored with shared weights, the best
few (and a few random ones) trained from scratch.

With ``search.screening.population`` > 0, before its trials a search

1. trains the weight-sharing network (:func:`nas_prune.oneshot.train_shared`, sandwich rule,
   ``search.screening.epochs``) on its training split, or loads it from ``RUN/oneshot/shared.pt``
   (a resumed search never trains it again; a checkpoint of another space or code version is
   refused, naming both);
2. draws ``population`` candidates from its own candidate space (a random start, random
   multipliers in ``[multiplier_low, multiplier_high]``, projected onto the budget; duplicates
   drawn again) and screens each (:func:`nas_prune.oneshot.screen`: BatchNorm recalibrated on
   fixed training batches, accuracy on a fixed validation subset);
3. enqueues the ``promote`` best by screening score and ``random_checks`` others drawn at random
   (so the rank correlation is not measured on the promoted top alone) as trials, after the
   seed and uniform trials; they go through the rungs and early stopping like any trial.

After the trials, :func:`correlation` gives Spearman and Kendall (with n) between the screening
score and each trial's validation accuracy at the top rung, over the screened trials that
completed it; ``search.json`` records it under ``screening``. Everything screened is in
``RUN/oneshot/screened.jsonl``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .._io import write_atomic, write_json
from ..errors import UserError
from ..oneshot import SharedNet, load_shared, save_shared, screen, screening_data, train_shared
from ..scratch import data_for, resolve_space
from ..train import resolve_device
from .space import MULT, START, CandidateSpace

__all__ = ["ONESHOT_DIR", "SHARED_PT", "check_shared_checkpoint", "correlation", "draw",
           "run_screening"]

ONESHOT_DIR = "oneshot"
SHARED_PT = "shared.pt"
SCREENED = "screened.jsonl"
_MAX_DRAWS = 20  # draws per wanted candidate before giving up on finding new ones


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
        c = cspace.decode(params)
        if c.widths is None:
            continue
        key = tuple(c.widths.values())
        if key not in seen:
            seen.add(key)
            out.append({"params": params, "widths": dict(c.widths)})
    return out


def check_shared_checkpoint(cfg: Any, run_dir: str | Path) -> None:
    """Refuse, before anything is written, a run directory whose weight-sharing checkpoint
    belongs to another space or code version."""
    path = Path(run_dir) / ONESHOT_DIR / SHARED_PT
    if path.is_file():
        load_shared(resolve_space(cfg)[2], path)


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


def run_screening(setup: Any, run_dir: str | Path, *, say=lambda _m: None
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Screen the population and choose the trials to enqueue; see the module docstring.

    Returns (the chosen: ``params``, ``widths``, ``score``, ``pick`` = top | random each, in
    that order) and the summary for ``search.json``.
    """
    cfg = setup.cfg
    sc = cfg.search.screening
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    data = data_for(cfg.data, device, setup.space.spec(setup.space.base_widths()))
    shared, record = _shared(setup, data, run_dir, say)
    shared.model.eval()
    rng = random.Random(cfg.random_seed)
    t0 = time.perf_counter()
    pop = draw(setup.cspace, sc.population, rng)
    if not pop:
        raise UserError("search.screening.population: no candidate of the space lands on the "
                        "budget; widen search.multiplier_low/high or search.tolerance")
    sdata = screening_data(data, sc, seed=cfg.random_seed)
    with torch.no_grad():
        for c in pop:
            c["score"] = screen(shared.extract(c["widths"]), sdata)
    seconds = time.perf_counter() - t0
    order = sorted(range(len(pop)), key=lambda i: (-pop[i]["score"], i))
    top = order[: sc.promote]
    rest = order[sc.promote:]
    checks = rng.sample(rest, min(sc.random_checks, len(rest)))
    chosen = [{**pop[i], "pick": "top"} for i in top] + \
        [{**pop[i], "pick": "random"} for i in checks]
    picks = {i: "top" for i in top} | {i: "random" for i in checks}
    lines = [json.dumps({"widths": c["widths"], "params": c["params"], "score": c["score"],
                         "pick": picks.get(i)}) for i, c in enumerate(pop)]
    write_atomic(run_dir / ONESHOT_DIR / SCREENED, "\n".join(lines) + "\n")
    scores = [c["score"] for c in pop]
    summary = {"population": sc.population, "screened": len(pop), "promoted": len(top),
               "random_checks": len(checks), "screen_seconds": round(seconds, 2),
               "score_range": [min(scores), max(scores)],
               "shared_training": {k: record.get(k) for k in
                                   ("epochs", "steps", "wall_time", "cost_base_trainings",
                                    "loaded", "train_loss")},
               "settings": {k: getattr(sc, k) for k in ("recal_batches", "recal_batch_size",
                                                        "val_images")}}
    write_json(run_dir / ONESHOT_DIR / "screening.json", summary)
    say(f"screening: {len(pop)} candidates screened in {seconds:.0f} s (scores "
        f"{min(scores):.3f}-{max(scores):.3f}); {len(top)} promoted, {len(checks)} random "
        f"checks")
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
    out["by_pick"] = {k: corr([p for p in pairs if p[2] == k]) for k in ("top", "random")}
    out["pairs"] = [{"score": p[0], "val_acc": p[1], "pick": p[2]} for p in pairs]
    return out
