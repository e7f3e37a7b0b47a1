"""Controls and ablations in one call: does searching around the seeds beat its own controls?

For each budget, :func:`run_compare` runs the same search (same trials, rungs, early stopping,
training recipe) in several *arms*, each in its own run directory ``RUN/b<budget>/<arm>``:

* ``seeds``: the search around the seed proposals and uniform (what ``nas-prune search`` does);
* ``uniform``: the same search around uniform scaling only (no seed method at all);
* ``random``: random search (Optuna's ``RandomSampler``) on the same space as ``seeds``;
* ``flops`` (under a latency or params budget): the ``seeds`` search under a FLOPs budget of the
  same ratio, to show what a FLOPs search would have shipped; its winner's measured latency
  says how far FLOPs and the device part ways.
* ``oneshot``: the ``seeds`` search with one-shot screening (:mod:`nas_prune.search.screening`):
  ``search.screening.population`` candidates (:data:`ONESHOT_POPULATION` when the config has
  none) screened (with a weight-sharing network, or cut from a seed method's base network:
  ``search.screening.score``), the best and a few random ones trained as its trials. It runs
  at equal compute (:func:`oneshot_config`): the weight-sharing training and the screening,
  in trials (:func:`nas_prune.search.screening.planned_cost`), are deducted from its
  ``search.n_trials``.

The ``oneshot`` arm's cut is a plan, made before it runs, in **trials**: one search trial is a
candidate's training at the budget (its epochs under the budget rule, every rung and seed, at its
FLOPs), each rung weighted by the share of trials expected to reach it under the configured early
stopping (:func:`nas_prune.search.screening.trial_base_trainings`); every arm runs
``search.n_trials`` trials, and the ``oneshot`` arm that many less what its screening costs,
rounded up. What each arm actually spent is *measured* after it ran, in trainings of the base
network by FLOPs (:func:`_compute`): every training its trials ran (pruned and failed ones
included, reused measurements not) at its candidate's FLOPs, plus the ``oneshot`` arm's
weight-sharing training and screening; when the ``oneshot`` arm spent more than the other arms'
mean by over one of their average trials, compare says so (:func:`compute_note`).

Then one joint final evaluation: every arm's winner, each seed proposal and uniform are retrained
on the same evaluation seeds (:func:`nas_prune.search.finalize.final_seeds`, disjoint from every
search seed) and scored on the test split; equal width vectors train once. ``compare.json`` keeps
every run; ``compare.md`` has, per budget, the rows (mean ± sample std, n), the compute each arm
spent (trainings and epochs actually trained, wall time), each row's FLOPs and params beside
its cost (under a latency budget each row measured afresh, interleaved with the base network, and
whether it meets the budget) and the paired differences with 95%
t-intervals and verdicts of each arm's winner against each seed proposal, uniform and the other
arms; ``compare.png`` plots the rows with their per-seed dots.

Arms run one after the other in this process; the seed methods' base networks are trained once
(the ``seeds`` arm's cache is copied to the ``random``, ``flops`` and ``oneshot`` arms). ``resume=True`` continues every arm
and reuses finished final runs.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._io import write_atomic, write_json
from .._meta import code_version, hardware, now
from ..config import Config, save_config, to_dict
from ..errors import UserError
from ..rundir import BASES, completed, read_json
from ..scratch import data_for, resolve_space
from ..seeding import SEED_RULE, final_seeds
from ..seeds import parse_methods
from ..stats import fmt_mean_std, paired_difference
from ..train import resolve_device
from .finalize import choose_best, retrain
from .run import check_inputs, check_search_config
from .screening import (
    ONESHOT_DIR,
    SHARED_PT,
    ScreeningCost,
    measured_base_trainings,
    planned_cost,
)
from .space import UNIFORM

__all__ = ["ARMS", "COMPARE_JSON", "compute_note", "oneshot_config", "oneshot_trials",
           "run_compare"]

ARMS = ("seeds", "uniform", "random", "flops", "oneshot")
DEFAULT_ARMS = ("seeds", "uniform", "random")
ONESHOT_POPULATION = 1000  # the oneshot arm's population when search.screening has none
COMPARE_JSON = "compare.json"
METRIC_WORDS = {"flops": "FLOPs", "params": "params", "latency": "latency"}


def parse_budgets(text: str | float | Sequence[float]) -> list[float]:
    """``"0.5,0.25"`` -> [0.5, 0.25]; each in (0, 1)."""
    if isinstance(text, (int, float)):
        values = [float(text)]
    elif isinstance(text, str):
        try:
            values = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--budget: {text!r}; give ratios like 0.5 or 0.5,0.25,0.1") from None
    else:
        values = [float(x) for x in text]
    if not values or any(not 0 < v < 1 for v in values):
        raise UserError(f"--budget: {text!r}; every budget must be a ratio in (0, 1)")
    return values


def parse_arms(text: str | Sequence[str] | None, metric: str = "flops") -> list[str]:
    """The arms to run; None: the default ones, and ``flops`` too under a latency or params
    budget."""
    if text is None:
        return list(DEFAULT_ARMS) + (["flops"] if metric != "flops" else [])
    arms = [a.strip() for a in (text.split(",") if isinstance(text, str) else text) if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if not arms or bad:
        raise UserError(f"--arms: {', '.join(bad) or 'none'}; choose from {', '.join(ARMS)}")
    if arms == ["flops"] and metric != "flops":
        raise UserError("--arms: flops alone has no row held to the budget; add seeds, uniform "
                        "or random beside it")
    if "flops" in arms and metric == "flops":
        raise UserError("--arms: flops is the seeds search under a FLOPs budget, which the "
                        "seeds arm already is under --metric flops; use it with --metric "
                        "latency or params")
    return list(dict.fromkeys(arms))


def arm_config(cfg: Config, arm: str, budget: float) -> Config:
    """The config of one arm: the user's, with this budget and the arm's starts/sampler."""
    sm = dataclasses.replace(cfg.seed_method, budget=budget)
    search = cfg.search
    if arm == "uniform":
        sm = dataclasses.replace(sm, name=UNIFORM)
    elif arm == "random":
        search = dataclasses.replace(search, sampler="random")
    elif arm == "flops":
        sm = dataclasses.replace(sm, metric="flops")
    elif arm == "oneshot":
        sc = search.screening
        search = dataclasses.replace(search, screening=dataclasses.replace(
            sc, population=sc.population or ONESHOT_POPULATION))
    if arm != "oneshot":  # screening is the oneshot arm's alone
        search = dataclasses.replace(search, screening=dataclasses.replace(search.screening,
                                                                           population=0))
    # each arm's own final table is replaced by the joint one
    return dataclasses.replace(cfg, seed_method=sm, search=search)


def oneshot_trials(n_trials: int, cost: ScreeningCost, *, n_base: int, promote: int,
                   random_checks: int, epochs: int) -> int:
    """The oneshot arm's from-scratch trials at the compute of ``n_trials`` trials: less what
    its screening costs in trials, rounded up (a plan: a trial is priced at its expected cost,
    :func:`nas_prune.search.screening.trial_base_trainings`; what each arm spent is measured
    afterwards). Fewer than its seed/uniform trials plus the promoted and random
    screened ones is a one-line error naming the settings and the numbers."""
    left = n_trials - math.ceil(cost.trials - 1e-9)
    need = n_base + promote + random_checks
    if cost.score == "shared" and cost.network_trials >= n_trials:
        raise UserError(f"search.n_trials: the oneshot arm's weight-sharing training "
                        f"(search.screening.epochs: {epochs}) costs {cost.network_trials:.2f} "
                        f"trials, more than the {n_trials} trials of each arm; raise "
                        f"search.n_trials or lower search.screening.epochs")
    if left < need:
        network = f"weight-sharing training (search.screening.epochs: {epochs}, " \
            f"{cost.network_trials:.2f} trials) and " if cost.score == "shared" else ""
        raise UserError(f"search.n_trials: {n_trials} trials per arm leave the oneshot arm "
                        f"{max(left, 0)} from-scratch trials after its {network}screening "
                        f"({cost.candidates} candidates, {cost.screening_trials:.2f} trials), "
                        f"fewer than the {need} it needs ({n_base} seed/uniform, {promote} "
                        f"promoted, {random_checks} random); raise search.n_trials or lower "
                        f"search.screening.promote"
                        f"{', .epochs' if cost.score == 'shared' else ''} or .population")
    return left


def oneshot_config(acfg: Config) -> tuple[Config, ScreeningCost]:
    """The oneshot arm's config at planned equal compute (``search.n_trials`` less its
    screening's cost in trials, :func:`oneshot_trials`) and that planned cost; nothing is
    trained."""
    _, _, space = resolve_space(acfg)
    data = data_for(acfg.data, resolve_device(acfg.device), space.spec(space.base_widths()))
    cost = planned_cost(acfg, space, n_train=len(data.train), n_val=len(data.val))
    s, sc = acfg.search, acfg.search.screening
    n_base = len({m for m in parse_methods(acfg.seed_method.name) if m != UNIFORM}) + 1
    n = oneshot_trials(s.n_trials, cost, n_base=n_base, promote=sc.promote,
                       random_checks=sc.random_checks, epochs=sc.epochs)
    return dataclasses.replace(acfg, search=dataclasses.replace(s, n_trials=n)), cost


def _budget_dir(run_dir: Path, budget: float) -> Path:
    return run_dir / f"b{budget:g}"


def _compute(records, arm_dir: Path | None = None, setup: Any = None) -> dict[str, Any]:
    """What an arm spent, measured: trials, trainings and epochs actually trained (a record's
    ``epochs`` counts only its own trainings, not measurements reused from a duplicate), wall
    time, and its compute in trainings of the base network by FLOPs (``base_trainings``): its
    trials' trainings as run (:func:`nas_prune.search.screening.measured_base_trainings`), plus
    with screening the weight-sharing training and the screening, as
    ``RUN/oneshot/screening.json`` records them; ``wall_s`` then counts the weight-sharing
    training (or a base network trained for ``score: base``) and the screening too
    (``trials_wall_s``: the trials alone)."""
    trials = measured_base_trainings(records, base_flops=setup.base_flops,
                                     base_epochs=setup.cfg.train.epochs) if setup else None
    out: dict[str, Any] = {
        "trials": len(records), "complete": len(completed(records)),
        "trainings": sum(1 for r in records for m in r.measurements
                         if m.get("from_trial") is None),
        "epochs_trained": sum(int(r.epochs or 0) for r in records),
        "wall_s": round(sum(float(r.wall_time or 0) for r in records), 1),
        "trials_base_trainings": None if trials is None else round(trials, 6),
        "base_trainings": None if trials is None else round(trials, 6)}
    screening = read_json(arm_dir / ONESHOT_DIR / "screening.json") if arm_dir else None
    if screening:
        score = screening.get("score", "shared")
        shared = screening.get("shared_training") or {}
        cost = screening.get("cost") or {}
        # what the screening's network cost (0 for score: base) and took to train
        if score == "shared":
            network = float(shared.get("cost_base_trainings") or 0.0)
            network_s = float(shared.get("wall_time") or 0.0)
        else:
            network = 0.0
            network_s = float((screening.get("base_network") or {}).get("train_s") or 0.0)
        scr = float(cost.get("screening_base_trainings") or 0.0)
        out["screening"] = {"score": score,
                            "screened": screening.get("screened"),
                            "screen_s": screening.get("screen_seconds"),
                            "shared_base_trainings": shared.get("cost_base_trainings"),
                            "shared_train_s": shared.get("wall_time"),
                            "network_base_trainings": round(network, 6),
                            "screening_base_trainings": round(scr, 6),
                            "trial_base_trainings": cost.get("trial_base_trainings")}
        if trials is not None:
            out["base_trainings"] = round(trials + network + scr, 6)
        # the arm's wall time: its trials, plus the network's training and the screening
        out["trials_wall_s"] = out["wall_s"]
        out["wall_s"] = round(out["wall_s"] + network_s
                              + float(screening.get("screen_seconds") or 0.0), 1)
    return out


def compute_note(arms: dict[str, dict[str, Any]]) -> str | None:
    """A warning when the oneshot arm's measured compute exceeds the mean of the other arms' by
    more than their average trial (their compute over their trials); None otherwise."""
    one = (arms.get("oneshot") or {}).get("compute") or {}
    others = [a["compute"] for name, a in arms.items() if name != "oneshot"
              and a["compute"].get("base_trainings") is not None]
    if one.get("base_trainings") is None or not others:
        return None
    mean = sum(c["base_trainings"] for c in others) / len(others)
    n = sum(c["trials"] for c in others)
    trial = sum(c["base_trainings"] for c in others) / n if n else 0.0
    if one["base_trainings"] - mean <= trial:
        return None
    return (f"the oneshot arm spent {one['base_trainings']:.2f} trainings of the base network, "
            f"{one['base_trainings'] - mean:.2f} more than the other arms' mean "
            f"({mean:.2f}; their average trial: {trial:.3f}); its cut was a plan at each "
            f"trial's expected cost, and the arms are not at equal compute")


def run_compare(cfg: Config, *, budgets: Sequence[float], arms: Sequence[str],
                run_dir: str | Path, resume: bool = False, command: str = "",
                search: Callable[..., Any], events=None,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every arm at every budget, then the joint final evaluation; see the module docstring.

    ``search(cfg, run_dir=..., resume=..., command=..., events=..., final=False)`` runs one
    search without its own final table (:func:`nas_prune.search.run_search`).
    """
    say = log or (lambda _m: None)
    run_dir = Path(run_dir)
    if resume and not (run_dir / COMPARE_JSON).is_file() and not run_dir.is_dir():
        raise UserError(f"--resume: {run_dir} does not exist; check --run-dir")
    acfgs: dict[tuple[float, str], Config] = {}
    plans: dict[float, ScreeningCost] = {}
    for budget in budgets:  # every arm's settings, before anything is written or trained
        for arm in arms:
            acfg = arm_config(cfg, arm, budget)
            check_search_config(acfg)
            check_inputs(acfg)
            if arm == "oneshot":
                acfg, cost = oneshot_config(acfg)
                plans[budget] = cost
                say(f"budget {budget:g}, arm oneshot: {acfg.search.n_trials} trials of "
                    f"{cfg.search.n_trials}; its screening costs {cost.trials:.2f} trials "
                    f"({cost.network_trials:.2f} network, {cost.screening_trials:.2f} "
                    f"screening), a trial planned at {cost.trial:.3f} trainings of the base "
                    f"network (its expected cost)")
            acfgs[budget, arm] = acfg
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    t0 = time.perf_counter()
    out: dict[str, Any] = {"command": command, "started": now(), "config": to_dict(cfg),
                           "budgets": list(budgets), "arms": list(arms),
                           "seed_rule": SEED_RULE,
                           "hardware": hardware(resolve_device(cfg.device)),
                           "versions": code_version(), "results": []}
    shared_pt: Path | None = None  # the first budget's weight-sharing network
    for budget in budgets:
        bdir = _budget_dir(run_dir, budget)
        results: dict[str, Any] = {}
        for arm in arms:
            arm_dir = bdir / arm
            acfg = acfgs[budget, arm]
            if arm in ("random", "flops", "oneshot") and (bdir / "seeds" / BASES).is_dir() and \
                    not (arm_dir / BASES).is_dir():
                shutil.copytree(bdir / "seeds" / BASES, arm_dir / BASES)
            shared = arm_dir / ONESHOT_DIR / SHARED_PT
            if arm == "oneshot" and shared_pt is not None and not shared.is_file():
                # the weight-sharing network depends on the space, not the budget: trained
                # once, it is still charged to every budget's arm (each budget stands alone)
                shared.parent.mkdir(parents=True)
                shutil.copy2(shared_pt, shared)
                say(f"budget {budget:g}, arm oneshot: weight-sharing network copied from "
                    f"{shared_pt} (not trained again; its cost is counted at this budget too)")
            say(f"budget {budget:g}, arm {arm}: search in {arm_dir}")
            arm_resume = resume and arm_dir.is_dir()
            res = search(acfg, run_dir=arm_dir, resume=arm_resume, command=command,
                         events=events, final=False)
            if arm == "oneshot" and (arm_dir / ONESHOT_DIR / SHARED_PT).is_file():
                shared_pt = arm_dir / ONESHOT_DIR / SHARED_PT
            best, rule = choose_best(res.setup, res.records)
            results[arm] = {"setup": res.setup, "records": res.records, "best": best,
                            "rule": rule}
        res = _final_for_budget(budget, bdir, results, say, cfg.seed_method.metric)
        if budget in plans:  # what the oneshot arm's trials were cut by, planned
            res["arms"]["oneshot"]["planned_screening"] = plans[budget].to_dict()
        out["results"].append(res)
        out["wall_s"] = round(time.perf_counter() - t0, 1)
        write_json(run_dir / COMPARE_JSON, out)
    out["finished"] = now()
    write_json(run_dir / COMPARE_JSON, out)
    write_atomic(run_dir / "compare.md", markdown(out))
    _plot(out, run_dir / "compare.png")
    return out


