"""The budget solver: widths that meet a FLOPs or params budget on a search space's grid.

A budget is a ratio in (0, 1] of the base network's cost in a metric (``flops``: multiply-
accumulates, or ``params``); it is met when the cost lies within :data:`BUDGET_TOLERANCE` (1%) of
``budget x base cost``, and :func:`check_budget` rejects one that cannot be. A seed method turns
per-channel scores into widths through one knob that is bisected until the budget is met: a
global threshold on the scores (:func:`fit_threshold`) or a scalar such as a common keep ratio
(:func:`fit_scalar`). Both end with :func:`refine_to_budget`, which moves single groups one grid
step at a time where the grid jumps over the 1% band; the search's candidate projection uses it
too. :func:`uniform_widths` is the one-factor baseline. Nothing here knows about seed methods.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .errors import UserError
from .families import Widths
from .widths import SearchSpace

__all__ = ["BUDGET_TOLERANCE", "check_budget", "cost_text", "fit_scalar", "fit_threshold",
           "kept_counts", "refine_to_budget", "tolerance_for", "uniform_widths"]

BUDGET_TOLERANCE = 0.01


def tolerance_for(space: SearchSpace, metric: str) -> float:
    """The band a budget is met within: 1%, or for latency the predictor's band (at least 1%,
    wider where the measurement spreads more: :meth:`~nas_prune.latency.LatencyPredictor.band`).
    """
    if metric == "latency" and space.latency is not None:
        return space.latency.band(BUDGET_TOLERANCE)
    return BUDGET_TOLERANCE


def busy_text(latency: Any) -> str:
    """What to say when a latency predictor measured on a busy machine."""
    return (f"the base network's latency varied by {latency.spread:.0%} while measuring; run on "
            f"a quieter machine or raise latency.repeats")


def cost_text(cost: float, metric: str) -> str:
    """A cost for a message, with its unit."""
    if metric == "latency":
        from .latency import format_ns

        return f"{format_ns(cost)} latency"
    return f"{int(cost)} {metric}"


def check_budget(space: SearchSpace, budget: float, metric: str = "flops") -> int:
    """The target cost ``round(budget x base cost)`` in ``metric``.

    A :class:`~nas_prune.errors.UserError` (one line) when ``budget`` is not a number in (0, 1]
    (a bool, a string, NaN, 0, negative, above 1) or when even the space's smallest network (every
    group at ``min_width``) costs more than the target plus the tolerance.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise UserError(f"budget: {budget!r} must be a ratio in (0, 1] of the base {metric}")
    base = space.base_cost(metric)
    floor = space.cost(space.min_widths(), metric)
    if floor > budget * base * (1 + tolerance_for(space, metric)):
        measured = (f": predicted {cost_text(floor, metric)} against the base network's "
                    f"{cost_text(base, metric)}" if metric == "latency" else "")
        if metric == "latency" and space.latency.busy:  # the prediction itself is in doubt
            raise UserError(f"budget: {budget} of the base latency cannot be placed on space "
                            f"{space.name}: {busy_text(space.latency)} (the smallest network "
                            f"was predicted at {floor / base:.4f} of the base{measured})")
        raise UserError(f"budget: {budget} is below the smallest network of space {space.name} "
                        f"({floor / base:.4f} of the base {metric}{measured}); raise the budget "
                        f"or lower min_width")
    return int(round(budget * base))


def kept_counts(space: SearchSpace, scores: Mapping[str, torch.Tensor], threshold: float) -> Widths:
    """Channels strictly above ``threshold`` per group, snapped up to the grid (never below min)."""
    return {g: space.snap_one(g, int((scores[g] > threshold).sum()), up=True)
            for g in space.group_names}


def fit_threshold(space: SearchSpace, scores: Mapping[str, torch.Tensor], budget: float,
                  metric: str = "flops") -> tuple[Widths, dict[str, Any]]:
    """One global threshold over all groups' scores, bisected until the budget is met within 1%.

    Each group keeps its channels scoring strictly above the threshold, snapped up to the grid
    (:func:`kept_counts`). The bisection runs over the sorted scores and keeps the threshold whose
    cost lands closest to the target; :func:`refine_to_budget` (guided by the scores) then moves
    single groups where that is not within 1%. Returns ``(widths, {"threshold": t})``, ``t``
    before that refinement. One threshold for every group: the scores must be comparable across
    groups (normalised by the caller where they are not).
    """
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
    """Bisect a scalar knob ``x`` in [lo, hi] to meet the budget; returns ``(widths, x)``.

    ``widths_at(x)`` gives real-valued widths that grow with ``x``; they are rounded to the grid
    (``space.snap``). At most ``steps`` halvings, stopping early within a quarter of the
    tolerance; the ``x`` whose cost lands closest to the target is kept, and
    :func:`refine_to_budget` (with ``scores``, if given) finishes the job.
    """
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
                     tolerance: float | None = None) -> Widths:
    """On-grid ``widths`` moved until their cost is within ``tolerance`` of ``target``.

    First single groups move one grid step at a time. Too expensive: a step down for the group
    whose next channel to go has the lowest score per unit of cost saved. Too cheap: a step up for
    the group whose next channel to add has the highest score per unit of cost added, never past
    the band when a smaller step fits. Without scores a group's next channel is valued at the
    group's base width over its width, not divided by the cost: the group widest relative to
    its base shrinks first and the narrowest grows first, so widths stay as close to uniform as
    the grid allows. Where single steps jump over the band, two score-blind fallbacks follow:
    moves of one or two groups by a grid step, whichever lands closest to the target, then (for
    spaces of at most 20,000 width vectors) the width vector within the band nearest to
    ``widths``. A target none of them meets is a one-line
    :class:`~nas_prune.errors.UserError`. ``tolerance`` defaults to :func:`tolerance_for`.
    """
    tolerance = tolerance_for(space, metric) if tolerance is None else tolerance
    widths = dict(widths)
    base = space.base_widths()

    def next_score(g: str, w: int, up: bool) -> float:
        if scores is None:  # a channel of a group narrow relative to its base is worth more
            return base[g] / w
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
            # remove the least valuable channel per cost saved / add the most valuable per cost;
            # without scores the relative width alone decides (per cost would favour cheap groups)
            rate = value / delta if scores is not None else value
            options.append((rate if too_big else -rate, g, grid[j], trial))
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
        lat = space.latency if metric == "latency" else None
        cure = busy_text(lat) if lat is not None and lat.busy else \
            "use a finer divisor or another budget"
        raise UserError(f"budget: cannot land within {100 * tolerance:.3g}% of "
                        f"{cost_text(target, metric)} on the divisor grid of space {space.name} "
                        f"(closest: {cost_text(cost, metric)}); {cure}")
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
    """Every group's base width scaled by one factor in [0, 1], fitted to the budget."""
    base = space.base_widths()
    widths, _ = fit_scalar(space, lambda x: {g: b * x for g, b in base.items()}, budget, metric,
                           lo=0.0, hi=1.0)
    return widths
