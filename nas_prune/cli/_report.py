"""``nas-prune report`` (plots and tables of a search's run directory, or several rethink runs
side by side) and ``nas-prune rethink`` (Liu et al.'s unpruned / fine-tuned / Scratch-E /
Scratch-B comparison for one seed method)."""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
from pathlib import Path

from ..errors import UserError
from ._common import add_config_arguments, resolve_config, table


# ---- report --------------------------------------------------------------------------------
def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN",
                   help="a run directory a search wrote; or one or more directories "
                        "'nas-prune rethink' wrote, to put side by side")
    p.add_argument("--out", metavar="DIR",
                   help="where the rethink summary goes (default: the rethink runs' common "
                        "parent folder); a search report is always written into its RUN")


def run_report(args: argparse.Namespace) -> int:
    dirs = [Path(d) for d in args.run_dirs]
    rethink_runs = [(d / "rethink.json").is_file() for d in dirs]
    if any(rethink_runs):
        if not all(rethink_runs):
            odd = dirs[rethink_runs.index(False)]
            raise UserError(f"{odd}: no rethink.json; a summary puts rethink runs side by side, "
                            f"so give only directories 'nas-prune rethink' wrote")
        from ..rethink_summary import write_summary

        out = Path(args.out) if args.out else Path(os.path.commonpath(
            [d.resolve() for d in dirs]))
        md = write_summary(dirs, out)
        print(f"wrote {md}, {md.with_suffix('.html')} and {md.with_suffix('.png')}")
        return 0
    if len(dirs) > 1:
        raise UserError("RUN: a search report takes one run directory; several are accepted "
                        "only as rethink runs to summarise")
    if args.out:
        raise UserError("--out: a search report is written into its run directory; drop --out")
    from ..report import write_report

    report = write_report(dirs[0])
    for warning in report.warnings:  # damaged records the report worked around (also on it)
        print(f"nas-prune: warning: {warning}", file=sys.stderr)
    print(f"wrote {report.markdown} and {report.html}")
    return 0


# ---- rethink -------------------------------------------------------------------------------
def add_rethink_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed-method", required=True, metavar="M",
                   help="a seed method (see 'nas-prune methods'), e.g. l1norm; or a "
                        "comma-separated list or 'all' (the five pruning methods), each into "
                        "RUN/<method> with the Unpruned networks trained once, plus a summary")
    p.add_argument("--budget", type=float, required=True, metavar="B",
                   help="target ratio of the base cost (seed_method.metric), e.g. 0.5")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="seeds per row, from the config's random_seed on (default 3)")
    p.add_argument("--base-epochs", type=int, metavar="E",
                   help="epochs of the unpruned/base networks and of Scratch-E "
                        "(default train.epochs)")
    p.add_argument("--finetune-epochs", type=int, metavar="E",
                   help="fine-tuning epochs (default a quarter of the base epochs, at least 1; "
                        "Liu et al.: 40 after 160)")
    p.add_argument("--finetune-lr", type=float, default=0.001, metavar="LR",
                   help="constant fine-tuning learning rate (default 0.001, Liu et al.)")
    p.add_argument("--cut-by", choices=("auto", "scores", "l1norm"), default="auto",
                   help="which channels the fine-tuned rows keep: the method's scores, filter "
                        "L1 norms, or auto (scores; l1norm for methods without a base network)")
    p.add_argument("--no-rewind", dest="rewind", action="store_false",
                   help="leave out the 'Fine-tuned (rewind)' row (the cut weights trained with "
                        "the base learning-rate schedule for the base epochs, Renda et al. "
                        "2020): Liu et al.'s four rows alone")
    p.add_argument("--run-dir", metavar="DIR",
                   help="output folder (default runs/rethink-METHOD-BUDGET)")
    add_config_arguments(p)


def _command(args: argparse.Namespace) -> str:
    parts = ["nas-prune", "rethink", "--seed-method", args.seed_method,
             "--budget", f"{args.budget:g}", "--seeds", str(args.seeds)]
    for flag in ("base_epochs", "finetune_epochs", "run_dir", "config", "device", "seed"):
        value = getattr(args, flag, None)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    if args.finetune_lr != 0.001:
        parts += ["--finetune-lr", f"{args.finetune_lr:g}"]
    if args.cut_by != "auto":
        parts += ["--cut-by", args.cut_by]
    if not args.rewind:
        parts.append("--no-rewind")
    for item in args.overrides:
        parts += ["--set", item]
    return shlex.join(parts)


def run_rethink(args: argparse.Namespace) -> int:
    from .. import rethink
    from ..rethink_summary import GAPS, fmt_gap, paired_gap, summary_table, verdict_text
    from ..seeds import parse_methods

    methods = parse_methods(args.seed_method)
    cfg = resolve_config(args)
    plans = [rethink.RethinkPlan(method=m, budget=args.budget, seeds=args.seeds,
                                 base_epochs=args.base_epochs,
                                 finetune_epochs=args.finetune_epochs,
                                 finetune_lr=args.finetune_lr, cut_by=args.cut_by,
                                 rewind=args.rewind)
             for m in methods]
    name = "all" if args.seed_method.strip() == "all" else "-".join(methods)
    run_dir = args.run_dir or f"runs/rethink-{name}-{args.budget:g}"
    say = functools.partial(print, flush=True)
    if len(plans) > 1:
        results, summary = rethink.run_rethink_many(cfg, plans, run_dir, command=_command(args),
                                                    progress=None, log=say)
        print()
        print(f"{len(results)} methods at {args.budget:g} of the base "
              f"{results[0].record['metric']}; test accuracy mean ± sample std; each gap is "
              f"Scratch-B minus a fine-tuned row, paired by seed, in points with its 95% "
              f"t-interval")
        headers, rows = summary_table([r.record for r in results])
        print(table(rows, headers))
        print(f"\nwrote {summary} (and .html, .png) and one folder per method in {run_dir}")
        return 0
    result = rethink.run_rethink(cfg, plans[0], run_dir, command=_command(args), progress=None,
                                 log=say)
    rec = result.record
    print()
    print(f"{rec['seed_method']} at {rec['budget']:g} of the base {rec['metric']}, "
          f"{rec['dataset']} / {rec['space']}, n={rec['n_seeds']} seed(s); test accuracy "
          f"mean ± sample std; FLOPs = multiply-accumulates")
    print(table(rethink.table_rows(rec), rethink.TABLE_HEADERS))
    for a, b in GAPS:
        if f"{a} - {b}" in rec["differences"]:
            gap = paired_gap(rec, a, b)
            print(f"{a} - {b} (points, paired by seed, ± std [95% CI]): {fmt_gap(gap)}: "
                  f"{verdict_text(gap)}")
    print(f"\nwall time {rec['wall_time']:.1f}s; wrote {result.markdown}, {result.json}, "
          f"{result.plot} and {result.arch}")
    return 0
