"""Known-answer tests for Network Slimming and AutoPruner on tiny constructed cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_prune.data import load_data
from nas_prune.errors import UserError
from nas_prune.seeds import SeedContext, get_method, trained_base
from nas_prune.seeds.autopruner import AutoPruner, GatedNetwork, GateTraining, open_widths
from nas_prune.seeds.slimming import (
    Slimming,
    SparsityHook,
    default_sparsity,
    gamma_scores,
    slimming_widths,
)
from nas_prune.testing.seed_suite import tiny_data_config, tiny_train_config
from nas_prune.widths import SearchSpace

INPUT = {"channels": 1, "size": 8, "classes": 4}


def space_of(family: str, args: dict, divisor: int = 1) -> SearchSpace:
    return SearchSpace.from_dict({"family": family, "args": args, "input": INPUT,
                                  "divisor": divisor, "min_width": divisor}, name="t")


VGG_TINY = {"cfg": "vgg_tiny", "head": "slimming"}
RESNET8 = {"depth": 8}


@pytest.fixture(scope="module")
def data():
    return load_data(tiny_data_config(train_images=512))


def context(space: SearchSpace, data, **kw) -> SeedContext:
    return SeedContext(space=space, data=data, train=tiny_train_config(),
                       device=torch.device("cpu"), samples=64, **kw)


def set_gammas(model: nn.Module, space: SearchSpace, seed: int) -> dict[str, torch.Tensor]:
    """Distinct gammas (some negative) in every group's BNs; returns them by BN name."""
    g = torch.Generator().manual_seed(seed)
    bns = [bn for group in space.family.groups() for bn in group.bns]
    sizes = [model.get_submodule(n).num_features for n in bns]
    magnitudes = torch.linspace(0.01, 1.0, sum(sizes))[torch.randperm(sum(sizes), generator=g)]
    signs = torch.where(torch.rand(sum(sizes), generator=g) < 0.3, -1.0, 1.0)
    values = (magnitudes * signs).split(sizes)
    out = {}
    with torch.no_grad():
        for name, v in zip(bns, values, strict=True):
            model.get_submodule(name).weight.copy_(v)
            out[name] = v
    return out


# ---- Network Slimming ------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.3, 0.5, 0.8])
def test_slimming_keeps_exactly_the_channels_above_its_threshold(data, keep):
    space = space_of("vgg", VGG_TINY)
    model = space.family.build(space.base_widths())
    gammas = set_gammas(model, space, seed=int(keep * 10))
    # a threshold at the keep-quantile of all |gamma|; its widths' cost is the budget, exactly
    everything = torch.cat(list(gammas.values())).abs().sort().values
    t0 = float(everything[int(len(everything) * (1 - keep))])
    expected = {g.name: int((gammas[g.bns[0]].abs() > t0).sum()) for g in space.family.groups()}
    assert all(w >= 1 for w in expected.values())
    budget = space.cost(expected) / space.base_cost()

    proposal = Slimming().propose(model, context(space, data), budget)

    t = proposal.knob["threshold"]
    above = {g.name: int((gammas[g.bns[0]].abs() > t).sum()) for g in space.family.groups()}
    assert proposal.widths == above == expected
    assert slimming_widths(proposal.scores, t) == expected
    assert proposal.diagnostics["moved_by_grid"] == []
    assert proposal.cost == space.cost(expected)


def test_slimming_residual_group_takes_max_gamma_over_its_bns():
    space = space_of("resnet_cifar", RESNET8)
    model = space.family.build(space.base_widths())
    gammas = set_gammas(model, space, seed=3)
    stage1 = next(g for g in space.family.groups() if g.name == "stage1")
    assert len(stage1.bns) == 2  # the stem BN and block 0's output BN, coupled by the shortcut
    stacked = torch.stack([gammas[b].abs() for b in stage1.bns])
    assert torch.equal(gamma_scores(model, space, "max")["stage1"], stacked.amax(0))
    assert torch.allclose(gamma_scores(model, space, "mean")["stage1"], stacked.mean(0))
    # a single-BN group is just |gamma|
    assert torch.equal(gamma_scores(model, space)["layer2.0"], gammas["layer2.0.bn1"].abs())


