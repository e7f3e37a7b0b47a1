"""Every family's tiny variant builds, runs forward and backward, and every parameter gets a
gradient."""

from __future__ import annotations

import pytest
import torch

from nas_prune.errors import UserError
from nas_prune.families import InputShape, get_family

TINY = [("vgg", {"cfg": "vgg_tiny", "head": "li"}),
        ("vgg", {"cfg": "vgg_tiny", "head": "slimming"}),
        ("resnet_cifar", {"depth": 8, "shortcut": "A"}),
        ("resnet_cifar", {"depth": 8, "shortcut": "B"})]


@pytest.mark.parametrize("name, args", TINY)
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_forward_backward_every_parameter_gets_gradient(name, args, scale):
    family = get_family(name, args, InputShape(3, 16, 7))
    widths = {g.name: max(1, int(g.base * scale)) for g in family.groups()}
    model = family.build(widths)
    x = torch.randn(4, 3, 16, 16)
    out = model(x)
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    # the per-layer channels the family reports are the ones built
    for layer, ch in family.layer_channels(widths).items():
        assert model.get_submodule(layer).out_channels == ch


@pytest.mark.parametrize("name, args", TINY)
def test_groups_name_real_modules(name, args):
    family = get_family(name, args, InputShape(3, 16, 7))
    model = family.build(family.base_widths())
    for g in family.groups():
        assert len(g.convs) == len(g.bns) >= 1
        for n in g.convs:
            assert model.get_submodule(n).out_channels == g.base
        for n in g.bns:
            assert model.get_submodule(n).num_features == g.base
        for n in g.consumers:
            m = model.get_submodule(n)
            assert getattr(m, "in_channels", getattr(m, "in_features", None)) == g.base


def test_resnet_stages_may_shrink_or_grow():
    family = get_family("resnet_cifar", {"depth": 8}, InputShape(3, 16, 4))
    widths = {"stage1": 12, "stage2": 6, "stage3": 20, "layer1.0": 3, "layer2.0": 5,
              "layer3.0": 7}
    out = family.build(widths)(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 4)


def test_resnet_groups_couple_the_stage():
    family = get_family("resnet_cifar", {"depth": 20}, InputShape(3, 32, 10))
    stage1 = next(g for g in family.groups() if g.name == "stage1")
    assert stage1.residual and "conv1" in stage1.convs and len(stage1.convs) == 4
    assert len(family.groups()) == 3 + 9


def test_unknown_family_and_args():
    with pytest.raises(UserError, match="choose one of"):
        get_family("alexnet", {}, InputShape(3, 32, 10))
    with pytest.raises(UserError, match="vgg cfg"):
        get_family("vgg", {"cfg": "vgg7"}, InputShape(3, 32, 10))
    with pytest.raises(UserError, match="bad arguments"):
        get_family("vgg", {"colour": "red"}, InputShape(3, 32, 10))
