"""The graph-derived family: torchvision models and user factories as search spaces.

Published figures, the groups found on the graph, building at random widths, FLOPs from the
groups against a trace, the architecture YAML round trip and fingerprint, one-line refusals, and
exact weight surgery. The seed methods run on graph spaces in the conformance suite
(``tests/test_seed_conformance.py``, spaces ``graph_resnet`` and ``graph_mobilenet``).
"""

from __future__ import annotations

import random
import re

import pytest
import torch
from torch import nn

from nas_prune._yaml import write_yaml
from nas_prune.cli import main
from nas_prune.errors import UserError
from nas_prune.families import InputShape, get_family
from nas_prune.families import graph as graph_family
from nas_prune.flops import CostModel, _traced, count
from nas_prune.surgery import model_widths
from nas_prune.testing import family_suite
from nas_prune.widths import ArchSpec, SearchSpace, build_model, space_source, with_input

from . import graph_models

SMALL = InputShape(channels=3, size=32, classes=10)
TINY = [  # (model, kwargs): fast at 16-32 pixels
    ("zoo:resnet_small", {"arch": "resnet10", "width": 8}),
    ("zoo:mobilenet_v2_small", {"setting": "tiny", "last_channel": 32}),
    ("tests.graph_models:tiny_net", {}),
    ("tests.graph_models:branch_net", {}),
]


def graph(model: str, kwargs: dict | None = None, shape: InputShape = SMALL, **args):
    return get_family("graph", {"model": model, "kwargs": kwargs or {}, **args}, shape)


def close(actual: float, published: float, rel: float = 0.01) -> bool:
    return abs(actual - published) <= rel * published


@pytest.mark.parametrize("space, flops, params", [
    ("resnet18_imagenet", 1.814e9, 11.69e6),  # torchvision's model card: 1.81 GFLOPS (MACs)
    ("resnet50_imagenet", 4.09e9, 25.56e6),
    ("mobilenet_v2_imagenet", 3.01e8, 3.50e6),  # Sandler et al. 2018, Table 4: 300M MAdds
])
def test_published_figures(space, flops, params):
    s = SearchSpace.load(space)
    f, p = s.count(s.base_widths())
    assert close(f, flops) and close(p, params), (f, p)
    # the base model is torchvision's, unchanged
    import torchvision

    ref = torchvision.models.get_model(s.family.model.split(":")[1], weights=None)
    assert p == sum(t.numel() for t in ref.parameters())


def test_resnet18_groups():
    fam = graph("torchvision:resnet18", shape=InputShape(3, 224, 1000))
    groups = {g.name: g for g in fam.groups()}
    residual = [g for g in groups.values() if g.residual]
    assert len(groups) == 12 and len(residual) == 4
    stem = groups["conv1"]  # the stem shares layer1's residual width
    assert stem.residual and stem.convs == ("conv1", "layer1.0.conv2", "layer1.1.conv2")
    assert stem.bns == ("bn1", "layer1.0.bn2", "layer1.1.bn2")
    assert set(stem.consumers) == {"layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1",
                                   "layer2.0.downsample.0"}
    stage2 = groups["layer2.0.conv2"]
    assert set(stage2.convs) == {"layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"}
    assert groups["layer4.0.conv2"].consumers[-1] == "fc"
    inner = [g for g in groups.values() if not g.residual]
    assert all(len(g.convs) == 1 and g.name.endswith("conv1") for g in inner) and len(inner) == 8
    assert fam.fixed_layers() == {}


def test_mobilenet_v2_groups():
    fam = graph("torchvision:mobilenet_v2", shape=InputShape(3, 224, 1000))
    model = fam.build(fam.base_widths())
    groups = fam.groups()
    assert len(groups) == 25
    assert sum(g.residual for g in groups) == 5  # the 24/32/64/96/160-channel stages
    depthwise = [n for n, m in model.named_modules()
                 if isinstance(m, nn.Conv2d) and m.groups > 1]
    listed = [c for g in groups for c in g.depthwise]
    assert sorted(listed) == sorted(depthwise) and len(depthwise) == 17
    for g in groups:
        for c in g.depthwise:
            assert c in g.convs and c not in g.consumers
    # the first block has no expansion: its depthwise conv joins the stem's group
    assert groups[0].name == "features.0.0" and groups[0].depthwise == ("features.1.conv.0.0",)


