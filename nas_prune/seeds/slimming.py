"""Placeholder until the method lands: registered so the package imports; raises when used."""

from __future__ import annotations

from ._base import SeedMethod


class Slimming(SeedMethod):
    name = "slimming"
    paper = "(not implemented yet)"
    summary = "(not implemented yet)"

    def scores(self, model, ctx):
        raise NotImplementedError("slimming is not implemented yet")