def _final_for_budget(budget: float, bdir: Path, results: dict[str, Any],
                      say: Callable[[str], None], metric: str = "flops") -> dict[str, Any]:
    """Retrain every arm's winner, each seed proposal and uniform on the evaluation seeds.

    Rows are costed by an arm of the comparison's own metric; under a latency budget each row
    is measured afresh against the base network (interleaved), one after the other in this
    process, and marked whether it meets the budget. The ``flops`` arm adds its winner only:
    its proposals are the FLOPs-budget ones, not the rows held to the budget."""
    own = {arm: r for arm, r in results.items() if arm != "flops"}  # never empty: parse_arms
    setup = next(iter(own.values()))["setup"]
    entries: list[tuple[str, dict[str, int]]] = []
    for arm, r in results.items():
        if r["best"] is not None:
            entries.append((f"arm:{arm}", dict(r["best"].widths)))
    starts: dict[str, dict[str, int]] = {}
    for r in own.values():
        starts.update(r["setup"].cspace.starts)
    for name, widths in starts.items():
        entries.append(("uniform" if name == UNIFORM else f"seed:{name}", dict(widths)))
    done: dict[str, list[dict[str, Any]]] = {}
    costs: dict[str, dict[str, Any]] = {}
    rows = []
    for name, widths in entries:
        key = str(sorted(widths.items()))
        if key not in done:
            say(f"budget {budget:g}: final runs of {name}")
            done[key] = retrain(setup, widths, name=name,
                                out_dir=bdir / "final" / name.replace(":", "-"),
                                seeds=final_seeds(setup.cfg))
        if key not in costs:
            costs[key] = _row_cost(setup, widths, metric)
        runs = done[key]
        tests = [x["test_acc"] for x in runs]
        rows.append({"name": name, "widths": widths, **costs[key],
                     "seeds": [x["seed"] for x in runs], "test_acc": tests,
                     "val_acc": [x["val_acc"] for x in runs],
                     "runs": [{k: x.get(k) for k in ("seed", "val_acc", "test_acc", "status",
                                                     "epochs", "reason")} for x in runs]})
    uniform = next((r for r in rows if r["name"] == "uniform"), None)
    for r in rows:  # capacity at the same budget: FLOPs and params over uniform's
        r["flops_vs_uniform"] = None if uniform is None else r["flops"] / uniform["flops"]
        r["params_vs_uniform"] = None if uniform is None else r["params"] / uniform["params"]
    comparisons = []
    for a in [r for r in rows if r["name"].startswith("arm:")]:
        for b in rows:
            if b is a or (b["name"].startswith("arm:") and b["name"] <= a["name"]):
                continue
            diff = paired_difference(_per_seed(a), _per_seed(b))
            comparisons.append({"a": a["name"], "b": b["name"], "metric": "test_acc",
                                **diff.to_dict(), "same_widths": a["widths"] == b["widths"]})
    arms = {arm: {"run_dir": str(bdir / arm), "metric": r["setup"].cspace.metric,
                  "n_trials": r["setup"].cfg.search.n_trials,
                  "best_trial": r["best"].number
                  if r["best"] is not None else None, "best_rule": r["rule"],
                  "best_search_val_acc": r["best"].val_acc if r["best"] is not None else None,
                  "compute": _compute(r["records"], bdir / arm, r["setup"])}
            for arm, r in results.items()}
    out = {"budget": budget, "metric": metric, "arms": arms, "rows": rows,
           "comparisons": comparisons}
    note = compute_note(arms)
    if note:
        say(f"budget {budget:g}: warning: {note}")
        out["compute_note"] = note
    return out


