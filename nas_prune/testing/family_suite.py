"""The family conformance suite: what every family and every shipped search space must do.

``tests/test_family_conformance.py`` runs these checks over every shipped space
(:func:`~nas_prune.widths.available_spaces`) and requires every registered family
(:data:`nas_prune.families.FAMILIES`) to have at least one, so registering a family or shipping
a space puts it under the suite with no test edits. At random widths inside the space's bounds
(seeded):

* :func:`check_trains`: the network builds, runs forward and backward, every parameter receives
  a finite, non-zero gradient, and every layer has the channels its group says;
* :func:`check_cost`: FLOPs and params from the cost model equal a trace of the built network;
* :func:`check_yaml`: the architecture YAML round-trips and rebuilds the same network;
* :func:`check_onnx`: the exported ONNX graph computes what the PyTorch model does
  (onnxruntime);
* :func:`check_surgery`: weight surgery on a full-width network with its removed channels
  silenced computes the same function;
* :func:`check_shared`: the weight-sharing network of one-shot screening at a width vector
  computes exactly what the candidate built from its leading channels (weights copied) does.

A space whose input comes from the data (``input: from_data``) is checked at
:data:`DATA_SHAPE` (Fashion-MNIST's). Nothing here imports pytest.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch import nn

from ..families import InputShape
from ..flops import _traced
from ..oneshot import SharedNet
from ..surgery import channel_orders, cut_down, model_widths, shortcut_mismatches
from ..widths import (
    ArchSpec,
    SearchSpace,
    build_model,
    space_source,
    takes_input_from_data,
    with_input,
)

#: the input of spaces that take it from the data set (Fashion-MNIST: 1x28x28, 10 classes)
DATA_SHAPE = InputShape(channels=1, size=28, classes=10)


def load_space(name: str) -> SearchSpace:
    """A shipped space, its input filled in from :data:`DATA_SHAPE` where it comes from data."""
    _, raw = space_source(name)
    if takes_input_from_data(raw):
        raw = with_input(raw, DATA_SHAPE)
    return SearchSpace.from_dict(raw, name=name)


def random_widths(space: SearchSpace, seed: int, *, cap: float = 1.0) -> dict[str, int]:
    """Widths on the space's grid between its bounds (above the base only when ``cap`` > 1)."""
    rng = random.Random(seed)
    lo, hi, base = space.min_widths(), space.max_widths(), space.base_widths()
    out = {}
    for g in space.group_names:
        top = min(hi[g], max(lo[g], int(base[g] * cap)))
        grid = [w for w in space.grid(g) if lo[g] <= w <= top] or [lo[g]]
        out[g] = rng.choice(grid)
    return out


def _image(space: SearchSpace, n: int, gen: torch.Generator) -> torch.Tensor:
    s = space.family.input_shape
    return torch.randn(n, s.channels, s.size, s.size, generator=gen)


def check_trains(space: SearchSpace, widths: dict[str, int], seed: int = 0) -> None:
    torch.manual_seed(seed)
    net = space.family.build(widths)
    net.train()
    gen = torch.Generator().manual_seed(seed)
    out = net(_image(space, 2, gen))
    classes = space.family.input_shape.classes
    assert out.shape == (2, classes), f"output {tuple(out.shape)}, expected (2, {classes})"
    assert torch.isfinite(out).all(), "non-finite output"
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient"
    for layer, ch in space.family.layer_channels(widths).items():
        assert net.get_submodule(layer).out_channels == ch, f"{layer}: not {ch} channels"


def check_cost(space: SearchSpace, widths: dict[str, int]) -> None:
    got, traced = space.count(widths), _traced(space.family, widths)
    assert got == traced, f"cost model {got} != trace {traced} (FLOPs, params)"
    net = space.family.build(widths)
    assert got[1] == sum(p.numel() for p in net.parameters()), "params != the module's"


def check_yaml(space: SearchSpace, widths: dict[str, int], tmp: Path) -> None:
    spec = space.spec(widths)
    path = spec.save(tmp / f"{space.name}.yaml")
    again = ArchSpec.load(path)
    assert again.to_dict() == spec.to_dict(), "the YAML does not round-trip"
    a, b = space.family.build(widths), build_model(path)
    shapes = {k: tuple(v.shape) for k, v in a.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in b.state_dict().items()}, \
        "the YAML rebuilds another network"


def check_onnx(space: SearchSpace, widths: dict[str, int], tmp: Path, seed: int = 0) -> None:
    from ..export import export_onnx, onnx_difference

    spec = space.spec(widths)
    torch.manual_seed(seed)
    model = spec.build().eval()
    path = export_onnx(model, spec, tmp / f"{space.name}.onnx")
    checked = onnx_difference(model, spec, path, n=3, seed=seed)
    assert checked is not None, "onnxruntime is not installed"
    assert checked[1], f"ONNX differs by {checked[0]}"


