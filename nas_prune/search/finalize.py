"""After the search: retrain the winner and the baselines on several seeds, export the results.

The final table compares three kinds of width vector at the same budget: the search's best trial,
each seed method's proposal, and uniform scaling. With ``search.finalists`` K > 1 the K best
trials by search validation accuracy are all retrained first and the winner ("best") is the one
with the highest mean validation accuracy over the final seeds (the others stay in the table as
"finalist"); the seed proposal(s) and uniform, retrained for the table anyway, compete too. One
lucky training no longer decides, and the test split still chooses nothing.
Each row is trained from scratch ``final_seeds`` times (seeds ``random_seed, random_seed + 1,
...``) for ``search.final_epochs`` base epochs (default ``train.epochs``; scaled by the budget
rule as in the search, see :mod:`nas_prune.search.evaluate`, so the rows at the budget train
equally long) on the training split and scored on the **test** split, which nothing before this
step has touched. Equal width vectors (a best trial that is a baseline, or ``--seed-method
uniform``) are trained once and share their numbers, and a final run that a resumed search finds
already finished (same widths, seed, epochs, data and recipe in ``RUN/final/``) is reused, not
repeated. Accuracies are reported as mean +- sample standard deviation (ddof = 1) over the n
seeds, with n stated.

Writes ``RUN/final.json``, ``RUN/final/<name>/seed<k>/`` (model.pt, model.yaml, config.yaml of
every final model), ``RUN/best.yaml`` (the winner with its validation and test results and full
provenance), ``RUN/best.pt`` (the first seed's weights) and, for a multi-objective search, the
Pareto front under ``RUN/pareto/``. :func:`write_best`, :func:`write_top` and
:func:`write_pareto` also serve ``nas-prune export``, which rewrites them from the trial records
alone, without training.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import scratch
from .._yaml import read_yaml
from ..config import to_dict
from ..errors import UserError
from ..rundir import FINAL_JSON, TrialRecord, best_record, pareto_front, ranked, write_json
from ..widths import ArchSpec
from .evaluate import SearchSetup
from .space import UNIFORM

OnResult = Callable[[str, int, dict[str, Any]], None]


def budget_limit(setup: SearchSetup) -> float:
    """The largest cost ratio that still meets the budget (the budget plus its tolerance)."""
    return setup.cfg.seed_method.budget * (1 + setup.cspace.tolerance)


def choose_best(setup: SearchSetup, records: Iterable[TrialRecord]
                ) -> tuple[TrialRecord | None, str]:
    return best_record(records, objective=setup.cspace.objective,
                       max_cost_ratio=budget_limit(setup))


def finalist_records(setup: SearchSetup, records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The ``search.finalists`` best completed trials by search validation accuracy, one per
    width vector (single objective; empty when fewer than two distinct ones exist, or K = 1)."""
    k = setup.cfg.search.finalists
    if k < 2 or setup.cspace.objective != "single":
        return []
    out: list[TrialRecord] = []
    seen: set[str] = set()
    for r in ranked(records):
        if _key(r.widths) not in seen:
            seen.add(_key(r.widths))
            out.append(r)
        if len(out) == k:
            break
    return out if len(out) > 1 else []


def finalists_rule(n_finalists: int, n_seeds: int) -> str:
    return (f"highest mean validation accuracy over {n_seeds} final seed(s) among the top "
            f"{n_finalists} trials by search validation accuracy, the seed proposal(s) and "
            f"uniform (the test split chooses nothing)")


def best_from_final(setup: SearchSetup, records: list[TrialRecord], final: dict[str, Any] | None
                    ) -> tuple[TrialRecord, str] | None:
    """The winner a finished finalist round chose (``final.json``), while the study's top trials
    are still the ones it compared; None otherwise (then the search's own best stands)."""
    if not final or not final.get("finalist_trials"):
        return None
    if [r.number for r in finalist_records(setup, records)] != final["finalist_trials"]:
        return None
    row = next((r for r in final.get("rows", []) if r.get("name") == "best"), None)
    match = [r for r in records if row is not None and r.number == row.get("trial")]
    return (match[0], final.get("best_rule", "finalists")) if match else None


def _key(widths: dict[str, int]) -> str:
    return json.dumps(widths, sort_keys=True)


def _slug(name: str) -> str:
    return name.replace(":", "-")


def final_entries(setup: SearchSetup, records: list[TrialRecord], best: TrialRecord | None,
                  finalists: Iterable[TrialRecord] = ()
                  ) -> list[tuple[str, dict[str, int], TrialRecord | None]]:
    """(row name, widths, the search trial it came from) for best, the other finalists, each
    seed, uniform."""
    baseline_trial: dict[str, TrialRecord] = {}
    for r in sorted(records, key=lambda r: r.number):
        if r.role in ("seed", "uniform") and r.seed_method:
            baseline_trial.setdefault(r.seed_method, r)
    out: list[tuple[str, dict[str, int], TrialRecord | None]] = []
    if best is not None and best.widths:
        out.append(("best", dict(best.widths), best))
    out += [("finalist", dict(r.widths), r) for r in finalists
            if best is None or r.number != best.number]
    for name, widths in setup.cspace.starts.items():
        row = "uniform" if name == UNIFORM else f"seed:{name}"
        out.append((row, dict(widths), baseline_trial.get(name)))
    return out


