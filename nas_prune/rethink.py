"""Liu et al.'s experiment ("Rethinking the Value of Network Pruning", ICLR 2019) for one seed method.

For each of N seeds:

* **Unpruned**: the base network (the space's base widths) trained normally for the base epochs.
* **Fine-tuned**: the method's base network (trained with the method's regulariser through
  :func:`nas_prune.seeds.trained_base`; a method without a regulariser, ``base_key() == "plain"``,
  prunes the Unpruned network itself, which is exactly what ``trained_base`` would train: same
  seed, same recipe), the method's proposal for the budget, the channels cut down to it by the
  method's per-channel scores (:mod:`nas_prune.surgery`), then fine-tuned at a constant small
  learning rate (their CIFAR recipe: 40 epochs at lr 0.001; scaled down here, default a quarter of
  the base epochs). This is the only place nas-prune reuses pruned weights.
* **Scratch-E**: the pruned architecture trained from scratch for the base epochs.
* **Scratch-B**: from scratch for ``E x base FLOPs / pruned FLOPs`` epochs (rounded), capped at 2x
  (:func:`nas_prune.train.budget_epochs`, rule ``scratch-b``), so the compute roughly matches.

Methods that need no base network (``uniform``, ``random``) have no meaningful channel scores, so
by default their Fine-tuned row cuts the Unpruned network by the L1 norm of its filters (Li et
al.'s criterion); ``cut_by`` chooses explicitly. Every model is scored on the TEST split.

Writes ``rethink.md`` (a table like Liu et al.'s Tables 1-4: accuracy mean ± sample std over the
seeds with n, FLOPs and params of both architectures, epochs of each row), ``rethink.json`` (every
number), ``pruned.yaml`` (the pruned architecture, an :class:`~nas_prune.widths.ArchSpec`) and
``rethink.png`` (a bar plot, mean with std error bars). FLOPs are multiply-accumulates.

:func:`write_summary` (``nas-prune report RUN [RUN ...]``) puts several methods' runs side by side
from their ``rethink.json``: one line per method with each row's accuracy, the Scratch-B minus
Fine-tuned gap paired by seed and whether Liu et al.'s conclusion held, plus a grouped bar plot;
runs whose dataset, space, budget, seeds or epochs differ are named in a note.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._meta import code_version
from .config import Config, save_config, to_dict
from .errors import UserError
from .report import FLOPS_NOTE, Page, fmt_count, fmt_mean_std, mean_std, save_figure
from .scratch import data_for, train_spec
from .seeds import Proposal, SeedContext, SeedMethod, check_budget, get_method, trained_base
from .surgery import (
    cut_down,
    filter_l1_scores,
    keep_from_scores,
    model_widths,
    shortcut_mismatches,
)
from .train import TrainConfig, budget_epochs, evaluate, resolve_device, train
from .widths import ArchSpec, SearchSpace

__all__ = ["CUT_BY", "ROWS", "SUMMARY_HEADERS", "TABLE_HEADERS", "RethinkPlan", "RethinkResult",
           "finetune_config", "paired_gap", "prune_weights", "read_record", "run_rethink", "run_rethink_many",
           "summary_rows", "table_rows", "write_summary"]

ROWS = ("Unpruned", "Fine-tuned", "Scratch-E", "Scratch-B")
ROW_COLORS = {"Unpruned": "tab:gray", "Fine-tuned": "tab:purple", "Scratch-E": "tab:blue",
              "Scratch-B": "tab:green"}
CUT_BY = ("auto", "scores", "l1norm")


@dataclass(frozen=True)
class RethinkPlan:
    """What to compare: one seed method at one budget over ``seeds`` seeds.

    ``base_epochs``: epochs of the Unpruned network, of the method's base and of Scratch-E
    (default ``train.epochs``). ``finetune_epochs``: default ``max(1, base_epochs // 4)`` (Liu et
    al.: 40 after 160). ``cut_by``: ``scores`` (the proposal's per-channel scores), ``l1norm``
    (filter L1 norms of the network being cut) or ``auto`` (scores when the method needs a base
    network, else l1norm).
    """

    method: str
    budget: float
    seeds: int = 3
    base_epochs: int | None = None
    finetune_epochs: int | None = None
    finetune_lr: float = 0.001
    cut_by: str = "auto"

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise UserError(f"--seeds: {self.seeds}; need at least 1")
        for name in ("base_epochs", "finetune_epochs"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UserError(f"--{name.replace('_', '-')}: {v}; need at least 1 epoch")
        if not self.finetune_lr > 0:
            raise UserError(f"--finetune-lr: {self.finetune_lr}; must be > 0")
        if self.cut_by not in CUT_BY:
            raise UserError(f"--cut-by: {self.cut_by!r}; choose one of {', '.join(CUT_BY)}")


@dataclass
class RethinkResult:
    record: dict[str, Any]
    markdown: Path
    json: Path
    plot: Path
    arch: Path
    rows: list[dict[str, Any]] = field(default_factory=list)


def finetune_config(train_cfg: TrainConfig, lr: float) -> TrainConfig:
    """The training recipe at a constant ``lr`` (a step schedule without milestones, no warm-up)."""
    return dataclasses.replace(train_cfg, lr=float(lr), schedule="step", milestones=(),
                               warmup_epochs=0.0)


def prune_weights(model: nn.Module, space: SearchSpace, proposal: Proposal,
                  cut_by: str) -> tuple[nn.Module, dict[str, torch.Tensor], list[str]]:
    """Cut ``model`` down to the proposal's widths; returns (cut model, kept indices, notes).

    ``cut_by`` is ``scores`` or ``l1norm`` (see :class:`RethinkPlan`). The notes list option-A
    shortcut positions the cut cannot copy exactly (:func:`nas_prune.surgery.shortcut_mismatches`).
    """
    family = space.family
    if cut_by == "scores":
        scores = proposal.scores
    elif cut_by == "l1norm":
        scores = filter_l1_scores(model, family)
    else:
        raise UserError(f"cut_by: {cut_by!r}; choose 'scores' or 'l1norm'")
    keep = keep_from_scores(scores, proposal.widths)
    notes = shortcut_mismatches(family, keep, model_widths(model, family))
    return cut_down(model, family, keep), keep, notes


def _check_cuttable(method: SeedMethod, space: SearchSpace) -> None:
    """Fail before any training when the method's base network lacks the family's layers."""
    base = method.base_model(space)
    missing = set(space.family.build(space.base_widths()).state_dict()) - set(base.state_dict())
    if missing:
        raise UserError(f"--seed-method {method.name}: its base network does not carry the "
                        f"family's layer {sorted(missing)[0]!r}, so its weights cannot be cut "
                        f"down for the Fine-tuned row")


def _propose(method: SeedMethod, base: nn.Module | None, ctx: SeedContext,
             budget: float) -> tuple[Proposal, float]:
    t0 = time.perf_counter()
    try:
        proposal = method.propose(base, ctx, budget)
    except NotImplementedError as exc:  # a method still being written
        raise UserError(f"--seed-method {method.name}: {exc}") from None
    return proposal, time.perf_counter() - t0


def _hardware(device: torch.device) -> dict[str, Any]:
    return {"device": str(device), "cpu": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch_threads": torch.get_num_threads()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_entry(row: str, seed: int, result, epochs: int, spec_flops: int,
               spec_params: int) -> dict[str, Any]:
    return {"row": row, "seed": seed, "status": result.status, "reason": result.reason,
            "test_acc": result.test_acc, "val_acc": result.val_acc_final, "epochs": epochs,
            "epochs_run": result.epochs_run, "wall_time": round(result.wall_time, 3),
            "flops": int(spec_flops), "params": int(spec_params)}


def run_rethink(cfg: Config, plan: RethinkPlan, run_dir: str | Path, *,
                command: str | None = None, progress: bool | None = False,
                log: Callable[[str], None] | None = None,
                unpruned: dict[int, dict[str, Any]] | None = None) -> RethinkResult:
    """Run the four rows for every seed, write the outputs into ``run_dir`` and return them.

    ``unpruned``: Unpruned networks already trained under this ``cfg`` and plan, by seed
    (``{"state": state_dict, "entry": run record}``); a seed found there is not trained again,
    and each seed trained here is added. It is the network a separate run would train (same
    seed, recipe and data), so sharing it across methods (:func:`run_rethink_many`) saves its
    training time; a separate run reproduces it up to floating-point nondeterminism.
    """
    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    started = _now()
    space = SearchSpace.load(cfg.space)
    family = space.family
    metric = cfg.seed_method.metric
    method = get_method(plan.method, cfg.seed_method.options.get(plan.method))
    check_budget(space, plan.budget, metric)
    cut_by = plan.cut_by if plan.cut_by != "auto" else \
        ("scores" if method.needs_base else "l1norm")
    device = resolve_device(cfg.device)
    base_spec = space.spec(space.base_widths(), provenance={"source": f"space {space.name}"})
    data = data_for(cfg.data, device, base_spec)
    if method.base_key(space) != "plain":
        _check_cuttable(method, space)
    epochs = plan.base_epochs or cfg.train.epochs
    ft_epochs = plan.finetune_epochs or max(1, epochs // 4)
    ft_cfg = finetune_config(cfg.train, plan.finetune_lr)
    train_e = dataclasses.replace(cfg.train, epochs=epochs)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    runs: list[dict[str, Any]] = []
    pruned: list[dict[str, Any]] = []
    specs: list[ArchSpec] = []
    seeds = [cfg.random_seed + k for k in range(plan.seeds)]
    for seed in seeds:
        tag = f"[seed {seed}]"
        ctx = SeedContext(space=space, data=data, train=train_e, device=device, seed=seed,
                          samples=cfg.seed_method.samples, metric=metric)
        if not method.needs_base:  # propose first: a budget it cannot meet fails before training
            proposal, propose_s = _propose(method, None, ctx, plan.budget)
        # Unpruned (and, for a method without a regulariser, its base network)
        torch.manual_seed(seed)
        net = family.build(space.base_widths())
        if unpruned is not None and seed in unpruned:
            net.load_state_dict(unpruned[seed]["state"])
            net.to(device)
            entry = {**unpruned[seed]["entry"], "shared": True}
            log(f"{tag} Unpruned: {_acc(entry['test_acc'])} test (trained once for every "
                f"method, {entry['wall_time']:.1f}s)")
        else:
            res = train(net, data, train_e, epochs=epochs, seed=seed, device=device,
                        evaluate_test=True, progress=progress, desc=f"unpruned seed {seed}")
            entry = _run_entry("Unpruned", seed, res, epochs, base_spec.flops, base_spec.params)
            if unpruned is not None:
                unpruned[seed] = {"state": {k: v.detach().cpu().clone()
                                            for k, v in net.state_dict().items()},
                                  "entry": entry}
            log(f"{tag} Unpruned: {_acc(res.test_acc)} test, {epochs} epochs, "
                f"{res.wall_time:.1f}s")
        runs.append(entry)
        if method.base_key(space) == "plain":
            if entry["status"] == "diverged":
                raise UserError(f"the unpruned network diverged for seed {seed} "
                                f"({entry['reason']}); lower train.lr")
            base, base_source = net.eval(), "the Unpruned network of the same seed"
        else:
            base, source, base_s, _ = trained_base(method, ctx, epochs=epochs,
                                                   cache_dir=run_dir / "bases",
                                                   data_cfg=cfg.data, progress=progress)
            base_source = (f"{method.name}'s base network, trained with its regulariser "
                           f"({source}, {base_s:.1f}s)")
        # proposal -> cut -> fine-tune
        if method.needs_base:
            proposal, propose_s = _propose(method, base, ctx, plan.budget)
        spec = space.spec(proposal.widths, provenance={
            **proposal.provenance(), "rethink_seed": seed, "base_flops": base_spec.flops,
            "cut_by": cut_by})
        specs.append(spec)
        cut, keep, notes = prune_weights(base.cpu(), space, proposal, cut_by)
        cut = cut.to(device)
        acc_cut = evaluate(cut, data.test, cfg.train)
        res = train(cut, data, ft_cfg, epochs=ft_epochs, seed=seed, device=device,
                    evaluate_test=True, progress=progress, desc=f"fine-tune seed {seed}")
        runs.append({**_run_entry("Fine-tuned", seed, res, ft_epochs, spec.flops, spec.params),
                     "test_acc_before_finetune": acc_cut, "base": base_source})
        log(f"{tag} Fine-tuned: {_acc(acc_cut)} test after the cut, {_acc(res.test_acc)} after "
            f"{ft_epochs} epochs at lr {plan.finetune_lr:g}, {res.wall_time:.1f}s")
        pruned.append({"seed": seed, "widths": dict(spec.widths), "flops": spec.flops,
                       "params": spec.params, "flops_ratio": spec.flops / base_spec.flops,
                       "params_ratio": spec.params / base_spec.params,
                       "propose_s": round(propose_s, 3), "knob": proposal.knob,
                       "kept": {g: k.tolist() for g, k in keep.items()},
                       "shortcut_mismatches": notes})
        # from scratch
        b_epochs = budget_epochs(dataclasses.replace(train_e, budget="scratch-b"),
                                 base_flops=base_spec.flops, flops=spec.flops)
        for row, n_epochs in (("Scratch-E", epochs), ("Scratch-B", b_epochs)):
            res, _ = train_spec(spec, cfg, epochs=n_epochs, exact_epochs=True, seed=seed,
                                device=device, evaluate_test=True, progress=progress)
            runs.append(_run_entry(row, seed, res, n_epochs, spec.flops, spec.params))
            log(f"{tag} {row}: {_acc(res.test_acc)} test, {n_epochs} epochs, "
                f"{res.wall_time:.1f}s")

    rows = _summarise(runs, base_spec, pruned, epochs, ft_epochs)
    record = {
        "experiment": "rethink (Liu et al., ICLR 2019)",
        "command": command, "seed_method": method.name, "budget": plan.budget,
        "metric": metric, "space": space.name, "dataset": cfg.data.name,
        "seeds": seeds, "n_seeds": len(seeds), "cut_by": cut_by,
        "epochs": {"unpruned": epochs, "method_base": epochs if method.needs_base else None,
                   "finetune": ft_epochs, "scratch_e": epochs,
                   "scratch_b": sorted({r["epochs"] for r in runs if r["row"] == "Scratch-B"})},
        "finetune": {"lr": plan.finetune_lr, "schedule": "constant"},
        "flops_convention": FLOPS_NOTE,
        "accuracy": "test split, fraction correct; std is the sample std (n - 1)",
        "unpruned": {"widths": dict(base_spec.widths), "flops": base_spec.flops,
                     "params": base_spec.params},
        "pruned": pruned, "rows": rows, "runs": runs,
        "config": to_dict(cfg), "hardware": _hardware(device), "versions": code_version(),
        "started": started, "finished": _now(),
        "wall_time": round(time.perf_counter() - t_start, 2),
    }
    arch = specs[0].save(run_dir / "pruned.yaml")
    if any(s.widths != specs[0].widths for s in specs[1:]):
        for seed, s in zip(seeds, specs, strict=True):
            s.save(run_dir / f"pruned-seed{seed}.yaml")
    json_path = run_dir / "rethink.json"
    json_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    plot = _plot(record, run_dir / "rethink.png")
    md = run_dir / "rethink.md"
    md.write_text(_markdown(record, plot).markdown())
    return RethinkResult(record=record, markdown=md, json=json_path, plot=plot, arch=arch,
                         rows=rows)


def run_rethink_many(cfg: Config, plans: list[RethinkPlan], run_dir: str | Path, *,
                     command: str | None = None, progress: bool | None = False,
                     log: Callable[[str], None] | None = None,
                     ) -> tuple[list[RethinkResult], Path]:
    """:func:`run_rethink` for several methods into ``run_dir/<method>``, training each seed's
    Unpruned network once for all of them, then :func:`write_summary` into ``run_dir``.

    Returns the per-method results and the summary's Markdown path.
    """
    log = log or (lambda _msg: None)
    names = [p.method for p in plans]
    if len(set(names)) != len(names):
        raise UserError(f"--seed-method: {', '.join(names)} names a method twice; give each once")
    for plan in plans:  # unknown methods and bad method options fail before any training
        get_method(plan.method, cfg.seed_method.options.get(plan.method))
    shared: dict[int, dict[str, Any]] = {}
    results = []
    for plan in plans:
        results.append(run_rethink(cfg, plan, Path(run_dir) / plan.method, command=command,
                                   progress=progress, unpruned=shared,
                                   log=lambda msg, m=plan.method: log(f"[{m}] {msg}")))
    return results, write_summary([r.json.parent for r in results], run_dir)


def _acc(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _summarise(runs: list[dict[str, Any]], base_spec: ArchSpec, pruned: list[dict[str, Any]],
               epochs: int, ft_epochs: int) -> list[dict[str, Any]]:
    out = []
    for row in ROWS:
        mine = [r for r in runs if r["row"] == row]
        accs = [r["test_acc"] for r in mine]
        mean, std, n = mean_std(accs)
        arch = [(base_spec.flops, base_spec.params)] if row == "Unpruned" else \
            [(p["flops"], p["params"]) for p in pruned]
        entry = {"row": row, "test_acc": accs, "mean": mean, "std": std, "n": n,
                 "failed": [f"seed {r['seed']}: {r['status']} ({r['reason']})" for r in mine
                            if r["status"] != "ok"],
                 "epochs": sorted({r["epochs"] for r in mine}),
                 "flops": sorted({f for f, _ in arch}), "params": sorted({p for _, p in arch}),
                 "wall_time": [r["wall_time"] for r in mine]}
        if row == "Fine-tuned":
            entry["test_acc_before_finetune"] = [r["test_acc_before_finetune"] for r in mine]
            entry["base"] = mine[0]["base"].split(" (")[0] if mine else "-"
            entry["note"] = f"{epochs} base epochs, then {ft_epochs} fine-tuning"
        out.append(entry)
    return out


def _span(values: list[int], base: int | None = None) -> str:
    text = fmt_count(values[0]) if len(values) == 1 else \
        f"{fmt_count(values[0])}-{fmt_count(values[-1])}"
    if base:
        text += f" ({values[0] / base:.1%})" if len(values) == 1 else \
            f" ({values[0] / base:.1%}-{values[-1] / base:.1%})"
    return text


def table_rows(record: dict[str, Any]) -> list[list[str]]:
    """The rethink table as text cells: row, test accuracy (%), FLOPs, params, epochs."""
    base_f, base_p = record["unpruned"]["flops"], record["unpruned"]["params"]
    lr = record["finetune"]["lr"]
    out = []
    for r in record["rows"]:
        unpruned = r["row"] == "Unpruned"
        epochs = ", ".join(str(e) for e in r["epochs"])
        if r["row"] == "Fine-tuned":
            epochs = f"{epochs} at lr {lr:g} (after {record['epochs']['unpruned']})"
        out.append([r["row"], fmt_mean_std(r["test_acc"]),
                    _span(r["flops"], None if unpruned else base_f),
                    _span(r["params"], None if unpruned else base_p), epochs])
    return out


TABLE_HEADERS = ["", "test accuracy (%)", "FLOPs (MAC)", "params", "epochs"]


def _markdown(record: dict[str, Any], plot: Path) -> Page:
    page = Page(f"Rethinking the value of pruning: {record['seed_method']} at "
                f"{record['budget']:g} of the base {record['metric']}")
    page.p(f"Liu et al. (ICLR 2019), Tables 1-4, for seed method {record['seed_method']} on "
           f"{record['dataset']} (space {record['space']}); {record['n_seeds']} seed(s) "
           f"{record['seeds']}. Test accuracy in % as mean ± sample std (n).")
    page.table(TABLE_HEADERS, table_rows(record))
    ft = next(r for r in record["rows"] if r["row"] == "Fine-tuned")
    cut_by = {"scores": "the method's per-channel scores",
              "l1norm": "the L1 norm of each filter (Li et al.)"}[record["cut_by"]]
    notes = [
        FLOPS_NOTE,
        f"Fine-tuned: {ft['base']}, cut to the proposal's widths by {cut_by}, then "
        f"trained {record['epochs']['finetune']} epoch(s) at a constant lr "
        f"{record['finetune']['lr']:g}; test accuracy right after the cut, before fine-tuning: "
        f"{fmt_mean_std(ft['test_acc_before_finetune'])}.",
        f"Scratch-E: {record['epochs']['scratch_e']} epochs (the base epochs). Scratch-B: "
        f"E x base FLOPs / pruned FLOPs, rounded, capped at 2x = "
        f"{', '.join(str(e) for e in record['epochs']['scratch_b'])} epochs (Liu et al.'s "
        f"repository uses its own FLOPs counter for this ratio).",
        f"Pruned widths (seed {record['pruned'][0]['seed']}): "
        + ", ".join(f"{g}={w}" for g, w in record["pruned"][0]["widths"].items()),
    ]
    mism = [m for p in record["pruned"] for m in p["shortcut_mismatches"]]
    if mism:
        notes.append(f"Option-A shortcuts: the cut could not copy every shortcut position "
                     f"exactly ({len(mism)} issue(s), see rethink.json); fine-tuning repairs it.")
    notes += [f"{r['row']} {m}" for r in record["rows"] for m in r["failed"]]
    if any(r.get("shared") for r in record["runs"]):
        notes.append("Unpruned: trained once per seed for every method of the same "
                     "'nas-prune rethink' call (the same seeded recipe a separate run trains); "
                     "its wall time is not in this run's total.")
    hw = record["hardware"]
    notes.append(f"Command: {record['command'] or '-'}; wall time {record['wall_time']:.1f}s on "
                 f"{hw['device']} ({hw['gpu'] or hw['cpu']}, {hw['torch_threads']} threads); "
                 f"nas-prune {record['versions'].get('nas_prune')} "
                 f"(git {record['versions'].get('git')}), torch {record['versions'].get('torch')}.")
    page.bullets(notes)
    page.image(plot, "Test accuracy, mean with sample-std error bars")
    return page


def _epoch_label(record: dict[str, Any], row: dict[str, Any]) -> str:
    epochs = ", ".join(str(e) for e in row["epochs"])
    if row["row"] == "Fine-tuned":
        return f"{record['epochs']['unpruned']} + {epochs} ft ep"
    return f"{epochs} ep"


def _plot(record: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    rows = record["rows"]
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    xs = range(len(rows))
    means = [100 * r["mean"] if r["mean"] is not None else 0.0 for r in rows]
    errs = [100 * r["std"] if r["std"] is not None else 0.0 for r in rows]
    ax.bar(xs, means, yerr=errs, capsize=6, color=[ROW_COLORS[r["row"]] for r in rows],
           edgecolor="black", alpha=0.85)
    points = []
    for x, r in zip(xs, rows, strict=True):
        vals = [100 * v for v in r["test_acc"] if v is not None]
        points += vals
        ax.scatter([x] * len(vals), vals, color="black", s=12, zorder=3,
                   label="one seed" if x == 0 else None)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{r['row']}\n{_epoch_label(record, r)}, n={r['n']}" for r in rows])
    bars = [m - e for m, e in zip(means, errs, strict=True) if m] + \
        [m + e for m, e in zip(means, errs, strict=True)]
    _accuracy_axis(ax, points + bars if points else [])
    ax.set_title(f"{record['seed_method']} at {record['budget']:g} of the base "
                 f"{record['metric']} ({record['dataset']}, {record['space']})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


# ---- several methods side by side ------------------------------------------------------------
#: record fields that must agree for methods to share one table; a difference is named in a
#: note (the method's own base epochs and its Scratch-B epochs may differ legitimately)
COMPARABLE = (("dataset",), ("space",), ("budget",), ("metric",), ("seeds",),
              ("epochs", "unpruned"), ("epochs", "finetune"), ("finetune",),
              ("config", "data"), ("config", "train"))


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """``rethink.json`` of a rethink run directory (a one-line :class:`UserError` otherwise)."""
    path = Path(run_dir) / "rethink.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: no rethink.json; give a directory 'nas-prune rethink' wrote")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); "
                        f"run 'nas-prune rethink' again") from None
    if not isinstance(record, dict) or not isinstance(record.get("rows"), list) or \
            {r.get("row") for r in record["rows"] if isinstance(r, dict)} != set(ROWS):
        raise UserError(f"{path}: not a rethink record (needs the rows {', '.join(ROWS)}); "
                        f"run 'nas-prune rethink' again")
    return record


def paired_gap(record: dict[str, Any], better: str, worse: str) -> tuple[float | None,
                                                                         float | None, int]:
    """Mean, sample std and n over seeds of ``better - worse`` test accuracy (same seed paired)."""
    by_seed: dict[str, dict[int, float]] = {better: {}, worse: {}}
    for run in record.get("runs", []):
        if run.get("row") in by_seed and run.get("test_acc") is not None:
            by_seed[run["row"]][run["seed"]] = run["test_acc"]
    seeds = sorted(set(by_seed[better]) & set(by_seed[worse]))
    return mean_std([by_seed[better][s] - by_seed[worse][s] for s in seeds])


def _gap_text(gap: tuple[float | None, float | None, int]) -> str:
    mean, std, n = gap
    if mean is None:
        return "-"
    return f"{100 * mean:+.2f}" + (f" ± {100 * std:.2f}" if std is not None else "") + f" (n={n})"


def summary_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """One line per method: each row's accuracy, the pruned FLOPs ratio, the Scratch-B minus
    Fine-tuned gap (paired by seed) and whether Liu et al.'s conclusion held."""
    out = []
    for rec in records:
        rows = {r["row"]: r for r in rec["rows"]}
        ratios = [p["flops_ratio"] for p in rec.get("pruned", [])]
        gap = paired_gap(rec, "Scratch-B", "Fine-tuned")
        held = "-" if gap[0] is None else ("yes" if gap[0] >= 0 else "no")
        if gap[0] is not None and gap[1] is not None and abs(gap[0]) < gap[1]:
            held += " (within the seed spread)"
        out.append([rec["seed_method"]] + [fmt_mean_std(rows[r]["test_acc"]) for r in ROWS]
                   + [_ratio_span(ratios), _gap_text(gap), held,
                      f"{rec.get('wall_time', 0) / 60:.1f}"])
    return out


def _ratio_span(ratios: list[float]) -> str:
    if not ratios:
        return "-"
    lo, hi = min(ratios), max(ratios)
    return f"{lo:.1%}" if lo == hi else f"{lo:.1%}-{hi:.1%}"


SUMMARY_HEADERS = ["method", *ROWS, "pruned FLOPs", "Scratch-B - Fine-tuned (points)",
                   "Scratch-B >= Fine-tuned?", "wall (min)"]


def _differences(records: list[dict[str, Any]]) -> list[str]:
    def get(record: dict[str, Any], path: tuple[str, ...]) -> Any:
        for key in path:
            record = record.get(key) if isinstance(record, dict) else None
        return record

    notes = []
    for path in COMPARABLE:
        values = [get(r, path) for r in records]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            name = ".".join(path)
            if all(isinstance(v, dict) for v in values):  # name the sub-keys that differ
                keys = sorted({k for v in values for k in v
                               if len({json.dumps(w.get(k), default=str) for w in values}) > 1})
                name += " (" + ", ".join(keys) + ")"
                shown = "; ".join(f"{r['seed_method']}: " + ", ".join(
                    f"{k}={v.get(k)}" for k in keys) for r, v in zip(records, values, strict=True))
            else:
                shown = "; ".join(f"{r['seed_method']}: {v}"
                                  for r, v in zip(records, values, strict=True))
            notes.append(f"The runs differ in {name!r} ({shown}), so their rows are not "
                         f"directly comparable.")
    return notes


def write_summary(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Put several rethink runs side by side: ``rethink-summary.md``, ``.html`` and ``.png`` in
    ``out_dir`` (every number read from the runs' ``rethink.json``). Returns the Markdown path."""
    records = [read_record(d) for d in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = records[0]
    page = Page(f"Rethinking the value of pruning: {len(records)} seed method(s) at "
                f"{first['budget']:g} of the base {first['metric']}")
    page.p(f"Liu et al. (ICLR 2019) for each method on {first['dataset']} (space "
           f"{first['space']}): test accuracy in % as mean ± sample std (n) over seeds "
           f"{first['seeds']}. The gap is Scratch-B minus Fine-tuned per seed (the same seed's "
           f"base network, proposal and data order), mean ± sample std in points.")
    page.table(SUMMARY_HEADERS, summary_rows(records))
    ep = first["epochs"]
    notes = _differences(records) + [
        f"Epochs (of {first['seed_method']}'s run): Unpruned and Scratch-E {ep['unpruned']}, "
        f"fine-tuning {ep['finetune']} at a constant lr {first['finetune']['lr']:g}, Scratch-B "
        f"{', '.join(str(e) for e in ep['scratch_b'])}.",
        FLOPS_NOTE,
    ] + [f"{rec['seed_method']}: {rec['command'] or '-'} (run {Path(d)})"
         for rec, d in zip(records, run_dirs, strict=True)]
    page.bullets(notes)
    plot = _summary_plot(records, out / "rethink-summary.png")
    page.image(plot, "Test accuracy per method and row, mean with sample-std error bars; dots "
                     "are single seeds")
    md = out / "rethink-summary.md"
    md.write_text(page.markdown())
    md.with_suffix(".html").write_text(page.html())
    return md


def _summary_plot(records: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.5, 1.6 * len(records) + 2), 4.4), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(ROWS)
    values = []
    for k, row in enumerate(ROWS):
        for i, rec in enumerate(records):
            r = next(x for x in rec["rows"] if x["row"] == row)
            accs = [100 * a for a in r["test_acc"] if a is not None]
            mean, std, _ = mean_std(accs)
            x = i + (k - (len(ROWS) - 1) / 2) * width
            if mean is not None:
                ax.bar(x, mean, width, yerr=std or 0.0, capsize=3, color=ROW_COLORS[row],
                       edgecolor="black", alpha=0.85, label=row if i == 0 else None)
                values += accs + [mean - (std or 0.0)]
            ax.scatter([x] * len(accs), accs, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels([r["seed_method"] for r in records])
    _accuracy_axis(ax, values)
    first = records[0]
    ax.set_title(f"Liu et al.'s comparison at {first['budget']:g} of the base {first['metric']} "
                 f"({first['dataset']}, {first['space']})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=len(ROWS), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    return save_figure(fig, path)


def _accuracy_axis(ax, values: list[float]) -> None:
    """Y range around ``values`` (accuracies in %, padded, within 0-100); the label says when
    the axis does not start at 0."""
    if values:
        lo, hi = min(values), max(values)
        pad = max(1.0, 0.25 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    truncated = ax.get_ylim()[0] > 0
    ax.set_ylabel("test accuracy (%)" + (" - axis does not start at 0" if truncated else ""))
