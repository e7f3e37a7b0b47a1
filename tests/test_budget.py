"""The shared budget machinery: thresholds, scalar knobs and grid refinement land within 1%."""

from __future__ import annotations

import itertools

import pytest
import torch

from nas_prune.budget import (
    BUDGET_TOLERANCE,
    check_budget,
    fit_threshold,
    kept_counts,
    uniform_widths,
)
from nas_prune.errors import UserError
from nas_prune.widths import SearchSpace


def tiny(divisor: int) -> SearchSpace:
    return SearchSpace.from_dict({"family": "vgg", "args": {"cfg": "vgg_tiny", "head": "slimming"},
                                  "input": {"channels": 1, "size": 12, "classes": 4},
                                  "divisor": divisor, "min_width": divisor}, name="t")


def feasible(space: SearchSpace, budget: float, metric: str) -> bool:
    target = budget * space.base_cost(metric)
    return any(abs(space.cost(dict(zip(space.group_names, c, strict=True)), metric) - target)
               <= BUDGET_TOLERANCE * target
               for c in itertools.product(*[space.grid(g) for g in space.group_names]))


@pytest.mark.parametrize("divisor", [1, 2])
@pytest.mark.parametrize("metric", ["flops", "params"])
@pytest.mark.parametrize("budget", [0.3, 0.5, 0.7])
def test_threshold_lands_within_one_percent_whenever_the_grid_allows(divisor, metric, budget):
    space = tiny(divisor)
    possible = feasible(space, budget, metric)
    target = budget * space.base_cost(metric)
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        scores = {k: torch.rand(v, generator=g) * (1 + torch.rand((), generator=g))
                  for k, v in space.base_widths().items()}
        if not possible:
            with pytest.raises(UserError, match="cannot land within 1%"):
                fit_threshold(space, scores, budget, metric)
            continue
        widths, knob = fit_threshold(space, scores, budget, metric)
        assert space.validate(widths) == widths
        assert abs(space.cost(widths, metric) - target) <= BUDGET_TOLERANCE * target
        assert "threshold" in knob


@pytest.mark.parametrize("name", ["vgg16_cifar", "resnet56_cifar", "vgg_small_fmnist"])
@pytest.mark.parametrize("budget", [0.3, 0.5, 0.8])
def test_real_spaces(name, budget):
    space = SearchSpace.load(name)
    target = budget * space.base_cost()
    w = uniform_widths(space, budget)
    assert abs(space.cost(w) - target) <= BUDGET_TOLERANCE * target
    scores = {k: torch.rand(v, generator=torch.Generator().manual_seed(1))
              for k, v in space.base_widths().items()}
    w2, knob = fit_threshold(space, scores, budget)
    assert abs(space.cost(w2) - target) <= BUDGET_TOLERANCE * target


def test_kept_counts_follow_the_threshold():
    space = tiny(1)
    scores = {"conv1": torch.arange(8.0), "conv2": torch.arange(16.0), "conv3": torch.zeros(16)}
    assert kept_counts(space, scores, 5.5) == {"conv1": 2, "conv2": 10, "conv3": 1}


def test_impossible_budgets():
    space = tiny(2)
    for bad in (0.0, -0.1, 1.5, "half"):
        with pytest.raises(UserError, match="budget"):
            check_budget(space, bad)
    with pytest.raises(UserError, match="below the smallest network"):
        check_budget(space, 0.001)
    assert check_budget(space, 1.0) == space.base_cost()
