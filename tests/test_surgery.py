"""Weight surgery: the cut-down network computes what the full one does when the removed
channels' BatchNorm outputs are zero."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_prune.errors import UserError
from nas_prune.families import InputShape, get_family
from nas_prune.surgery import (
    channel_orders,
    cut_down,
    filter_l1_scores,
    keep_from_scores,
    model_widths,
    shortcut_mismatches,
)
from nas_prune.testing.family_suite import random_state

SHAPE = InputShape(channels=3, size=8, classes=5)


def _silence_removed(model: nn.Module, family, keep: dict[str, torch.Tensor]) -> None:
    """gamma = beta = 0 on every removed channel of every BatchNorm of its group."""
    widths = model_widths(model, family)
    with torch.no_grad():
        for g in family.groups():
            mask = torch.ones(widths[g.name], dtype=torch.bool)
            mask[keep[g.name]] = False
            for bn in g.bns:
                m = model.get_submodule(bn)
                m.weight[mask] = 0.0
                m.bias[mask] = 0.0


def _random_keep(widths: dict[str, int], gen: torch.Generator) -> dict[str, torch.Tensor]:
    keep = {}
    for g, w in widths.items():
        k = int(torch.randint(1, w + 1, (), generator=gen))
        keep[g] = torch.randperm(w, generator=gen)[:k].sort().values
    return keep


def _assert_same_function(family, keep: dict[str, torch.Tensor], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    full = family.build(family.base_widths())
    random_state(full, gen)
    _silence_removed(full, family, keep)
    full.eval()
    cut = cut_down(full, family, keep)
    assert model_widths(cut, family) == {g: len(k) for g, k in keep.items()}
    assert not cut.training
    x = torch.randn(6, SHAPE.channels, SHAPE.size, SHAPE.size, generator=gen)
    with torch.no_grad():
        out_full, out_cut = full(x), cut(x)
    assert out_full.abs().max() > 1e-3  # the comparison is not between two zero tensors
    assert torch.allclose(out_full, out_cut, atol=1e-5), (out_full - out_cut).abs().max()


@pytest.mark.parametrize("head", ["li", "slimming"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vgg_cut_is_exact(head: str, seed: int) -> None:
    family = get_family("vgg", {"cfg": "vgg_tiny", "head": head}, SHAPE)
    keep = _random_keep(family.base_widths(), torch.Generator().manual_seed(100 + seed))
    _assert_same_function(family, keep, seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resnet_option_b_cut_is_exact(seed: int) -> None:
    family = get_family("resnet_cifar", {"depth": 8, "shortcut": "B"}, SHAPE)
    keep = _random_keep(family.base_widths(), torch.Generator().manual_seed(200 + seed))
    _assert_same_function(family, keep, seed)


def _consistent_option_a_keep(family, gen: torch.Generator, *, k1: int,
                              extra: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Random inner-conv cuts; stage S+1 keeps the shortcut partners (i + P) of stage S's kept
    channels plus ``extra`` more, so the option-A shortcuts can be cut exactly."""
    base = family.base_widths()
    keep = _random_keep({g: w for g, w in base.items() if not g.startswith("stage")}, gen)
    prev = torch.randperm(base["stage1"], generator=gen)[:k1].sort().values
    keep["stage1"] = prev
    for s, n_extra in zip((2, 3), extra, strict=True):
        c_prev, c = base[f"stage{s - 1}"], base[f"stage{s}"]
        partners = prev + (c - c_prev) // 2
        others = torch.tensor([i for i in range(c) if i not in set(partners.tolist())])
        more = others[torch.randperm(len(others), generator=gen)[:n_extra]]
        prev = torch.cat([partners, more]).sort().values
        keep[f"stage{s}"] = prev
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resnet_option_a_cut_is_exact_when_partners_are_kept(seed: int) -> None:
    family = get_family("resnet_cifar", {"depth": 8, "shortcut": "A"}, SHAPE)
    gen = torch.Generator().manual_seed(300 + seed)
    keep = _consistent_option_a_keep(family, gen, k1=6 + seed, extra=(5 + seed, 3))
    widths = family.base_widths()
    assert shortcut_mismatches(family, keep, widths) == []
    _assert_same_function(family, keep, seed)


