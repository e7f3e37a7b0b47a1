"""``nas-prune search``, ``worker`` and ``export``: the search and its run directory.

Every line a human sees is printed here; the library reports through
:class:`nas_prune.search.SearchEvents`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..config import METRICS
from ..errors import UserError
from ..rundir import CONFIG_YAML, SEARCH_JSON, read_json, state_counts
from ..search.backends import BACKENDS
from ..search.finalize import FINETUNED
from ..search.samplers import EARLY_STOPPING, SAMPLERS
from ..search.space import OBJECTIVES
from ..seeds import ProposalRun
from ._common import (
    BUDGET_HELP,
    add_config_arguments,
    apply_time_budget,
    human,
    resolve_config,
    split_budget,
    table,
)


# ---- printing ------------------------------------------------------------------------------
def _acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


class Printer:
    """SearchEvents that print one line per proposal, trial and final run."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        self._print(text)

    def proposal(self, name: str, run: ProposalRun, cost_ratio: float) -> None:
        from ..search import widths_summary

        p = run.proposal
        base = {"none": "no base network", "cached": "cached base network",
                "checkpoint": "base from checkpoint"}.get(
            run.base_source, f"base trained in {run.base_train_s:.1f}s")
        if (run.base_trainer or "").startswith("train.function"):
            base += f" by {run.base_trainer}"
        self._print(f"proposal {name:<10} {widths_summary(p.widths):<28} {p.metric} "
                    f"{cost_ratio:.3f} of base ({base}, proposed in {run.propose_s:.2f}s)")

    def trial(self, r) -> None:
        from ..search import widths_summary

        who = r.role if r.role == "search" else f"{r.role}"
        start = f"{who}:{r.seed_method}" if r.seed_method and r.role != "uniform" else who
        ratio = "-" if r.flops_ratio is None else f"{r.flops_ratio:.3f}"
        epochs = f"{r.epochs}/{r.epochs_planned}" if r.epochs_planned else str(r.epochs)
        line = (f"trial {r.number:>4}  {start:<18} {widths_summary(r.widths):<28} "
                f"flops {ratio:>5}  val {_acc(r.val_acc)}  ep {epochs:>5}  "
                f"{r.wall_time:6.1f}s  {r.state}")
        if r.state != "COMPLETE" and r.reason:
            line += f"  ({r.reason})"
        self._print(line)

    def final(self, name: str, seed: int, run: dict[str, Any]) -> None:
        extra = "" if run["status"] == "ok" else f"  {run['status']}: {run['reason']}"
        if run.get("reused"):
            extra += "  (reused from an earlier run)"
        self._print(f"final {name:<18} seed {seed}: test {_acc(run['test_acc'])}  val "
                    f"{_acc(run['val_acc'])}  {run['epochs']} epochs  "
                    f"{run['wall_time']:.1f}s{extra}")


def quiet_optuna() -> None:
    import optuna

    # Our own line per trial replaces Optuna's; failures are in the trial lines with reasons.
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def final_table(final: dict[str, Any]) -> str:
    rows = []
    latency = any(r.get("latency_ms") is not None for r in final["rows"])
    compute = any(r.get("compute_base_epochs") is not None for r in final["rows"])
    for r in final["rows"]:
        if r["test_mean"] is None:
            test = "failed"
        elif r["n"] < 2:  # one seed has no spread to report
            test = f"{r['test_mean']:.4f} (one seed)"
        else:
            test = f"{r['test_mean']:.4f} +- {r['test_std']:.4f}"
        rows.append([r["name"], r["trial"] if r["trial"] is not None else "-", test, r["n"],
                     human(r["flops"]), f"{r['flops_ratio']:.3f}", human(r["params"]),
                     *([f"{r['latency_ms']:.3f} +- {r['latency_iqr_ms']:.3f}"
                        if r.get("latency_ms") is not None else "-"] if latency else []),
                     _acc(r["search_val_acc"]),
                     *([_compute(r.get("compute_base_epochs"))] if compute else [])])
    return table(rows, ["architecture", "trial", "test acc (mean +- std)", "n", "FLOPs",
                        "ratio", "params", *(["latency ms (IQR)"] if latency else []),
                        "search val", *(["compute (base epochs)"] if compute else [])])


