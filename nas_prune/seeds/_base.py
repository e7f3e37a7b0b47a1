"""The seed-method interface and the budget machinery every method shares.

A seed method looks at a trained, over-parameterised base network and *proposes* a width vector
for a budget (a ratio of the base FLOPs or params). It scores every channel of every width group
(one score per channel, higher = more important), then turns scores into widths with its own knob,
searched until the budget is met within 1%. Its surviving weights are never reused by the search.

Lifecycle, as called by :func:`nas_prune.seeds.propose`:

1. ``base_model(space)`` builds the network the base training runs on (a family model, or one with
   extra modules such as AutoPruner's gates);
2. ``base_hooks(model, space)`` gives the regulariser used while training it (Slimming's sparsity);
   ``base_key(space)`` names that regulariser so trained bases are cached and shared between methods;
3. ``propose(model, ctx, budget)`` returns a :class:`Proposal`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..data import Splits
from ..errors import UserError
from ..families import Widths
from ..train import TrainConfig, TrainHooks
from ..widths import SearchSpace

BUDGET_TOLERANCE = 0.01


@dataclass
class SeedContext:
    """What a method may look at besides the trained base network."""

    space: SearchSpace
    data: Splits
    train: TrainConfig
    device: torch.device
    seed: int = 0
    samples: int = 500  # images for data-driven methods (activations, reconstruction)
    metric: str = "flops"  # the budget is a ratio of this cost

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + offset)

    def sample_images(self, n: int | None = None, offset: int = 0) -> torch.Tensor:
        """``n`` training images, drawn with the context's seed, on the context's device."""
        n = min(n or self.samples, len(self.data.train))
        idx = torch.randperm(len(self.data.train), generator=self.generator(offset))[:n]
        return self.data.train.x[idx.to(self.data.train.x.device)].to(self.device)


@dataclass
class Proposal:
    """A seed method's answer: the width vector, its per-channel scores and how it got there."""

    method: str
    widths: Widths
    scores: dict[str, torch.Tensor]  # group -> one score per channel of the base network
    budget: float
    metric: str
    cost: int  # of the proposed widths, in ``metric``
    base_cost: int
    knob: dict[str, Any] = field(default_factory=dict)  # threshold, lambda, ratio... found
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.cost / self.base_cost

    def score_summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for g, s in self.scores.items():
            s = s.detach().float().cpu()
            q = torch.quantile(s, torch.tensor([0.0, 0.5, 1.0])).tolist() if s.numel() else [0] * 3
            out[g] = {"min": q[0], "median": q[1], "max": q[2], "kept": int(self.widths[g]),
                      "of": int(s.numel())}
        return out

    def provenance(self) -> dict[str, Any]:
        return {"seed_method": self.method, "budget": self.budget, "budget_metric": self.metric,
                "achieved_ratio": round(self.ratio, 6), "knob": self.knob,
                "diagnostics": self.diagnostics, "scores": self.score_summary()}


class SeedMethod(ABC):
    """Base of every seed method. Subclasses set the class attributes and :meth:`scores`."""

    name: ClassVar[str]
    paper: ClassVar[str]
    summary: ClassVar[str]  # one line for ``nas-prune methods``
    groups_note: ClassVar[str] = "residual groups: sum of per-layer normalised scores"
    limitations: ClassVar[str] = ""
    needs_base: ClassVar[bool] = True  # False for baselines that ignore the network

    @dataclass(frozen=True)
    class Options:
        """The method's knobs (``seed_method.options.<name>`` in a config)."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        try:
            self.options = self.Options(**dict(options or {}))
        except TypeError:
            allowed = ", ".join(f.name for f in dataclasses.fields(self.Options)) or "none"
            raise UserError(f"seed_method.options.{self.name}: unknown option in "
                            f"{sorted(options or {})}; allowed: {allowed}") from None

    # -- base network ---------------------------------------------------------------------
    def base_key(self, space: SearchSpace) -> str:
        """Identifies the base training (model + regulariser): equal keys share a cached base."""
        return "plain"

    def base_model(self, space: SearchSpace) -> nn.Module:
        return space.family.build(space.base_widths())

    def base_hooks(self, model: nn.Module, space: SearchSpace) -> TrainHooks | None:
        return None

    # -- proposal -------------------------------------------------------------------------
    @abstractmethod
    def scores(self, model: nn.Module, ctx: SeedContext) -> dict[str, torch.Tensor]:
        """One importance score per channel of each width group of the base network."""

    def propose(self, model: nn.Module, ctx: SeedContext, budget: float) -> Proposal:
        """Default: one global threshold over per-group normalised scores, fitted to the budget."""
        scores = self.scores(model, ctx)
        widths, knob = fit_threshold(ctx.space, normalise_groups(scores), budget, ctx.metric)
        return make_proposal(self.name, ctx, budget, widths, scores, knob)


# ---- budget machinery ----------------------------------------------------------------------
def check_budget(space: SearchSpace, budget: float, metric: str = "flops") -> int:
    """The target cost of ``budget``; an impossible budget is a one-line error."""
    if not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise UserError(f"budget: {budget!r} must be a ratio in (0, 1] of the base {metric}")
    base = space.base_cost(metric)
    floor = space.cost(space.min_widths(), metric)
    if floor > budget * base * (1 + BUDGET_TOLERANCE):
        raise UserError(f"budget: {budget} is below the smallest network of space {space.name} "
                        f"({floor / base:.4f} of the base {metric}); raise the budget or lower "
                        f"min_width")
    return int(round(budget * base))


def normalise_groups(scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each group's scores divided by their mean, so one threshold is fair across layers."""
    return {g: s.float() / s.float().abs().mean().clamp_min(1e-12) for g, s in scores.items()}


