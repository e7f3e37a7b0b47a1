"""Placeholder until the method lands: registered so the package imports; raises when used."""

from __future__ import annotations

from ._base import SeedMethod


class L1Norm(SeedMethod):
    name = "l1norm"
    paper = "(not implemented yet)"
    summary = "(not implemented yet)"

    def scores(self, model, ctx):
        raise NotImplementedError("l1norm is not implemented yet")
