"""Width groups of any CNN, found on its ``torch.fx`` graph.

Why ``torch.fx``: it ships with torch (no new dependency), traces symbolically (no data, and on
the ``meta`` device no memory), keeps every layer's module path (``layer1.0.conv1``: the names
that :mod:`nas_prune.surgery`, the FLOPs model and the seed methods look up with
``get_submodule``), and its public graph of ``call_module`` / ``call_function`` /
``call_method`` nodes is easy to walk. ``torch.export`` would also trace, but it lowers modules to
aten ops and needs fake tensors; ``torch.jit.trace`` is deprecated and loses the names.

Every tensor in the graph whose dimension 1 holds channels gets a *label*; labels that must hold
the same channel count are joined (union-find). The rules:

* a ``Conv2d`` (``groups == 1``) reads its input's label (it is a *consumer*) and writes a new
  label (it is a *producer*); a ``Linear`` on a 2-D input consumes its label;
* a depthwise ``Conv2d`` (``groups == in == out``) keeps its input's label: it joins the group of
  the layer that produced its input (listed in ``WidthGroup.convs`` and ``depthwise``);
* a grouped ``Conv2d`` that is not depthwise fixes both its input and its output label (their
  widths stay as built: the group count would have to divide both);
* ``BatchNorm2d``, activations, dropout, pooling and interpolation keep the label; so do
  ``flatten`` / ``view`` / ``reshape`` / ``squeeze`` when the spatial size is 1x1, reductions
  over the spatial dimensions only (``x.mean([2, 3])``) and slices that leave dimension 1 whole;
* ``+``, ``-``, ``*``, ``/`` join the labels of their operands (the residual additions; the
  channel-wise product of a squeeze-and-excitation block, which makes its expanding conv a
  producer of the block's group); an operand broadcast over channels (one channel) is fixed;
* ``torch.cat`` along channels fixes every input label (a ``WidthGroup`` consumer reads one
  group; a concatenation would read several, so those widths stay as built); along another
  dimension it joins them;
* the network input, the network output and every ``Linear`` output are fixed, and so are the
  layers the user lists in ``fixed``;
* anything else that touches a label (a view that mixes channels with space, a channel slice or
  shuffle, an unsupported module such as ``GroupNorm`` or ``LayerNorm``, a parameter tensor
  combined with the channels) makes its label *opaque*. An opaque label that is not fixed is a
  one-line :class:`~nas_prune.errors.UserError` naming the operation and the fix (list the
  layer in ``fixed``).

Every joined set of labels with at least one producer that is not fixed is one width group, named
after its first producer in graph order.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ..errors import UserError
from ._base import WidthGroup

try:  # torchvision's stochastic depth is an fx-wrapped function
    from torchvision.ops import stochastic_depth as _stochastic_depth
except ImportError:  # pragma: no cover - torchvision is a dependency
    _stochastic_depth = None

PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Identity, nn.Dropout,
    nn.Dropout2d, nn.AlphaDropout, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d,
)
PASS_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    F.hardtanh, F.softplus, F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.interpolate, torch.relu, torch.sigmoid, torch.tanh, torch.clamp,
    F.sigmoid, F.tanh,
} | ({_stochastic_depth} if _stochastic_depth is not None else set())
PASS_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clamp", "clamp_", "contiguous",
                "clone", "float", "detach", "hardtanh_"}
BINARY = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
          operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div}
BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
ADDITIVE = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub,
            "add", "add_", "sub", "sub_"}
RESHAPES = {torch.flatten, torch.reshape, torch.squeeze}
RESHAPE_METHODS = {"flatten", "view", "reshape", "squeeze"}
REDUCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}
REDUCTION_METHODS = {"mean", "sum", "amax", "amin"}
SHAPE_QUERIES = {"size", "dim"}


@dataclass
class _Labels:
    """Union-find over channel labels, with what happened to each label."""

    parent: list[int] = field(default_factory=list)
    fixed: dict[int, list[str]] = field(default_factory=dict)
    opaque: dict[int, list[str]] = field(default_factory=dict)
    residual: set[int] = field(default_factory=set)
    producers: dict[int, list[str]] = field(default_factory=dict)
    depthwise: dict[int, list[str]] = field(default_factory=dict)
    bns: dict[int, list[tuple[str, str | None]]] = field(default_factory=dict)
    consumers: dict[int, list[str]] = field(default_factory=dict)

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = min(ra, rb), max(ra, rb)
            self.parent[hi] = lo
            for table in (self.fixed, self.opaque, self.producers, self.depthwise, self.bns,
                          self.consumers):
                if hi in table:
                    table.setdefault(lo, []).extend(table.pop(hi))
            if hi in self.residual:
                self.residual.discard(hi)
                self.residual.add(lo)
            return lo
        return ra

    def add(self, table: dict, label: int, item) -> None:
        table.setdefault(self.find(label), []).append(item)


@dataclass(frozen=True)
class GraphGroups:
    """What the analysis found: the width groups, the producers kept at full width and why,
    and a fingerprint of the traced graph."""

    groups: tuple[WidthGroup, ...]
    fixed: dict[str, str]
    fingerprint: str


def trace(model: nn.Module, where: str) -> fx.GraphModule:
    """``torch.fx.symbolic_trace``, with a failure as a one-line error."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, AttributeError, ...
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise UserError(f"{where}: torch.fx cannot trace the model ({type(exc).__name__}: "
                        f"{msg}); make its forward free of data-dependent control flow") from None


