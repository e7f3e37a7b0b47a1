"""Seed methods: pruning criteria that propose width vectors. One file each, one registry line.

:func:`propose` is the one entry point: it trains (or loads, or takes from the cache) the base
network with the method's regulariser, then asks the method for a proposal at the budget.
"""

from __future__ import annotations

from ..budget import uniform_widths
from ..errors import UserError
from ._activations import ConsumerSamples, ReconstructionMethod, sample_consumers, sample_groups
from ._base import Proposal, SeedContext, SeedMethod
from ._basenet import ProposalRun, propose, trained_base
from .autopruner import AutoPruner
from .l1norm import L1Norm
from .random import RandomWidths
from .regression import Regression
from .slimming import Slimming
from .thinet import ThiNet
from .uniform import Uniform

# uniform_widths belongs to nas_prune.budget; re-exported for the callers that import it from here.
__all__ = ["PRUNING_METHODS", "SEED_METHODS", "ConsumerSamples", "Proposal", "ProposalRun",
           "ReconstructionMethod", "SeedContext", "SeedMethod", "get_method", "parse_methods",
           "propose", "sample_consumers", "sample_groups", "trained_base", "uniform_widths"]

SEED_METHODS: dict[str, type[SeedMethod]] = {}


def _register(cls: type[SeedMethod]) -> None:
    if cls.name in SEED_METHODS:
        raise ValueError(f"seed method {cls.name!r} registered twice")
    SEED_METHODS[cls.name] = cls


for _cls in (L1Norm, ThiNet, Regression, Slimming, AutoPruner, Uniform, RandomWidths):
    _register(_cls)

#: The five pruning criteria (``all`` on the command line); the baselines are not among them.
PRUNING_METHODS = ("l1norm", "thinet", "regression", "slimming", "autopruner")


def get_method(name: str, options: dict | None = None) -> SeedMethod:
    """The registered method ``name`` with its ``options``; an unknown name lists the valid ones."""
    if name not in SEED_METHODS:
        raise UserError(f"seed method {name!r}: unknown; choose one of {', '.join(SEED_METHODS)}")
    return SEED_METHODS[name](options)


def parse_methods(spec: str) -> list[str]:
    """``"slimming"``, ``"l1norm,thinet"`` or ``"all"`` -> a list of known method names."""
    names = list(PRUNING_METHODS) if spec.strip() == "all" else \
        [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UserError("--seed-method: give a method, a comma-separated list or 'all'")
    for n in names:
        if n not in SEED_METHODS:
            raise UserError(f"--seed-method: unknown method {n!r}; choose from "
                            f"{', '.join(SEED_METHODS)} or 'all'")
    return names
