"""Placeholder until the method lands: registered so the package imports; raises when used."""

from __future__ import annotations

from ._base import SeedMethod


class Regression(SeedMethod):
    name = "regression"
    paper = "(not implemented yet)"
    summary = "(not implemented yet)"

    def scores(self, model, ctx):
        raise NotImplementedError("regression is not implemented yet")