@pytest.mark.parametrize("model, kwargs", TINY + [("torchvision:resnet18", {})])
def test_build_at_random_widths_every_parameter_gets_a_gradient(model, kwargs):
    fam = graph(model, kwargs, InputShape(3, 16, 7))
    rng = random.Random(1)
    widths = {g.name: rng.randint(1, g.base) for g in fam.groups()}
    torch.manual_seed(0)  # unseeded, one width-1 squeeze-excitation branch can be all ReLU-dead
    net = fam.build(widths)
    out = net(torch.randn(4, 3, 16, 16))
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    for layer, ch in fam.layer_channels(widths).items():
        assert net.get_submodule(layer).out_channels == ch
    for g in fam.groups():
        for c in g.depthwise:
            m = net.get_submodule(c)
            assert m.in_channels == m.out_channels == m.groups == widths[g.name]
    assert sum(p.numel() for p in net.parameters()) == count(fam, widths)[1]


@pytest.mark.parametrize("model, kwargs", TINY + [("torchvision:mobilenet_v3_small", {}),
                                                  ("torchvision:resnet50", {})])
def test_flops_from_groups_equal_a_trace(model, kwargs):
    fam = graph(model, kwargs)
    cost = CostModel(fam)
    rng = random.Random(0)
    for _ in range(3):
        widths = {g.name: rng.randint(1, g.base) for g in fam.groups()}
        assert cost(widths) == _traced(fam, widths)
        assert count(fam, widths) == _traced(fam, widths)


def test_small_input_variants_take_the_data_shape():
    for name in ("resnet18_small", "resnet50_small", "mobilenet_v2_small"):
        _, data = space_source(name)  # input: from_data, filled here as a config's data would
        s = SearchSpace.from_dict(with_input(data, InputShape(1, 28, 10)), name=name)
        fam = s.family
        assert fam.input_shape == InputShape(1, 28, 10)
        if name == "resnet18_small":
            net = fam.build(s.min_widths())
            assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
            assert net.conv1.in_channels == 1 and net.conv1.stride == (1, 1)
            assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())


def test_architecture_yaml_round_trip_and_source(tmp_path):
    s = SearchSpace.from_dict({"family": "graph",
                               "args": {"model": "zoo:mobilenet_v2_small",
                                        "kwargs": {"setting": "tiny", "last_channel": 32}},
                               "input": {"channels": 1, "size": 16, "classes": 4},
                               "divisor": 2, "min_width": 2}, name="tiny_mbv2")
    widths = s.snap({g: w * 0.6 for g, w in s.base_widths().items()})
    spec = s.spec(widths)
    path = spec.save(tmp_path / "arch.yaml")
    args = spec.family_args
    assert args["model"] == "zoo:mobilenet_v2_small" and args["kwargs"]["setting"] == "tiny"
    assert args["fingerprint"] == s.family.fingerprint
    again = ArchSpec.load(path)
    assert again.widths == spec.widths and again.flops == spec.flops
    net = build_model(path)
    assert sum(p.numel() for p in net.parameters()) == spec.params
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 4)


def test_changed_model_is_refused(tmp_path, monkeypatch):
    fam = graph("tests.graph_models:tiny_net", shape=InputShape(3, 16, 5))
    space = SearchSpace.full(fam, name="tiny_net")
    path = space.spec(fam.base_widths()).save(tmp_path / "arch.yaml")
    monkeypatch.setattr(graph_models, "HEAD_KERNEL", 3)
    graph_family._analysis.cache_clear()
    try:
        with pytest.raises(UserError, match="fingerprint .* the model changed"):
            ArchSpec.load(path)
    finally:
        graph_family._analysis.cache_clear()


