"""The seed-method interface and the helpers the methods share (the budget solver is
:mod:`nas_prune.budget`).

A seed method looks at a trained, over-parameterised base network and *proposes* a width vector
for a budget (a ratio of the base FLOPs or params). It scores every channel of every width group
(one score per channel, higher = more important), then turns scores into widths with its own knob,
searched until the budget is met within 1%. The search never reuses the base network's weights.

Lifecycle, as called by :func:`nas_prune.seeds.propose`:

1. ``base_model(space)`` builds the network the base training runs on (a family model, or one with
   extra modules such as AutoPruner's gates);
2. ``base_hooks(model, space)`` gives the regulariser used while training it (Slimming's sparsity);
   ``base_key(space)`` names that regulariser, so that trained bases are cached and shared
   between methods; with ``train.function`` the user's function trains the base unless
   ``builtin_base`` says why the method needs nas-prune's trainer;
3. ``propose(model, ctx, budget)`` returns a :class:`Proposal`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..budget import fit_threshold
from ..data import Splits
from ..errors import UserError
from ..families import Widths
from ..train import TrainConfig, TrainHooks
from ..widths import SearchSpace


@dataclass
class SeedContext:
    """What a method may look at besides the trained base network."""

    space: SearchSpace
    data: Splits
    train: TrainConfig
    device: torch.device
    seed: int = 0
    samples: int = 500  # images for data-driven methods (activations, reconstruction)
    metric: str = "flops"  # the budget is a ratio of this cost

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + offset)

    def sample_images(self, n: int | None = None, offset: int = 0) -> torch.Tensor:
        """``n`` training images, drawn with the context's seed, on the context's device."""
        n = min(n or self.samples, len(self.data.train))
        idx = torch.randperm(len(self.data.train), generator=self.generator(offset))[:n]
        return self.data.train.images(idx.to(self.data.train.y.device)).to(self.device)


@dataclass
class Proposal:
    """A seed method's answer: the width vector, its per-channel scores and how it got there."""

    method: str
    widths: Widths
    scores: dict[str, torch.Tensor]  # group -> one score per channel of the base network
    budget: float
    metric: str
    cost: int  # of the proposed widths, in ``metric``
    base_cost: int
    knob: dict[str, Any] = field(default_factory=dict)  # threshold, lambda, ratio... found
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.cost / self.base_cost

    def score_summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for g, s in self.scores.items():
            s = s.detach().float().cpu()
            q = torch.quantile(s, torch.tensor([0.0, 0.5, 1.0])).tolist() if s.numel() else [0] * 3
            out[g] = {"min": q[0], "median": q[1], "max": q[2], "kept": int(self.widths[g]),
                      "of": int(s.numel())}
        return out

    def provenance(self) -> dict[str, Any]:
        return {"seed_method": self.method, "budget": self.budget, "budget_metric": self.metric,
                "achieved_ratio": round(self.ratio, 6), "knob": self.knob,
                "diagnostics": self.diagnostics, "scores": self.score_summary()}


class SeedMethod(ABC):
    """Base of every seed method: subclasses set the class attributes and :meth:`scores`.

    Every method here also overrides :meth:`propose` with its own knob; the default suits a
    method whose scores need nothing but one global threshold.
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    summary: ClassVar[str]  # one line for ``nas-prune methods``
    groups_note: ClassVar[str] = "residual groups: sum of per-layer normalised scores"
    limitations: ClassVar[str] = ""
    needs_base: ClassVar[bool] = True  # False for baselines that ignore the network
    #: Why the base network needs nas-prune's own trainer even with ``train.function`` (a
    #: regulariser while it trains, :meth:`base_hooks`); "": trained weights are all the method
    #: needs, and the user's function trains its base (:func:`nas_prune.seeds.trained_base`).
    builtin_base: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Options:
        """The method's knobs (``seed_method.options.<name>`` in a config)."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        try:
            self.options = self.Options(**dict(options or {}))
        except TypeError:
            allowed = ", ".join(f.name for f in dataclasses.fields(self.Options)) or "none"
            raise UserError(f"seed_method.options.{self.name}: unknown option in "
                            f"{sorted(options or {})}; allowed: {allowed}") from None

    # -- base network ---------------------------------------------------------------------
    def base_key(self, space: SearchSpace) -> str:
        """Identifies the base training (model + regulariser): equal keys share a cached base."""
        return "plain"

    def base_model(self, space: SearchSpace) -> nn.Module:
        return space.family.build(space.base_widths())

    def base_hooks(self, model: nn.Module, space: SearchSpace) -> TrainHooks | None:
        return None

    # -- proposal -------------------------------------------------------------------------
    @abstractmethod
    def scores(self, model: nn.Module, ctx: SeedContext) -> dict[str, torch.Tensor]:
        """One importance score per channel of each width group of the base network."""

    def propose(self, model: nn.Module, ctx: SeedContext, budget: float) -> Proposal:
        """Default: one global threshold over per-group normalised scores, fitted to the budget."""
        scores = self.scores(model, ctx)
        widths, knob = fit_threshold(ctx.space, normalise_groups(scores), budget, ctx.metric)
        return make_proposal(self.name, ctx, budget, widths, scores, knob)


# ---- helpers the methods share ---------------------------------------------------------------
def normalise_groups(scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each group's scores divided by their mean, so one threshold is fair across layers."""
    return {g: s.float() / s.float().abs().mean().clamp_min(1e-12) for g, s in scores.items()}


def aggregate_layers(per_layer: list[torch.Tensor]) -> torch.Tensor:
    """Scores of a group spanning several layers: the sum of each layer's mean-normalised scores."""
    return sum(s.float() / s.float().abs().mean().clamp_min(1e-12) for s in per_layer)


def make_proposal(name: str, ctx: SeedContext, budget: float, widths: Widths,
                  scores: Mapping[str, torch.Tensor], knob: dict[str, Any] | None = None,
                  diagnostics: dict[str, Any] | None = None) -> Proposal:
    """A :class:`Proposal` of validated ``widths``, its cost in ``ctx.metric`` and CPU scores."""
    widths = ctx.space.validate(widths)
    return Proposal(method=name, widths=widths,
                    scores={g: s.detach().cpu() for g, s in scores.items()},
                    budget=float(budget), metric=ctx.metric,
                    cost=ctx.space.cost(widths, ctx.metric),
                    base_cost=ctx.space.base_cost(ctx.metric), knob=dict(knob or {}),
                    diagnostics=dict(diagnostics or {}))


def group_modules(model: nn.Module, space: SearchSpace, group: str) -> dict[str, list[nn.Module]]:
    """The conv, BatchNorm and consumer modules of a width group in a family model."""
    g = next(x for x in space.family.groups() if x.name == group)
    get = model.get_submodule
    return {"convs": [get(n) for n in g.convs], "bns": [get(n) for n in g.bns],
            "consumers": [get(n) for n in g.consumers]}


__all__ = ["Proposal", "SeedContext", "SeedMethod", "aggregate_layers", "group_modules",
           "make_proposal", "normalise_groups"]
