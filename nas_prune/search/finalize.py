"""After the search: retrain the winner and the baselines on several seeds, export the results.

The final table compares three kinds of width vector at the same budget: the search's best trial,
each seed method's proposal, and uniform scaling. With ``search.finalists`` K > 1 the K best
trials by search validation accuracy, the seed proposal(s) and uniform are first retrained on
the *selection seeds* (:func:`selection_seeds`), and the winner ("best") is the one with the
highest mean validation accuracy there (``final.json``'s ``selection`` keeps every run of that
round). One lucky training no longer decides, and neither the test split nor the evaluation
seeds choose anything.
Each row is trained from scratch ``final_seeds`` times on the **evaluation seeds**
(:func:`nas_prune.seeding.final_seeds`), which no search trial ever uses: the run that
selected a candidate never counts as its evaluation, and every row gets the same seeds, so rows
are compared seed by seed (paired). Rows train for ``search.final_epochs`` base epochs (default
``train.epochs``; scaled by the budget rule as in the search, see
:mod:`nas_prune.search.evaluate`, so the rows at the budget train equally long) on the training
split and scored on the **test** split, which nothing before this step has touched. Equal
width vectors (a best trial that is a baseline, or ``--seed-method uniform``) are trained once
and share their numbers, and a final run that a resumed search finds
already finished (same widths, seed, epochs, data and recipe in ``RUN/final/``) is reused, not
repeated. Accuracies are reported as mean +- sample standard deviation (ddof = 1) over the n
seeds, with n stated, and ``final.json`` keeps every seed's validation and test accuracy
(``rows[i].runs``). For the winner against each seed proposal and uniform it holds the paired
test-accuracy difference with its 95% t-interval and the verdict the interval supports
(``comparisons``; :func:`nas_prune.stats.paired_difference`), and the noise floor of one
accuracy on the validation and test splits (``noise``).

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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from .. import scratch
from .._yaml import read_yaml
from ..config import to_dict
from ..errors import UserError
from ..rundir import (
    BEST_PT,
    FINAL_DIR,
    FINAL_JSON,
    TrialRecord,
    best_record,
    pareto_front,
    ranked,
    write_json,
)
from ..seeding import SEED_RULE, final_seeds, selection_seeds
from ..stats import binomial_std, mean_std, paired_difference
from ..table import table_path
from ..train import resolve_device
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
    return (f"highest mean validation accuracy over {n_seeds} selection seed(s) among the top "
            f"{n_finalists} trials by search validation accuracy, the seed proposal(s) and "
            f"uniform (the test split and the evaluation seeds choose nothing)")


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


def final_entries(setup: SearchSetup, records: list[TrialRecord], best: TrialRecord | None
                  ) -> list[tuple[str, dict[str, int], TrialRecord | None]]:
    """(row name, widths, the search trial it came from) for best, each seed, uniform."""
    baseline_trial: dict[str, TrialRecord] = {}
    for r in sorted(records, key=lambda r: r.number):
        if r.role in ("seed", "uniform") and r.seed_method:
            baseline_trial.setdefault(r.seed_method, r)
    out: list[tuple[str, dict[str, int], TrialRecord | None]] = []
    if best is not None and best.widths:
        out.append(("best", dict(best.widths), best))
    for name, widths in setup.cspace.starts.items():
        row = "uniform" if name == UNIFORM else f"seed:{name}"
        out.append((row, dict(widths), baseline_trial.get(name)))
    return out


def retrain(setup: SearchSetup, widths: dict[str, int], *, name: str, out_dir: Path,
            on_result: OnResult | None = None, seeds: list[int] | None = None
            ) -> list[dict[str, Any]]:
    """Train ``widths`` with each seed (default: the evaluation seeds) and score on the
    validation and test splits; one dict per seed."""
    cfg = setup.cfg
    epochs = setup.epochs_for(widths, cfg.search.final_epochs or cfg.train.epochs)
    runs = []
    for seed in final_seeds(cfg) if seeds is None else seeds:
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
            run = _failed_run(seed, exc)
        runs.append(run)
        if on_result is not None:
            on_result(name, seed, run)
    return runs


def _failed_run(seed: int, exc: Exception) -> dict[str, Any]:
    """A final run that raised: reported with its reason (the first line of the error)."""
    return {"seed": seed, "status": "failed", "epochs": 0, "val_acc": None, "test_acc": None,
            "wall_time": 0.0, "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            if str(exc) else type(exc).__name__}


FINETUNED = "best (fine-tuned)"


def finetune_rule(setup: SearchSetup) -> str:
    cfg = setup.cfg
    fn = cfg.train.function
    how = ("with learning-rate rewinding (the recipe's whole schedule again)" if fn is None
           else f"by train.function {fn} (its own loop and schedule; nas-prune's learning-rate "
                f"rewinding is its built-in trainer's)")
    by = "" if fn is None else f" by train.function {fn}"
    return (f"the winner's widths cut by filter L1 norm from the full-width network trained "
            f"from scratch{by} for {cfg.seed_method.base_epochs} epochs "
            f"(seed_method.base_epochs) on the same evaluation seed, then trained for "
            f"{cfg.search.finetune_epochs} epochs {how}; the architecture was chosen on "
            f"from-scratch evidence, only these weights come from the base network")


def finetune_best(setup: SearchSetup, widths: dict[str, int], *, out_dir: Path,
                  on_result: OnResult | None = None) -> list[dict[str, Any]]:
    """The row ``best (fine-tuned)``: for each evaluation seed, train the full-width network
    from scratch for ``seed_method.base_epochs`` epochs, cut it down to ``widths`` (the filters
    with the largest L1 norms, :mod:`nas_prune.surgery`) and train the cut network for
    ``search.finetune_epochs`` epochs with the recipe's whole learning-rate schedule (rewinding,
    Renda et al. 2020), on the same seed; scored on the validation and test splits. Each run
    records the base network's epochs and scores with its own. With ``train.function`` both
    trainings are the user's function's (its own schedule: no rewinding of ours)."""
    from ..surgery import cut_down, filter_l1_scores, keep_from_scores

    cfg, space = setup.cfg, setup.space
    base_epochs, epochs = cfg.seed_method.base_epochs, int(cfg.search.finetune_epochs)
    base_spec = setup.spec(space.base_widths(), final="base network of the fine-tuned row")
    spec = setup.spec(widths, final=FINETUNED)
    runs = []
    for seed in final_seeds(cfg):
        folder = out_dir / f"seed{seed}"
        try:
            torch.manual_seed(seed)
            base = base_spec.build()
            base_res, _ = scratch.train_spec(base_spec, cfg, epochs=base_epochs,
                                             exact_epochs=True, seed=seed, model=base,
                                             evaluate_test=True, out_dir=folder / "base")
            if base_res.status != "ok":
                raise RuntimeError(f"the base network's training {base_res.status}: "
                                   f"{base_res.reason}")
            base = base.cpu().eval()
            keep = keep_from_scores(filter_l1_scores(base, space.family), widths)
            cut = cut_down(base, space.family, keep)
            result, _ = scratch.train_spec(spec, cfg, epochs=epochs, exact_epochs=True,
                                           seed=seed, model=cut, evaluate_test=True,
                                           out_dir=folder)
            run = {"seed": seed, "status": result.status, "epochs": result.epochs_run,
                   "val_acc": result.val_acc_final, "test_acc": result.test_acc,
                   "wall_time": round(result.wall_time + base_res.wall_time, 3),
                   "reason": result.reason, "base_epochs": base_res.epochs_run,
                   "base_val_acc": base_res.val_acc_final, "base_test_acc": base_res.test_acc,
                   "base_wall_time": round(base_res.wall_time, 3)}
        except Exception as exc:  # a failed run is reported, the others still count
            run = {**_failed_run(seed, exc), "base_epochs": 0}
        runs.append(run)
        if on_result is not None:
            on_result(FINETUNED, seed, run)
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
    if isinstance(old.get("train"), dict):  # written before train.function existed
        old["train"].setdefault("function", None)
        old["train"].pop("function_check", None)  # the up-front check trains no final run
    cur["train"] = {k: v for k, v in cur["train"].items() if k != "function_check"}
    if (spec.widths != widths or m.get("seed") != seed or m.get("epochs_planned") != epochs
            or m.get("status") != "ok" or m.get("test_acc") is None
            or old.get("data") != cur["data"] or old.get("train") != cur["train"]):
        return None
    return {"seed": seed, "status": "ok", "epochs": m.get("epochs_run"),
            "val_acc": m.get("val_acc_final"), "test_acc": m["test_acc"],
            "wall_time": m.get("wall_time", 0.0), "reason": "", "reused": True}


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
            sub = run_dir / FINAL_DIR / folder
            done[key] = (sub, retrain(setup, widths, name=name, out_dir=sub, on_result=on_result))
        return done[key]

    finalists = finalist_records(setup, records)
    selection = None
    if finalists:
        best, rule, selection = _finalist_round(setup, records, finalists, run_dir, on_result)
    rows = []
    entries = [(name, widths, trial, *train_once(name, widths, _slug(name)))
               for name, widths, trial in final_entries(setup, records, best)]
    if best is not None and finetune_epochs_of(setup) is not None:
        sub = run_dir / FINAL_DIR / "best-finetuned"
        entries.insert(1, (FINETUNED, dict(best.widths), best, sub,
                           finetune_best(setup, dict(best.widths), out_dir=sub,
                                         on_result=on_result)))
    for name, widths, trial, sub, runs in entries:
        tests = [r["test_acc"] for r in runs]
        mean, std, n = mean_std(tests)
        val_mean, val_std, _ = mean_std([r["val_acc"] for r in runs])
        attrs = setup.cost_attrs(widths)
        rows.append({"name": name, "trial": trial.number if trial else None,
                     "seed_method": trial.seed_method if trial else None,
                     "widths": widths, "flops": attrs["flops"], "params": attrs["params"],
                     "flops_ratio": attrs["flops_ratio"], "cost_ratio": attrs["cost_ratio"],
                     "latency_ms": attrs.get("latency_ms"),
                     "latency_iqr_ms": attrs.get("latency_iqr_ms"),
                     "latency_ratio_low": attrs.get("latency_ratio_low"),
                     "latency_ratio_high": attrs.get("latency_ratio_high"),
                     "val_acc": val_mean, "val_std": val_std,
                     "search_val_acc": trial.val_acc if trial else None,
                     "test_acc": tests, "test_mean": mean, "test_std": std, "n": n,
                     "seeds": [r["seed"] for r in runs], "epochs": [r["epochs"] for r in runs],
                     "status": [r["status"] for r in runs],
                     "reasons": [r["reason"] for r in runs if r["reason"]],
                     "runs": [_run_summary(r) for r in runs],
                     "compute_base_epochs": compute_base_epochs(runs, attrs["flops_ratio"]),
                     "dir": str(sub.relative_to(run_dir))})
    cfg = setup.cfg
    shipped, weights = _shipped_weights(setup, rows, run_dir)
    final = {"n_seeds": cfg.search.final_seeds,
             "base_epochs": cfg.search.final_epochs or cfg.train.epochs,
             "budget_rule": cfg.train.budget,
             "epochs_of": "target FLOPs" if setup.cspace.objective == "single"
             and setup.cspace.metric == "flops" else "each row's FLOPs",
             "split": "test", "std": "sample (ddof=1); none with one seed",
             "seeds": final_seeds(cfg), "seed_rule": SEED_RULE,
             "noise": noise_floor(setup, rows),
             "compute": "compute_base_epochs: the training compute of a row's mean run in "
                        "epochs of the full-width network (epochs x FLOPs ratio, plus the base "
                        "network's epochs for the fine-tuned row)",
             "finetune": {"rule": finetune_rule(setup), "epochs": cfg.search.finetune_epochs,
                          "base_epochs": cfg.seed_method.base_epochs}
             if finetune_epochs_of(setup) is not None and best is not None else None,
             "best_weights": shipped,
             "best_rule": rule, "finalist_trials": [r.number for r in finalists],
             "selection": selection,
             "rows": rows, "comparisons": comparisons(rows)}
    paths = [write_json(run_dir / FINAL_JSON, final)]
    if best is not None:
        best_row = next(r for r in rows if r["name"] == "best")
        paths += write_best(setup, best, run_dir, final_row=best_row, rule=rule,
                            provenance={**provenance, "best_weights": shipped})
        if weights is not None:
            shutil.copyfile(weights, run_dir / BEST_PT)
            paths.append(run_dir / BEST_PT)
        else:  # no run left weights: an older best.pt must not pass for this winner's
            (run_dir / BEST_PT).unlink(missing_ok=True)
    if setup.cspace.objective == "multi":
        paths += write_pareto(setup, records, run_dir)
    return final, paths


def _finalist_round(setup: SearchSetup, records: list[TrialRecord],
                    finalists: list[TrialRecord], run_dir: Path, on_result: OnResult | None
                    ) -> tuple[TrialRecord, str, dict[str, Any]]:
    """Retrain the finalists and the completed baseline trials on the selection seeds; the one
    with the highest mean validation accuracy there wins. Its evaluation comes later, on the
    evaluation seeds, which took no part in this choice."""
    pool = list(finalists)
    for _name, _widths, trial in final_entries(setup, records, None):
        if trial is not None and trial.state == "COMPLETE" and trial.widths and \
                all(_key(p.widths) != _key(trial.widths) for p in pool):
            pool.append(trial)
    seeds = selection_seeds(setup.cfg)
    entries = []
    for r in pool:
        name = f"trial {r.number}"
        runs = retrain(setup, dict(r.widths), name=f"{name} (selection)",
                       out_dir=run_dir / FINAL_DIR / "selection" / f"trial{r.number:04d}",
                       on_result=on_result, seeds=seeds)
        entries.append({"trial": r.number, "role": r.role, "seed_method": r.seed_method,
                        "widths": dict(r.widths),
                        "val_acc": mean_std([x["val_acc"] for x in runs])[0],
                        "runs": [_run_summary(x) for x in runs]})
    order = sorted(range(len(pool)), key=lambda i: (
        -(entries[i]["val_acc"] if entries[i]["val_acc"] is not None else -math.inf), i))
    best = pool[order[0]]
    rule = finalists_rule(len(finalists), len(seeds))
    return best, rule, {"seeds": seeds, "rule": rule, "winner": best.number,
                        "pool": [entries[i] for i in order]}


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    out = {k: run.get(k) for k in ("seed", "val_acc", "test_acc", "status", "epochs",
                                   "reason", "wall_time")}
    out.update({k: run[k] for k in ("base_epochs", "base_val_acc", "base_test_acc",
                                    "base_wall_time") if k in run})
    return out


def finetune_epochs_of(setup: SearchSetup) -> int | None:
    """The fine-tuned row's epochs (None: no such row)."""
    return setup.cfg.search.finetune_epochs if setup.cspace.objective == "single" else None