@pytest.mark.parametrize("model, match", [
    ("tests.graph_models:flatten_net", r"\.view\(\) .* mixes channels with space .* list conv "
                                       r"in fixed"),
    ("tests.graph_models:groupnorm_net", r"layer norm \(GroupNorm\)"),
    ("tests.graph_models:untraceable_net", r"torch\.fx cannot trace"),
    ("tests.graph_models:missing", "has no function 'missing'"),
    ("torchvision:vgg11", r"torch\.flatten .* 512x7x7"),
    ("os:system", "standard-library module, not a model factory"),
])
def test_unsupported_models_are_one_line_errors_through_the_cli(tmp_path, capsys, model, match):
    path = write_yaml(tmp_path / "space.yaml", {
        "family": "graph", "args": {"model": model},
        "input": {"channels": 3, "size": 32, "classes": 10}})
    assert main(["flops", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("nas-prune: error: graph model")
    assert re.search(match, err), err


def test_fixed_layers_leave_the_search():
    fam = graph("tests.graph_models:tiny_net")
    assert [g.name for g in fam.groups()] == ["stem", "expand", "se_reduce", "head"]
    fixed = graph("tests.graph_models:tiny_net", fixed=["dw", "head"])  # dw: its group, expand
    assert [g.name for g in fixed.groups()] == ["stem", "se_reduce"]
    assert fixed.fixed_layers()["head"] == "listed in fixed"
    net = fixed.build({"stem": 4, "se_reduce": 2})
    assert net.expand.out_channels == 16 and net.head.out_channels == 24
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    # an unsupported flatten is no error once its width is fixed (here: nothing is left)
    with pytest.raises(UserError, match="every layer's width is fixed .*listed in fixed"):
        graph("tests.graph_models:flatten_net", fixed=["conv"])
    with pytest.raises(UserError, match=r"fixed: 'nope' is not a layer"):
        graph("tests.graph_models:tiny_net", fixed=["nope"])


def test_concatenated_and_grouped_channels_are_fixed():
    fam = graph("tests.graph_models:branch_net")
    assert [g.name for g in fam.groups()] == ["mid"]
    why = fam.fixed_layers()
    assert why["a"].startswith("concatenated by torch.cat") and "b" in why
    assert why["inner"] == "read by grouped conv grouped (groups=4)"


def test_depthwise_conv_and_se_product_join_their_input_group():
    fam = graph("tests.graph_models:tiny_net")
    expand = next(g for g in fam.groups() if g.name == "expand")
    assert expand.depthwise == ("dw",) and "se_expand" in expand.convs
    assert set(expand.consumers) == {"se_reduce", "project"} and not expand.residual
    stem = fam.groups()[0]
    assert stem.residual and stem.convs == ("stem", "project")


# ---- weight surgery ------------------------------------------------------------------------
@pytest.mark.parametrize("model, kwargs", TINY)
@pytest.mark.parametrize("seed", [0, 1])
def test_surgery_is_exact(model, kwargs, seed):
    """The conformance suite's check on the test factories (groups without BatchNorm, SE
    products, concatenations) at random kept channels."""
    space = SearchSpace.full(graph(model, kwargs, InputShape(3, 16, 5)), name="tiny")
    rng = random.Random(seed)
    family_suite.check_surgery(space, {g: rng.randint(1, w)
                                       for g, w in space.base_widths().items()}, seed)


def _tiny_mobilenet_space() -> SearchSpace:
    return SearchSpace.from_dict({"family": "graph",
                                  "args": {"model": "zoo:mobilenet_v2_small",
                                           "kwargs": {"setting": "tiny", "last_channel": 32}},
                                  "input": {"channels": 1, "size": 16, "classes": 4},
                                  "divisor": 2, "min_width": 2}, name="tiny_mbv2")


def test_rethink_weight_cut_on_a_graph_space():
    from nas_prune.rethink import prune_weights
    from nas_prune.seeds import Proposal

    s = _tiny_mobilenet_space()
    widths = s.snap({g: w * 0.5 for g, w in s.base_widths().items()})
    scores = {g: torch.rand(w) for g, w in s.base_widths().items()}
    proposal = Proposal(method="l1norm", widths=widths, scores=scores, budget=0.5,
                        metric="flops", cost=s.cost(widths), base_cost=s.base_cost())
    full = s.family.build(s.base_widths())
    for cut_by in ("scores", "l1norm"):
        cut, keep, notes = prune_weights(full, s, proposal, cut_by)
        assert notes == [] and model_widths(cut, s.family) == widths
        assert cut(torch.randn(2, 1, 16, 16)).shape == (2, 4)


def test_onnx_of_a_pruned_graph_architecture(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from nas_prune.export import export_onnx

    s = _tiny_mobilenet_space()
    spec = s.spec(s.snap({g: w * 0.5 for g, w in s.base_widths().items()}))
    torch.manual_seed(0)
    model = spec.build().eval()
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(path))
    x = torch.randn(3, 1, 16, 16)
    (got,) = ReferenceEvaluator(str(path)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(x), atol=1e-4)


@pytest.mark.slow
def test_a_user_factory_is_searched_end_to_end(tmp_path):
    """A factory of a test module as a space: proposals, a few trials, the final table, and a
    best.yaml that names the factory and rebuilds the winner."""
    from .test_search_common import read_csv, tiny_args

    space = write_yaml(tmp_path / "factory_space.yaml", {
        "family": "graph", "args": {"model": "tests.graph_models:tiny_net"},
        "input": {"channels": 1, "size": 12, "classes": 4}, "divisor": 1, "min_width": 2,
        "dataset": "synthetic"})
    run = tmp_path / "run"
    assert main(["search", *tiny_args(tmp_path, run, extra=[f"space={space}"]),
                 "--n-trials", "4"]) == 0
    rows = read_csv(run)
    assert len(rows) == 4 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED", "REJECTED"}
    assert any(r["state"] == "COMPLETE" for r in rows)
    best = ArchSpec.load(run / "best.yaml")
    assert best.family == "graph" and best.family_args["model"] == "tests.graph_models:tiny_net"
    net = build_model(run / "best.yaml")
    assert sum(p.numel() for p in net.parameters()) == best.params
    assert net(torch.randn(2, 1, 12, 12)).shape == (2, 4)