def test_resnet_option_a_reorders_channels_to_match_the_padding() -> None:
    family = get_family("resnet_cifar", {"depth": 8, "shortcut": "A"}, SHAPE)
    keep = {g: torch.arange(w) for g, w in family.base_widths().items()}
    keep["stage1"] = torch.arange(8)  # 8 kept; their partners in stage 2 are 8..15
    keep["stage2"] = torch.arange(16)  # 16 kept: the cut pads 4 in front, so 8..15 go to 4..11
    keep["stage3"] = torch.cat([torch.arange(4), torch.arange(16, 48)])  # partners 16..31+16
    orders = channel_orders(family, keep, family.base_widths())
    assert orders["stage2"] == [0, 1, 2, 3, *range(8, 16), 4, 5, 6, 7]
    # stage 3 pads (36 - 16) // 2 = 10 in front; position 10 + m holds the partner of stage 2's m
    assert orders["stage3"][10:26] == [c + 16 for c in orders["stage2"]]
    assert shortcut_mismatches(family, keep, family.base_widths()) == []
    _assert_same_function(family, keep, 7)


def test_resnet_option_a_unpruned_stages_are_exact() -> None:
    family = get_family("resnet_cifar", {"depth": 8, "shortcut": "A"}, SHAPE)
    gen = torch.Generator().manual_seed(5)
    base = family.base_widths()
    keep = _random_keep({g: w for g, w in base.items() if g != "stage2" and g != "stage3"}, gen)
    keep["stage2"], keep["stage3"] = torch.arange(base["stage2"]), torch.arange(base["stage3"])
    assert shortcut_mismatches(family, keep, base) == []
    _assert_same_function(family, keep, 5)


def test_resnet_option_a_inconsistent_cut_is_reported() -> None:
    family = get_family("resnet_cifar", {"depth": 8, "shortcut": "A"}, SHAPE)
    keep = {g: torch.arange(w) for g, w in family.base_widths().items()}
    keep["stage1"] = torch.arange(8)
    keep["stage2"] = torch.arange(16, 32)  # drops 8..15, the partners of the kept stage-1 channels
    problems = shortcut_mismatches(family, keep, family.base_widths())
    assert problems and "stage1->stage2" in problems[0]
    full = family.build(family.base_widths()).eval()
    with pytest.raises(UserError, match="option-A"):
        cut_down(full, family, keep, strict=True)
    assert model_widths(cut_down(full, family, keep), family)["stage2"] == 16


def test_keep_from_scores_top_k_sorted_with_stable_ties() -> None:
    scores = {"a": torch.tensor([0.1, 0.9, 0.5, 0.9, 0.2]), "b": torch.tensor([3.0, 1.0, 2.0])}
    keep = keep_from_scores(scores, {"a": 3, "b": 1})
    assert keep["a"].tolist() == [1, 2, 3]
    assert keep["b"].tolist() == [0]
    assert keep_from_scores({"a": torch.tensor([1.0, 1.0, 1.0])}, {"a": 2})["a"].tolist() == [0, 1]
    with pytest.raises(UserError, match="widths.b"):
        keep_from_scores(scores, {"b": 4})


def test_bad_keep_is_a_user_error() -> None:
    family = get_family("vgg", {"cfg": "vgg_tiny", "head": "slimming"}, SHAPE)
    model = family.build(family.base_widths())
    keep = {g: torch.arange(w) for g, w in family.base_widths().items()}
    with pytest.raises(UserError, match="keep.conv1"):
        cut_down(model, family, {**keep, "conv1": torch.tensor([3, 1])})
    with pytest.raises(UserError, match="keep.conv2"):
        cut_down(model, family, {**keep, "conv2": torch.tensor([0, 99])})
    with pytest.raises(UserError, match="keep.conv3"):
        cut_down(model, family, {k: v for k, v in keep.items() if k != "conv3"})


def test_filter_l1_scores_rank_filters_by_weight_mass() -> None:
    family = get_family("resnet_cifar", {"depth": 8, "shortcut": "B"}, SHAPE)
    model = family.build(family.base_widths())
    with torch.no_grad():
        w = model.get_submodule("layer1.0.conv1").weight
        w.copy_(torch.arange(w.shape[0], dtype=torch.float32).view(-1, 1, 1, 1) + 1.0)
    scores = filter_l1_scores(model, family)
    assert set(scores) == set(family.group_names())
    s = scores["layer1.0"]
    assert torch.all(s[1:] > s[:-1])
    assert torch.allclose(s, (torch.arange(16.0) + 1) / 8.5)
    # a stage group sums the normalised norms of all its convs (stem + block outputs): mean = #convs
    stage1_convs = len(next(g for g in family.groups() if g.name == "stage1").convs)
    assert scores["stage1"].mean().item() == pytest.approx(stage1_convs, rel=1e-5)