def compute_base_epochs(runs: list[dict[str, Any]], flops_ratio: float) -> float | None:
    """A row's mean training compute in full-width-network epochs: epochs x FLOPs ratio, plus
    the base network's epochs of a fine-tuned run."""
    done = [r for r in runs if r.get("status") == "ok"]
    if not done:
        return None
    cost = [r["epochs"] * flops_ratio + r.get("base_epochs", 0) for r in done]
    return round(sum(cost) / len(cost), 4)


def _first_weights(run_dir: Path, row: dict[str, Any] | None) -> Path | None:
    """The weights file of a final row's first evaluation seed, where that run left one."""
    if row is None or not row["seeds"]:
        return None
    path = run_dir / row["dir"] / f"seed{row['seeds'][0]}" / "model.pt"
    return path if path.is_file() else None


def _shipped_weights(setup: SearchSetup, rows: list[dict[str, Any]], run_dir: Path
                     ) -> tuple[dict[str, str], Path | None]:
    """What ``best.pt`` holds and why, and the file it is copied from (None: no weights). With
    ``search.best_weights: finetuned`` the fine-tuned row's first seed, unless that run failed:
    then the scratch winner's, and the reason says so."""
    best = _first_weights(run_dir, next((r for r in rows if r["name"] == "best"), None))
    scratch = {"source": "best", "why": "search.best_weights: scratch (the winner trained "
               "from scratch on the first evaluation seed, as the evidence that chose it)"}
    if setup.cfg.search.best_weights != "finetuned":
        return scratch, best
    tuned = _first_weights(run_dir, next((r for r in rows if r["name"] == FINETUNED), None))
    if tuned is None:
        return {"source": "best", "why": "search.best_weights: finetuned, but the fine-tuned "
                "row's first evaluation seed left no weights (see its reason in final.json); "
                "the winner trained from scratch on that seed is shipped instead"}, best
    return {"source": FINETUNED, "why": "search.best_weights: finetuned (the weights of the "
            "fine-tuned row's first evaluation seed; the architecture is the one chosen from "
            "scratch)"}, tuned


