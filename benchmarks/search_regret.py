"""What a search ships, scored against ground truth: held-out regret on a width benchmark's table.

On a results table that trained every allocation of a space from scratch on three seeds
(Channel-Bench-Macro's ResNet table), this runs the tool's own search with training replaced by
a look-up (``train.source: table:PATH``, :mod:`nas_prune.table`): search trials read the first
table seed, a finalist round the second, and the **third is held out** for the final table. What
the search ships (the ``best`` row of its final table, i.e. ``best.yaml``) is scored by its
held-out accuracy minus uniform's held-out accuracy.

What runs is the tool's code, in process: the candidate space (:class:`CandidateSpace`: start,
multipliers, projection onto the budget), the samplers of ``search.sampler``, the Optuna
backend's trial loop (:func:`run_trials`: baselines enqueued first, rejected candidates,
duplicate reuse) on an in-memory Optuna storage instead of SQLite, and the final step
(:func:`finalize`: best trial, ``search.finalists`` round on the selection seed, the final rows
on the held-out seed). Only the command line, the SQLite file and the report are skipped.

Budgets: uniform at ``level``/4 of every width (levels 2 and 3: 25% and 56% of the full
network's FLOPs). The search's band is 0.9-1.0x of uniform's FLOPs: the budget target is 0.95 x
uniform's FLOPs with ``search.tolerance`` 0.05 / 0.95, and the start is the uniform allocation
itself (trained as it is, as the tool trains every baseline). Strategies are the samplers
around uniform (``random``, ``tpe``, ``cmaes``: a search whose only seed is uniform), each with
``search.finalists`` 1 (ship the best search trial) and K (retrain the top K and uniform on the
selection seed, ship the best there). ``--trials`` are ``search.n_trials`` (uniform's trial
included). A sampler that does not depend on ``n_trials`` (random, CMA-ES, and TPE from 20
trials on, whose start-up count is then 10) runs once at the largest count and each smaller
count reads the first trials of that run: the same trials a shorter search would have run
(``--check-prefix`` verifies this on one repeat).

The **oracle** sees both search seeds of every allocation in the band and ships the best mean:
the most any strategy could get from what a search can see.

    python benchmarks/search_regret.py --table ../shared/data/channel-bench-macro/Results_ResNet.json \\
        --repeats 50 --out benchmarks/results/search_regret.json

Writes every repeat's shipped allocation and gain to ``--out`` (JSON) and the summary table
beside it (``.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna

from nas_prune._io import write_atomic
from nas_prune._meta import code_version, hardware, now
from nas_prune.config import load_config
from nas_prune.search.evaluate import SearchSetup
from nas_prune.search.finalize import finalize
from nas_prune.search.optuna_backend import _use_rules, create_study, records_of, run_trials
from nas_prune.search.space import UNIFORM, CandidateSpace
from nas_prune.stats import mean_std, t_quantile
from nas_prune.table import ResultsTable, key_of, widths_of_key
from nas_prune.widths import SearchSpace, space_source

DEFAULT_TABLE = "../shared/data/channel-bench-macro/Results_ResNet.json"
BAND = (0.9, 1.0)  # of uniform's FLOPs
STARTUP_FREE_FROM = {"tpe": 20, "random": 1, "cmaes": 1}  # n_trials from which a run's prefix
# is the shorter run (TPE's start-up count min(10, n_trials // 2) is 10 from 20 trials on)


def band_setup(table_path: str, level: int, *, sampler: str, finalists: int, n_trials: int,
               seed: int) -> tuple[SearchSetup, dict[str, int]]:
    """The search of one budget: uniform at ``level``/4 of every width, band 0.9-1.0x of its
    FLOPs (target 0.95x, tolerance 0.05/0.95)."""
    name, raw = space_source("cbm_resnet")
    space = SearchSpace.from_dict(raw, name=name)
    uniform = widths_of_key(str(level) * len(space.group_names), space)
    u_flops = space.count(uniform)[0]
    mid, half = (BAND[0] + BAND[1]) / 2, (BAND[1] - BAND[0]) / 2
    target = int(round(mid * u_flops))
    tolerance = half / mid * (1 + 1e-7)  # the band's edges included (integer FLOPs)
    cfg = load_config("cbm_resnet_table", [
        f"train.source=table:{table_path}", "seed_method.name=uniform",
        f"seed_method.budget={target / space.base_cost('flops')!r}",
        f"search.tolerance={tolerance!r}", f"search.sampler={sampler}",
        f"search.finalists={finalists}", f"search.n_trials={n_trials}",
        "search.early_stopping=none", "search.final_seeds=1", f"random_seed={seed}"])
    cspace = CandidateSpace(space, starts={UNIFORM: uniform}, objective="single",
                            metric="flops", target=target, tolerance=tolerance,
                            multiplier_low=cfg.search.multiplier_low,
                            multiplier_high=cfg.search.multiplier_high,
                            source={"name": name, "data": raw})
    return SearchSetup(cfg=cfg, cspace=cspace, methods=[UNIFORM]), uniform


def run_study(setup: SearchSetup, n_trials: int, scratch: Path) -> list:
    """The Optuna backend's trial loop on an in-memory storage; the trial records."""
    storage = optuna.storages.InMemoryStorage()
    study = create_study(setup, storage, "regret", run_dir=scratch / "no-artifacts",
                         n_trials=n_trials)
    _use_rules(study, setup, total=n_trials, worker=False)
    run_trials(study, storage, setup, total=n_trials)
    return records_of(study)


