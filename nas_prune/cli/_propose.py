"""Commands ``methods`` (list the seed methods) and ``propose`` (one proposal as an ArchSpec YAML).

``propose`` resolves the config, loads the space and the data, gets the method's base network
(trained with its regulariser, taken from the run directory's cache, or loaded from
``--base-checkpoint``), asks the method for a width vector at the budget, prints it group by group
and writes it as an architecture YAML that ``nas-prune flops/build/train`` accept.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import METRICS
from ..latency import format_ns
from ._common import (
    BUDGET_HELP,
    add_config_arguments,
    apply_time_budget,
    device_of,
    emit_json,
    human,
    resolve_config,
    split_budget,
    table,
    warn,
)


# ---- methods -------------------------------------------------------------------------------
def add_methods_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON: one object per method")


def run_methods(args: argparse.Namespace) -> int:
    from ..seeds import PRUNING_METHODS, SEED_METHODS

    rows, out = [], []
    for name, cls in SEED_METHODS.items():
        kind = "criterion" if name in PRUNING_METHODS else "baseline"
        rows.append([name, kind, cls.paper, cls.summary])
        out.append({"name": name, "kind": kind, "paper": cls.paper, "summary": cls.summary,
                    "groups": cls.groups_note, "limitations": cls.limitations,
                    "needs_base": cls.needs_base})
    if args.json:
        emit_json({"methods": out})
        return 0
    w_name = max(len(r[0]) for r in rows)
    w_kind = max(len(r[1]) for r in rows)
    print(f"{'method'.ljust(w_name)}  {'kind'.ljust(w_kind)}  paper / summary")
    print(f"{'-' * w_name}  {'-' * w_kind}  {'-' * 40}")
    for name, kind, paper, summary in rows:
        print(f"{name.ljust(w_name)}  {kind.ljust(w_kind)}  {paper}")
        print(f"{''.ljust(w_name)}  {''.ljust(w_kind)}  {summary}")
    print("\nresidual / multi-layer width groups:")
    for m in out:
        print(f"  {m['name']}: {m['groups']}")
    print("\nlimitations:")
    for m in out:
        print(f"  {m['name']}: {m['limitations'] or 'none noted'}")
    print("\n'all' on the command line means: " + ", ".join(PRUNING_METHODS))
    return 0


# ---- propose -------------------------------------------------------------------------------
def add_propose_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed-method", "-m", help="a seed method (see 'nas-prune methods'; default: "
                   "seed_method.name of the config)")
    p.add_argument("--budget", help=f"{BUDGET_HELP} (default: seed_method.budget)")
    p.add_argument("--metric", choices=METRICS,
                   help="what the budget is a ratio of (default: seed_method.metric)")
    add_config_arguments(p)
    p.add_argument("--base-checkpoint", metavar="PT",
                   help="state dict of a trained base network to use instead of training one")
    p.add_argument("--base-epochs", type=int, help="epochs to train the base network "
                   "(default: seed_method.base_epochs)")
    p.add_argument("--run-dir", help="where base networks are cached and proposals written "
                   "(default: the config's run_dir)")
    p.add_argument("--out", metavar="YAML",
                   help="proposal path (default: RUN_DIR/proposals/METHOD-BUDGET.yaml)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    sm = {k: v for k, v in (("name", args.seed_method), ("budget", split_budget(args.budget)[0]),
                            ("metric", args.metric), ("base_epochs", args.base_epochs),
                            ("base_checkpoint", args.base_checkpoint)) if v is not None}
    extra: dict[str, Any] = {"seed_method": sm or None, "run_dir": args.run_dir}
    return extra


def run_propose(args: argparse.Namespace) -> int:
    from ..api import propose
    from ..seeds import SEED_METHODS

    cfg = apply_time_budget(resolve_config(args, **_overrides(args)),
                            split_budget(args.budget)[1])
    res = propose(cfg, out=args.out)
    sm, space, run, prop = cfg.seed_method, res.space, res.run, res.run.proposal
    run_dir = Path(cfg.run_dir)
    method = SEED_METHODS[sm.name]
    base_w = space.base_widths()
    rows = [[g, base_w[g], w, w / base_w[g]] for g, w in prop.widths.items()]
    print(f"{method.name} ({method.paper}) on space {space.name}, budget {sm.budget:g} of the "
          f"base {sm.metric}, seed {cfg.random_seed}, device {device_of(cfg)}")
    print(table(rows, ["group", "base", "proposed", "keep_ratio"]))
    f0, p0 = space.count(base_w)
    f1, p1 = space.count(prop.widths)
    print(f"\nFLOPs  {human(f0)} -> {human(f1)} ({f1 / f0:.2%}); multiply-accumulates of conv "
          f"and linear layers, one image (papers counting 2 x MAC report twice this)")
    print(f"params {human(p0)} -> {human(p1)} ({p1 / p0:.2%})")
    print(f"achieved {prop.ratio:.4f} of the base {sm.metric} (budget {sm.budget:g}); "
          f"knob {prop.knob}")
    base_what = {"trained": f"trained for {sm.base_epochs} epochs",
                 "cached": f"taken from the cache in {run_dir / 'bases'}",
                 "checkpoint": f"loaded from {sm.base_checkpoint}",
                 "none": "not needed"}[run.base_source]
    if run.base_trainer and cfg.train.function is not None:  # whose loop trained it
        base_what += f", trainer: {run.base_trainer}"
    val = run.base_metrics.get("val_acc")
    print(f"base network: {base_what}" + (f", val acc {val:.4f}" if val is not None else ""))
    print(f"time: base training {run.base_train_s:.1f}s, proposal {run.propose_s:.1f}s")
    if sm.metric == "latency":  # the prediction the budget used, and the measured ratio
        latency_check(space, prop)
    print(f"wrote {res.path}")
    return 0


def latency_check(space: Any, prop: Any) -> None:
    """What a proposal under a latency budget measured (see ``seeds._basenet._measured``):
    printed, with a warning for a busy machine or a ratio outside the band (the provenance
    holds it: :func:`nas_prune.api.latency_provenance`)."""
    lat, d = space.latency, prop.diagnostics["latency"]
    r = d["measured"]
    how = "from the latency table" if d["source"] == "table" else "interleaved"
    print(f"latency: measured {r['ratio']:.4f} x the base network (halves {r['low']:.4f}-"
          f"{r['high']:.4f}, {r['rounds']} rounds {how}; "
          f"{format_ns(r['candidate']['median_ms'] * 1e6)} against "
          f"{format_ns(r['reference']['median_ms'] * 1e6)}) on {lat.cfg.backend}, "
          f"{lat.info['threads']} thread(s); predicted {format_ns(prop.cost)} "
          f"({d['predicted_ratio']:.4f} of the base), fitted to {d['fitted_to']:.4f} after "
          f"{d['corrections']} correction(s)")
    if r["busy"] and not lat.busy:  # (a busy calibration has said so in the log already)
        ref = r["reference"]
        warn(f"the machine was busy while measuring latency (base network spread "
             f"{ref['iqr_ms'] / ref['median_ms']:.0%}, ratio spread {r['spread']:.0%}); the "
             f"ratio was not kept in the latency table")
    if not d["within_band"]:
        tried = ", ".join(f"{t['measured']:.4f}" for t in d["tried"])
        cause = ("the machine was busy: run on a quieter machine or raise latency.repeats"
                 if d["busy"] else "the machine was quiet; the space's grid steps over the "
                 "band: the widths the fit reached around it measured " + tried +
                 "; the closest is kept")
        warn(f"the measured ratio {r['ratio']:.4f} misses the budget {prop.budget:g} +- "
             f"{d['band']:.4f} after {d['corrections']} correction(s) of the prediction "
             f"({cause})")
