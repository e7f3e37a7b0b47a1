"""The graph-derived family: any CNN as a search space, its width groups found on its graph.

``family: graph`` with arguments

* ``model``: where the network comes from: ``torchvision:NAME`` (``torchvision.models.get_model``
  with ``weights=None``), ``zoo:NAME`` (a factory of :mod:`nas_prune.families.zoo`, e.g. the
  small-input ResNets) or ``package.module:function`` (a user's factory, imported and called:
  an architecture YAML that names one runs that code, so build only YAMLs you trust, as with
  any Python code; standard-library modules are refused), or the ``module:qualname`` of a
  factory given in Python (``nas_prune.search(model=make_net)``, :func:`register_model`),
  which this process calls without importing;
* ``kwargs``: keyword arguments of the builder (plain YAML values; never ``weights``: candidates
  train from scratch);
* ``fixed``: layer names (as in ``model.get_submodule``) whose width group stays at full width;
* ``fingerprint``: written by nas-prune into every architecture YAML (a hash of the traced
  full-width graph, :func:`~nas_prune.families._graphgroups.fingerprint`); when given, a model
  whose graph no longer matches is refused with a one-line error instead of being rebuilt
  differently.

The network is built at full width with random weights, then adapted to the space's input: the
layers that read the image are rebuilt for ``input.channels`` and the layer that writes the logits
for ``input.classes`` (no change when they already match, as for torchvision at 3 channels and
1000 classes). Its width groups come from :mod:`nas_prune.families._graphgroups` (torch.fx);
layers outside every group (the input, the logits, concatenated or grouped-conv channels, the
``fixed`` list) keep their width.

:meth:`GraphFamily.build` rebuilds the full-width network and replaces every layer of a resized
group with a new ``Conv2d`` / ``BatchNorm2d`` / ``Linear`` of the new channel counts (a depthwise
conv's input, output and ``groups`` together). The new layers start from the leading slice of the
full-width network's freshly initialised parameters, so the model's own initialisation scheme
(torchvision's or the user's) carries over; channels beyond the full width (a space's ``max_multiplier`` above 1)
keep PyTorch's default initialisation. Nothing trained is reused.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import fx, nn

from .. import _callables
from ..errors import UserError
from . import _graphgroups as gg
from ._base import Family, InputShape, WidthGroup


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def _builder(model: str):
    kind, sep, name = model.partition(":")
    if not sep or not kind or not name:
        raise UserError(f"graph model {model!r}: expected 'torchvision:NAME', 'zoo:NAME' or "
                        f"'package.module:function'")
    if kind == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            raise UserError(f"graph model {model!r}: torchvision has no model {name!r} (see "
                            f"torchvision.models.list_models())")
        return functools.partial(torchvision.models.get_model, name, weights=None)
    if kind == "zoo":
        from . import zoo

        if name not in zoo.__all__:
            raise UserError(f"graph model {model!r}: unknown; the zoo has "
                            f"{', '.join(zoo.__all__)}")
        return getattr(zoo, name)
    where = f"graph model {model!r}"
    fn = _callables.resolve(model, where, "a model factory")
    if not callable(fn):
        raise UserError(f"{where}: {kind} has no function {name!r}")
    return fn


def register_model(fn: Any) -> str:
    """Register a model factory given in Python (``nas_prune.search(model=make_net)``); the
    path (``module:qualname``) that a space's ``args.model`` records. A lambda is refused: it
    has no name to tell it from another lambda of its module."""
    protocol = "make_net(**kwargs) -> nn.Module at full width"
    if "<lambda>" in str(getattr(fn, "__qualname__", "")):
        raise UserError(f"model: a lambda has no name to record in the search space; define "
                        f"the factory with def ({protocol}) and pass its settings as "
                        f"model_kwargs")
    path = _callables.path_of(fn) if callable(fn) else ""
    before = _callables.registered(path)
    _callables.register(fn, "model", protocol)
    if before is not None and before is not fn:  # redefined (a notebook cell run again)
        _analysis.cache_clear()
    return path


def construct(model: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """The full-width network with random weights, as its builder makes it."""
    if "weights" in kwargs:
        raise UserError(f"graph model {model!r}: kwargs.weights: nas-prune builds with random "
                        f"weights (candidates train from scratch); remove it")
    fn = _builder(model)
    try:
        net = fn(**kwargs)
    except UserError:
        raise
    except TypeError as exc:
        raise UserError(f"graph model {model!r}: bad kwargs ({_message(exc)})") from None
    except Exception as exc:
        raise UserError(f"graph model {model!r}: building it failed ({_message(exc)})") from None
    if not isinstance(net, nn.Module):
        raise UserError(f"graph model {model!r}: returned a {type(net).__name__}, not an "
                        f"nn.Module")
    return net


# ---- resizing layers -----------------------------------------------------------------------
def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


@torch.no_grad()
def _copy_lead(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copy the overlapping leading block of ``src`` into ``dst``."""
    idx = tuple(slice(0, min(a, b)) for a, b in zip(dst.shape, src.shape, strict=True))
    dst[idx] = src[idx]


