"""Baseline: random widths at the budget (seeded)."""

from __future__ import annotations

import torch
from torch import nn

from ..budget import fit_scalar
from ._base import Proposal, SeedContext, SeedMethod, make_proposal


class RandomWidths(SeedMethod):
    name = "random"
    paper = "baseline"
    summary = "random per-group keep ratios, scaled together to the budget (seeded)"
    groups_note = "a residual group draws one ratio like any other"
    needs_base = False

    def scores(self, model: nn.Module | None, ctx: SeedContext) -> dict[str, torch.Tensor]:
        g = ctx.generator(offset=17)
        return {name: torch.rand(b, generator=g) for name, b in ctx.space.base_widths().items()}

    def propose(self, model: nn.Module | None, ctx: SeedContext, budget: float) -> Proposal:
        base = ctx.space.base_widths()
        gen = ctx.generator(offset=29)
        shape = {g: 0.25 + 0.75 * float(torch.rand((), generator=gen)) for g in base}
        widths, factor = fit_scalar(
            ctx.space, lambda x: {g: b * min(1.0, shape[g] * x) for g, b in base.items()},
            budget, ctx.metric, lo=0.0, hi=4.0)
        return make_proposal(self.name, ctx, budget, widths, self.scores(model, ctx),
                             knob={"scale": round(factor, 6), "shape": shape})