def aggregate_layers(per_layer: list[torch.Tensor]) -> torch.Tensor:
    """Scores of a group spanning several layers: the sum of each layer's mean-normalised scores."""
    return sum(s.float() / s.float().abs().mean().clamp_min(1e-12) for s in per_layer)


def kept_counts(space: SearchSpace, scores: Mapping[str, torch.Tensor], threshold: float) -> Widths:
    """Channels strictly above ``threshold`` per group, snapped up to the grid (never below min)."""
    return {g: space.snap_one(g, int((scores[g] > threshold).sum()), up=True)
            for g in space.group_names}


def fit_threshold(space: SearchSpace, scores: Mapping[str, torch.Tensor], budget: float,
                  metric: str = "flops") -> tuple[Widths, dict[str, Any]]:
    """One global threshold over all scores, bisected until the budget is met within 1%."""
    target = check_budget(space, budget, metric)
    values = torch.cat([s.flatten().float() for s in scores.values()]).sort().values
    lo, hi = 0, len(values) - 1  # index of the threshold in the sorted scores
    best = None
    while lo <= hi:  # cost decreases as the threshold index grows
        mid = (lo + hi) // 2
        t = float(values[mid]) - 1e-12 if mid == 0 else float(values[mid - 1])
        widths = kept_counts(space, scores, t)
        cost = space.cost(widths, metric)
        if best is None or abs(cost - target) < abs(best[1] - target):
            best = (widths, cost, t)
        if cost > target:
            lo = mid + 1
        else:
            hi = mid - 1
    widths, _, t = best
    widths = refine_to_budget(space, widths, target, metric, scores)
    return widths, {"threshold": t}


def fit_scalar(space: SearchSpace, widths_at: Callable[[float], Mapping[str, float]],
               budget: float, metric: str = "flops", *, lo: float = 0.0, hi: float = 1.0,
               scores: Mapping[str, torch.Tensor] | None = None,
               steps: int = 40) -> tuple[Widths, float]:
    """Bisect a scalar knob ``x`` in [lo, hi] (widths growing with x) to meet the budget."""
    target = check_budget(space, budget, metric)
    best = None
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        widths = space.snap(widths_at(mid))
        cost = space.cost(widths, metric)
        if best is None or abs(cost - target) < abs(best[1] - target):
            best = (widths, cost, mid)
        if cost > target:
            hi = mid
        else:
            lo = mid
        if abs(cost - target) <= 0.25 * BUDGET_TOLERANCE * target:
            break
    widths, _, x = best
    return refine_to_budget(space, widths, target, metric, scores), x


def refine_to_budget(space: SearchSpace, widths: Mapping[str, int], target: int, metric: str,
                     scores: Mapping[str, torch.Tensor] | None = None,
                     tolerance: float = BUDGET_TOLERANCE) -> Widths:
    """Move single groups one grid step at a time until the cost is within ``tolerance``.

    Too expensive: drop a step from the group whose next channel to go has the lowest score per
    unit of cost saved. Too cheap: add a step to the group whose next channel has the highest
    score. Without scores, the widest group (relative to its base) shrinks first. A budget the grid
    cannot meet is a one-line error.
    """
    widths = dict(widths)
    base = space.base_widths()

    def next_score(g: str, w: int, up: bool) -> float:
        if scores is None:
            return -w / base[g] if up else w / base[g]
        s = scores[g].sort(descending=True).values
        i = min(w if up else w - 1, len(s) - 1)
        return float(s[max(i, 0)]) if len(s) else 0.0

    for _ in range(10 * sum(len(space.grid(g)) for g in widths)):
        cost = space.cost(widths, metric)
        if abs(cost - target) <= tolerance * target:
            return widths
        too_big = cost > target
        options = []
        for g, w in widths.items():
            grid = space.grid(g)
            i = grid.index(w) if w in grid else None
            if i is None:
                continue
            j = i - 1 if too_big else i + 1
            if not 0 <= j < len(grid):
                continue
            trial = {**widths, g: grid[j]}
            delta = abs(space.cost(trial, metric) - cost)
            if delta == 0:
                continue
            value = next_score(g, w, up=not too_big)
            # remove the least valuable channel per cost saved / add the most valuable per cost
            options.append((value / delta if too_big else -value / delta, g, grid[j], trial))
        if not options:
            break
        options.sort(key=lambda o: o[0])
        if not too_big:
            # adding must not overshoot past the tolerance when a smaller step exists
            fitting = [o for o in options
                       if space.cost(o[3], metric) <= target * (1 + tolerance)]
            options = fitting or options
        _, g, w_new, _ = options[0]
        new_cost = space.cost({**widths, g: w_new}, metric)
        if not too_big and new_cost > target * (1 + tolerance):
            break
        widths[g] = w_new
    cost = space.cost(widths, metric)
    if abs(cost - target) > tolerance * target:
        widths = _closest_walk(space, widths, target, metric, tolerance)
        cost = space.cost(widths, metric)
    if abs(cost - target) > tolerance * target:
        widths = _nearest_feasible(space, widths, target, metric, tolerance) or widths
        cost = space.cost(widths, metric)
    if abs(cost - target) > tolerance * target:
        raise UserError(f"budget: cannot land within {tolerance:.0%} of {target} {metric} on the "
                        f"divisor grid of space {space.name} (closest: {cost}); use a finer "
                        f"divisor or another budget")
    return widths