def resized(m: nn.Module, *, in_ch: int | None = None, out_ch: int | None = None,
            depthwise: bool = False) -> nn.Module:
    """A new Conv2d / BatchNorm2d / Linear like ``m`` with other channel counts; its parameters
    and buffers start from the leading slice of ``m``'s."""
    if isinstance(m, nn.Conv2d):
        i, o = in_ch or m.in_channels, out_ch or m.out_channels
        groups = o if depthwise else m.groups
        if depthwise:
            i = o
        new: nn.Module = nn.Conv2d(i, o, m.kernel_size, m.stride, m.padding, m.dilation, groups,
                                   bias=m.bias is not None, padding_mode=m.padding_mode,
                                   device=m.weight.device, dtype=m.weight.dtype)
    elif isinstance(m, nn.BatchNorm2d):
        device = next(iter([*m.parameters(), *m.buffers()]), torch.empty(0)).device
        new = nn.BatchNorm2d(out_ch, m.eps, m.momentum, m.affine, m.track_running_stats,
                             device=device)
    elif isinstance(m, nn.Linear):
        new = nn.Linear(in_ch or m.in_features, out_ch or m.out_features, bias=m.bias is not None,
                        device=m.weight.device, dtype=m.weight.dtype)
    else:  # the analysis only lists these three kinds
        raise TypeError(f"cannot resize a {type(m).__name__}")
    for (_, a), (_, b) in zip(new.named_parameters(), m.named_parameters(), strict=True):
        _copy_lead(a, b)
    for (_, a), (_, b) in zip(new.named_buffers(), m.named_buffers(), strict=True):
        if a.dim() == 0:
            a.copy_(b)
        else:
            _copy_lead(a, b)
    return new.train(m.training)


def shrink(model: nn.Module, groups: list[WidthGroup], widths: Mapping[str, int]) -> nn.Module:
    """Resize, in place, every layer of every group whose width differs from its base."""
    plan: dict[str, dict[str, Any]] = {}
    for g in groups:
        w = int(widths[g.name])
        if w == g.base:
            continue
        for c in g.convs:
            plan.setdefault(c, {})["out_ch"] = w
            if c in g.depthwise:
                plan[c]["depthwise"] = True
        for b in g.bns:
            plan.setdefault(b, {})["out_ch"] = w
        for c in g.consumers:
            plan.setdefault(c, {})["in_ch"] = w
    for name, change in plan.items():
        _set_module(model, name, resized(model.get_submodule(name), **change))
    return model


# ---- the ends: input channels and classes --------------------------------------------------
def _passes(gm: fx.GraphModule, n: fx.Node) -> bool:
    """Whether ``n`` hands its first input on with its channels (for finding the ends)."""
    if n.op == "call_module":
        return isinstance(gm.get_submodule(n.target), (*gg.PASS_MODULES, nn.Flatten))
    t = n.target
    return n.op in ("call_function", "call_method") and (
        t in gg.PASS_FUNCTIONS or t in gg.PASS_METHODS or t in gg.RESHAPES
        or t in gg.RESHAPE_METHODS)


def _layer(gm: fx.GraphModule, n: fx.Node) -> bool:
    return n.op == "call_module" and type(gm.get_submodule(n.target)) in (nn.Conv2d, nn.Linear)


def input_layers(gm: fx.GraphModule) -> list[str]:
    """The convs (and linears) that read the image, through pass-through operations."""
    out, todo = [], [n for n in gm.graph.nodes if n.op == "placeholder"][:1]
    seen: set[fx.Node] = set()
    while todo:
        n = todo.pop()
        for u in n.users:
            if u in seen:
                continue
            seen.add(u)
            if _layer(gm, u):
                out.append(str(u.target))
            elif _passes(gm, u) and u.args and u.args[0] is n:
                todo.append(u)
    return sorted(dict.fromkeys(out))


def output_layer(gm: fx.GraphModule, where: str) -> str | None:
    """The conv or linear that writes the logits, through pass-through operations."""
    out = next(n for n in gm.graph.nodes if n.op == "output")
    n = out.args[0]
    if not isinstance(n, fx.Node):
        raise UserError(f"{where}: the model returns {type(n).__name__}, not one tensor of "
                        f"logits; wrap it so forward returns the logits")
    while isinstance(n, fx.Node):
        if _layer(gm, n):
            return str(n.target)
        if not (_passes(gm, n) and n.args):
            return None
        n = n.args[0]
    return None


def adapt_ends(model: nn.Module, shape: InputShape, inputs: list[str], output: str | None,
               where: str) -> None:
    """Rebuild the input layers for ``shape.channels`` and the output layer for the classes."""
    for name in inputs:
        m = model.get_submodule(name)
        if isinstance(m, nn.Conv2d) and m.in_channels != shape.channels:
            if m.groups != 1:
                raise UserError(f"{where}: layer {name} reads the image with groups="
                                f"{m.groups}; cannot adapt it to {shape.channels} channels")
            _set_module(model, name, resized(m, in_ch=shape.channels))
    if output is not None:
        m = model.get_submodule(output)
        n_out = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        if n_out != shape.classes:
            if isinstance(m, nn.Conv2d) and m.groups != 1:
                raise UserError(f"{where}: layer {output} writes the logits with groups="
                                f"{m.groups}; give the model's builder the number of classes")
            _set_module(model, output, resized(m, out_ch=shape.classes))


