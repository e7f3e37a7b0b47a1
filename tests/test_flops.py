"""FLOPs (multiply-accumulates) and params against the published figures, and the closed form."""

from __future__ import annotations

import random

import pytest

from nas_prune.families import FAMILIES, InputShape, get_family
from nas_prune.flops import CostModel, _traced, count
from nas_prune.widths import SearchSpace

VGG16_PRUNED_A = [32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256]


def close(actual: float, published: float, rel: float = 0.01) -> bool:
    return abs(actual - published) <= rel * published


@pytest.mark.parametrize("space, flops, params", [
    ("vgg16_cifar", 3.13e8, 1.5e7),  # Li et al. 2017, Table 1
    ("resnet56_cifar", 1.25e8, 8.5e5),
    ("resnet110_cifar", 2.53e8, 1.72e6),
    ("vgg19_cifar", None, 2.004e7),  # Network Slimming (its 7.97e8 FLOPs count ~2 x MAC)
])
def test_published_base_figures(space, flops, params):
    s = SearchSpace.load(space)
    f, p = s.count(s.base_widths())
    if flops is not None:
        assert close(f, flops), (f, flops)
    assert close(p, params), (p, params)


def test_vgg19_slimming_flops_are_about_half_the_papers_count():
    s = SearchSpace.load("vgg19_cifar")
    f, _ = s.count(s.base_widths())
    assert 0.45 < f / 7.97e8 < 0.55


def test_li_vgg16_pruned_a():
    s = SearchSpace.load("vgg16_cifar")
    f, p = s.count(dict(zip(s.group_names, VGG16_PRUNED_A, strict=True)))
    assert close(f, 2.06e8) and close(p, 5.4e6), (f, p)


CASES = [("vgg", {"cfg": c, "head": h}) for c in ("vgg_tiny", "vgg11", "vgg_small")
         for h in ("li", "slimming")]
CASES += [("resnet_cifar", {"depth": d, "shortcut": s}) for d in (8, 20) for s in ("A", "B")]
CASES += [("graph", {"model": "zoo:resnet_small", "kwargs": {"arch": "resnet10", "width": 8}}),
          ("graph", {"model": "zoo:mobilenet_v2_small",
                     "kwargs": {"setting": "tiny", "last_channel": 32}})]
CASES += [("cbm_resnet", {}), ("cbm_mobilenet", {})]  # the Channel-Bench-Macro networks


@pytest.mark.parametrize("name, args", CASES)
def test_closed_form_equals_trace(name, args):
    family = get_family(name, args, InputShape(3, 32, 10))
    model = CostModel(family)
    rng = random.Random(0)
    for _ in range(5):
        widths = {g.name: rng.randint(1, g.base) for g in family.groups()}
        assert model(widths) == _traced(family, widths)
        assert count(family, widths) == _traced(family, widths)


@pytest.mark.parametrize("name, args", CASES)
def test_closed_form_equals_trace_above_the_base_widths(name, args):
    """A space's max_multiplier lets groups grow above their base: the networks build and the
    closed form still counts them exactly."""
    family = get_family(name, args, InputShape(3, 32, 10))
    rng = random.Random(1)
    for _ in range(3):
        widths = {g.name: rng.randint(g.base, 2 * g.base) for g in family.groups()}
        assert count(family, widths) == _traced(family, widths)


def test_every_family_is_covered():
    assert {name for name, _ in CASES} == set(FAMILIES)


def test_flops_shrink_with_widths():
    s = SearchSpace.load("resnet56_cifar")
    base = s.base_widths()
    half = {g: max(4, w // 2) for g, w in base.items()}
    assert s.cost(half) < s.cost(base)
    assert s.cost(half, "params") < s.cost(base, "params")