def shipped(setup: SearchSetup, records: list, scratch: Path) -> dict:
    """The tool's final step on these trials: the best row (what best.yaml ships) and uniform,
    both scored on the held-out table seed."""
    out = scratch / "final"
    final, _ = finalize(setup, records, out, provenance={})
    shutil.rmtree(out, ignore_errors=True)
    rows = {r["name"]: r for r in final["rows"]}
    best, uni = rows["best"], rows["uniform"]
    sel = final.get("selection") or {}
    return {"widths": best["widths"], "held_out": best["test_acc"][0],
            "uniform_held_out": uni["test_acc"][0],
            "gain": 100 * (best["test_acc"][0] - uni["test_acc"][0]),
            "is_uniform": best["widths"] == uni["widths"],
            "selection_trainings": len(sel.get("pool", []))}


def oracle(table: ResultsTable, setup: SearchSetup, uniform: dict[str, int]) -> dict:
    """The band's allocation with the best mean over the two search seeds, scored on the
    held-out one, against uniform."""
    space, cs = setup.space, setup.cspace
    held = table.held_out
    band = []
    for key, e in table.entries.items():
        if cs.within(e.flops):
            band.append((sum(e.acc[:held]) / held, key, e))
    u = table.entries[key_of(uniform, space)]
    best = max(band, key=lambda t: (t[0], t[1]))
    return {"band_allocations": len(band), "key": best[1], "search_mean": best[0],
            "held_out": best[2].acc[held], "uniform_held_out": u.acc[held],
            "uniform_search_mean": sum(u.acc[:held]) / held,
            "gain": best[2].acc[held] - u.acc[held]}


RUN_FIELDS = ("level", "strategy", "finalists", "n_trials", "repeat", "rejected", "search_s",
              "key", "held_out", "uniform_held_out", "gain", "is_uniform", "selection_trainings")


def save(out: dict, path: str) -> None:
    """The results as JSON, every run one compact row of :data:`RUN_FIELDS` (the shipped
    allocation as its table key; accuracies and gains to 6 decimals)."""
    space = SearchSpace.load("cbm_resnet")

    def row(r: dict | list) -> list:
        if isinstance(r, list):  # already compact
            return r
        r = {**r, "key": r.get("key") or key_of(r["widths"], space)}
        return [round(v, 6) if isinstance(v, float) else v for v in (r[f] for f in RUN_FIELDS)]

    head = {k: v for k, v in out.items() if k != "runs"}
    text = json.dumps(head, indent=2, default=str)[:-2]
    rows = ",\n    ".join(json.dumps(row(r)) for r in out["runs"])
    text += f',\n  "run_fields": {json.dumps(list(RUN_FIELDS))},\n  "runs": [\n    {rows}\n  ]\n}}\n'
    write_atomic(path, text)