# ---- the analysis, once per (model, kwargs, fixed, input) ------------------------------------
@functools.lru_cache(maxsize=32)
def _analysis(model: str, kwargs_json: str, fixed: tuple[str, ...], shape: tuple[int, int, int]
              ) -> tuple[gg.GraphGroups, list[str], str | None]:
    where = f"graph model {model!r}"
    s = InputShape(*shape)
    try:
        with torch.device("meta"):  # no memory, no initialisation work
            net = construct(model, json.loads(kwargs_json))
    except UserError:  # a builder that copies data into its weights: build it for real
        net = construct(model, json.loads(kwargs_json)).to("meta")
    train_calls = {str(n.target) for n in gg.trace(net.train(), where).graph.nodes
                   if n.op == "call_module"}
    gm = gg.trace(net.eval(), where)
    extra = sorted(train_calls - {str(n.target) for n in gm.graph.nodes if n.op == "call_module"})
    if extra:
        raise UserError(f"{where}: layer {extra[0]} runs only in training mode (an auxiliary "
                        f"head?); nas-prune needs the same layers in both modes (e.g. kwargs "
                        f"aux_logits: false)")
    inputs, output = input_layers(gm), output_layer(gm, where)
    adapt_ends(gm, s, inputs, output, where)
    gm.recompile()
    gg.shape_prop(gm, (1, s.channels, s.size, s.size), where)
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    got = tuple(out.meta["tensor_meta"].shape) if "tensor_meta" in out.meta else None
    if got != (1, s.classes):
        raise UserError(f"{where}: the model's output has shape {list(got or [])} for one image; "
                        f"a classifier for input.classes={s.classes} needs [1, {s.classes}] "
                        f"(end it with a Linear or 1x1 conv to the classes, then flatten)")
    return gg.analyse(gm, fixed_layers=fixed, where=where), inputs, output


def _plain(value: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):
        raise UserError(f"{where}: {value!r} is not plain YAML data") from None


class GraphFamily(Family):
    """A torchvision model or a user's factory, its width groups read off its torch.fx graph."""

    name = "graph"
    nested_args = ("kwargs", "fixed")

    def __init__(self, *, input_shape: InputShape, model: str,
                 kwargs: Mapping[str, Any] | None = None, fixed: list[str] | None = None,
                 fingerprint: str | None = None) -> None:
        super().__init__(input_shape=input_shape)
        if not isinstance(model, str):
            raise UserError(f"graph family: model {model!r} is not a string like "
                            f"'torchvision:resnet18'")
        where = f"graph model {model!r}"
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise UserError(f"{where}: kwargs must be a mapping of keyword arguments")
        if fixed is not None and (isinstance(fixed, str) or not isinstance(fixed, (list, tuple))
                                  or not all(isinstance(f, str) for f in fixed)):
            raise UserError(f"{where}: fixed must be a list of layer names")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise UserError(f"{where}: fingerprint {fingerprint!r} is not a string")
        self.model = model
        self.kwargs: dict[str, Any] = _plain(dict(kwargs or {}), f"{where}: kwargs")
        self.fixed = sorted(dict.fromkeys(fixed or []))
        s = input_shape
        self._info, self._inputs, self._output = _analysis(
            model, json.dumps(self.kwargs, sort_keys=True), tuple(self.fixed),
            (s.channels, s.size, s.classes))
        if fingerprint is not None and fingerprint != self._info.fingerprint:
            raise UserError(f"{where}: fingerprint {fingerprint} does not match the model's "
                            f"graph ({self._info.fingerprint}): the model changed since the "
                            f"architecture was written; restore it or re-export from a space")

    @property
    def fingerprint(self) -> str:
        return self._info.fingerprint

    def fixed_layers(self) -> dict[str, str]:
        """Producer layers kept at full width, and why (input, output, concatenation...)."""
        return dict(self._info.fixed)

    def arguments(self) -> dict:
        return {"model": self.model, "kwargs": dict(self.kwargs), "fixed": list(self.fixed),
                "fingerprint": self.fingerprint}

    def groups(self) -> list[WidthGroup]:
        return list(self._info.groups)

    def build(self, widths: Mapping[str, int]) -> nn.Module:
        where = f"graph model {self.model!r}"
        try:
            net = construct(self.model, self.kwargs)
        except UserError:
            if torch.get_default_device().type != "meta":
                raise
            with torch.device("cpu"):  # a builder that copies data into its weights
                net = construct(self.model, self.kwargs).to("meta")
        adapt_ends(net, self.input_shape, self._inputs, self._output, where)
        return shrink(net, self.groups(), widths)


__all__ = ["GraphFamily", "adapt_ends", "construct", "register_model", "resized", "shrink"]