def test_sparsity_hook_adds_lambda_sign_gamma_to_bn2d_grads():
    space = space_of("vgg", {"cfg": "vgg_tiny", "head": "li"})  # li head: a BatchNorm1d too
    model = space.family.build(space.base_widths())
    set_gammas(model, space, seed=1)
    bn2d = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    bn1d = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert bn2d and bn1d
    with torch.no_grad():
        bn2d[0].weight[0] = 0.0  # sign(0) = 0: no push
    grads = {}
    for i, m in enumerate(bn2d + bn1d):
        if i == 1:
            m.weight.grad = None  # a BN that got no gradient still gets the L1 term
        else:
            m.weight.grad = torch.randn(m.weight.shape)
        grads[m] = None if m.weight.grad is None else m.weight.grad.clone()

    SparsityHook(1e-3).after_backward(model, step=0)

    for m in bn2d:
        before = grads[m] if grads[m] is not None else torch.zeros_like(m.weight)
        assert torch.allclose(m.weight.grad - before, 1e-3 * torch.sign(m.weight.detach()),
                              atol=1e-6)
    assert bn2d[0].weight.grad[0] == grads[bn2d[0]][0]
    for m in bn1d:
        assert torch.equal(m.weight.grad, grads[m])


def test_slimming_lambda_by_family_and_in_base_key():
    vgg, resnet = space_of("vgg", VGG_TINY), space_of("resnet_cifar", RESNET8)
    assert default_sparsity(vgg) == 1e-4 and default_sparsity(resnet) == 1e-5
    auto, set_ = Slimming(), Slimming({"sparsity": 1e-3})
    for space, lam in ((vgg, 1e-4), (resnet, 1e-5)):
        assert auto.base_hooks(auto.base_model(space), space).sparsity == lam
        assert set_.base_hooks(set_.base_model(space), space).sparsity == 1e-3
    keys = {auto.base_key(vgg), auto.base_key(resnet), set_.base_key(vgg), "plain"}
    assert len(keys) == 4 and "0.001" in set_.base_key(resnet)
    assert Slimming({"sparsity": 1e-5}).base_key(vgg) == auto.base_key(resnet)
    with pytest.raises(UserError, match="sparsity"):
        Slimming({"sparsity": -1})
    with pytest.raises(UserError, match="aggregate"):
        Slimming({"aggregate": "median"})
    with pytest.raises(UserError, match="allowed"):
        Slimming({"lambda": 1e-4})


def test_slimming_base_training_shrinks_gammas(data, tmp_path):
    space = space_of("vgg", VGG_TINY)
    ctx = context(space, data)
    mean_gamma = {}
    for lam in (0.0, 0.05):
        model, source, _, _ = trained_base(Slimming({"sparsity": lam}), ctx, epochs=1,
                                           cache_dir=tmp_path, progress=False)
        assert source == "trained"
        mean_gamma[lam] = float(torch.cat(list(gamma_scores(model, space).values())).mean())
    # lr 0.05 x lambda 0.05 x 16 steps with momentum pulls every |gamma| down by ~0.1
    assert mean_gamma[0.05] < mean_gamma[0.0] - 0.05


# ---- AutoPruner ------------------------------------------------------------------------------
def test_gated_network_applies_one_gate_vector_to_every_bn_of_a_group():
    space = space_of("resnet_cifar", RESNET8)
    net = space.family.build(space.base_widths()).eval()
    gated = GatedNetwork(net, space, generator=torch.Generator().manual_seed(0))
    assert {n for n, _ in gated.named_parameters() if n.startswith("gates.")} >= {
        "gates.stage1.fc.weight", "gates.layer1_0.fc.bias"}
    fc = gated.gates["stage1"].fc
    with torch.no_grad():  # stage1 gate: channel 0 shut, every other channel fully open
        fc.weight.zero_()
        fc.bias.fill_(1.0)
        fc.bias[0] = -1.0
    gated.alpha = 100.0
    seen = {}
    for name in ("bn1", "layer1.0.bn2", "layer1.0.bn1"):
        net.get_submodule(name).register_forward_hook(
            lambda m, i, out, name=name: seen.__setitem__(name, out.detach()))
    gated(torch.randn(6, 1, 8, 8))
    assert set(gated.last) == set(space.group_names)
    for name in ("bn1", "layer1.0.bn2"):  # both BNs of stage1
        assert torch.all(seen[name][:, 0].abs() < 1e-30)
        assert seen[name][:, 1:].abs().sum() > 0
    assert seen["layer1.0.bn1"][:, 0].abs().sum() > 0  # another group, its own gate