def shape_prop(gm: fx.GraphModule, shape: tuple[int, ...], where: str) -> None:
    """Record every node's output shape (``node.meta['tensor_meta']``), on the meta device."""
    try:
        ShapeProp(gm).propagate(torch.zeros(*shape, device="meta"))
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise UserError(f"{where}: the model cannot run on {shape[1]}x{shape[2]}x{shape[3]} "
                        f"images ({type(exc).__name__}: {msg}); check input.size and "
                        f"input.channels") from None


def _meta(n) -> TensorMetadata | None:
    m = n.meta.get("tensor_meta") if isinstance(n, fx.Node) else None
    return m if isinstance(m, TensorMetadata) else None


def _shape(n) -> tuple[int, ...]:
    return tuple(_meta(n).shape)


def _fn_name(target) -> str:
    if isinstance(target, str):
        return f".{target}()"
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", repr(target))
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod == "_operator":
        return {"add": "+", "iadd": "+=", "sub": "-", "mul": "*", "truediv": "/",
                "getitem": "[]"}.get(name, f"operator.{name}")
    return f"torch.{name}" if mod.startswith("torch") or mod == "" else f"{mod}.{name}"


def describe(gm: fx.GraphModule, n: fx.Node) -> str:
    """A node as a user recognises it: the module path and type, or the operation."""
    if n.op == "call_module":
        return f"layer {n.target} ({type(gm.get_submodule(n.target)).__name__})"
    return f"{_fn_name(n.target)} (graph node {n.name})"


def _dims(n: fx.Node, ndim: int) -> set[int] | None:
    """The dimensions a reduction node reduces (None: all of them)."""
    dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else None)
    if dim is None:
        return None
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    if not all(isinstance(d, int) for d in dims):
        return None
    return {d % ndim for d in dims}


def _spatial_one(shape: tuple[int, ...]) -> bool:
    return math.prod(shape[2:]) == 1


