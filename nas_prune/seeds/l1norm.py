"""L1-norm filter pruning (Li et al. 2017, arXiv 1608.08710): small filters go first.

A filter's score is the sum of the absolute values of its weights (a conv output channel). Li et
al. pick per-layer prune ratios from a *sensitivity analysis*: each layer is pruned alone, by its
smallest-L1 filters, at increasing ratios, and evaluated; sensitive layers are pruned little or
not at all (VGG-16 on CIFAR-10: 50% of conv1 and conv8-13, nothing elsewhere). In ResNets they
prune only the first conv of each residual block, one ratio per stage, since the second conv is
tied to the shortcut.

Here, two ways from scores to a width vector (``Options.mode``):

* ``sensitivity`` (default, the paper's way): every width group is pruned alone at each ratio of
  ``Options.ratios`` (0.1 .. 0.9) by its smallest-L1 filters, with masks that zero those channels
  after their BatchNorm (the same as zeroing the filters' weights and BN affine parameters), and
  the accuracy drop on ``Options.val_images`` validation images is recorded. For a tolerance
  ``t`` a group's allowed prune ratio is the largest ratio up to which its (non-decreasing
  envelope of the) drop stays under ``t``, interpolated linearly between tested ratios, so
  sensitive groups are pruned less. ``t`` is bisected until the budget is met, then widths are
  rounded to the grid and moved one step at a time by L1 score. The curves are in
  ``proposal.diagnostics['sensitivity']``.
* ``global``: one threshold over the per-group mean-normalised L1 scores (not in the paper).

Residual stage groups (``stageN``): a stage's channel count is set by the stem and every block's
second conv (and projections). Unlike Li et al., nas-prune also proposes a stage width: its score
is the sum over those convs of each conv's mean-normalised filter L1 norms, and the sensitivity
mask zeroes the channel after each of the stage's BatchNorms (an option-A shortcut still carries
the previous stage's channels into it, so a stage's curve is an approximation).
``Options.prune_stages = false`` keeps stages at full width, as the paper does, unless the budget
cannot be met otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..budget import check_budget, fit_scalar, fit_threshold
from ..errors import UserError
from ..train import evaluate
from ._base import (
    Proposal,
    SeedContext,
    SeedMethod,
    aggregate_layers,
    make_proposal,
    normalise_groups,
)

MODES = ("sensitivity", "global")
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TIE_SLOPE = 1e-4  # accuracy drop added per unit of prune ratio, to order flat curves


def filter_l1(conv: nn.Conv2d) -> torch.Tensor:
    """Sum of |weights| of every filter (output channel) of a conv."""
    return conv.weight.detach().abs().flatten(1).sum(1).float().cpu()


def allowed_ratio(ratios: list[float], drops: list[float], tolerance: float,
                  slope: float = TIE_SLOPE) -> float:
    """The prune ratio at which a group's accuracy-drop envelope reaches ``tolerance``.

    The envelope starts at (0, 0); at each tested ratio it is the running maximum of the drops
    (clamped at 0) plus ``slope`` x ratio, which breaks ties between flat curves (an untrained or
    very redundant network) so that such groups are pruned together, progressively, instead of
    all jumping to the largest ratio at once. The answer is the largest ratio whose envelope stays
    <= ``tolerance``, interpolated linearly towards the next tested ratio; below 0 nothing is
    pruned.
    """
    if tolerance < 0:
        return 0.0
    xs = [0.0, *ratios]
    env, m = [0.0], 0.0
    for r, d in zip(ratios, drops, strict=True):
        m = max(m, d, 0.0)
        env.append(m + slope * r)
    i = max(k for k, e in enumerate(env) if e <= tolerance)
    if i == len(xs) - 1:
        return xs[i]
    frac = (tolerance - env[i]) / (env[i + 1] - env[i])
    return xs[i] + (xs[i + 1] - xs[i]) * frac


class L1Norm(SeedMethod):
    name = "l1norm"
    paper = "Li et al. 2017, arXiv 1608.08710"
    summary = ("L1 norm of each filter (sum of |weights|); per-group sensitivity analysis sets "
               "the prune ratios")
    groups_note = ("residual stage groups get a width too (Li et al. prune only each block's "
                   "first conv): score = sum over the stem/second convs of the stage of each "
                   "conv's mean-normalised filter L1; prune_stages=false keeps them full")
    limitations = ("sensitivity costs one evaluation per group and ratio on val_images images; "
                   "a stage's sensitivity ignores the shortcut that still carries the previous "
                   "stage's channel; the channel choice within a group is by L1 alone")

    @dataclass(frozen=True)
    class Options:
        """``mode``: ``sensitivity`` (the paper's) or ``global`` (one normalised threshold).
        ``ratios``: prune ratios tried per group. ``val_images``: validation images each
        evaluation uses. ``prune_stages``: also shrink residual stage groups."""

        mode: str = "sensitivity"
        ratios: tuple[float, ...] = DEFAULT_RATIOS
        val_images: int = 256
        prune_stages: bool = True

        def __post_init__(self) -> None:
            where = "seed_method.options.l1norm"
            if self.mode not in MODES:
                raise UserError(f"{where}.mode: {self.mode!r}; choose one of {', '.join(MODES)}")
            try:
                ratios = tuple(sorted(float(r) for r in self.ratios))
            except (TypeError, ValueError):
                raise UserError(f"{where}.ratios: expected a list of prune ratios in (0, 1)"
                                ) from None
            if not ratios or not all(0 < r < 1 for r in ratios):
                raise UserError(f"{where}.ratios: {list(self.ratios)} must be prune ratios in "
                                f"(0, 1)")
            object.__setattr__(self, "ratios", ratios)
            if isinstance(self.val_images, bool) or not isinstance(self.val_images, int) \
                    or self.val_images < 1:
                raise UserError(f"{where}.val_images: {self.val_images!r} must be a positive "
                                f"integer")
            if not isinstance(self.prune_stages, bool):
                raise UserError(f"{where}.prune_stages: expected true or false")

    def scores(self, model: nn.Module, ctx: SeedContext) -> dict[str, torch.Tensor]:
        out = {}
        for g in ctx.space.family.groups():
            per_conv = [filter_l1(model.get_submodule(c)) for c in g.convs]
            out[g.name] = per_conv[0] if len(per_conv) == 1 else aggregate_layers(per_conv)
        return out

    def _fitting_scores(self, scores: dict[str, torch.Tensor],
                        ctx: SeedContext) -> dict[str, torch.Tensor]:
        """Normalised scores; with prune_stages off, residual groups rank above everything."""
        norm = normalise_groups(scores)
        if self.options.prune_stages:
            return norm
        top = max(float(s.max()) for s in norm.values()) + 1.0
        residual = {g.name for g in ctx.space.family.groups() if g.residual}
        return {g: (s + top if g in residual else s) for g, s in norm.items()}

    def propose(self, model: nn.Module, ctx: SeedContext, budget: float) -> Proposal:
        check_budget(ctx.space, budget, ctx.metric)  # fail before any work
        scores = self.scores(model, ctx)
        fitting = self._fitting_scores(scores, ctx)
        if self.options.mode == "global":
            widths, knob = fit_threshold(ctx.space, fitting, budget, ctx.metric)
            return make_proposal(self.name, ctx, budget, widths, scores,
                                 {"mode": "global", **knob})
        curves, base_acc, n_val = self.sensitivity(model, ctx, scores)
        ratios = list(self.options.ratios)
        base = ctx.space.base_widths()
        fixed = set() if self.options.prune_stages else \
            {g.name for g in ctx.space.family.groups() if g.residual}
        t_max = max([max(c) for c in curves.values()] + [0.0]) + TIE_SLOPE + 1e-6

        def tolerance(x: float) -> float:  # x = 1: nothing pruned; x = 0: the largest ratios
            return (1.0 - x) * (t_max + 1e-3) - 1e-3

        def widths_at(x: float) -> dict[str, float]:
            t = tolerance(x)
            return {g: b if g in fixed else b * (1.0 - allowed_ratio(ratios, curves[g], t))
                    for g, b in base.items()}

        widths, x = fit_scalar(ctx.space, widths_at, budget, ctx.metric, scores=fitting)
        t = tolerance(x)
        diagnostics: dict[str, Any] = {
            "base_val_acc": round(base_acc, 6), "val_images": n_val, "ratios": ratios,
            "sensitivity": {g: [round(d, 6) for d in c] for g, c in curves.items()},
            "allowed_prune_ratio": {g: round(0.0 if g in fixed else
                                             allowed_ratio(ratios, curves[g], t), 6)
                                    for g in base},
            "note": "sensitivity: val-accuracy drop when the group alone loses its smallest-L1 "
                    "filters at each ratio"}
        return make_proposal(self.name, ctx, budget, widths, scores,
                             {"mode": "sensitivity", "tolerance": round(t, 6)}, diagnostics)

    @torch.no_grad()
    def sensitivity(self, model: nn.Module, ctx: SeedContext, scores: dict[str, torch.Tensor]
                    ) -> tuple[dict[str, list[float]], float, int]:
        """Accuracy drop of every group pruned alone at each ratio: (curves, base acc, images).

        Pruning keeps ``int(C x (1 - ratio))`` channels (Li et al.'s rounding), dropping the
        smallest scores, by zeroing them after each of the group's BatchNorms (after its convs
        in a group without BatchNorm).
        """
        val = ctx.data.val
        if len(val) == 0:
            raise UserError("data.val_size: 0 validation images; l1norm's sensitivity mode "
                            "needs some (or set seed_method.options.l1norm.mode=global)")
        split = val.subset(self.options.val_images, ctx.generator(offset=307))
        device = next(model.parameters()).device
        split = split.to(device)
        base_acc = evaluate(model, split, ctx.train)
        curves: dict[str, list[float]] = {}
        for g in ctx.space.family.groups():
            c = g.base
            order = torch.argsort(scores[g.name], stable=True)  # smallest first
            curve = []
            for r in self.options.ratios:
                mask = torch.ones(c, device=device)
                mask[order[: c - int(c * (1 - r))].to(device)] = 0.0
                handles = [model.get_submodule(b).register_forward_hook(_channel_mask(mask))
                           for b in g.bns or g.convs]
                try:
                    acc = evaluate(model, split, ctx.train)
                finally:
                    for h in handles:
                        h.remove()
                curve.append(base_acc - acc)
            curves[g.name] = curve
        return curves, base_acc, len(split)


def _channel_mask(mask: torch.Tensor):
    def hook(module, inputs, output):
        return output * mask.view(1, -1, *([1] * (output.dim() - 2))).to(output.dtype)

    return hook
