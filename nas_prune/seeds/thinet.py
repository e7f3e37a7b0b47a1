"""Placeholder until the method lands: registered so the package imports; raises when used."""

from __future__ import annotations

from ._base import SeedMethod


class ThiNet(SeedMethod):
    name = "thinet"
    paper = "(not implemented yet)"
    summary = "(not implemented yet)"

    def scores(self, model, ctx):
        raise NotImplementedError("thinet is not implemented yet")