def _row_cost(setup, widths: dict[str, int], metric: str) -> dict[str, Any]:
    """FLOPs, params and their ratios to the base network; under a latency budget the row's
    latency ratio measured now (interleaved with the base network), its interval and whether
    it meets the budget."""
    r = setup.space.latency.measure_ratio(widths, fresh=True)[0] if metric == "latency" \
        else None
    attrs = setup.cost_attrs(widths, r)
    out = {k: attrs[k] for k in ("flops", "params", "flops_ratio")}
    out["params_ratio"] = attrs["params"] / setup.base_params
    if r is not None:
        out.update({"latency_ratio": round(r.value, 5), "latency_ratio_low": round(r.low, 5),
                    "latency_ratio_high": round(r.high, 5), "latency_ms": attrs["latency_ms"],
                    "latency_busy": r.busy, "within_budget": setup.cspace.within_measured(r)})
    return out


def _per_seed(row: dict[str, Any]) -> dict[int, float | None]:
    return {int(r["seed"]): r.get("test_acc") for r in row["runs"]}


def _pts(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.2f}"


def markdown(out: dict[str, Any]) -> str:
    lines = ["# Search vs its controls", "",
             f"Command: `{out.get('command', '')}`", "",
             f"Evaluation seeds: {out.get('seed_rule', '')}.", ""]
    for res in out["results"]:
        metric = res.get("metric", "flops")
        lines += [f"## Budget {res['budget']:g} of the base {METRIC_WORDS.get(metric, metric)}",
                  "",
                  "| arm | compute (base trainings) | trials (complete) | trainings | epochs trained | "
                  "wall (s) | best trial | its search val |",
                  "|---|---|---|---|---|---|---|---|"]
        for arm, a in res["arms"].items():
            c = a["compute"]
            sv = a["best_search_val_acc"]
            eq = c.get("base_trainings")
            lines.append(f"| {arm} | {'-' if eq is None else f'{eq:.2f}'} | {c['trials']} ({c['complete']}) | "
                         f"{c['trainings']} | {c['epochs_trained']} | {c['wall_s']} | "
                         f"{a['best_trial']} | {'-' if sv is None else f'{100 * sv:.2f}'} |")
        lines += ["", "Compute, measured: the trainings each arm ran (every rung and seed, "
                  "pruned and failed trials included, reused measurements not), in trainings "
                  "of the base network (train.epochs epochs at the base widths) by FLOPs."]
        if res.get("compute_note"):
            lines += ["", f"Warning: {res['compute_note']}."]
        for arm, a in res["arms"].items():
            sc = a["compute"].get("screening")
            if sc:
                lines.append("\n" + _screening_line(arm, a["compute"], sc))
        lines += [""] + _rows_table(res["rows"], metric, res["budget"])
        lines += ["", "Paired differences of test accuracy (percentage points, 95% "
                  "t-interval over the evaluation seeds):", "",
                  "| a - b | mean | 95% interval | n | verdict |", "|---|---|---|---|---|"]
        for c in res["comparisons"]:
            lo, hi = c["ci95"]
            note = " (same widths)" if c.get("same_widths") else ""
            lines.append(f"| {c['a']} - {c['b']}{note} | {_pts(c['mean'])} | "
                         f"[{_pts(lo)}, {_pts(hi)}] | {c['n']} | {c['verdict']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _screening_line(arm: str, c: dict[str, Any], sc: dict[str, Any]) -> str:
    """How the oneshot arm's measured compute splits: trials, network, screening."""
    if sc.get("screening_base_trainings") is None or c.get("base_trainings") is None:
        return (f"{arm}: besides its trials, a weight-sharing training of "  # an older run
                f"{sc['shared_base_trainings'] or 0:.2f} trainings of the base network and "
                f"{sc['screened']} candidates screened in {sc['screen_s']} s.")
    if sc.get("score") == "base":
        network = "0 for the base network (the seed method's, no weight-sharing training)"
    else:
        network = (f"{sc['network_base_trainings']:.2f} weight-sharing training "
                   f"({sc['shared_train_s'] or 0:.0f} s)")
    plan = "" if sc.get("trial_base_trainings") is None else \
        f"; its cut was planned at {sc['trial_base_trainings']:.3f} per trial"
    return (f"{arm}: {c['base_trainings']:.2f} trainings of the base network = "
            f"{c['trials_base_trainings']:.2f} for its {c['trials']} from-scratch trials "
            f"+ {network} + {sc['screening_base_trainings']:.2f} screening ({sc['screened']} "
            f"candidates, {sc['screen_s']} s){plan}.")


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _rows_table(rows: list[dict[str, Any]], metric: str, budget: float) -> list[str]:
    """The final rows: accuracy beside each row's cost ratios; under a latency budget its
    measured latency ratio with the interval of the two halves of its rounds, whether it meets
    the budget, and the capacity it carries over uniform (FLOPs, params)."""
    if metric != "latency":
        out = ["| row | test accuracy (%) | FLOPs ratio | params ratio | FLOPs vs uniform |",
               "|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['name']} | {fmt_mean_std(r['test_acc'])} | "
                       f"{r['flops_ratio']:.3f} | {r.get('params_ratio', 0):.3f} | "
                       f"{_ratio(r.get('flops_vs_uniform'))} |")
        return out
    out = [f"| row | test accuracy (%) | latency ratio [halves] | meets {budget:g} | "
           "latency (ms) | FLOPs ratio | params ratio | FLOPs vs uniform | params vs uniform |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        meets = "yes" if r.get("within_budget") else "no"
        if r.get("latency_busy"):
            meets += " (busy machine)"
        out.append(f"| {r['name']} | {fmt_mean_std(r['test_acc'])} | "
                   f"{r['latency_ratio']:.3f} [{r['latency_ratio_low']:.3f}, "
                   f"{r['latency_ratio_high']:.3f}] | {meets} | {r['latency_ms']:.3f} | "
                   f"{r['flops_ratio']:.3f} | {r['params_ratio']:.3f} | "
                   f"{_ratio(r.get('flops_vs_uniform'))} | {_ratio(r.get('params_vs_uniform'))} |")
    return out


def _plot(out: dict[str, Any], path: Path) -> Path | None:
    if not out["results"]:
        return None
    from matplotlib.figure import Figure

    n = len(out["results"])
    fig = Figure(figsize=(6.5 * n, 4.2))
    for i, res in enumerate(out["results"]):
        ax = fig.add_subplot(1, n, i + 1)
        names = [r["name"] for r in res["rows"]]
        for j, r in enumerate(res["rows"]):
            vals = [100 * v for v in r["test_acc"] if v is not None]
            if not vals:
                continue
            ax.bar(j, sum(vals) / len(vals), color="tab:blue" if r["name"].startswith("arm:")
                   else "tab:gray", alpha=0.6)
            ax.scatter([j] * len(vals), vals, color="black", s=10, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        accs = [100 * v for r in res["rows"] for v in r["test_acc"] if v is not None]
        if accs:
            pad = max(0.5, (max(accs) - min(accs)) * 0.3)
            ax.set_ylim(min(accs) - pad, max(accs) + pad)
        ax.set_ylabel("test accuracy (%), axis not from 0")
        metric = METRIC_WORDS.get(res.get("metric", "flops"), "FLOPs")
        ax.set_title(f"budget {res['budget']:g} of base {metric} (dots: seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