def combine(paths: list[str]) -> str:
    """Mean gain per setting averaged over results files that held out different table seeds:
    the held-out gain with less weight on one held-out training of uniform (whose own
    seed-to-seed spread decides the sign of every row of a single file)."""
    files = [json.loads(Path(p).read_text()) for p in paths]
    seeds = [f.get("held_out_seed", 2) for f in files]
    cells: dict[tuple, dict[int, dict]] = {}
    for f, h in zip(files, seeds, strict=True):
        for r in f["summary"]:
            cells.setdefault((r["level"], r["strategy"], r["finalists"], r["n_trials"]), {})[h] = r
    lines = ["# Held-out gain over uniform, averaged over which table seed is held out", "",
             f"Files: {', '.join(f'`{p}`' for p in paths)} (held-out seeds "
             f"{', '.join(map(str, seeds))}; repeats "
             f"{', '.join(str(f['repeats_done']) for f in files)}).", "",
             "Oracle (best mean of the two search seeds in the band) per held-out seed: " +
             "; ".join(f"uniform {lv}/4: " + ", ".join(
                 f"{f['oracle'][lv]['gain']:+.2f}" for f in files) +
                 f" (mean {sum(f['oracle'][lv]['gain'] for f in files) / len(files):+.3f})"
                 for lv in files[0]["oracle"]) + ".", "",
             "| uniform | strategy | finalists | trials | " +
             " | ".join(f"held out {h}" for h in seeds) + " | mean |",
             "|---|---|---|---|" + "---|" * (len(seeds) + 1)]
    for (lv, strat, k, n), by in sorted(cells.items()):
        if len(by) != len(seeds):
            continue
        vals = [by[h]["mean"] for h in seeds]
        lines.append(f"| {lv}/4 | {strat} | {k} | {n} | " +
                     " | ".join(f"{v:+.3f}" for v in vals) + f" | {sum(vals) / len(vals):+.3f} |")
    return "\n".join(lines) + "\n"


def reorder(path: str, held_out: int, out: Path) -> str:
    """A copy of the table whose per-seed accuracies are reordered so that seed ``held_out``
    comes last (the one the tool holds out), the others in their order."""
    data = json.loads(Path(path).read_text())
    for e in data.values():
        acc = e["acc"]
        e["acc"] = [a for i, a in enumerate(acc) if i != held_out] + [acc[held_out]]
    out.write_text(json.dumps(data))
    return str(out)


