"""L1-norm, ThiNet and regression seed methods: known answers and shared properties.

The budget properties run on the conformance suite's tiny spaces (``vgg_small`` and ResNet-8 on
1x8x8 images, :mod:`nas_prune.testing.seed_suite`) with untrained bases and every option variant
of the three methods; ``vgg_tiny`` is used where no budget has to be met (its grid is too coarse
for the score-guided budget refinement, see the suite's docstring).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from nas_prune.budget import BUDGET_TOLERANCE
from nas_prune.data import load_data
from nas_prune.errors import UserError
from nas_prune.seeds import (
    ConsumerSamples,
    SeedContext,
    get_method,
    sample_consumers,
    sample_groups,
)
from nas_prune.seeds.l1norm import allowed_ratio
from nas_prune.seeds.regression import (
    LassoProblem,
    lasso_select,
    path_scores,
    reconstruction_error,
)
from nas_prune.seeds.thinet import removal_scores, thinet_select, thinet_select_reference
from nas_prune.testing.seed_suite import tiny_data_config, tiny_space, tiny_train_config
from nas_prune.widths import SearchSpace

FAMILIES = ("vgg", "resnet_cifar")
VARIANTS = {  # (method, options): every way from scores to widths
    "l1norm-global": ("l1norm", {"mode": "global"}),
    "l1norm-sensitivity": ("l1norm", {"val_images": 32, "ratios": [0.25, 0.5, 0.75]}),
    "thinet-ratio": ("thinet", {"allocation": "ratio"}),
    "thinet-error": ("thinet", {"allocation": "error"}),
    "regression": ("regression", {"lasso_points": 100}),
}


@pytest.fixture(scope="module")
def data():
    return load_data(tiny_data_config())


def vgg_tiny() -> SearchSpace:
    return SearchSpace.from_dict({"family": "vgg", "args": {"cfg": "vgg_tiny", "head": "slimming"},
                                  "input": {"channels": 1, "size": 8, "classes": 4},
                                  "divisor": 2}, name="vgg_tiny")


def make_ctx(space: SearchSpace, data, seed: int = 0, samples: int = 16) -> SeedContext:
    return SeedContext(space=space, data=data, train=tiny_train_config(),
                       device=torch.device("cpu"), seed=seed, samples=samples)


def untrained(space: SearchSpace, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return space.family.build(space.base_widths()).eval()


# ---- shared properties ---------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_proposal_properties(variant, family, data):
    method_name, options = VARIANTS[variant]
    space = tiny_space(family)
    budget = 0.5
    model = untrained(space)
    method = get_method(method_name, options)
    prop = method.propose(model, make_ctx(space, data), budget)

    base = space.base_widths()
    assert set(prop.scores) == set(base)
    for g, s in prop.scores.items():
        assert s.shape == (base[g],), g
        assert torch.isfinite(s).all(), g
    assert space.validate(prop.widths) == prop.widths  # on the grid, in bounds
    assert abs(prop.cost - budget * prop.base_cost) <= BUDGET_TOLERANCE * budget * prop.base_cost
    assert prop.cost == space.cost(prop.widths)

    again = get_method(method_name, options).propose(untrained(space), make_ctx(space, data),
                                                     budget)
    assert again.widths == prop.widths and again.knob == prop.knob
    for g in base:
        assert torch.equal(again.scores[g], prop.scores[g]), g


# ---- activations ---------------------------------------------------------------------------
def test_sampled_patches_rebuild_the_consumer_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.ReLU(),
                          nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=False))
    x = torch.randn(10, 3, 9, 9)
    s = sample_consumers(model, ["2"], x, points=4, seed=0, batch_size=3)["2"]
    assert s.patches.shape == (40, 5, 9)
    with torch.no_grad():
        full = model(x)
    img, row, col = s.positions.T
    torch.testing.assert_close(s.outputs(), full[img, :, row, col], atol=1e-5, rtol=1e-5)
    picked = full[img, s.filters[:, 0], row, col]
    torch.testing.assert_close(s.sampled_contributions().sum(1), picked, atol=1e-5, rtol=1e-5)


def test_sample_groups_covers_every_group_and_ignores_packing(data):
    space = tiny_space("resnet_cifar")
    model = untrained(space)
    images = data.train.images(slice(0, 6))
    one = dict(sample_groups(model, space, images, points=3, seed=1))
    tiny = {g.name: s for g, s in sample_groups(model, space, images, points=3, seed=1,
                                                max_bytes=1)}
    assert [g.name for g in one] == space.group_names
    for g, samples in one.items():
        assert [s.name for s in samples] == list(g.consumers)
        for a, b in zip(samples, tiny[g.name], strict=True):
            assert torch.equal(a.patches, b.patches) and torch.equal(a.filters, b.filters)
            assert a.channels == g.base


# ---- l1norm --------------------------------------------------------------------------------
def test_l1norm_zeroed_filters_score_lowest_and_cost_no_accuracy(data):
    space = vgg_tiny()
    model = untrained(space)
    zeroed = [1, 5, 9]
    with torch.no_grad():
        model.features.conv2.weight[zeroed] = 0.0
    method = get_method("l1norm", {"ratios": [0.1875, 0.5], "val_images": 64})
    ctx = make_ctx(space, data)
    scores = method.scores(model, ctx)
    assert sorted(torch.argsort(scores["conv2"])[:3].tolist()) == zeroed
    expected = model.features.conv2.weight.detach().abs().sum((1, 2, 3))
    torch.testing.assert_close(scores["conv2"], expected)
    curves, base_acc, n = method.sensitivity(model, ctx, scores)
    # 3 of 16 filters pruned = exactly the zeroed ones; with untrained BatchNorm (mean 0,
    # beta 0) their output is already zero, so accuracy cannot change.
    assert n == 64 and curves["conv2"][0] == 0.0


def test_l1norm_global_mode_prunes_zeroed_filters_first(data):
    space = tiny_space("resnet_cifar")
    model = untrained(space)
    with torch.no_grad():
        model.layer3[0].conv1.weight[:40] *= 1e-3  # 40 tiny filters in group layer3.0
    prop = get_method("l1norm", {"mode": "global"}).propose(model, make_ctx(space, data), 0.6)
    assert prop.widths["layer3.0"] <= 64 - 40 + 2  # they go before anything else


def test_allowed_ratio_follows_the_drop_envelope():
    ratios = [0.25, 0.5, 0.75]
    drops = [0.0, 0.1, 0.3]
    assert allowed_ratio(ratios, drops, -0.01, slope=0) == 0.0
    assert allowed_ratio(ratios, drops, 0.0, slope=0) == 0.25
    assert allowed_ratio(ratios, drops, 0.05, slope=0) == pytest.approx(0.375)
    assert allowed_ratio(ratios, drops, 1.0, slope=0) == 0.75
    # a later dip does not reopen pruning: the envelope is the running maximum
    assert allowed_ratio(ratios, [0.2, 0.0, 0.0], 0.1, slope=0) == pytest.approx(0.125)
    # flat curves: the tie-break slope makes the ratio grow continuously with the tolerance
    flat = [0.0, 0.0, 0.0]
    assert allowed_ratio(ratios, flat, 0.0) == 0.0
    assert allowed_ratio(ratios, flat, 0.5e-4) == pytest.approx(0.5)
    assert allowed_ratio(ratios, flat, 1.0) == 0.75


def test_l1norm_sensitivity_prunes_sensitive_groups_less(data):
    space = tiny_space("vgg")
    method = get_method("l1norm", {"ratios": [0.25, 0.5, 0.75], "val_images": 32})
    curves = {"conv1": [0.3, 0.5, 0.6], "conv2": [0.0, 0.05, 0.1], "conv3": [0.0, 0.0, 0.0],
              "conv4": [0.0, 0.0, 0.0], "conv5": [0.0, 0.0, 0.01], "conv6": [0.0, 0.0, 0.0]}
    method.sensitivity = lambda *a: (curves, 0.9, 32)  # a known sensitivity analysis
    prop = method.propose(untrained(space), make_ctx(space, data), 0.5)
    keep = {g: w / space.base_widths()[g] for g, w in prop.widths.items()}
    assert keep["conv1"] > keep["conv2"] > keep["conv6"]
    assert prop.diagnostics["sensitivity"] == curves
    assert prop.knob["mode"] == "sensitivity"


def test_l1norm_can_keep_residual_stages(data):
    space = tiny_space("resnet_cifar")
    prop = get_method("l1norm", {"mode": "global", "prune_stages": False}).propose(
        untrained(space), make_ctx(space, data), 0.6)
    for s in ("stage1", "stage2", "stage3"):
        assert prop.widths[s] == space.base_widths()[s]


# ---- thinet --------------------------------------------------------------------------------
def brute_force(contrib: torch.Tensor, k: int) -> set[int]:
    c = contrib.shape[1]
    best = min(itertools.combinations(range(c), k),
               key=lambda t: float(contrib[:, list(t)].sum(1).pow(2).sum()))
    return set(best)


def test_thinet_greedy_equals_brute_force_when_greedy_is_optimal():
    # Orthogonal contributions: the error of a set is the sum of its members' energies, so
    # the greedy's first k picks are the optimal k-subset for every k.
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(60, 8, generator=g, dtype=torch.float64))
    scale = torch.tensor([3.0, 0.5, 2.0, 1.5, 0.2, 4.0, 1.0, 2.5], dtype=torch.float64)
    contrib = q * scale
    order = thinet_select(contrib, 7).tolist()
    for k in range(1, 8):
        assert set(order[:k]) == brute_force(contrib, k), k
    assert order == torch.argsort(scale)[:7].tolist()


def test_thinet_removes_a_zero_contribution_first():
    g = torch.Generator().manual_seed(1)
    contrib = torch.randn(100, 6, generator=g)
    contrib[:, 4] = 0.0
    assert int(thinet_select(contrib, 1)[0]) == 4
    assert int(thinet_select_reference(contrib, 1)[0]) == 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thinet_vectorised_equals_reference(seed):
    g = torch.Generator().manual_seed(seed)
    contrib = torch.randn(200, 12, generator=g) + 0.3 * torch.randn(1, 12, generator=g)
    for n_remove in (1, 6, 11):
        assert torch.equal(thinet_select(contrib, n_remove),
                           thinet_select_reference(contrib, n_remove))


def test_thinet_scores_follow_the_removal_order():
    g = torch.Generator().manual_seed(3)
    contrib = torch.randn(80, 9, generator=g, dtype=torch.float64)
    scores, curve = removal_scores(contrib)
    order = thinet_select(contrib, 8).tolist()
    assert torch.argsort(scores)[:8].tolist() == order
    assert curve[0] == 0 and curve[-1] == pytest.approx(1.0)
    assert bool((curve[1:] >= curve[:-1]).all())


def test_thinet_drops_the_channel_its_consumer_ignores(data):
    space = vgg_tiny()
    model = untrained(space)
    with torch.no_grad():
        model.features.conv3.weight[:, 7] = 0.0  # conv3 (conv2's consumer) ignores channel 7
    scores = get_method("thinet").scores(model, make_ctx(space, data))
    assert int(torch.argmin(scores["conv2"])) == 7
    assert float(scores["conv2"][7]) < 1e-5


# ---- regression ----------------------------------------------------------------------------
def linear_samples(x: torch.Tensor, w: torch.Tensor) -> ConsumerSamples:
    n = x.shape[0]
    return ConsumerSamples("fc", "linear", x.unsqueeze(-1), w.unsqueeze(-1),
                           torch.zeros(n, 1, dtype=torch.long))


def test_regression_drops_a_linear_combination_before_independent_channels():
    g = torch.Generator().manual_seed(0)
    n = 400
    x = torch.randn(n, 6, generator=g)
    x[:, 2:5] *= 0.3  # independent but small channels
    x[:, 5] = 0.5 * x[:, 0] + 0.3 * x[:, 1]  # redundant, with a larger norm than channels 2-4
    w = torch.randn(4, 6, generator=g)
    w[:, 1] = w[:, 0]
    w[:, 5] = w[:, 0]  # so Z_5 = 0.5 Z_0 + 0.3 Z_1 exactly
    assert x[:, 5].norm() > x[:, 2:5].norm(dim=0).max()
    problem = LassoProblem.from_samples([linear_samples(x, w)], n, torch.Generator())
    scores = path_scores(problem)
    assert int(torch.argmin(scores)) == 5
    kept, _, _ = lasso_select(problem, 5, seed=0)
    assert 5 not in kept.tolist()


def test_regression_selection_reconstructs_better_than_random():
    g = torch.Generator().manual_seed(0)
    n, c, k = 600, 12, 4
    scale = 2.0 ** (-torch.arange(c, dtype=torch.float32) / 2)
    perm = torch.randperm(c, generator=g)
    patches = torch.randn(n, c, k, generator=g) * scale[perm].view(1, c, 1)
    weight = torch.randn(5, c, k, generator=g)
    s = ConsumerSamples("conv", "conv", patches, weight, torch.zeros(n, 1, dtype=torch.long))
    problem = LassoProblem.from_samples([s], 400, torch.Generator().manual_seed(1))
    kept, _, _ = lasso_select(problem, 4, seed=0)
    lasso_err = reconstruction_error([s], kept, torch.Generator().manual_seed(2))
    assert lasso_err < 0.5
    for i in range(10):
        rand = torch.randperm(c, generator=torch.Generator().manual_seed(100 + i))[:4].sort()[0]
        if set(rand.tolist()) == set(kept.tolist()):
            continue
        assert lasso_err < reconstruction_error([s], rand, torch.Generator().manual_seed(2))


def test_regression_lasso_search_hits_the_count():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 16, generator=g)
    w = torch.randn(8, 16, generator=g)
    problem = LassoProblem.from_samples([linear_samples(x, w)], 300, torch.Generator())
    for keep in (1, 5, 12, 16):
        kept, alpha, nnz = lasso_select(problem, keep, seed=0)
        assert len(kept) == keep and len(set(kept.tolist())) == keep
        assert nnz >= keep


def test_regression_reports_reconstruction_diagnostics(data):
    space = tiny_space("resnet_cifar")
    prop = get_method("regression").propose(untrained(space), make_ctx(space, data), 0.5)
    rec = prop.diagnostics["reconstruction"]
    assert set(rec) == set(space.group_names)
    pruned = [g for g in rec if prop.widths[g] < space.base_widths()[g]]
    assert pruned
    for g, info in rec.items():
        assert info["kept"] == prop.widths[g]
        if g in pruned:
            assert 0.0 <= info["rel_error"] < 1.0 and info["random_rel_error"] >= 0.0
    # on average over the pruned groups the LASSO choice rebuilds the outputs better
    mean = sum(rec[g]["rel_error"] for g in pruned) / len(pruned)
    assert mean < sum(rec[g]["random_rel_error"] for g in pruned) / len(pruned)


# ---- options -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options, field", [
    ("l1norm", {"mode": "median"}, "mode"),
    ("l1norm", {"ratios": [0.5, 1.0]}, "ratios"),
    ("l1norm", {"val_images": 0}, "val_images"),
    ("thinet", {"allocation": "flops"}, "allocation"),
    ("thinet", {"locations": True}, "locations"),
    ("regression", {"alpha0": 0}, "alpha0"),
    ("regression", {"lasso_points": 0}, "lasso_points"),
    ("regression", {"lambda": 1}, "unknown option"),
])
def test_bad_options_are_one_line_user_errors(name, options, field):
    with pytest.raises(UserError, match=field) as err:
        get_method(name, options)
    assert f"seed_method.options.{name}" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs", [
    {"padding": 1}, {"padding": "same"}, {"padding": "valid"}, {"padding": "same", "dilation": 2},
    {"padding": 2, "padding_mode": "reflect"}, {"padding": 1, "stride": 2},
    {"padding": "same", "kernel_size": 4}])
def test_sampled_patches_reproduce_the_conv_output(kwargs):
    """The reconstruction methods' samples of a consumer's input are the conv's own patches,
    for any padding (numbers, 'same' with its odd pixel, 'valid', reflect) and stride."""
    from nas_prune.seeds._activations import _patch_sampler

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, **{"kernel_size": 3, **kwargs}, bias=False)
    x = torch.randn(2, 3, 9, 9)
    patches, filt, where = _patch_sampler(conv, 7, torch.Generator().manual_seed(1))(x)
    with torch.no_grad():
        y = conv(x)
        w = conv.weight.flatten(2)  # out, c, k
        for i in range(patches.shape[0]):
            b, r, c = where[i].tolist()
            f = int(filt[i, 0])
            assert torch.allclose((w[f] * patches[i]).sum(), y[b, f, r, c], atol=1e-5)
