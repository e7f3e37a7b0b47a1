"""FLOPs and parameters of a width vector, without training.

FLOPs are multiply-accumulates of conv and linear layers for one image (Li et al. 2017's rule,
which reproduces their Table 1 exactly); BatchNorm, ReLU, pooling and shortcut additions are not
counted. Papers that count 2 x MAC (Network Slimming, ThiNet, AutoPruner) report about twice these
numbers. Parameters are all parameters (BatchNorm included).

The count traces the model on PyTorch's ``meta`` device, so nothing is allocated or computed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping

import torch
from torch import nn

from .families import Family, InputShape, get_family


def count_module(model: nn.Module, input_shape: InputShape) -> tuple[int, int]:
    """(MAC FLOPs for one image, parameter count) of a module of any device."""
    macs = 0

    def conv_hook(m: nn.Conv2d, inp, out) -> None:
        nonlocal macs
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs += out[0].numel() * k

    def linear_hook(m: nn.Linear, inp, out) -> None:
        nonlocal macs
        macs += out[0].numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, input_shape.channels, input_shape.size, input_shape.size,
                              device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(macs), int(sum(p.numel() for p in model.parameters()))


class CostModel:
    """FLOPs and params of a family as closed-form sums over its layers.

    Traced once on the ``meta`` device at the base widths: every conv/linear records its kernel
    size and output resolution, and which width group sets its input and output channels (from the
    family's groups: ``convs`` set outputs, ``consumers`` read inputs; a depthwise conv reads one
    channel per output channel, so it costs with its group's width once, and a grouped conv outside
    every group is a constant). Layers other than conv, linear and BatchNorm add their own
    parameters as a constant. Then a width vector costs
    microseconds. The closed form is checked against a full trace at a second width vector when
    built; a family it cannot describe falls back to tracing every vector.
    """

    def __init__(self, family: Family) -> None:
        self.family = family
        self.groups = family.group_names()
        out_of: dict[str, str] = {}
        in_of: dict[str, str] = {}
        bn_of: dict[str, str] = {}
        for g in family.groups():
            out_of.update({c: g.name for c in g.convs})
            bn_of.update({b: g.name for b in g.bns})
            in_of.update({c: g.name for c in g.consumers})
        with torch.device("meta"):
            model = family.build(family.base_widths())
        spatial: dict[str, int] = {}

        def hook(name):
            def fn(m, inp, out):
                spatial[name] = out[0].numel() // m.weight.shape[0]
            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
                   if isinstance(m, (nn.Conv2d, nn.Linear))]
        s = family.input_shape
        with torch.no_grad():
            model.eval()(torch.zeros(1, s.channels, s.size, s.size, device="meta"))
        for h in handles:
            h.remove()
        # terms: (coefficient, input group or None, constant input, output group or None,
        #         constant output) for FLOPs and params
        self._flops: list[tuple[int, str | None, int, str | None, int]] = []
        self._params: list[tuple[int, str | None, int, str | None, int]] = []
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1]
                gi, go = in_of.get(name), out_of.get(name)
                if m.groups == m.in_channels == m.out_channels and name not in in_of:
                    # depthwise: one input channel per output channel, resized with its group
                    gi, ci = None, 1
                elif m.groups != 1:
                    if gi is not None or go is not None:
                        raise ValueError("resized grouped convs are not modelled")
                    gi, ci = None, m.in_channels // m.groups
                else:
                    ci = m.in_channels
                self._flops.append((k * spatial[name], gi, ci, go, m.out_channels))
                self._params.append((k, gi, ci, go, m.out_channels))
                if m.bias is not None:
                    self._params.append((1, None, 1, go, m.out_channels))
            elif isinstance(m, nn.Linear):
                gi = in_of.get(name)
                self._flops.append((spatial[name], gi, m.in_features, None, m.out_features))
                self._params.append((1, gi, m.in_features, None, m.out_features))
                if m.bias is not None:
                    self._params.append((1, None, 1, None, m.out_features))
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                if m.affine:
                    self._params.append((2, None, 1, bn_of.get(name), m.num_features))
            else:  # other layers' own parameters (PReLU, LayerNorm...): constant
                own = sum(p.numel() for p in m.parameters(recurse=False))
                if own:
                    self._params.append((1, None, 1, None, own))

    @staticmethod
    def _sum(terms, widths: Mapping[str, int]) -> int:
        total = 0
        for coef, gi, ci, go, co in terms:
            total += coef * (widths[gi] if gi else ci) * (widths[go] if go else co)
        return int(total)

    def __call__(self, widths: Mapping[str, int]) -> tuple[int, int]:
        w = {g: int(widths[g]) for g in self.groups}
        return self._sum(self._flops, w), self._sum(self._params, w)


def _traced(family: Family, widths: Mapping[str, int]) -> tuple[int, int]:
    with torch.device("meta"):
        model = family.build(dict(widths))
    return count_module(model, family.input_shape)


@functools.lru_cache(maxsize=256)
def _cost_model(family_name: str, args: str, shape: tuple):
    family = get_family(family_name, json.loads(args), InputShape(*shape))
    try:
        model = CostModel(family)
    except (ValueError, KeyError):
        return None
    probe = {g.name: max(1, (g.base * 3) // 4 - (i % 3)) for i, g in enumerate(family.groups())}
    for widths in (family.base_widths(), probe):
        if model(widths) != _traced(family, widths):
            return None
    return model


def count(family: Family, widths: Mapping[str, int]) -> tuple[int, int]:
    """(FLOPs, params) of ``family`` at ``widths``."""
    s = family.input_shape
    model = _cost_model(family.name, json.dumps(family.arguments(), sort_keys=True),
                        (s.channels, s.size, s.classes))
    if model is None:
        return _traced(family, widths)
    return model(widths)