def interval(values: list[float]) -> dict:
    m, s, n = mean_std(values)
    half = t_quantile(n - 1) * s / math.sqrt(n) if n > 1 and s is not None else None
    return {"mean": m, "std": s, "n": n,
            "ci95": [m - half, m + half] if half is not None else None,
            "frac_worse": sum(v < -1e-9 for v in values) / n,
            "frac_uniform": None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=DEFAULT_TABLE)
    ap.add_argument("--levels", default="2,3", help="uniform at level/4 of every width")
    ap.add_argument("--strategies", default="random,tpe,cmaes")
    ap.add_argument("--finalists", default="1,3", help="search.finalists settings")
    ap.add_argument("--trials", default="8,16,32,64,128", help="search.n_trials settings")
    ap.add_argument("--repeats", type=int, default=20, help="search seeds 0..repeats-1")
    ap.add_argument("--check-prefix", action="store_true",
                    help="also run each prefix count as its own search on repeat 0 and check "
                         "it ships the same")
    ap.add_argument("--held-out", type=int, default=None,
                    help="hold out this table seed instead of the last: the search runs on a "
                         "copy of the table whose seeds are reordered so that it is last")
    ap.add_argument("--out", default="benchmarks/results/search_regret.json")
    ap.add_argument("--combine", nargs="+", metavar="JSON",
                    help="only average the mean gains of results files that held out different "
                         "table seeds (each file's repeats weigh equally within it), write the "
                         "table to --out (.md), and exit")
    ap.add_argument("--compact", metavar="JSON", help="only rewrite a results file of an "
                    "earlier version (indented runs, widths) in the compact form, and exit")
    args = ap.parse_args(argv)
    if args.combine:
        text = combine(args.combine)
        write_atomic(args.out, text)
        print(text)
        return 0
    if args.compact:
        save(json.loads(Path(args.compact).read_text()), args.compact)
        return 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    levels = [int(x) for x in args.levels.split(",")]
    strategies = args.strategies.split(",")
    ks = [int(x) for x in args.finalists.split(",")]
    counts = sorted(int(x) for x in args.trials.split(","))
    t0 = time.perf_counter()
    keep = tempfile.TemporaryDirectory()
    table_path = args.table if args.held_out is None else \
        reorder(args.table, args.held_out, Path(keep.name) / "table.json")
    table = ResultsTable.load(table_path)
    runs, oracles, checks = [], {}, []
    for level in levels:
        setup, uniform = band_setup(table_path, level, sampler="random", finalists=1,
                                    n_trials=counts[-1], seed=0)
        table.check(setup.space)
        oracles[level] = oracle(table, setup, uniform)
        print(f"level {level}: band {oracles[level]['band_allocations']} allocations, "
              f"oracle gain {oracles[level]['gain']:+.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for rep in range(args.repeats):  # repeats outermost: a stopped run is still balanced
            for level in levels:
                for strat in strategies:
                    runs += one_strategy(table_path, level, strat, rep, counts, ks, scratch,
                                         checks if args.check_prefix and rep == 0 else None)
            out = {"command": " ".join(["python", "benchmarks/search_regret.py",
                                        *(argv if argv is not None else sys.argv[1:])]),
                   "when": now(), "code": code_version(), "hardware": hardware("cpu"),
                   "wall_s": round(time.perf_counter() - t0, 1), "table": str(args.table),
                   "held_out_seed": table.held_out if args.held_out is None else args.held_out,
                   "band": list(BAND), "repeats": args.repeats, "repeats_done": rep + 1,
                   "prefix_checks": checks, "oracle": oracles,
                   "summary": summarise(runs, oracles, levels, strategies, ks, counts),
                   "runs": runs}
            save(out, args.out)  # after every repeat: nothing is lost if stopped
            write_atomic(Path(args.out).with_suffix(".md"), markdown(out))
            print(f"repeat {rep + 1}/{args.repeats}: {out['wall_s']:.0f}s", flush=True)
    keep.cleanup()
    print(markdown(out))
    return 0


def one_strategy(table_path: str, level: int, strat: str, rep: int, counts: list[int],
                 ks: list[int], scratch: Path, checks: list | None) -> list[dict]:
    """Every trial count and finalists setting of one strategy on one search seed: one search
    per count the sampler depends on, the others read the first trials of the longest."""
    runs = []
    free = [n for n in counts if n >= STARTUP_FREE_FROM[strat]]
    own = [n for n in counts if n < STARTUP_FREE_FROM[strat]]
    plan = [(n, [n]) for n in own] + ([(free[-1], free)] if free else [])
    for total, reads in plan:
        base, _ = band_setup(table_path, level, sampler=strat, finalists=1, n_trials=total,
                             seed=rep)
        t1 = time.perf_counter()
        records = run_study(base, total, scratch)
        search_s = time.perf_counter() - t1
        for n in reads:
            prefix = [r for r in records if r.number < n]
            for k in ks:
                setup_k, _ = band_setup(table_path, level, sampler=strat, finalists=k,
                                        n_trials=n, seed=rep)
                res = shipped(setup_k, prefix, scratch)
                runs.append({"level": level, "strategy": strat, "finalists": k, "n_trials": n,
                             "repeat": rep,
                             "rejected": sum(r.state == "REJECTED" for r in prefix),
                             "search_s": round(search_s, 3), **res})
            if checks is not None and n != total:
                alone, _ = band_setup(table_path, level, sampler=strat, finalists=1,
                                      n_trials=n, seed=rep)
                mine = run_study(alone, n, scratch)
                checks.append({"level": level, "strategy": strat, "n": n,
                               "same_trials": [r.widths for r in mine]
                               == [r.widths for r in prefix]})
    return runs


def summarise(runs, oracles, levels, strategies, ks, counts) -> list[dict]:
    rows = []
    for level in levels:
        for strat in strategies:
            for k in ks:
                for n in counts:
                    sel = [r for r in runs if (r["level"], r["strategy"], r["finalists"],
                                               r["n_trials"]) == (level, strat, k, n)]
                    if not sel:
                        continue
                    iv = interval([r["gain"] for r in sel])
                    iv["frac_uniform"] = sum(r["is_uniform"] for r in sel) / len(sel)
                    rows.append({"level": level, "strategy": strat, "finalists": k,
                                 "n_trials": n, **iv,
                                 "selection_trainings": mean_std(
                                     [r["selection_trainings"] for r in sel])[0],
                                 "oracle_gain": oracles[level]["gain"]})
    return rows


def _f(x, spec="+.3f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(out: dict) -> str:
    lines = ["# Held-out gain over uniform of what the search ships (Channel-Bench-Macro "
             "ResNet)", "",
             f"Command: `{out['command']}`", "",
             f"{out['repeats_done']} of {out['repeats']} repeats done (search seeds "
             f"0..{out['repeats_done'] - 1}); wall time "
             f"{out['wall_s']:.0f} s; {out['when']}; code {out['code'].get('git')}.", "",
             f"Held-out table seed: {out['held_out_seed']} (counting from 0).", "",
             "Gain: held-out accuracy (the held-out table seed, which no search trial or "
             "finalist round reads) of the shipped allocation minus uniform's, in points; mean "
             "with its 95% t-interval over repeats; worse: fraction of repeats below uniform; "
             "uniform: fraction shipping uniform itself. Trials: search.n_trials (uniform's "
             "trial included); finalists K > 1 add the selection trainings shown.", ""]
    for level, o in out["oracle"].items():
        lines.append(f"Uniform {level}/4 of every width: band 0.9-1.0x of its FLOPs holds "
                     f"{o['band_allocations']} allocations; oracle (best mean of the two "
                     f"search seeds) {o['key']}: held-out gain {o['gain']:+.2f} points "
                     f"(uniform held-out {o['uniform_held_out']:.2f}).")
    lines += ["", "| uniform | strategy | finalists | trials | gain (points) | 95% interval "
              "| worse | ships uniform | selection trainings | oracle |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["summary"]:
        ci = r["ci95"]
        lines.append(f"| {r['level']}/4 | {r['strategy']} | {r['finalists']} | "
                     f"{r['n_trials']} | {_f(r['mean'])} | "
                     f"{'[' + _f(ci[0]) + ', ' + _f(ci[1]) + ']' if ci else '-'} | "
                     f"{r['frac_worse']:.2f} | {r['frac_uniform']:.2f} | "
                     f"{r['selection_trainings']:.1f} | {r['oracle_gain']:+.2f} |")
    if out["prefix_checks"]:
        ok = all(c["same_trials"] for c in out["prefix_checks"])
        lines += ["", f"Prefix check (repeat 0): a shorter search ran the same trials as the "
                      f"first ones of the longest in {sum(c['same_trials'] for c in out['prefix_checks'])}"
                      f" of {len(out['prefix_checks'])} cases{'' if ok else ' (NOT all)'}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
