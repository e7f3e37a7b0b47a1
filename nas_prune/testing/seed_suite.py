"""The seed-method conformance suite: tiny spaces, shared trained bases and property checks.

Every registered seed method must pass the same checks (``tests/test_seed_conformance.py`` runs
them over :data:`nas_prune.seeds.SEED_METHODS`, so a new method is covered the moment it is
registered):

* one finite score per channel of every width group of the base network;
* proposed widths within the space's bounds and on its divisor grid, with the cost recorded;
* the budget met within 1% (FLOPs, and params);
* the same seed gives the same proposal;
* an impossible budget is a :class:`~nas_prune.errors.UserError`;
* proposing leaves the base network's weights untouched.

:class:`SeedBench` holds what the checks share across a test session: the synthetic data, the
two tiny spaces and the trained bases. Bases are trained once per (regulariser, family) through
:func:`nas_prune.seeds.propose` into a cache directory, so methods with the same ``base_key``
(``plain``) share one, and proposals are memoised per (method, family, budget, metric).

The tiny spaces: ``resnet_cifar`` depth 8 (six groups, the residual stages spanning several BNs),
``vgg`` ``vgg_small`` (six groups), and two graph-derived ones (``graph_resnet``: a ResNet-10 of
torchvision blocks at widths 8-64, eight groups; ``graph_mobilenet``: a three-stage MobileNetV2
whose expansion groups hold depthwise convs), all on 1x8x8 synthetic images. ``vgg_tiny`` (three
groups of 8/16/16 channels) is too coarse to judge a method at a budget: one channel moves the
FLOPs by 4-6%, so for about half of all score shapes the score-guided grid steps of
:func:`~nas_prune.budget.refine_to_budget` miss the 1% band and its score-blind fallbacks set the
widths.

Nothing here imports pytest; the test module turns :class:`SeedBench` into a session fixture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path

import torch
from torch import nn

from ..budget import BUDGET_TOLERANCE
from ..data import DataConfig, Splits, load_data
from ..seeds import (
    SEED_METHODS,
    Proposal,
    ProposalRun,
    SeedContext,
    SeedMethod,
    get_method,
    trained_base,
)
from ..seeds import propose as seeds_propose
from ..train import TrainConfig
from ..widths import SearchSpace

FAMILIES = ("vgg", "resnet_cifar", "graph_resnet", "graph_mobilenet")
IMAGE_SIZE = 8
CLASSES = 4
TINY_SPACES: dict[str, dict] = {
    "vgg": {"family": "vgg", "args": {"cfg": "vgg_small", "head": "slimming"}, "divisor": 1,
            "min_width": 1},
    "resnet_cifar": {"family": "resnet_cifar", "args": {"depth": 8, "shortcut": "A"},
                     "divisor": 2, "min_width": 2},
    # graph-derived (torch.fx) spaces: torchvision blocks, residual groups with projections,
    # and depthwise convs joining their input's group
    "graph_resnet": {"family": "graph", "args": {"model": "zoo:resnet_small",
                                                 "kwargs": {"arch": "resnet10", "width": 8}},
                     "divisor": 2, "min_width": 2},
    "graph_mobilenet": {"family": "graph",
                        "args": {"model": "zoo:mobilenet_v2_small",
                                 "kwargs": {"setting": "tiny", "last_channel": 32}},
                        "divisor": 2, "min_width": 2},
}
#: Budgets every method must meet within 1%: (ratio, metric).
BUDGETS = ((0.5, "flops"), (0.3, "flops"), (0.5, "params"))
IMPOSSIBLE_BUDGETS = (0.0001, 1.5)


def tiny_space(family: str) -> SearchSpace:
    """The conformance space of ``family`` (see :data:`TINY_SPACES`) on 1x8x8 inputs."""
    data = {**TINY_SPACES[family],
            "input": {"channels": 1, "size": IMAGE_SIZE, "classes": CLASSES}}
    return SearchSpace.from_dict(data, name=f"tiny_{family}")


def tiny_data_config(train_images: int = 256) -> DataConfig:
    return DataConfig(name="synthetic", val_size=64, synthetic_train=train_images + 64,
                      synthetic_test=64, synthetic_size=IMAGE_SIZE, synthetic_classes=CLASSES,
                      augment=False)


def tiny_train_config() -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=32, lr=0.05, weight_decay=5e-4, amp=False,
                       channels_last=False, eval_batch_size=256)


@dataclass
class SeedBench:
    """Shared tiny fixtures for a test session: data, spaces, contexts, bases, proposals."""

    cache_dir: Path
    base_epochs: int = 1
    seed: int = 0
    samples: int = 64
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _data: Splits | None = field(default=None, init=False, repr=False)
    _proposals: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def data_config(self) -> DataConfig:
        return tiny_data_config()

    @property
    def data(self) -> Splits:
        if self._data is None:
            self._data = load_data(self.data_config, device=self.device)
        return self._data

    def space(self, family: str) -> SearchSpace:
        return tiny_space(family)

    def context(self, family: str, *, metric: str = "flops", seed: int | None = None
                ) -> SeedContext:
        return SeedContext(space=self.space(family), data=self.data, train=tiny_train_config(),
                           device=self.device, seed=self.seed if seed is None else seed,
                           samples=self.samples, metric=metric)

    def base(self, method: SeedMethod, family: str) -> nn.Module | None:
        """A fresh copy of the method's trained base (trained on first use, then cached)."""
        if not method.needs_base:
            return None
        model, _, _, _ = trained_base(method, self.context(family), epochs=self.base_epochs,
                                      cache_dir=self.cache_dir, data_cfg=self.data_config,
                                      progress=False)
        return model

    def run(self, name: str, family: str, budget: float, metric: str = "flops") -> ProposalRun:
        """The method's proposal through :func:`nas_prune.seeds.propose` (memoised)."""
        key = (name, family, budget, metric)
        if key not in self._proposals:
            self._proposals[key] = seeds_propose(
                get_method(name), self.context(family, metric=metric), budget,
                base_epochs=self.base_epochs, cache_dir=self.cache_dir,
                data_cfg=self.data_config, progress=False)
        return self._proposals[key]