def comparisons(rows: list[dict[str, Any]], *, metric: str = "test_acc") -> list[dict[str, Any]]:
    """The winner minus each seed proposal and uniform, paired by evaluation seed, with the 95%
    t-interval and the verdict it supports (``nas_prune.stats.paired_difference``)."""
    by_name = {r["name"]: r for r in rows}
    best = by_name.get("best")
    if best is None:
        return []
    out = []
    for other in rows:
        if other["name"] == "best":
            continue
        diff = paired_difference(_per_seed(best, metric), _per_seed(other, metric))
        out.append({"a": "best", "b": other["name"], "metric": metric, **diff.to_dict(),
                    "seeds_to_resolve": diff.seeds_to_resolve(),
                    # the fine-tuned row shares the widths, not the trainings
                    "same_widths": best["widths"] == other["widths"]
                    and other["name"] != FINETUNED})
    return out


def _per_seed(row: dict[str, Any], metric: str) -> dict[int, float | None]:
    return {int(r["seed"]): r.get(metric) for r in row.get("runs", [])
            if r.get("seed") is not None}


def noise_floor(setup: SearchSetup, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The binomial std of one accuracy on the validation and test splits, at the rows' mean
    accuracy: differences below it (plus the seed spread) are noise. On a results table
    (``train.source: table:...``) or with the user's trainer (``train.function``, its own
    data) the split sizes are not known: only the seed spread."""
    seed_std = mean_std([r.get("test_std") for r in rows])[0]
    if table_path(setup.cfg.train.source) is not None or setup.cfg.train.function is not None:
        return {"val_images": None, "test_images": None, "binomial_std_val": None,
                "binomial_std_test": None, "seed_std_test": seed_std}
    data = scratch.data_for(setup.cfg.data, resolve_device(setup.cfg.device),
                            setup.space.spec(setup.space.base_widths()))
    n_val, n_test = int(data.val.y.numel()), int(data.test.y.numel())
    val = mean_std([r.get("val_acc") for r in rows])[0]
    test = mean_std([r.get("test_mean") for r in rows])[0]
    return {"val_images": n_val, "test_images": n_test,
            "binomial_std_val": binomial_std(val, n_val) if val is not None else None,
            "binomial_std_test": binomial_std(test, n_test) if test is not None else None,
            "seed_std_test": seed_std}


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