def random_state(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, and linear biases, so eval mode
    is a real test."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen))
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.copy_(torch.randn(m.out_features, generator=gen))


def check_surgery(space: SearchSpace, widths: dict[str, int], seed: int = 0) -> None:
    """Keep ``widths[g]`` random channels of each group; silence the others (BatchNorm gamma and
    beta, or the filters of a group without BatchNorm); the cut network computes the same."""
    fam = space.family
    gen = torch.Generator().manual_seed(seed)
    base = fam.base_widths()
    keep = {g: torch.randperm(base[g], generator=gen)[:min(widths[g], base[g])].sort().values
            for g in base}
    if shortcut_mismatches(fam, keep, base):
        # zero-padding shortcuts (ResNet option A) need partner channels kept across stages:
        # keep those groups whole (tests/test_surgery.py covers the partner rule)
        keep.update({g.name: torch.arange(g.base) for g in fam.groups() if g.residual})
    torch.manual_seed(seed)
    full = fam.build(base)
    random_state(full, gen)
    with torch.no_grad():
        for g in fam.groups():
            mask = torch.ones(g.base, dtype=torch.bool)
            mask[keep[g.name]] = False
            for name in g.bns or g.convs:
                m = full.get_submodule(name)
                m.weight[mask] = 0.0
                if m.bias is not None:
                    m.bias[mask] = 0.0
    full.eval()
    cut = cut_down(full, fam, keep)
    assert model_widths(cut, fam) == {g: len(k) for g, k in keep.items()}
    x = _image(space, 3, gen)
    with torch.no_grad():
        a, b = full(x), cut(x)
    assert a.abs().max() > 1e-3, "the full network's output is zero"
    err = (a - b).abs().max().item()
    assert err <= 1e-4 * max(1.0, a.abs().max().item()), f"surgery changes the output by {err}"


def leading_copy(full: nn.Module, space: SearchSpace, widths: dict[str, int]) -> nn.Module:
    """The candidate at ``widths`` (built by the family) holding the leading slices of every
    tensor of ``full``; written apart from :mod:`nas_prune.oneshot`, which it checks."""
    cand = space.family.build(widths)
    big = full.state_dict()
    state = {}
    for key, t in cand.state_dict().items():
        src = big[key]
        state[key] = src[tuple(slice(0, n) for n in t.shape)].clone() if t.dim() else src.clone()
    cand.load_state_dict(state)
    return cand


def check_shared(space: SearchSpace, widths: dict[str, int], seed: int = 0) -> None:
    """The shared network at ``widths`` equals the candidate holding its leading channels, in
    eval mode (running statistics) and in train mode (batch statistics), and also the surgery's
    cut (:func:`~nas_prune.surgery.cut_down` keeping the leading channels) wherever that keeps
    them in order (everything but option-A shortcuts)."""
    gen = torch.Generator().manual_seed(seed)
    shared = SharedNet(space, seed=seed)
    random_state(shared.model, gen)
    x = _image(space, 3, gen)
    cand, ext = leading_copy(shared.model, space, widths), shared.extract(widths)
    for train in (False, True):
        for m in (shared.model, cand, ext):
            m.train(train)
        outs = []
        with torch.no_grad():
            for run in (lambda: shared.forward(widths, x), cand, ext):
                torch.manual_seed(seed)  # the same dropout masks in train mode
                outs.append(run(x) if isinstance(run, nn.Module) else run())
        a, b, c = outs
        scale = max(1.0, b.abs().max().item())
        assert b.abs().max() > 1e-3, "the candidate's output is zero"
        assert (a - b).abs().max().item() <= 1e-5 * scale, \
            f"shared network differs from the candidate by {(a - b).abs().max().item()}"
        assert (c - b).abs().max().item() <= 1e-5 * scale, "extract() differs from the candidate"
    keep = {g: torch.arange(w) for g, w in widths.items()}
    if not shortcut_mismatches(space.family, keep, shared.max_widths) and all(
            torch.equal(torch.tensor(o), keep[g]) for g, o in
            channel_orders(space.family, keep, shared.max_widths).items()):
        shared.model.eval()
        cut = cut_down(shared.model, space.family, keep).eval()
        with torch.no_grad():
            a, b = shared.forward(widths, x), cut(x)
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item()), \
            "shared network differs from the surgery's cut"


__all__ = ["DATA_SHAPE", "check_cost", "check_onnx", "check_shared", "check_surgery",
           "check_trains", "check_yaml", "leading_copy", "load_space", "random_state",
           "random_widths"]