# ---- checks --------------------------------------------------------------------------------
def check_metadata(cls: type[SeedMethod], space: SearchSpace) -> None:
    """Name, paper and a one-line summary; an ``Options`` frozen dataclass with defaults; a
    base trained with a regulariser (``base_hooks``) says why ``train.function`` cannot train
    it (``builtin_base``), so the user's loop never trains it without."""
    assert cls.name in SEED_METHODS and SEED_METHODS[cls.name] is cls
    for attr in ("paper", "summary", "groups_note"):
        value = getattr(cls, attr)
        assert isinstance(value, str) and value.strip(), f"{cls.name}.{attr} is empty"
    assert "\n" not in cls.summary, f"{cls.name}.summary must be one line"
    assert is_dataclass(cls.Options), f"{cls.name}.Options is not a dataclass"
    assert cls.Options.__dataclass_params__.frozen, f"{cls.name}.Options is not frozen"
    cls.Options()  # every knob has a default
    assert isinstance(cls().base_key(space), str) and cls().base_key(space)
    method = cls()
    if method.needs_base and method.base_hooks(method.base_model(space), space) is not None:
        assert method.builtin_base.strip(), (
            f"{cls.name} trains its base with a regulariser (base_hooks): set builtin_base to "
            f"why train.function cannot train it")


def check_scores(proposal: Proposal, space: SearchSpace) -> None:
    """One finite score per channel of each group of the base network."""
    base = space.base_widths()
    assert set(proposal.scores) == set(base), \
        f"scores cover {sorted(proposal.scores)}, groups are {sorted(base)}"
    for g, s in proposal.scores.items():
        assert isinstance(s, torch.Tensor), f"scores[{g}] is {type(s).__name__}"
        assert s.dim() == 1 and s.numel() == base[g], \
            f"scores[{g}] has shape {tuple(s.shape)}, the group has {base[g]} channels"
        assert bool(torch.isfinite(s).all()), f"scores[{g}] has non-finite values"


def check_widths(proposal: Proposal, space: SearchSpace) -> None:
    """Every group present, an int within its bounds and on the divisor grid; cost recorded."""
    assert list(proposal.widths) == space.group_names
    for g, w in proposal.widths.items():
        lo, hi = space.bounds[g]
        assert isinstance(w, int) and lo <= w <= hi, f"{g}={w} outside [{lo}, {hi}]"
        assert space.on_grid(g, w), f"{g}={w} is not on the grid of divisor {space.divisor}"
    assert proposal.cost == space.cost(proposal.widths, proposal.metric)
    assert proposal.base_cost == space.base_cost(proposal.metric)


def check_budget_met(proposal: Proposal, space: SearchSpace, budget: float, metric: str,
                     tolerance: float = BUDGET_TOLERANCE) -> None:
    """The proposal's real cost lies within ``tolerance`` of ``budget`` x the base cost."""
    assert proposal.metric == metric and math.isclose(proposal.budget, budget)
    target = int(round(budget * space.base_cost(metric)))
    cost = space.cost(proposal.widths, metric)
    assert abs(cost - target) <= tolerance * target, \
        f"{metric} {cost} is {cost / space.base_cost(metric):.4f} of the base, asked {budget}"


def check_same_proposal(a: Proposal, b: Proposal) -> None:
    """Two proposals made with the same seed agree on widths, scores and knob."""
    assert a.widths == b.widths, f"{a.widths} != {b.widths}"
    assert set(a.scores) == set(b.scores)
    for g in a.scores:
        assert torch.equal(a.scores[g], b.scores[g]), f"scores[{g}] differ between runs"
    assert a.knob == b.knob, f"{a.knob} != {b.knob}"


def state_of(model: nn.Module | None) -> dict[str, torch.Tensor]:
    if model is None:
        return {}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_unchanged(before: Mapping[str, torch.Tensor], model: nn.Module | None) -> None:
    """Proposing must not modify the base network (parameters and buffers)."""
    after = state_of(model)
    assert set(after) == set(before), "the base network's state dict changed keys"
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"propose() modified the base network: {changed[:5]}"


__all__ = ["BUDGETS", "FAMILIES", "IMPOSSIBLE_BUDGETS", "SeedBench", "TINY_SPACES",
           "check_budget_met", "check_metadata", "check_same_proposal", "check_scores",
           "check_unchanged", "check_widths", "state_of", "tiny_data_config",
           "tiny_space", "tiny_train_config"]
