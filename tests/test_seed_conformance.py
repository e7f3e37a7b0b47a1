"""Every registered seed method through the shared conformance suite (nas_prune.testing).

Parametrised over ``SEED_METHODS``, so a method is covered as soon as it is registered.
"""

from __future__ import annotations

import pytest

from nas_prune.errors import UserError
from nas_prune.seeds import SEED_METHODS, get_method
from nas_prune.seeds import propose as seeds_propose
from nas_prune.testing import seed_suite as suite

METHODS = sorted(SEED_METHODS)


@pytest.fixture(scope="session")
def bench(tmp_path_factory) -> suite.SeedBench:
    """One tiny data set and one trained base per (regulariser, family) for the whole session."""
    return suite.SeedBench(cache_dir=tmp_path_factory.mktemp("seed-bases"))


@pytest.mark.parametrize("name", METHODS)
def test_metadata(name, bench):
    suite.check_metadata(SEED_METHODS[name], bench.space("vgg"))


@pytest.mark.parametrize("family", suite.FAMILIES)
@pytest.mark.parametrize("name", METHODS)
def test_one_finite_score_per_channel(bench, name, family):
    run = bench.run(name, family, 0.5)
    suite.check_scores(run.proposal, bench.space(family))


@pytest.mark.parametrize("family", suite.FAMILIES)
@pytest.mark.parametrize("name", METHODS)
def test_widths_within_bounds_and_on_grid(bench, name, family):
    run = bench.run(name, family, 0.5)
    assert run.proposal.method == name
    suite.check_widths(run.proposal, bench.space(family))


@pytest.mark.parametrize(("budget", "metric"), suite.BUDGETS)
@pytest.mark.parametrize("family", suite.FAMILIES)
@pytest.mark.parametrize("name", METHODS)
def test_budget_met_within_one_percent(bench, name, family, budget, metric):
    run = bench.run(name, family, budget, metric)
    suite.check_widths(run.proposal, bench.space(family))
    suite.check_budget_met(run.proposal, bench.space(family), budget, metric)


@pytest.mark.parametrize("family", suite.FAMILIES)
@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_proposal_and_base_untouched(bench, name, family):
    first = bench.run(name, family, 0.5)  # through nas_prune.seeds.propose
    method = get_method(name)
    model = bench.base(method, family)  # the same trained base, from the cache
    before = suite.state_of(model)
    again = method.propose(model, bench.context(family), 0.5)
    suite.check_same_proposal(first.proposal, again)
    suite.check_unchanged(before, model)


@pytest.mark.parametrize("budget", suite.IMPOSSIBLE_BUDGETS)
@pytest.mark.parametrize("name", METHODS)
def test_impossible_budget_is_user_error(bench, name, budget):
    method = get_method(name)
    ctx = bench.context("resnet_cifar")
    # through the entry point: rejected before any training
    with pytest.raises(UserError, match="budget"):
        seeds_propose(method, ctx, budget, base_epochs=1, cache_dir=bench.cache_dir,
                      data_cfg=bench.data_config, progress=False)
    # and by the method itself, given a trained base
    model = bench.base(method, "resnet_cifar")
    with pytest.raises(UserError, match="budget"):
        method.propose(model, ctx, budget)