def _compute(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _pts(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.2f}"


def comparison_table(comparisons: list[dict[str, Any]]) -> str:
    """Winner minus each baseline, paired by evaluation seed: mean, 95% interval, verdict."""
    rows = []
    for c in comparisons:
        lo, hi = c.get("ci95") or [None, None]
        name = f"{c['a']} - {c['b']}" + (" (same widths)" if c.get("same_widths") else "")
        rows.append([name, _pts(c["mean"]), f"[{_pts(lo)}, {_pts(hi)}]", c["n"], c["verdict"]])
    return table(rows, ["paired difference (test, points)", "mean", "95% interval", "n",
                        "verdict"])


def fidelity_lines(info: dict[str, Any] | None) -> list[str]:
    """How well the search's cheap fidelity ranked, from RUN/search.json."""
    fid = (info or {}).get("fidelity") or {}
    out = []
    for c in fid.get("correlations") or []:
        rho = "-" if c["spearman"] is None else f"{c['spearman']:+.2f}"
        tau = "-" if c["kendall"] is None else f"{c['kendall']:+.2f}"
        if fid.get("mode") == "rungs":
            what = f"rung {c['rung']} vs rung {c['vs_rung']}"
        else:
            what = f"epoch {c['epoch']} vs epoch {c['vs_epoch']}"
        out.append(f"  {what}: Spearman {rho}, Kendall {tau} (n={c['n']})")
    if fid.get("mode") == "rungs":
        out.insert(0, f"rungs {fid['rungs']} (reduction factor {fid['reduction_factor']}): "
                      f"trials reaching each rung {fid['reached']}; rank correlation with the "
                      f"top rung over the trials that reached it:")
    elif out:
        out.insert(0, "rank correlation of each epoch's validation accuracy with the last "
                      "epoch's, over the complete trials:")
    return out


# ---- search --------------------------------------------------------------------------------
def add_search_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--seed-method", help="seed method(s): one, a comma-separated list, or 'all' "
                   "(default: config's seed_method.name)")
    p.add_argument("--budget", help=BUDGET_HELP)
    p.add_argument("--metric", choices=METRICS, help="what the budget limits (latency: measured "
                   "on the latency section's backend)")
    p.add_argument("--run-dir", help="run directory (default: config's run_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue the search in an existing --run-dir without retraining "
                        "finished trials or cached base networks (stop any workers first)")
    p.add_argument("--backend", choices=tuple(BACKENDS),
                   help="optuna: trials in this process (workers join its study); ray: Ray Tune "
                        "on a local Ray or a cluster")
    p.add_argument("--n-trials", type=int, help="total trials, the seed and uniform ones included")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--sampler", choices=tuple(SAMPLERS),
                   help="Optuna sampler that proposes the candidates (tpe means nsga2 with "
                        "--objective multi)")
    p.add_argument("--early-stopping", choices=tuple(EARLY_STOPPING),
                   help="stop weak trials early (Optuna pruners / Ray schedulers)")
    p.add_argument("--objective", choices=OBJECTIVES,
                   help="single: accuracy at the budget; multi: accuracy and FLOPs (Pareto)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///RUN/study.db)")
    p.add_argument("--study", dest="study_name", help="Optuna study name (default: the one "
                   "RUN/search.json records, else the run dir name)")
    p.add_argument("--final-seeds", type=int, help="seeds for retraining best/seeds/uniform")
    p.add_argument("--rungs", help="multi-fidelity: base epochs of each rung, cheap to dear, "
                   "each a complete schedule, with x<seeds> for repeated measures (e.g. "
                   "'1,3,3x3'); early stopping acts between rungs")
    p.add_argument("--reduction-factor", type=int, help="successive halving keeps the top "
                   "1/this of the trials at each rung (default 3)")
    p.add_argument("--finalists", type=int, metavar="K",
                   help="retrain the top K trials and the baselines on the selection seeds "
                        "and pick the winner by their mean validation accuracy (default 3; 1: "
                        "the search's best; single objective only)")
    p.add_argument("--address", help="Ray: 'auto' or ray://HOST:PORT to join a cluster")
    p.add_argument("--gpus-per-trial", type=float, help="Ray: GPUs per trial (fractions allowed)")
    p.add_argument("--cpus-per-trial", type=float, help="Ray: CPUs per trial")
    p.add_argument("--max-concurrent", type=int, help="Ray: trials running at once")


_FLAGS = {"overrides": "--set", "study_name": "--study"}