class _Walker:
    """One pass over the graph in topological order, labelling channel tensors."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.labels = _Labels()
        self.of: dict[fx.Node, int | None] = {}
        self.module_out: dict[str, int] = {}  # a module called twice keeps one label

    # -- helpers --------------------------------------------------------------------------
    def lab(self, a) -> int | None:
        return self.of.get(a) if isinstance(a, fx.Node) else None

    def fresh(self, reason: str | None = None) -> int:
        label = self.labels.new()
        if reason:
            self.labels.add(self.labels.fixed, label, reason)
        return label

    def opaque(self, n: fx.Node, why: str) -> None:
        """Every labelled input of ``n`` becomes opaque; its output (if a tensor) fixed."""
        for a in n.all_input_nodes:
            if self.lab(a) is not None:
                self.labels.add(self.labels.opaque, self.lab(a), f"{describe(self.gm, n)} {why}")
        self.of[n] = self.fresh(f"computed by {describe(self.gm, n)}") if _meta(n) else None

    def keep(self, n: fx.Node, src) -> None:
        self.of[n] = self.lab(src)

    # -- the walk -------------------------------------------------------------------------
    def run(self) -> None:
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                self.of[n] = self.fresh("the network input")
            elif n.op == "get_attr":
                self.of[n] = None
            elif n.op == "output":
                for a in _nodes(n.args):
                    if self.lab(a) is not None:
                        self.labels.add(self.labels.fixed, self.lab(a), "the network output")
            elif n.op == "call_module":
                self.module(n, self.gm.get_submodule(n.target))
            elif _meta(n) is None:
                self.of[n] = None  # sizes, shapes, tuples of those: no channels
                if isinstance(n.meta.get("tensor_meta"), (list, tuple)):
                    self.opaque(n, "returns several tensors")
            else:
                self.function(n)

    def module(self, n: fx.Node, m: nn.Module) -> None:
        x = n.args[0] if n.args else None
        src = self.lab(x)
        name = str(n.target)
        if type(m) is nn.Conv2d:
            if src is None:
                src = self.fresh(f"the input of {name}")
            if m.groups == 1:
                self.labels.add(self.labels.consumers, src, name)
                out = self.module_out.get(name)
                if out is None:
                    out = self.module_out[name] = self.fresh()
                    self.labels.add(self.labels.producers, out, name)
                self.of[n] = out
            elif m.groups == m.in_channels == m.out_channels:
                if name in self.module_out:
                    self.labels.union(self.module_out[name], src)
                else:
                    self.labels.add(self.labels.depthwise, src, name)
                    self.module_out[name] = src
                self.of[n] = src
            else:
                why = f"read by grouped conv {name} (groups={m.groups})"
                self.labels.add(self.labels.fixed, src, why)
                out = self.module_out.get(name)
                if out is None:
                    out = self.module_out[name] = self.fresh(
                        f"written by grouped conv {name} (groups={m.groups})")
                    self.labels.add(self.labels.producers, out, name)
                self.of[n] = out
        elif type(m) is nn.BatchNorm2d:
            if src is None:
                self.of[n] = self.fresh(f"the input of {name}")
                return
            conv = x.target if isinstance(x, fx.Node) and x.op == "call_module" \
                and isinstance(self.gm.get_submodule(x.target), nn.Conv2d) else None
            self.labels.add(self.labels.bns, src, (name, conv))
            self.keep(n, x)
        elif type(m) is nn.Linear:
            if src is not None:
                if len(_shape(x)) != 2:
                    self.opaque(n, f"reads a {len(_shape(x))}-D tensor (a Linear on channels "
                                   f"needs them flattened first)")
                    return
                self.labels.add(self.labels.consumers, src, name)
            self.of[n] = self.fresh(f"the output of linear {name}")
        elif isinstance(m, nn.PReLU) and m.num_parameters == 1 or isinstance(m, PASS_MODULES):
            self.keep(n, x)
        elif isinstance(m, nn.Flatten):
            self.reshape(n, x)
        else:
            self.opaque(n, "is not a layer nas-prune can resize (supported: Conv2d, "
                           "BatchNorm2d, Linear, activations, dropout, pooling)")

    def function(self, n: fx.Node) -> None:
        t = n.target
        x = n.args[0] if n.args else None
        if t in PASS_FUNCTIONS or t in PASS_METHODS:
            self.keep(n, x)
        elif t in BINARY or t in BINARY_METHODS:
            self.binary(n)
        elif t in RESHAPES or t in RESHAPE_METHODS:
            if t in ("view", "reshape", torch.reshape) and any(
                    isinstance(a, int) and a not in (-1, 1) for a in _flat(n.args[1:])):
                if self.lab(x) is not None:
                    self.opaque(n, "reshapes to a literal size (write x.flatten(1) or "
                                   "x.view(x.size(0), -1) so it follows the width)")
                    return
            self.reshape(n, x)
        elif t in REDUCTIONS or t in REDUCTION_METHODS:
            dims = _dims(n, len(_shape(x))) if _meta(x) else None
            if self.lab(x) is None:
                self.of[n] = self.fresh("constant")
            elif dims is not None and 1 not in dims and 0 not in dims:
                self.keep(n, x)
            else:
                self.opaque(n, "reduces over the channel dimension")
        elif t is torch.cat:
            self.cat(n)
        elif t is operator.getitem:
            self.getitem(n, x)
        elif t in SHAPE_QUERIES:
            self.of[n] = None
        elif not any(self.lab(a) is not None for a in n.all_input_nodes):
            self.of[n] = self.fresh(f"computed by {describe(self.gm, n)}")
        else:
            self.opaque(n, "is an operation nas-prune cannot follow channels through")

    def reshape(self, n: fx.Node, x) -> None:
        if self.lab(x) is None:
            self.of[n] = self.fresh("constant") if _meta(n) else None
            return
        a, b = _shape(x), _shape(n)
        if a == b or (len(a) >= 2 and len(b) >= 2 and a[:2] == b[:2] and _spatial_one(a)
                      and _spatial_one(b)):
            self.keep(n, x)
        else:
            hw = "x".join(str(s) for s in a[2:]) or "?"
            self.opaque(n, f"mixes channels with space (a {a[1] if len(a) > 1 else '?'}x{hw} "
                           f"map to shape {list(b)}; pool to 1x1 before flattening)")

    def binary(self, n: fx.Node) -> None:
        out = _shape(n)
        c = out[1] if len(out) >= 2 else None
        joined: int | None = None
        count = 0
        for a in n.args:
            if not isinstance(a, fx.Node) or _meta(a) is None:
                continue
            s, label = _shape(a), self.lab(a)
            if label is None:
                if math.prod(s) > 1 and any(self.lab(b) is not None for b in n.args):
                    self.opaque(n, "combines the channels with a constant tensor")
                    return
                continue
            if len(s) != len(out):
                self.opaque(n, f"broadcasts a {len(s)}-D tensor against a {len(out)}-D one")
                return
            if s[1] != c:
                self.labels.add(self.labels.fixed, label,
                                f"broadcast over channels by {describe(self.gm, n)}")
                continue
            joined = label if joined is None else self.labels.union(joined, label)
            count += 1
        if joined is None:
            joined = self.fresh(f"computed by {describe(self.gm, n)}")
        elif count > 1 and n.target in ADDITIVE:
            self.labels.residual.add(self.labels.find(joined))
        self.of[n] = joined

    def cat(self, n: fx.Node) -> None:
        tensors = n.args[0]
        dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
        ndim = len(_shape(n))
        if isinstance(dim, int) and dim % ndim == 1:
            for a in tensors:
                if self.lab(a) is not None:
                    self.labels.add(self.labels.fixed, self.lab(a),
                                    f"concatenated by {describe(self.gm, n)}")
            self.of[n] = self.fresh(f"the output of {describe(self.gm, n)}")
            return
        joined = None
        for a in tensors:
            if self.lab(a) is not None:
                joined = self.lab(a) if joined is None else self.labels.union(joined, self.lab(a))
        self.of[n] = joined if joined is not None else self.fresh("constant")

    def getitem(self, n: fx.Node, x) -> None:
        if self.lab(x) is None:
            self.of[n] = self.fresh("constant")
            return
        idx = n.args[1]
        idx = idx if isinstance(idx, tuple) else (idx,)
        whole = slice(None, None, None)
        if len(idx) >= 2 and idx[0] == whole and idx[1] == whole and Ellipsis not in idx \
                and len(_shape(n)) == len(_shape(x)):
            self.keep(n, x)
        else:
            self.opaque(n, "indexes the channel dimension")


def _flat(items) -> Iterable:
    for a in items:
        if isinstance(a, (list, tuple)):
            yield from _flat(a)
        else:
            yield a


def _nodes(items) -> Iterable[fx.Node]:
    for a in _flat(items if isinstance(items, (list, tuple)) else [items]):
        if isinstance(a, dict):
            yield from _nodes(list(a.values()))
        elif isinstance(a, fx.Node):
            yield a


def fingerprint(gm: fx.GraphModule) -> str:
    """A hash of the traced graph: every node's operation, target, inputs and, for a layer,
    its type and shape (the module's ``repr``)."""
    h = hashlib.sha256()
    for n in gm.graph.nodes:
        target = repr(gm.get_submodule(n.target)) if n.op == "call_module" else \
            (n.target if isinstance(n.target, str) else _fn_name(n.target))
        args = [a.name if isinstance(a, fx.Node) else repr(a) for a in _flat(n.args)]
        kwargs = sorted((k, v.name if isinstance(v, fx.Node) else repr(v))
                        for k, v in n.kwargs.items())
        h.update(repr((n.op, n.name, target, args, kwargs)).encode())
    return h.hexdigest()[:16]


def analyse(gm: fx.GraphModule, *, fixed_layers: Iterable[str] = (), where: str) -> GraphGroups:
    """The width groups of a traced, shape-propagated graph (see the module docstring)."""
    walker = _Walker(gm)
    walker.run()
    lab = walker.labels
    by_target = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module"}
    for layer in fixed_layers:
        if layer not in by_target or walker.of.get(by_target[layer]) is None:
            known = [t for t, nd in by_target.items()
                     if isinstance(gm.get_submodule(t), nn.Conv2d)][:3]
            raise UserError(f"{where}.fixed: {layer!r} is not a layer of the model's graph "
                            f"(conv layers are named like {', '.join(known)})")
        lab.add(lab.fixed, walker.of[by_target[layer]], "listed in fixed")
    order = {str(n.target): i for i, n in enumerate(gm.graph.nodes)}
    groups: list[WidthGroup] = []
    fixed: dict[str, str] = {}
    roots = sorted({lab.find(r) for r in lab.producers},
                   key=lambda r: min(order[p] for p in lab.producers[r]))
    for r in roots:
        producers = sorted(dict.fromkeys(lab.producers[r]), key=order.__getitem__)
        depthwise = sorted(dict.fromkeys(lab.depthwise.get(r, [])), key=order.__getitem__)
        if r in lab.fixed:
            for p in producers + depthwise:
                fixed[p] = lab.fixed[r][0]
            continue
        if r in lab.opaque:
            raise UserError(f"{where}: {lab.opaque[r][0]}; nas-prune cannot resize the channels "
                            f"of {producers[0]} there; list {producers[0]} in fixed to keep "
                            f"them at full width")
        convs = producers + depthwise
        bns = list(dict.fromkeys(lab.bns.get(r, [])))
        paired = {conv: bn for bn, conv in bns if conv in convs}
        # bns[i] is the BatchNorm right after convs[i] (FLOPs, latency and surgery rely on it)
        ordered = [c for c in convs if c in paired] + [c for c in convs if c not in paired]
        paired_bns = set(paired.values())
        bn_names = [paired[c] for c in ordered if c in paired] + \
            list(dict.fromkeys(bn for bn, _ in bns if bn not in paired_bns))
        base = int(gm.get_submodule(producers[0]).out_channels)
        groups.append(WidthGroup(
            name=producers[0], base=base, convs=tuple(ordered), bns=tuple(bn_names),
            consumers=tuple(dict.fromkeys(lab.consumers.get(r, []))),
            residual=r in lab.residual, depthwise=tuple(depthwise)))
    if not groups:
        first = next(iter(fixed.items()), None)
        why = f" (e.g. {first[0]}: {first[1]})" if first else ""
        raise UserError(f"{where}: every layer's width is fixed{why}; nothing to search")
    return GraphGroups(groups=tuple(groups), fixed=fixed, fingerprint=fingerprint(gm))


__all__ = ["GraphGroups", "analyse", "describe", "fingerprint", "shape_prop", "trace"]
