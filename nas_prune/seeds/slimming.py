"""Network Slimming (Liu et al. 2017, arXiv 1708.06519): sparse BatchNorm scales, one threshold.

What the paper and the authors' code do:

* The base network is trained with an L1 penalty on every BatchNorm2d scale,
  ``loss = task loss + lambda * sum |gamma|``, applied as a subgradient after backward:
  ``gamma.grad += lambda * sign(gamma)`` (:class:`SparsityHook`). Lambda is 1e-4 for VGG and 1e-5
  for ResNet/DenseNet in the paper; unless ``sparsity`` is set, families with residual width groups
  get 1e-5 and the others 1e-4 (:func:`default_sparsity`).
* A channel's importance is ``|gamma|`` of its BatchNorm. One global threshold over all gammas
  decides every layer at once: keep the channels with ``|gamma| > threshold``, never a layer with
  zero channels (the space's minimum width guards that).

Here the threshold is not read off at a fixed prune fraction but bisected over the sorted gammas
until the kept widths meet the FLOPs/params budget, then the widths are snapped up to the divisor
grid and single groups moved a grid step until the cost is within 1% (:func:`fit_threshold`).
With divisor 1 and a budget the threshold lands on exactly, the widths equal the channel counts
above the reported threshold (:func:`slimming_widths` gives those counts).

Groups: a residual stage group spans several BatchNorms (the stem and every block output of the
stage, coupled by the shortcut additions). A channel of such a group can only go when every layer
of the group can lose it, so its score is the **max** of ``|gamma|`` across the group's BNs
(``aggregate="max"``, the default); ``"mean"`` is offered as the softer alternative. Both keep the
score in ``|gamma|`` units, comparable with single-BN groups under the one global threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..budget import fit_threshold
from ..errors import UserError
from ..families import Widths
from ..train import TrainHooks
from ..widths import SearchSpace
from ._base import (
    Proposal,
    SeedContext,
    SeedMethod,
    aggregate_layers,
    group_modules,
    make_proposal,
)

#: Lambda of the sparsity term in the paper: VGG 1e-4; ResNet and DenseNet 1e-5.
SPARSITY_PLAIN = 1e-4
SPARSITY_RESIDUAL = 1e-5
AGGREGATES = ("max", "mean")


def default_sparsity(space: SearchSpace) -> float:
    """The paper's lambda for the space's family: 1e-5 with residual groups, else 1e-4."""
    residual = any(g.residual for g in space.family.groups())
    return SPARSITY_RESIDUAL if residual else SPARSITY_PLAIN


class SparsityHook(TrainHooks):
    """Adds the L1 subgradient ``lambda * sign(gamma)`` to the grad of every BatchNorm2d scale.

    Called by the trainer after backward and before the optimizer step, as in the authors'
    ``updateBN``. BatchNorm1d layers of a classifier head are not channels of any width group and
    are left alone.
    """

    def __init__(self, sparsity: float) -> None:
        self.sparsity = float(sparsity)

    def after_backward(self, model: nn.Module, step: int) -> None:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.weight is not None and m.weight.requires_grad:
                sub = self.sparsity * torch.sign(m.weight.detach())
                if m.weight.grad is None:
                    m.weight.grad = sub.clone()
                else:
                    m.weight.grad.add_(sub)


def gamma_scores(model: nn.Module, space: SearchSpace, aggregate: str = "max"
                 ) -> dict[str, torch.Tensor]:
    """``|gamma|`` per channel of each width group; across a multi-BN group, max (or mean).

    A group without an affine BatchNorm (possible in a graph-derived family) has no gammas: it
    falls back to its convs' filter L1 norms (summed mean-normalised over the group's convs),
    scaled so that their mean is the mean ``|gamma|`` of the other groups.
    """
    if aggregate not in AGGREGATES:
        raise UserError(f"seed_method.options.slimming.aggregate: {aggregate!r}; choose one of "
                        f"{', '.join(AGGREGATES)}")
    out, no_bn = {}, []
    for g in space.group_names:
        bns = [bn for bn in group_modules(model, space, g)["bns"] if bn.weight is not None]
        if not bns:
            no_bn.append(g)
            continue
        gammas = torch.stack([bn.weight.detach().abs().float().cpu() for bn in bns])
        out[g] = gammas.amax(0) if aggregate == "max" else gammas.mean(0)
    if no_bn:
        scale = float(torch.cat(list(out.values())).mean()) if out else 1.0
        for g in no_bn:
            convs = group_modules(model, space, g)["convs"]
            l1 = aggregate_layers([c.weight.detach().abs().flatten(1).sum(1).float().cpu()
                                   for c in convs])
            out[g] = l1 / l1.mean().clamp_min(1e-12) * scale
    return {g: out[g] for g in space.group_names}


def slimming_widths(scores: Mapping[str, torch.Tensor], threshold: float) -> Widths:
    """The paper's rule before any grid rounding: channels with score > threshold, at least one."""
    return {g: max(1, int((s > threshold).sum())) for g, s in scores.items()}