def test_gate_training_hooks_alpha_schedule_and_backbone_scale():
    space = space_of("vgg", VGG_TINY)
    gated = GatedNetwork(space.family.build(space.base_widths()), space)
    hooks = GateTraining(keep_ratio=0.5, penalty=10.0, alpha_max=100.0, total_steps=11,
                         backbone_scale=0.1)
    assert hooks.alpha_at(0) == 1.0 and hooks.alpha_at(10) == 100.0
    assert hooks.alpha_at(5) == pytest.approx(50.5)
    gated(torch.randn(4, 1, 8, 8))
    loss = hooks.extra_loss(gated, 0)
    # targets on the channel lattice: 8 channels -> 4/8, 16 -> 8/16 (r = 0.5 is on it)
    expected = sum((v.mean() - 0.5) ** 2 for v, _ in gated.last.values()) * 10.0
    assert hooks.target(8) == 0.5 and GateTraining(keep_ratio=0.7, penalty=1.0, alpha_max=2.0,
                                                   total_steps=1, backbone_scale=0.0
                                                   ).target(8) == 6 / 8
    assert torch.allclose(loss, expected)
    loss.backward()
    conv_grad = gated.net.features.conv1.weight.grad.clone()
    gate_grad = gated.gates["conv1"].fc.weight.grad.clone()
    hooks.after_backward(gated, step=4)
    assert torch.allclose(gated.net.features.conv1.weight.grad, 0.1 * conv_grad)
    assert torch.equal(gated.gates["conv1"].fc.weight.grad, gate_grad)
    assert gated.alpha == pytest.approx(hooks.alpha_at(5))


@pytest.mark.parametrize(("family", "args"), [("vgg", VGG_TINY), ("resnet_cifar", RESNET8)])
def test_autopruner_gates_end_binary_with_open_fraction_near_r(data, tmp_path, family, args):
    space = space_of(family, args)
    ctx = context(space, data)
    method = AutoPruner({"gate_epochs": 8})  # 512 images / 32 = 16 steps an epoch: 128 steps
    model, _, _, _ = trained_base(method, ctx, epochs=1, cache_dir=tmp_path, progress=False)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    for r in (0.4, 0.7):
        gates = method.train_gates(model, ctx, r)
        assert gates.steps == 128
        assert gates.near_binary() >= 0.95
        assert abs(gates.open_fraction() - r) <= 0.05
        assert open_widths(gates.gates) == {g: int((v > 0.5).sum()) or 1
                                            for g, v in gates.gates.items()}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())


def test_autopruner_proposal_reports_gates_and_meets_budget(data, tmp_path):
    space = space_of("resnet_cifar", RESNET8, divisor=2)
    ctx = context(space, data)
    method = get_method("autopruner", {"gate_epochs": 4})
    model, _, _, _ = trained_base(method, ctx, epochs=1, cache_dir=tmp_path, progress=False)
    proposal = method.propose(model, ctx, 0.5)
    d, knob = proposal.diagnostics, proposal.knob
    assert abs(proposal.ratio - 0.5) <= 0.01 * 0.5
    r = knob["keep_ratio"]
    assert 0.6 < r < 0.8  # FLOPs about quadratic in widths: r near sqrt(0.5)
    assert d["near_binary"] >= 0.95 and abs(d["open_fraction"] - r) <= 0.05
    # widths follow the gates: each group within two grid steps of its open-gate count
    for g, w in proposal.widths.items():
        assert abs(w - d["open_widths"][g]) <= 2 * space.divisor + 1, (g, w, d["open_widths"])
    assert set(proposal.scores) == set(space.group_names)


def test_autopruner_options_are_checked():
    with pytest.raises(UserError, match="gate_epochs"):
        AutoPruner({"gate_epochs": 0})
    with pytest.raises(UserError, match="keep_ratio"):
        AutoPruner({"keep_ratio": 1.5})
    with pytest.raises(UserError, match="allowed"):
        AutoPruner({"alpha": 3})
    assert AutoPruner().base_key(space_of("vgg", VGG_TINY)) == "plain"
