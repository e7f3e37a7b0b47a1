"""Baseline: every width group scaled by one common factor to the budget."""

from __future__ import annotations

import torch
from torch import nn

from ..budget import fit_scalar
from ._base import Proposal, SeedContext, SeedMethod, make_proposal


class Uniform(SeedMethod):
    name = "uniform"
    paper = "baseline"
    summary = "every group scaled by one factor to the budget (no base network needed)"
    groups_note = "a residual group is scaled like any other"
    needs_base = False

    def scores(self, model: nn.Module | None, ctx: SeedContext) -> dict[str, torch.Tensor]:
        # No criterion: channels are equally important, earlier ones first (a stable order).
        return {g: torch.linspace(1.0, 0.5, b) for g, b in ctx.space.base_widths().items()}

    def propose(self, model: nn.Module | None, ctx: SeedContext, budget: float) -> Proposal:
        base = ctx.space.base_widths()
        widths, factor = fit_scalar(ctx.space, lambda x: {g: b * x for g, b in base.items()},
                                    budget, ctx.metric)
        return make_proposal(self.name, ctx, budget, widths, self.scores(model, ctx),
                             knob={"scale": round(factor, 6)})