class Slimming(SeedMethod):
    name = "slimming"
    paper = "Liu et al. 2017, Learning Efficient Convolutional Networks through Network " \
            "Slimming, arXiv 1708.06519"
    summary = "L1 sparsity on BatchNorm gammas while training the base; one global |gamma| " \
              "threshold"
    groups_note = "a residual group's channel scores max |gamma| over the group's BNs " \
                  "(option aggregate: max | mean), then the same global threshold; a group " \
                  "without BatchNorm (graph family) cannot be scored by gammas and falls back " \
                  "to its filter L1 norms scaled to the mean |gamma|"
    builtin_base = "slimming needs its sparsity regulariser"
    limitations = "needs a base trained with the sparsity term (its own cached base); a " \
                  "checkpoint trained without it gives dense gammas and a weaker ranking; " \
                  "the prune fraction is bisected to the budget rather than fixed"

    @dataclass(frozen=True)
    class Options:
        """``sparsity``: lambda of the L1 term (None: 1e-4, or 1e-5 for residual families).
        ``aggregate``: how a multi-BN group combines |gamma| per channel (max | mean)."""

        sparsity: float | None = None
        aggregate: str = "max"

        def __post_init__(self) -> None:
            s = self.sparsity
            if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float))
                                  or s < 0):
                raise UserError(f"seed_method.options.slimming.sparsity: {s!r} must be a "
                                f"number >= 0 (the paper: 1e-4 VGG, 1e-5 ResNet)")
            if self.aggregate not in AGGREGATES:
                raise UserError(f"seed_method.options.slimming.aggregate: {self.aggregate!r}; "
                                f"choose one of {', '.join(AGGREGATES)}")

    def sparsity_for(self, space: SearchSpace) -> float:
        """Lambda used for ``space``: the option when set, else the paper's value by family."""
        s = self.options.sparsity
        return float(s) if s is not None else default_sparsity(space)

    # -- base network ---------------------------------------------------------------------
    def base_key(self, space: SearchSpace) -> str:
        return f"slimming-l1-{self.sparsity_for(space):g}"

    def base_hooks(self, model: nn.Module, space: SearchSpace) -> TrainHooks:
        """The sparsity hook with the lambda for ``space`` (the option, else by family)."""
        return SparsityHook(self.sparsity_for(space))

    # -- proposal -------------------------------------------------------------------------
    def scores(self, model: nn.Module, ctx: SeedContext) -> dict[str, torch.Tensor]:
        return gamma_scores(model, ctx.space, self.options.aggregate)

    def propose(self, model: nn.Module, ctx: SeedContext, budget: float) -> Proposal:
        scores = self.scores(model, ctx)
        widths, knob = fit_threshold(ctx.space, scores, budget, ctx.metric)
        threshold = knob["threshold"]
        raw = slimming_widths(scores, threshold)
        every = torch.cat([s.flatten() for s in scores.values()])
        diagnostics = {
            # how sparse the base is: the share of gammas that the L1 term drove near zero
            "gammas_below_1e-2": round(float((every < 1e-2).float().mean()), 6),
            "gamma_median": float(every.median()),
            "kept_at_threshold": raw,
            "moved_by_grid": sorted(g for g in widths if widths[g] != raw[g]),
        }
        knob = {"threshold": float(threshold), "sparsity": self.sparsity_for(ctx.space),
                "aggregate": self.options.aggregate,
                "prune_fraction": round(float((every <= threshold).float().mean()), 6)}
        return make_proposal(self.name, ctx, budget, widths, scores, knob, diagnostics)


__all__ = ["SPARSITY_PLAIN", "SPARSITY_RESIDUAL", "Slimming", "SparsityHook", "default_sparsity",
           "gamma_scores", "slimming_widths"]
