"""How well does a cheap fidelity rank width vectors? Measured, not assumed.

Draws random candidates around uniform scaling at a budget (the search's own candidate space:
random multipliers in [0.5, 1.5] per group, projected onto the budget), trains every candidate at
every rung (a complete cosine schedule of ``--rungs`` base epochs each, Scratch-B scaled as in a
search, on the same seed), and reports:

* Spearman / Kendall of each rung's final validation accuracy with the top rung's, and with the
  top rung's test accuracy (test is used here only to *measure* the ranking, never to choose);
* Spearman / Kendall of epoch e of the top rung's curve (the truncated-schedule fidelity that
  per-epoch early stopping relies on) with its end;
* the spread of the top rung's accuracies across candidates against the binomial std of one
  accuracy on the validation split (does width allocation matter at this budget?).

    python benchmarks/fidelity_ranking.py --space vgg_small_fmnist --budget 0.25 \\
        --candidates 12 --rungs 1,3 --out reports/fidelity/vgg_small_25.json

Every per-candidate number goes into ``--out`` (JSON), so the correlations can be recomputed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

from nas_prune._io import write_json
from nas_prune._meta import code_version, hardware, now
from nas_prune.budget import check_budget, uniform_widths
from nas_prune.config import load_config
from nas_prune.scratch import train_spec
from nas_prune.search.fidelity import curve_correlations, rank_correlations
from nas_prune.search.space import MULT, START, CandidateSpace
from nas_prune.stats import binomial_std, mean_std
from nas_prune.train import budget_epochs
from nas_prune.widths import SearchSpace, space_source


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="default")
    p.add_argument("--space", default="vgg_small_fmnist")
    p.add_argument("--budget", type=float, default=0.25)
    p.add_argument("--candidates", type=int, default=12)
    p.add_argument("--rungs", default="1,3", help="base epochs of each rung, cheap to dear")
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0, help="training seed (common to all)")
    p.add_argument("--draw-seed", type=int, default=0, help="seed of the candidate draws")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    rungs = [int(x) for x in args.rungs.split(",")]
    cfg = load_config(args.config, [f"space={args.space}", f"data.train_subset={args.train_subset}",
                                    f"data.val_size={args.val_size}", "device=cpu",
                                    f"random_seed={args.seed}"])
    name, raw = space_source(cfg.space)
    space = SearchSpace.from_dict(raw, name=name)
    target = check_budget(space, args.budget, "flops")
    start = uniform_widths(space, args.budget, "flops")
    cspace = CandidateSpace(space, starts={"uniform": start}, objective="single", metric="flops",
                            target=target, tolerance=cfg.search.tolerance,
                            multiplier_low=0.5, multiplier_high=1.5)
    rng = random.Random(args.draw_seed)
    cands = [("uniform", start)]
    while len(cands) < args.candidates:
        params = {START: "uniform", **{f"{MULT}{g}": rng.uniform(0.5, 1.5)
                                       for g in cspace.groups}}
        c = cspace.decode(params)
        if c.widths is not None and all(c.widths != w for _, w in cands):
            cands.append((f"random{len(cands)}", c.widths))
    base_flops = space.base_cost("flops")
    results = []
    t_start = time.perf_counter()
    for label, widths in cands:
        spec = space.spec(widths, provenance={"base_flops": base_flops})
        entry = {"name": label, "widths": widths, "flops": spec.flops, "rungs": []}
        for base_epochs in rungs:
            epochs = budget_epochs(dataclasses.replace(cfg.train, epochs=base_epochs),
                                   base_flops=base_flops, flops=target)
            curve: list[float] = []
            t0 = time.perf_counter()
            result, _ = train_spec(spec, cfg, epochs=epochs, exact_epochs=True, seed=args.seed,
                                   evaluate_test=True,
                                   on_epoch=lambda e, acc, loss, c=curve: c.append(acc) or False)
            entry["rungs"].append({"base_epochs": base_epochs, "epochs": epochs,
                                   "val_acc": result.val_acc_final, "test_acc": result.test_acc,
                                   "val_curve": curve, "status": result.status,
                                   "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{label} rung {base_epochs}: val {result.val_acc_final:.4f} test "
                  f"{result.test_acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        results.append(entry)
    k = len(rungs)
    val_rows = [{"rung_values": [r["val_acc"] for r in e["rungs"]]} for e in results]
    test_rows = [{"rung_values": [r["val_acc"] for r in e["rungs"]] + [e["rungs"][-1]["test_acc"]]}
                 for e in results]
    top_val = [e["rungs"][-1]["val_acc"] for e in results]
    top_test = [e["rungs"][-1]["test_acc"] for e in results]
    summary = {
        "rung_vs_top_val": rank_correlations(val_rows, k),
        "rung_vs_top_test": rank_correlations(test_rows, k + 1),
        "epoch_vs_end_of_top_rung": curve_correlations(e["rungs"][-1]["val_curve"]
                                                       for e in results),
        "top_val_spread": [min(top_val), max(top_val)],
        "top_test_spread": [min(top_test), max(top_test)],
        "top_val_mean_std": mean_std(top_val),
        "binomial_std_val": binomial_std(mean_std(top_val)[0], args.val_size),
    }
    write_json(args.out, {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                          "finished": now(), "wall_s": round(time.perf_counter() - t_start, 1),
                          "hardware": hardware("cpu"), "versions": code_version(),
                          "space": name, "budget": args.budget, "rungs": rungs,
                          "train_subset": args.train_subset, "val_size": args.val_size,
                          "seed": args.seed, "summary": summary, "candidates": results})
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