def _closest_walk(space: SearchSpace, widths: Mapping[str, int], target: int, metric: str,
                  tolerance: float) -> Widths:
    """Fallback for coarse grids: move one or two groups by one grid step each, whichever lands
    closest to the target, until within tolerance or no move helps. On small networks a single
    step of one group can jump over the whole tolerance band where a pair of opposite steps fits.
    """
    widths = dict(widths)
    names = list(widths)

    def steps(g: str) -> list[int]:
        grid = space.grid(g)
        i = grid.index(widths[g])
        return [grid[j] for j in (i - 1, i + 1) if 0 <= j < len(grid)]

    cost = space.cost(widths, metric)
    for _ in range(4 * len(names)):
        if abs(cost - target) <= tolerance * target:
            break
        moves = [{g: v} for g in names for v in steps(g)]
        if len(names) <= 64:
            moves += [{a: va, b: vb} for i, a in enumerate(names) for b in names[i + 1:]
                      for va in steps(a) for vb in steps(b)]
        best = min(((m, space.cost({**widths, **m}, metric)) for m in moves),
                   key=lambda mc: abs(mc[1] - target), default=None)
        if best is None or abs(best[1] - target) >= abs(cost - target):
            break
        widths.update(best[0])
        cost = best[1]
    return widths


def _nearest_feasible(space: SearchSpace, widths: Mapping[str, int], target: int, metric: str,
                      tolerance: float, limit: int = 20_000) -> Widths | None:
    """Last resort for tiny spaces (at most ``limit`` width vectors): of every vector within
    tolerance, the one nearest to ``widths`` in log-width distance; None when the space is larger
    or nothing fits.
    """
    names = list(widths)
    grids = [space.grid(g) for g in names]
    if math.prod(len(g) for g in grids) > limit:
        return None
    best, best_d = None, math.inf
    for combo in itertools.product(*grids):
        cand = dict(zip(names, combo, strict=True))
        if abs(space.cost(cand, metric) - target) <= tolerance * target:
            d = sum(abs(math.log(cand[g] / widths[g])) for g in names)
            if d < best_d:
                best, best_d = cand, d
    return best


def uniform_widths(space: SearchSpace, budget: float, metric: str = "flops") -> Widths:
    """Every group scaled by one factor, fitted to the budget."""
    base = space.base_widths()
    widths, _ = fit_scalar(space, lambda x: {g: b * x for g, b in base.items()}, budget, metric,
                           lo=0.0, hi=1.0)
    return widths


def make_proposal(name: str, ctx: SeedContext, budget: float, widths: Widths,
                  scores: Mapping[str, torch.Tensor], knob: dict[str, Any] | None = None,
                  diagnostics: dict[str, Any] | None = None) -> Proposal:
    widths = ctx.space.validate(widths)
    return Proposal(method=name, widths=widths, scores={g: s.detach().cpu() for g, s in
                                                        scores.items()},
                    budget=float(budget), metric=ctx.metric,
                    cost=ctx.space.cost(widths, ctx.metric),
                    base_cost=ctx.space.base_cost(ctx.metric), knob=dict(knob or {}),
                    diagnostics=dict(diagnostics or {}))


def group_modules(model: nn.Module, space: SearchSpace, group: str) -> dict[str, list[nn.Module]]:
    """The conv, BatchNorm and consumer modules of a width group in a family model."""
    g = next(x for x in space.family.groups() if x.name == group)
    get = model.get_submodule
    return {"convs": [get(n) for n in g.convs], "bns": [get(n) for n in g.bns],
            "consumers": [get(n) for n in g.consumers]}


def is_finite(scores: Mapping[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(s).all()) for s in scores.values())


__all__ = ["BUDGET_TOLERANCE", "Proposal", "SeedContext", "SeedMethod", "aggregate_layers",
           "check_budget", "fit_scalar", "fit_threshold", "group_modules", "is_finite",
           "kept_counts", "make_proposal", "normalise_groups", "refine_to_budget",
           "uniform_widths"]