def command_line(name: str, args: argparse.Namespace) -> str:
    """The command as typed, rebuilt from the parsed arguments (recorded in search.json)."""
    words = ["nas-prune", name]
    for key, value in vars(args).items():
        if key.startswith("_") or key == "command" or value in (None, False, []):
            continue
        flag = _FLAGS.get(key, "--" + key.replace("_", "-"))
        if value is True:
            words.append(flag)
        elif isinstance(value, list):
            for v in value:
                words += [flag, str(v)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def prune_none(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = prune_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def search_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return prune_none({
        "run_dir": args.run_dir,
        "seed_method": {"name": args.seed_method, "budget": split_budget(args.budget)[0],
                        "metric": args.metric},
        "search": {"backend": args.backend, "n_trials": args.n_trials, "timeout": args.timeout,
                   "sampler": args.sampler, "early_stopping": args.early_stopping,
                   "objective": args.objective, "storage": args.storage,
                   "study_name": args.study_name, "final_seeds": args.final_seeds,
                   "finalists": args.finalists, "rungs": parse_rungs(args.rungs),
                   "reduction_factor": args.reduction_factor,
                   "ray": {"address": args.address, "gpus_per_trial": args.gpus_per_trial,
                           "cpus_per_trial": args.cpus_per_trial,
                           "max_concurrent": args.max_concurrent}},
    })


def parse_rungs(text: str | None) -> list[dict[str, int]] | None:
    """``"1,3,3x3"`` -> [{epochs: 1}, {epochs: 3}, {epochs: 3, seeds: 3}]."""
    if text is None:
        return None
    out = []
    for part in text.split(","):
        epochs, _, seeds = part.strip().partition("x")
        try:
            out.append({"epochs": int(epochs), "seeds": int(seeds) if seeds else 1})
        except ValueError:
            raise UserError(f"--rungs: {part.strip()!r} in {text!r}; give base epochs per "
                            f"rung, e.g. 1,3 or 1,3,3x3 (x3: three seeds)") from None
    return out


def run_search(args: argparse.Namespace) -> int:
    from ..api import search

    extra = search_overrides(args)
    if args.resume and not args.config:
        # resume with the run's own config unless another one is given
        run_dir = Path(args.run_dir or resolve_config(args, **extra).run_dir)
        if (run_dir / CONFIG_YAML).is_file():
            args.config = str(run_dir / CONFIG_YAML)
    cfg = apply_time_budget(resolve_config(args, **extra), split_budget(args.budget)[1])
    quiet_optuna()
    out = Printer()
    t0 = time.perf_counter()
    result = search(cfg, run_dir=args.run_dir, resume=args.resume,
                    command=command_line("search", args), events=out)
    wall = time.perf_counter() - t0
    counts = {k: v for k, v in state_counts(result.records).items() if v}
    out.message("")
    out.message(f"trials: {', '.join(f'{k} {v}' for k, v in counts.items())}; wall time "
                f"{wall:.1f}s")
    if result.final is not None:
        f = result.final
        out.message(f"final: each architecture trained from scratch with {f['n_seeds']} "
                    f"seed(s) ({f['base_epochs']} base epochs, {f['budget_rule']} of the "
                    f"{f['epochs_of']}), scored on the test split; std over seeds (ddof=1); "
                    f"FLOPs are multiply-accumulates")
        out.message(final_table(result.final))
        if f.get("finetune"):
            out.message(f"{FINETUNED}: {f['finetune']['rule']}; compute in epochs of the "
                        f"full-width network, the base network's training included")
        if f.get("best_weights"):
            out.message(f"best.pt holds: {f['best_weights']['why']}")
        if f.get("comparisons"):
            out.message(comparison_table(f["comparisons"]))
            out.message("verdicts claim a difference only when the 95% interval excludes 0")
    for line in fidelity_lines(read_json(result.run_dir / SEARCH_JSON)):
        out.message(line)
    if result.best is None:
        out.message("no trial completed: best.yaml was not written")
    out.message("written:")
    for path in [*result.paths, *([result.report] if result.report else [])]:
        if path is not None and Path(path).exists():
            out.message(f"  {path}")
    return 0


# ---- worker --------------------------------------------------------------------------------
def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", required=True, help="the study's storage URL (search.json)")
    p.add_argument("--study", dest="study_name", help="study name (needed when the storage "
                   "holds several)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default: the run's device)")
    p.add_argument("--n-trials", type=int, help="run at most this many trials (always: "
                   "until the study holds its total)")


def run_worker(args: argparse.Namespace) -> int:
    from ..search import run_worker as worker

    if args.n_trials is not None and args.n_trials < 1:
        raise UserError("--n-trials: must be >= 1")
    quiet_optuna()
    out = Printer()
    records = worker(args.storage, args.study_name, device=args.device, n_trials=args.n_trials,
                     events=out)
    counts = {k: v for k, v in state_counts(records).items() if v}
    out.message(f"study now holds: {', '.join(f'{k} {v}' for k, v in counts.items())}")
    return 0


# ---- export --------------------------------------------------------------------------------
def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN", help="run directory of a search")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--top", type=int, metavar="K", help="also write the K best trials to "
                       "RUN/top/")
    group.add_argument("--pareto", action="store_true", help="also write the accuracy/FLOPs "
                       "Pareto front to RUN/pareto/")
    p.add_argument("--onnx", action="store_true", help="also write RUN/best.onnx from best.pt")
    p.add_argument("--storage", help="storage URL, when search.json holds a masked one")


def run_export(args: argparse.Namespace) -> int:
    from ..search import export_run, widths_summary

    if args.top is not None and args.top < 1:
        raise UserError("--top: must be >= 1")
    quiet_optuna()
    out = export_run(args.run_dir, top=args.top, pareto=args.pareto, onnx=args.onnx,
                     storage=args.storage)
    counts = {k: v for k, v in out["counts"].items() if v}
    print(f"{args.run_dir}: {', '.join(f'{k} {v}' for k, v in counts.items()) or 'no trials'} "
          f"(from {out['source']}; trials.csv and trials.jsonl rewritten from it)")
    best = out["best"]
    if best is None:
        print("no completed trial: best.yaml not written")
    else:
        note = "with the final test results" if out["final_matches"] else \
            "without test results (final training has not run for it)"
        print(f"best: trial {best.number} ({out['best_rule']}), {widths_summary(best.widths)}, "
              f"FLOPs ratio {best.flops_ratio:.3f}, val {_acc(best.val_acc)}; {note}")
    print("written:")
    for path in out["paths"]:
        print(f"  {path}")
    return 0
