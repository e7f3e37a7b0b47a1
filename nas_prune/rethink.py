"""Liu et al.'s experiment ("Rethinking the Value of Network Pruning", ICLR 2019), one seed method.

For each of N seeds:

* **Unpruned**: the base network (the space's base widths) trained normally for the base epochs.
* **Fine-tuned**: the method's base network (trained with the method's regulariser through
  :func:`nas_prune.seeds.trained_base`; a method without a regulariser, ``base_key() == "plain"``,
  prunes the Unpruned network itself, which is exactly what ``trained_base`` would train: same
  seed, same recipe), the method's proposal for the budget, the channels cut down to it by the
  method's per-channel scores (:mod:`nas_prune.surgery`), then fine-tuned at a constant small
  learning rate (their CIFAR recipe: 40 epochs at lr 0.001; scaled down here, default a quarter of
  the base epochs). This and the next row are the only places nas-prune reuses pruned weights.
* **Fine-tuned (rewind)** (on by default, ``RethinkPlan.rewind``): the same cut weights trained
  with learning-rate rewinding (Renda et al., ICLR 2020): the base training's whole learning-rate
  schedule (``train.lr``, warm-up, cosine or step) for the base epochs, so as many SGD steps as
  Scratch-E. Liu's constant lr 0.001 for a quarter of the epochs starves fine-tuning at short
  schedules; this row is the fair control for the Scratch-B vs fine-tuning comparison.
* **Scratch-E**: the pruned architecture trained from scratch for the base epochs.
* **Scratch-B**: from scratch for ``E x base FLOPs / pruned FLOPs`` epochs (rounded), capped at 2x
  (:func:`nas_prune.train.budget_epochs`, rule ``scratch-b``), so the compute roughly matches.

Methods that need no base network (``uniform``, ``random``) have no meaningful channel scores, so
by default their fine-tuned rows cut the Unpruned network by the L1 norm of its filters (Li et
al.'s criterion); ``cut_by`` chooses explicitly. Every model is scored on the TEST split. Every
row of a seed shares that seed (initialisation and data order), so rows are compared seed by seed.

The code follows the rows: :func:`_plan` (what will be trained, epochs and SGD steps per row,
checked before any training), :func:`_unpruned`, :func:`_cut` and :func:`_fine_tune` (both
fine-tuned rows), :func:`_scratch`, and :func:`_record`, which writes ``rethink.json`` (every
number, each run's SGD steps taken and planned and its learning-rate schedule), ``rethink.md``
(a table like Liu et al.'s Tables 1-4: accuracy mean ± sample std with n, FLOPs and params, epochs
of each row; the Scratch-B gaps with 95% t-intervals), ``pruned.yaml`` (the pruned architecture,
an :class:`~nas_prune.widths.ArchSpec`) and ``rethink.png`` (a bar plot, mean with std error
bars). FLOPs are multiply-accumulates. Several methods side by side:
:mod:`nas_prune.rethink_summary`.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import write_atomic, write_json
from ._meta import code_version, hardware, now
from .budget import check_budget
from .config import Config, save_config, to_dict
from .data import Splits
from .errors import UserError
from .report import FLOPS_NOTE, Page, fmt_count, save_figure
from .rethink_summary import (
    GAPS,
    LIU_ROWS,
    REWIND,
    ROW_COLORS,
    ROWS,
    accuracy_axis,
    fmt_gap,
    paired_gap,
    row_of,
    schedule_text,
    verdict_text,
    write_summary,
)
from .scratch import data_for, resolve_space
from .seeds import Proposal, SeedContext, SeedMethod, get_method, trained_base
from .stats import fmt_mean_std, mean_std
from .surgery import (
    cut_down,
    filter_l1_scores,
    keep_from_scores,
    model_widths,
    shortcut_mismatches,
)
from .train import (
    TrainConfig,
    TrainHooks,
    TrainResult,
    budget_epochs,
    evaluate,
    resolve_device,
    train,
)
from .widths import ArchSpec, SearchSpace

__all__ = ["CUT_BY", "LIU_ROWS", "REWIND", "ROWS", "TABLE_HEADERS", "RethinkPlan", "RethinkResult",
           "finetune_config", "lr_schedule", "prune_weights", "run_rethink", "run_rethink_many",
           "steps_per_epoch", "table_rows"]

CUT_BY = ("auto", "scores", "l1norm")


@dataclass(frozen=True)
class RethinkPlan:
    """What to compare: one seed method at one budget over ``seeds`` seeds.

    ``base_epochs``: epochs of the Unpruned network, of the method's base, of Scratch-E and of
    the rewind row (default ``train.epochs``). ``finetune_epochs``: default
    ``max(1, base_epochs // 4)`` (Liu et al.: 40 after 160). ``cut_by``: ``scores`` (the
    proposal's per-channel scores), ``l1norm`` (filter L1 norms of the network being cut) or
    ``auto`` (scores when the method needs a base network, else l1norm). ``rewind``: also train
    the ``Fine-tuned (rewind)`` row (False reproduces Liu et al.'s four rows alone).
    """

    method: str
    budget: float
    seeds: int = 3
    base_epochs: int | None = None
    finetune_epochs: int | None = None
    finetune_lr: float = 0.001
    cut_by: str = "auto"
    rewind: bool = True

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


# ---- recipes ---------------------------------------------------------------------------------
def finetune_config(train_cfg: TrainConfig, lr: float) -> TrainConfig:
    """The training recipe at a constant ``lr`` (a step schedule without milestones, no warm-up)."""
    return dataclasses.replace(train_cfg, lr=float(lr), schedule="step", milestones=(),
                               warmup_epochs=0.0)


def lr_schedule(cfg: TrainConfig) -> dict[str, Any]:
    """The learning-rate schedule of a recipe, as recorded with every run."""
    if cfg.schedule == "step" and not cfg.milestones and not cfg.warmup_epochs:
        return {"lr": cfg.lr, "schedule": "constant"}
    out: dict[str, Any] = {"lr": cfg.lr, "schedule": cfg.schedule,
                           "warmup_epochs": cfg.warmup_epochs}
    if cfg.schedule == "step":
        out.update(milestones=list(cfg.milestones), gamma=cfg.gamma)
    return out


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """SGD steps in one epoch of :func:`nas_prune.train.train`: full batches only (drop_last),
    the batch never larger than the training split."""
    return n_train // max(1, min(batch_size, n_train))


class _StepCounter(TrainHooks):
    """Counts the optimizer steps a training takes (one ``after_backward`` per step)."""

    def __init__(self) -> None:
        self.steps = 0

    def after_backward(self, model: nn.Module, step: int) -> None:
        self.steps += 1


# ---- the plan --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Setup:
    """Everything resolved before the first training: what each row trains, for how long."""

    cfg: Config
    plan: RethinkPlan
    space: SearchSpace
    method: SeedMethod
    cut_by: str
    device: torch.device
    data: Splits
    base_spec: ArchSpec
    seeds: list[int]
    rows: tuple[str, ...]
    train_e: TrainConfig  # Unpruned, the method's base, Scratch-E and the rewind row
    finetune: TrainConfig  # Liu et al.'s fine-tuning: constant lr
    finetune_epochs: int
    run_dir: Path

    @property
    def epochs(self) -> int:
        return self.train_e.epochs

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.data.train), self.cfg.train.batch_size)


def _plan(cfg: Config, plan: RethinkPlan, run_dir: str | Path) -> _Setup:
    """Resolve the method, budget, data and epochs; every bad request fails here, before any
    training and before the run directory exists."""
    _, _, space = resolve_space(cfg)
    method = get_method(plan.method, cfg.seed_method.options.get(plan.method))
    check_budget(space, plan.budget, cfg.seed_method.metric)
    device = resolve_device(cfg.device)
    base_spec = space.spec(space.base_widths(), provenance={"source": f"space {space.name}"})
    data = data_for(cfg.data, device, base_spec)
    if method.base_key(space) != "plain":
        _check_cuttable(method, space)
    epochs = plan.base_epochs or cfg.train.epochs
    auto_cut = "scores" if method.needs_base else "l1norm"
    return _Setup(
        cfg=cfg, plan=plan, space=space, method=method,
        cut_by=auto_cut if plan.cut_by == "auto" else plan.cut_by,
        device=device, data=data, base_spec=base_spec,
        seeds=[cfg.random_seed + k for k in range(plan.seeds)],
        rows=ROWS if plan.rewind else LIU_ROWS,
        train_e=dataclasses.replace(cfg.train, epochs=epochs),
        finetune=finetune_config(cfg.train, plan.finetune_lr),
        finetune_epochs=plan.finetune_epochs or max(1, epochs // 4),
        run_dir=Path(run_dir))


def _check_cuttable(method: SeedMethod, space: SearchSpace) -> None:
    """Fail before any training when the method's base network lacks the family's layers."""
    base = method.base_model(space)
    missing = set(space.family.build(space.base_widths()).state_dict()) - set(base.state_dict())
    if missing:
        raise UserError(f"--seed-method {method.name}: its base network does not carry the "
                        f"family's layer {sorted(missing)[0]!r}, so its weights cannot be cut "
                        f"down for the Fine-tuned row")


def _train_row(s: _Setup, row: str, model: nn.Module, recipe: TrainConfig, *, epochs: int,
               seed: int, spec: ArchSpec,
               progress: bool | None) -> tuple[dict[str, Any], TrainResult]:
    """Train one row's model for one seed; its run entry counts the SGD steps taken."""
    counter = _StepCounter()
    res = train(model, s.data, recipe, epochs=epochs, seed=seed, device=s.device, hooks=counter,
                evaluate_test=True, progress=progress, desc=f"{row.lower()} seed {seed}")
    entry = {"row": row, "seed": seed, "status": res.status, "reason": res.reason,
             "test_acc": res.test_acc, "val_acc": res.val_acc_final, "epochs": epochs,
             "epochs_run": res.epochs_run, "steps": counter.steps,
             "steps_planned": epochs * s.steps_per_epoch, "lr_schedule": lr_schedule(recipe),
             "wall_time": round(res.wall_time, 3), "flops": int(spec.flops),
             "params": int(spec.params)}
    return entry, res


# ---- the rows --------------------------------------------------------------------------------
def _unpruned(s: _Setup, seed: int, shared: dict[int, dict[str, Any]] | None,
              progress: bool | None,
              log: Callable[[str], None]) -> tuple[nn.Module, dict[str, Any]]:
    """The Unpruned network of ``seed``: trained, or taken from ``shared`` (and added there)."""
    torch.manual_seed(seed)
    net = s.space.family.build(s.space.base_widths())
    if shared is not None and seed in shared:
        net.load_state_dict(shared[seed]["state"])
        net.to(s.device)
        entry = {**shared[seed]["entry"], "shared": True}
        log(f"Unpruned: {_acc(entry['test_acc'])} test (trained once for every method, "
            f"{entry['wall_time']:.1f}s)")
        return net, entry
    entry, res = _train_row(s, "Unpruned", net, s.train_e, epochs=s.epochs, seed=seed,
                            spec=s.base_spec, progress=progress)
    if shared is not None:
        shared[seed] = {"state": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
                        "entry": entry}
    log(f"Unpruned: {_acc(res.test_acc)} test, {s.epochs} epochs, {res.wall_time:.1f}s")
    return net, entry


def _base_network(s: _Setup, ctx: SeedContext, net: nn.Module, entry: dict[str, Any],
                  progress: bool | None) -> tuple[nn.Module, str]:
    """The network the fine-tuned rows cut: the Unpruned one for a method without a
    regulariser, else the method's own base. Returns (network, where it came from)."""
    if s.method.base_key(s.space) == "plain":
        if entry["status"] == "diverged":
            raise UserError(f"the unpruned network diverged for seed {ctx.seed} "
                            f"({entry['reason']}); lower train.lr")
        return net.eval(), "the Unpruned network of the same seed"
    base, source, base_s, _ = trained_base(s.method, ctx, epochs=s.epochs,
                                           cache_dir=s.run_dir / "bases", data_cfg=s.cfg.data,
                                           progress=progress)
    return base, (f"{s.method.name}'s base network, trained with its regulariser "
                  f"({source}, {base_s:.1f}s)")


def _propose(method: SeedMethod, base: nn.Module | None, ctx: SeedContext,
             budget: float) -> tuple[Proposal, float]:
    t0 = time.perf_counter()
    proposal = method.propose(base, ctx, budget)
    return proposal, time.perf_counter() - t0


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


def _cut(s: _Setup, seed: int, base: nn.Module, proposal: Proposal,
         propose_s: float) -> tuple[ArchSpec, nn.Module, dict[str, Any]]:
    """The pruned architecture of ``seed``, the base cut down to it (on the device) and its
    record (widths, cost, kept channels)."""
    base_spec = s.base_spec
    spec = s.space.spec(proposal.widths, provenance={
        **proposal.provenance(), "rethink_seed": seed, "base_flops": base_spec.flops,
        "cut_by": s.cut_by})
    cut, keep, notes = prune_weights(base.cpu(), s.space, proposal, s.cut_by)
    pruned = {"seed": seed, "widths": dict(spec.widths), "flops": spec.flops,
              "params": spec.params, "flops_ratio": spec.flops / base_spec.flops,
              "params_ratio": spec.params / base_spec.params,
              "propose_s": round(propose_s, 3), "knob": proposal.knob,
              "kept": {g: k.tolist() for g, k in keep.items()}, "shortcut_mismatches": notes}
    return spec, cut.to(s.device), pruned


def _fine_tune(s: _Setup, row: str, seed: int, cut: nn.Module, spec: ArchSpec, *,
               acc_cut: float, base_source: str, progress: bool | None,
               log: Callable[[str], None]) -> dict[str, Any]:
    """A fine-tuned row: ``Fine-tuned`` (Liu et al.'s constant small lr) or ``REWIND`` (the
    base recipe's schedule for the base epochs). ``cut`` is trained in place."""
    if row == REWIND:
        recipe, epochs, how = s.train_e, s.epochs, "at the base schedule"
    else:
        recipe, epochs, how = s.finetune, s.finetune_epochs, f"at lr {s.plan.finetune_lr:g}"
    entry, res = _train_row(s, row, cut, recipe, epochs=epochs, seed=seed, spec=spec,
                            progress=progress)
    log(f"{row}: {_acc(acc_cut)} test after the cut, {_acc(res.test_acc)} after {epochs} "
        f"epochs ({entry['steps']} steps) {how}, {res.wall_time:.1f}s")
    return {**entry, "test_acc_before_finetune": acc_cut, "base": base_source}


def _scratch(s: _Setup, seed: int, spec: ArchSpec, progress: bool | None,
             log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Scratch-E (the base epochs) and Scratch-B (epochs scaled by the FLOPs ratio) of ``seed``,
    each built under the seed and trained with the base recipe."""
    b_epochs = budget_epochs(dataclasses.replace(s.train_e, budget="scratch-b"),
                             base_flops=s.base_spec.flops, flops=spec.flops)
    out = []
    for row, epochs in (("Scratch-E", s.epochs), ("Scratch-B", b_epochs)):
        torch.manual_seed(seed)
        entry, res = _train_row(s, row, spec.build(), s.train_e, epochs=epochs, seed=seed,
                                spec=spec, progress=progress)
        out.append(entry)
        log(f"{row}: {_acc(res.test_acc)} test, {epochs} epochs, {res.wall_time:.1f}s")
    return out


def run_rethink(cfg: Config, plan: RethinkPlan, run_dir: str | Path, *,
                command: str | None = None, progress: bool | None = False,
                log: Callable[[str], None] | None = None,
                unpruned: dict[int, dict[str, Any]] | None = None) -> RethinkResult:
    """Run every row for every seed, write the outputs into ``run_dir`` and return them.

    ``unpruned``: Unpruned networks already trained under this ``cfg`` and plan, by seed
    (``{"state": state_dict, "entry": run record}``); a seed found there is not trained again,
    and each seed trained here is added. It is the network a separate run would train (same
    seed, recipe and data), so sharing it across methods (:func:`run_rethink_many`) saves its
    training time; a separate run reproduces it up to floating-point nondeterminism.
    """
    log = log or (lambda _msg: None)
    t_start, started = time.perf_counter(), now()
    s = _plan(cfg, plan, run_dir)
    s.run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, s.run_dir / "config.yaml")
    runs: list[dict[str, Any]] = []
    pruned: list[dict[str, Any]] = []
    specs: list[ArchSpec] = []
    for seed in s.seeds:
        def say(msg: str, seed: int = seed) -> None:
            log(f"[seed {seed}] {msg}")

        ctx = SeedContext(space=s.space, data=s.data, train=s.train_e, device=s.device,
                          seed=seed, samples=cfg.seed_method.samples,
                          metric=cfg.seed_method.metric)
        proposed = None
        if not s.method.needs_base:  # propose first: a budget it cannot meet fails early
            proposed = _propose(s.method, None, ctx, plan.budget)
        net, entry = _unpruned(s, seed, unpruned, progress, say)
        runs.append(entry)
        base, base_source = _base_network(s, ctx, net, entry, progress)
        proposal, propose_s = proposed or _propose(s.method, base, ctx, plan.budget)
        spec, cut, cut_record = _cut(s, seed, base, proposal, propose_s)
        specs.append(spec)
        pruned.append(cut_record)
        acc_cut = evaluate(cut, s.data.test, cfg.train)
        for row in (r for r in s.rows if r in ("Fine-tuned", REWIND)):
            # each fine-tuned row trains its own copy of the same cut weights
            runs.append(_fine_tune(s, row, seed, copy.deepcopy(cut), spec, acc_cut=acc_cut,
                                   base_source=base_source, progress=progress, log=say))
        runs += _scratch(s, seed, spec, progress, say)
    return _record(s, runs, pruned, specs, command=command, started=started,
                   wall_time=time.perf_counter() - t_start)


def run_rethink_many(cfg: Config, plans: list[RethinkPlan], run_dir: str | Path, *,
                     command: str | None = None, progress: bool | None = False,
                     log: Callable[[str], None] | None = None,
                     ) -> tuple[list[RethinkResult], Path]:
    """:func:`run_rethink` for several methods into ``run_dir/<method>``, training each seed's
    Unpruned network once for all of them, then
    :func:`~nas_prune.rethink_summary.write_summary` into ``run_dir``.

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


# ---- the record ------------------------------------------------------------------------------
def _record(s: _Setup, runs: list[dict[str, Any]], pruned: list[dict[str, Any]],
            specs: list[ArchSpec], *, command: str | None, started: str,
            wall_time: float) -> RethinkResult:
    """Assemble ``rethink.json`` from the runs and write it with the table, plot and YAML."""
    base_spec, spe = s.base_spec, s.steps_per_epoch
    record = {
        "experiment": "rethink (Liu et al., ICLR 2019)",
        "command": command, "seed_method": s.method.name, "budget": s.plan.budget,
        "metric": s.cfg.seed_method.metric, "space": s.space.name, "dataset": s.cfg.data.name,
        "seeds": s.seeds, "n_seeds": len(s.seeds), "cut_by": s.cut_by, "rows_run": list(s.rows),
        "epochs": {"unpruned": s.epochs,
                   "method_base": s.epochs if s.method.needs_base else None,
                   "finetune": s.finetune_epochs, "scratch_e": s.epochs,
                   "scratch_b": sorted({r["epochs"] for r in runs if r["row"] == "Scratch-B"}),
                   "rewind": s.epochs if s.plan.rewind else None},
        "finetune": {"lr": s.plan.finetune_lr, "schedule": "constant"},
        "rewind": {"epochs": s.epochs, "steps": s.epochs * spe,
                   "lr_schedule": lr_schedule(s.train_e),
                   "reference": "learning-rate rewinding, Renda et al., ICLR 2020"}
        if s.plan.rewind else None,
        "data_sizes": {"train": len(s.data.train), "val": len(s.data.val),
                       "test": len(s.data.test), "batch_size": s.cfg.train.batch_size,
                       "steps_per_epoch": spe},
        "flops_convention": FLOPS_NOTE,
        "accuracy": "test split, fraction correct; std is the sample std (n - 1)",
        "unpruned": {"widths": dict(base_spec.widths), "flops": base_spec.flops,
                     "params": base_spec.params},
        "pruned": pruned, "rows": _summarise(s, runs, pruned), "runs": runs,
        "config": to_dict(s.cfg), "hardware": hardware(s.device), "versions": code_version(),
        "started": started, "finished": now(), "wall_time": round(wall_time, 2),
    }
    record["differences"] = {f"{a} - {b}": paired_gap(record, a, b).to_dict()
                             for a, b in GAPS if a in s.rows and b in s.rows}
    run_dir = s.run_dir
    arch = specs[0].save(run_dir / "pruned.yaml")
    if any(spec.widths != specs[0].widths for spec in specs[1:]):
        for seed, spec in zip(s.seeds, specs, strict=True):
            spec.save(run_dir / f"pruned-seed{seed}.yaml")
    json_path = write_json(run_dir / "rethink.json", record)
    plot = _plot(record, run_dir / "rethink.png")
    md = write_atomic(run_dir / "rethink.md", _markdown(record, plot).markdown())
    return RethinkResult(record=record, markdown=md, json=json_path, plot=plot, arch=arch,
                         rows=record["rows"])


def _summarise(s: _Setup, runs: list[dict[str, Any]],
               pruned: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in s.rows:
        mine = [r for r in runs if r["row"] == row]
        accs = [r["test_acc"] for r in mine]
        mean, std, n = mean_std(accs)
        arch = [(s.base_spec.flops, s.base_spec.params)] if row == "Unpruned" else \
            [(p["flops"], p["params"]) for p in pruned]
        entry = {"row": row, "test_acc": accs, "mean": mean, "std": std, "n": n,
                 "failed": [f"seed {r['seed']}: {r['status']} ({r['reason']})" for r in mine
                            if r["status"] != "ok"],
                 "epochs": sorted({r["epochs"] for r in mine}),
                 "steps": sorted({r["steps"] for r in mine}),
                 "flops": sorted({f for f, _ in arch}), "params": sorted({p for _, p in arch}),
                 "wall_time": [r["wall_time"] for r in mine]}
        if row in ("Fine-tuned", REWIND):
            entry["test_acc_before_finetune"] = [r["test_acc_before_finetune"] for r in mine]
            entry["base"] = mine[0]["base"].split(" (")[0] if mine else "-"
            ft = s.finetune_epochs if row == "Fine-tuned" else s.epochs
            entry["note"] = f"{s.epochs} base epochs, then {ft} fine-tuning"
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
    after = f"(after {record['epochs']['unpruned']})"
    out = []
    for r in record["rows"]:
        unpruned = r["row"] == "Unpruned"
        epochs = ", ".join(str(e) for e in r["epochs"])
        if r["row"] == "Fine-tuned":
            epochs = f"{epochs} at lr {record['finetune']['lr']:g} {after}"
        elif r["row"] == REWIND:
            epochs = f"{epochs} at the base schedule {after}"
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
    ft = row_of(record, "Fine-tuned")
    cut_by = {"scores": "the method's per-channel scores",
              "l1norm": "the L1 norm of each filter (Li et al.)"}[record["cut_by"]]
    sizes = record["data_sizes"]
    notes = [
        FLOPS_NOTE,
        f"Fine-tuned: {ft['base']}, cut to the proposal's widths by {cut_by}, then "
        f"trained {record['epochs']['finetune']} epoch(s) at a constant lr "
        f"{record['finetune']['lr']:g} (Liu et al.'s recipe); test accuracy right after the "
        f"cut, before fine-tuning: {fmt_mean_std(ft['test_acc_before_finetune'])}.",
    ]
    rewind = record.get("rewind")
    if rewind:
        rw = row_of(record, REWIND)
        notes.append(f"{REWIND}: the same cut weights trained with learning-rate rewinding "
                     f"(Renda et al. 2020): the base recipe's schedule "
                     f"({schedule_text(rewind['lr_schedule'])}) for {rewind['epochs']} epoch(s) "
                     f"= {rewind['steps']} SGD steps, as many as Scratch-E; steps taken: "
                     f"{', '.join(str(k) for k in rw['steps'])}.")
    notes += [
        f"Scratch-E: {record['epochs']['scratch_e']} epochs (the base epochs). Scratch-B: "
        f"E x base FLOPs / pruned FLOPs, rounded, capped at 2x = "
        f"{', '.join(str(e) for e in record['epochs']['scratch_b'])} epochs (Liu et al.'s "
        f"repository uses its own FLOPs counter for this ratio).",
        f"Data: {sizes['train']} training images (batch {sizes['batch_size']}, "
        f"{sizes['steps_per_epoch']} SGD steps per epoch), {sizes['val']} validation, "
        f"{sizes['test']} test.",
    ]
    present = {r["row"] for r in record["rows"]}
    for a, b in GAPS:
        if a in present and b in present:
            gap = paired_gap(record, a, b)
            notes.append(f"{a} - {b}, paired by seed, in points (mean ± std [95% t-interval]): "
                         f"{fmt_gap(gap)}: {verdict_text(gap)}.")
    notes.append(f"Pruned widths (seed {record['pruned'][0]['seed']}): "
                 + ", ".join(f"{g}={w}" for g, w in record["pruned"][0]["widths"].items()))
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
    if row["row"] == REWIND:
        return f"{record['epochs']['unpruned']} + {epochs} rw ep"
    return f"{epochs} ep"


def _plot(record: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    rows = record["rows"]
    fig = Figure(figsize=(1.3 * len(rows) + 1.3, 4.2), layout="constrained")
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
    ax.set_xticklabels([f"{r['row'].replace(' (', chr(10) + '(')}\n{_epoch_label(record, r)}, "
                        f"n={r['n']}" for r in rows], fontsize=8)
    bars = [m - e for m, e in zip(means, errs, strict=True) if m] + \
        [m + e for m, e in zip(means, errs, strict=True)]
    accuracy_axis(ax, points + bars if points else [])
    ax.set_title(f"{record['seed_method']} at {record['budget']:g} of the base "
                 f"{record['metric']} ({record['dataset']}, {record['space']})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)
