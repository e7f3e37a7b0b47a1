"""``nas-prune compare``: the search, its uniform-start control and random search at equal
compute, then one paired final evaluation of their winners, the seed proposals and uniform."""

from __future__ import annotations

import argparse

from ..config import METRICS
from ..search.samplers import EARLY_STOPPING
from ._common import add_config_arguments, resolve_config, table
from ._search import (
    Printer,
    command_line,
    comparison_table,
    parse_rungs,
    prune_none,
    quiet_optuna,
)


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--seed-method", help="seed method(s) of the 'seeds', 'random' and "
                   "'oneshot' arms")
    p.add_argument("--budget", help="one budget or a list, e.g. 0.5,0.25,0.1")
    p.add_argument("--metric", choices=METRICS, help="what the budget limits, as for search "
                   "(latency: every final row measured against the base network)")
    p.add_argument("--arms", help="which arms to run, from seeds, uniform, random, flops (the "
                   "seeds search under a FLOPs budget), oneshot (seeds with one-shot "
                   "screening at equal compute, see search.screening) (default "
                   "seeds,uniform,random, and flops under a latency or params budget)")
    p.add_argument("--run-dir", help="where the arms and compare.json/.md/.png go "
                   "(default: the config's run_dir + '-compare')")
    p.add_argument("--resume", action="store_true", help="continue an interrupted comparison")
    p.add_argument("--n-trials", type=int, help="trials per arm (the same for every arm)")
    p.add_argument("--sampler", help="sampler of the seeds and uniform arms (random's is random)")
    p.add_argument("--early-stopping", choices=tuple(EARLY_STOPPING),
                   help="early-stopping rule of every arm, as for search")
    p.add_argument("--rungs", help="multi-fidelity rungs, as for search (e.g. 1,3)")
    p.add_argument("--reduction-factor", type=int,
                   help="successive halving keeps the top 1/this of the trials at each rung")
    p.add_argument("--final-seeds", type=int, help="evaluation seeds of the joint final table")


def rows_table(rows: list[dict], metric: str) -> str:
    """The final rows as printed: accuracy (mean, sample std, n) beside the costs."""
    from ..stats import fmt_mean_std

    head = ["row", "test acc (%)", "FLOPs ratio", "params ratio"]
    body = [[r["name"], fmt_mean_std(r["test_acc"]), f"{r['flops_ratio']:.3f}",
             f"{r['params_ratio']:.3f}"] for r in rows]
    if metric == "latency":
        head += ["latency ratio", "halves", "meets budget"]
        for line, r in zip(body, rows, strict=True):
            line += [f"{r['latency_ratio']:.3f}",
                     f"[{r['latency_ratio_low']:.3f}, {r['latency_ratio_high']:.3f}]",
                     "yes" if r["within_budget"] else "no"]
    return table(body, head)


def run_compare(args: argparse.Namespace) -> int:
    from ..api import compare
    from ..search.compare import parse_arms, parse_budgets

    budgets = parse_budgets(args.budget) if args.budget else None
    extra = prune_none({
        "seed_method": {"name": args.seed_method, "metric": args.metric},
        "search": {"n_trials": args.n_trials, "sampler": args.sampler,
                   "early_stopping": args.early_stopping, "rungs": parse_rungs(args.rungs),
                   "reduction_factor": args.reduction_factor, "final_seeds": args.final_seeds},
    })
    cfg = resolve_config(args, **extra)
    arms = parse_arms(args.arms, cfg.seed_method.metric)
    quiet_optuna()
    out = Printer()
    run = compare(cfg, budgets=budgets, arms=arms, run_dir=args.run_dir, resume=args.resume,
                  command=command_line("compare", args), events=out)
    result, run_dir = run.data, run.run_dir
    for res in result["results"]:
        out.message("")
        out.message(f"budget {res['budget']:g}:")
        rows = [[a, _base_trainings(c["compute"]),
                 c["compute"]["trials"], c["compute"]["trainings"],
                 c["compute"]["epochs_trained"], c["best_trial"]]
                for a, c in res["arms"].items()]
        out.message(table(rows, ["arm", "compute (base trainings)", "trials", "trainings",
                                 "epochs trained", "best trial"]))
        out.message(rows_table(res["rows"], res.get("metric", "flops")))
        out.message(comparison_table(res["comparisons"]))
    out.message("written:")
    for name in ("compare.json", "compare.md", "compare.png"):
        out.message(f"  {run_dir / name}")
    return 0


def _base_trainings(c: dict) -> str:
    v = c.get("base_trainings")
    return "-" if v is None else f"{v:.2f}"