def retrain(setup: SearchSetup, widths: dict[str, int], *, name: str, out_dir: Path,
            on_result: OnResult | None = None) -> list[dict[str, Any]]:
    """Train ``widths`` with each final seed and score on the test split; one dict per seed."""
    cfg = setup.cfg
    epochs = setup.epochs_for(widths, cfg.search.final_epochs or cfg.train.epochs)
    runs = []
    for k in range(cfg.search.final_seeds):
        seed = cfg.random_seed + k
        spec = setup.spec(widths, final=name)
        run = _reuse(out_dir / f"seed{seed}", setup, widths, seed=seed, epochs=epochs)
        if run is not None:
            runs.append(run)
            if on_result is not None:
                on_result(name, seed, run)
            continue
        try:
            result, _ = scratch.train_spec(spec, cfg, epochs=epochs, exact_epochs=True,
                                           seed=seed, evaluate_test=True,
                                           out_dir=out_dir / f"seed{seed}")
            run = {"seed": seed, "status": result.status, "epochs": result.epochs_run,
                   "val_acc": result.val_acc_final, "test_acc": result.test_acc,
                   "wall_time": round(result.wall_time, 3), "reason": result.reason}
        except Exception as exc:  # a failed final run is reported, the others still count
            run = {"seed": seed, "status": "failed", "epochs": 0, "val_acc": None,
                   "test_acc": None, "wall_time": 0.0,
                   "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                   if str(exc) else type(exc).__name__}
        runs.append(run)
        if on_result is not None:
            on_result(name, seed, run)
    return runs


def _reuse(folder: Path, setup: SearchSetup, widths: dict[str, int], *, seed: int,
           epochs: int) -> dict[str, Any] | None:
    """A final run a previous (interrupted or resumed) search already finished, if it is the
    same architecture, seed, epochs, data and recipe; otherwise None."""
    paths = [folder / "model.yaml", folder / "config.yaml", folder / "model.pt"]
    if not all(p.is_file() for p in paths):
        return None
    try:
        spec = ArchSpec.load(paths[0])
        old = read_yaml(paths[1], what="config")
    except UserError:
        return None
    m = spec.metrics
    cur = to_dict(setup.cfg)
    if (spec.widths != widths or m.get("seed") != seed or m.get("epochs_planned") != epochs
            or m.get("status") != "ok" or m.get("test_acc") is None
            or old.get("data") != cur["data"] or old.get("train") != cur["train"]):
        return None
    return {"seed": seed, "status": "ok", "epochs": m.get("epochs_run"),
            "val_acc": m.get("val_acc_final"), "test_acc": m["test_acc"],
            "wall_time": m.get("wall_time", 0.0), "reason": "", "reused": True}


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def finalize(setup: SearchSetup, records: list[TrialRecord], run_dir: str | Path, *,
             provenance: dict[str, Any], on_result: OnResult | None = None
             ) -> tuple[dict[str, Any], list[Path]]:
    """Retrain best / seeds / uniform, write final.json, best.yaml, best.pt (and the Pareto
    front of a multi-objective search). Returns (final.json's content, paths written)."""
    run_dir = Path(run_dir)
    best, rule = choose_best(setup, records)
    done: dict[str, tuple[Path, list[dict[str, Any]]]] = {}  # widths -> (final dir, runs)

    def train_once(name: str, widths: dict[str, int], folder: str) -> tuple[Path, list]:
        key = _key(widths)
        if key not in done:
            sub = run_dir / "final" / folder
            done[key] = (sub, retrain(setup, widths, name=name, out_dir=sub, on_result=on_result))
        return done[key]

    finalists = finalist_records(setup, records)
    if finalists:
        # retrain the top trials, then the baselines (retrained for the table anyway); the
        # winner among them has the best mean validation accuracy over the final seeds
        pool = list(finalists)
        for r in finalists:
            train_once(f"trial {r.number}", r.widths, f"trial{r.number:04d}")
        for name, widths, trial in final_entries(setup, records, None):
            train_once(name, widths, _slug(name))
            if trial is not None and trial.state == "COMPLETE" and \
                    all(_key(p.widths) != _key(trial.widths) for p in pool):
                pool.append(trial)
        vals = [_mean_std([run["val_acc"] for run in done[_key(r.widths)][1]])[0]
                for r in pool]
        if any(v is not None for v in vals):
            pick = max(range(len(pool)),
                       key=lambda i: (vals[i] if vals[i] is not None else -math.inf, -i))
            best = pool[pick]
            rule = finalists_rule(len(finalists), setup.cfg.search.final_seeds)
    rows = []
    for name, widths, trial in final_entries(setup, records, best, finalists):
        sub, runs = train_once(name, widths, _slug(name))
        tests = [r["test_acc"] for r in runs]
        mean, std, n = _mean_std(tests)
        val_mean, _, _ = _mean_std([r["val_acc"] for r in runs])
        attrs = setup.cost_attrs(widths)
        rows.append({"name": name, "trial": trial.number if trial else None,
                     "seed_method": trial.seed_method if trial else None,
                     "widths": widths, "flops": attrs["flops"], "params": attrs["params"],
                     "flops_ratio": attrs["flops_ratio"], "cost_ratio": attrs["cost_ratio"],
                     "val_acc": val_mean, "search_val_acc": trial.val_acc if trial else None,
                     "test_acc": tests, "test_mean": mean, "test_std": std, "n": n,
                     "seeds": [r["seed"] for r in runs], "epochs": [r["epochs"] for r in runs],
                     "status": [r["status"] for r in runs],
                     "reasons": [r["reason"] for r in runs if r["reason"]],
                     "dir": str(sub.relative_to(run_dir))})
    cfg = setup.cfg
    final = {"n_seeds": cfg.search.final_seeds,
             "base_epochs": cfg.search.final_epochs or cfg.train.epochs,
             "budget_rule": cfg.train.budget,
             "epochs_of": "target FLOPs" if setup.cspace.objective == "single"
             and setup.cspace.metric == "flops" else "each row's FLOPs",
             "split": "test", "std": "sample (ddof=1)",
             "best_rule": rule, "finalist_trials": [r.number for r in finalists],
             "rows": rows}
    paths = [write_json(run_dir / FINAL_JSON, final)]
    if best is not None:
        best_row = next(r for r in rows if r["name"] == "best")
        paths += write_best(setup, best, run_dir, final_row=best_row, rule=rule,
                            provenance=provenance)
        weights = run_dir / best_row["dir"] / f"seed{best_row['seeds'][0]}" / "model.pt" \
            if best_row["seeds"] else None
        if weights is not None and weights.is_file():
            shutil.copyfile(weights, run_dir / "best.pt")
            paths.append(run_dir / "best.pt")
    if setup.cspace.objective == "multi":
        paths += write_pareto(setup, records, run_dir)
    return final, paths


def write_best(setup: SearchSetup, best: TrialRecord, run_dir: str | Path, *,
               final_row: dict[str, Any] | None, rule: str, provenance: dict[str, Any]
               ) -> list[Path]:
    """RUN/best.yaml: the winner's architecture, its scores and where it came from."""
    cfg = setup.cfg
    metrics: dict[str, Any] = {"val_acc": best.val_acc, "best_val_acc": best.best_val_acc,
                               "val_curve": best.val_curve, "epochs": best.epochs,
                               "flops_ratio": best.flops_ratio, "cost_ratio": best.cost_ratio}
    if final_row is not None:
        metrics.update({"final_val_acc": final_row["val_acc"],
                        "test_acc": final_row["test_acc"], "test_mean": final_row["test_mean"],
                        "test_std": final_row["test_std"], "n_seeds": final_row["n"],
                        "final_seeds": final_row["seeds"], "final_epochs": final_row["epochs"]})
    spec = setup.spec(best.widths, seed_method=best.seed_method, role=best.role,
                      trial=best.number, best_rule=rule, random_seed=cfg.random_seed,
                      config=to_dict(cfg), **provenance)
    spec = spec.with_metrics(**metrics)
    return [spec.save(Path(run_dir) / "best.yaml")]


def _arch(setup: SearchSetup, r: TrialRecord, **extra: Any) -> ArchSpec:
    spec = setup.spec(r.widths, seed_method=r.seed_method, role=r.role, trial=r.number, **extra)
    return spec.with_metrics(val_acc=r.val_acc, best_val_acc=r.best_val_acc,
                             flops_ratio=r.flops_ratio, cost_ratio=r.cost_ratio, epochs=r.epochs)


def _clear(folder: Path, pattern: str) -> None:
    if folder.is_dir():
        for p in folder.glob(pattern):
            p.unlink()


def write_pareto(setup: SearchSetup, records: Iterable[TrialRecord], run_dir: str | Path
                 ) -> list[Path]:
    """RUN/pareto/trialNNNN.yaml: the completed trials no other beats in accuracy and FLOPs."""
    folder = Path(run_dir) / "pareto"
    _clear(folder, "trial*.yaml")
    return [_arch(setup, r, pareto_rank=i).save(folder / f"trial{r.number:04d}.yaml")
            for i, r in enumerate(pareto_front(records))]


def write_top(setup: SearchSetup, records: Iterable[TrialRecord], run_dir: str | Path, k: int
              ) -> list[Path]:
    """RUN/top/rankR-trialNNNN.yaml: the k most accurate completed trials."""
    folder = Path(run_dir) / "top"
    _clear(folder, "rank*-trial*.yaml")
    return [_arch(setup, r, rank=i + 1).save(folder / f"rank{i + 1}-trial{r.number:04d}.yaml")
            for i, r in enumerate(ranked(records)[:k])]
