"""Width vectors, search spaces and architecture specs.

* A **width vector** maps each width group of a family to an absolute channel count.
* A :class:`SearchSpace` (``search_spaces/*.yaml``) is a family with its arguments, the input
  shape, per-group bounds and a channel divisor; it validates and snaps width vectors.
* An :class:`ArchSpec` is the one YAML format for every architecture the tool writes (proposals,
  trials, winners); :func:`build_model` rebuilds the exact module from it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from . import flops as _flops
from ._meta import code_version, data_dir
from ._yaml import plain, read_yaml, write_yaml
from .errors import UserError
from .families import FAMILIES, Family, InputShape, Widths, get_family

FORMAT_VERSION = 1
SPACES_DIR = data_dir("search_spaces")
MAX_WIDTH = 1 << 16  # channels of one width group
MAX_MULTIPLIER = 4.0  # a space's max_multiplier: how far a group may grow above its base
MAX_PARAMS = 1 << 28  # parameters of one network (1 GiB of fp32): more is a typo, not a model
MAX_FAMILY_NUMBER = 1e6  # a numeric family argument (a depth, an initial BN gamma)
INPUT_LIMITS = {"channels": (1, 1024), "size": (1, 8192), "classes": (1, 1_000_000)}


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where}: {value!r} is not an integer")
    if not lo <= value <= hi:
        raise UserError(f"{where}: {value} is out of range; must be in [{lo}, {hi}]")
    return value


def _widened(base: int, multiplier: float, divisor: int) -> int:
    """A group's maximum under ``max_multiplier``: its base width grown by the multiplier, down
    to the divisor's grid, and never below the base (the base network stays in the space)."""
    if multiplier == 1:
        return base
    return max(base, int(base * multiplier + 1e-9) // divisor * divisor)


def _mapping(value: Any, where: str, what: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: expected a mapping of {what}, got {value!r}")
    return value


def _input_shape(data: Any, where: str) -> InputShape:
    if not isinstance(data, Mapping) or set(data) != {"channels", "size", "classes"}:
        raise UserError(f"{where}.input: expected a mapping with channels, size and classes")
    return InputShape(*(_int(data[k], f"{where}.input.{k}", *INPUT_LIMITS[k])
                        for k in ("channels", "size", "classes")))


def _check_plain(v: Any, where: str, depth: int = 0) -> None:
    """A family argument is a plain value, or (for the arguments a family lists in
    ``nested_args``: the graph family's ``kwargs`` and ``fixed``) a list or string-keyed mapping
    of them, a few levels deep."""
    if isinstance(v, (Mapping, list, tuple)) and depth < 4:
        items = v.items() if isinstance(v, Mapping) else enumerate(v)
        for k, x in items:
            if isinstance(v, Mapping) and not isinstance(k, str):
                raise UserError(f"{where}: key {k!r} is not a string")
            _check_plain(x, f"{where}.{k}" if isinstance(v, Mapping) else f"{where}[{k}]",
                         depth + 1)
        return
    if v is not None and not isinstance(v, (str, int, float, bool)):
        raise UserError(f"{where}: {v!r} is not a plain value")
    if isinstance(v, (int, float)) and not isinstance(v, bool) \
            and not (math.isfinite(v) and abs(v) <= MAX_FAMILY_NUMBER):
        raise UserError(f"{where}: {v!r} is out of range; must be a finite "
                        f"number in [-{MAX_FAMILY_NUMBER:g}, {MAX_FAMILY_NUMBER:g}]")


def _family(data: Mapping[str, Any], args_key: str, where: str) -> Family:
    """The family a space or architecture YAML names, its arguments checked to be plain values."""
    name = data["family"]
    if not isinstance(name, str):
        raise UserError(f"{where}.family: {name!r} is not a family name")
    args = _mapping(data.get(args_key), f"{where}.{args_key}", "family arguments")
    for k, v in args.items():
        if not isinstance(k, str) or (isinstance(v, (Mapping, list, tuple, set))
                                      and k not in getattr(FAMILIES.get(name), "nested_args", ())):
            raise UserError(f"{where}.{args_key}.{k}: {v!r} is not a plain value")
        _check_plain(v, f"{where}.{args_key}.{k}")
    shape = _input_shape(data["input"], where)
    try:
        return get_family(name, dict(args), shape)
    except UserError:
        raise
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}.{args_key}: bad arguments for family {name!r} "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                        ) from None


def _count(family: Family, widths: Mapping[str, int], where: str) -> tuple[int, int]:
    """(FLOPs, params), with an input too small for the family's pooling as a UserError."""
    try:
        f, p = _flops.count(family, widths)
    except RuntimeError as exc:
        s = family.input_shape
        raise UserError(f"{where}.input: a {family.name} {family.arguments()} network cannot "
                        f"run on {s.channels}x{s.size}x{s.size} images "
                        f"({str(exc).splitlines()[0][:120]}); raise input.size") from None
    if p > MAX_PARAMS:
        raise UserError(f"{where}: {p:,} parameters is more than the {MAX_PARAMS:,} allowed; "
                        f"check the widths")
    return f, p


def _check_keys(data: Mapping, allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted((k for k in data if k not in allowed), key=str)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed keys: "
                        f"{', '.join(sorted(allowed))}")
    missing = sorted(required - set(data))
    if missing:
        raise UserError(f"{where}: missing key {missing[0]!r}")


def check_widths(family: Family, widths: Mapping[str, Any], *, where: str = "widths") -> Widths:
    """Every group present, no unknown group, each a positive int; returns them in group order."""
    if not isinstance(widths, Mapping):
        raise UserError(f"{where}: expected a mapping from width group to channels")
    names = family.group_names()
    unknown = [k for k in widths if k not in names]
    if unknown:
        raise UserError(f"{where}.{unknown[0]}: not a width group of {family.name}; "
                        f"groups are {', '.join(names)}")
    out: Widths = {}
    for name in names:
        if name not in widths:
            raise UserError(f"{where}.{name}: missing; every width group needs a width")
        w = widths[name]
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise UserError(f"{where}.{name}: {w!r} is not a positive integer channel count")
        if w > MAX_WIDTH:
            raise UserError(f"{where}.{name}: {w} channels is out of range; must be in "
                            f"[1, {MAX_WIDTH}]")
        out[name] = int(w)
    return out


@dataclass(frozen=True)
class SearchSpace:
    """A family, its input shape, per-group bounds ``[min, max]`` and a channel divisor.

    A width is on the grid when it is a multiple of the group's divisor (``divisors`` for the
    groups it names, ``divisor`` for the others) or equal to the group's maximum.
    """

    name: str
    family: Family
    divisor: int
    bounds: dict[str, tuple[int, int]]
    dataset: str | None = None
    divisors: dict[str, int] = field(default_factory=dict)  # per-group divisors (YAML divisors)
    latency: Any = field(default=None, compare=False, repr=False)  # a LatencyPredictor

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str) -> SearchSpace:
        where = f"search space {name}"
        if not isinstance(data, Mapping):
            raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
        _check_keys(data, {"family", "args", "input", "divisor", "divisors", "min_width",
                           "max_multiplier", "bounds", "dataset", "description"},
                    {"family", "input"}, where)
        if takes_input_from_data(data):
            raise UserError(f"{where}: its input comes from the data (input: {FROM_DATA}); use "
                            f"it with a config's data set (nas-prune search/propose/train "
                            f"--config ...)")
        family = _family(data, "args", where)
        divisor = _int(data.get("divisor", 1), f"{where}.divisor", 1, MAX_WIDTH)
        min_width = _int(data.get("min_width", divisor), f"{where}.min_width", 1, MAX_WIDTH)
        divisors = {}
        for gname, d in _mapping(data.get("divisors"), f"{where}.divisors",
                                 "divisors per width group").items():
            if gname not in family.group_names():
                raise UserError(f"{where}.divisors.{gname}: not a width group of {family.name}")
            divisors[gname] = _int(d, f"{where}.divisors.{gname}", 1, MAX_WIDTH)
        mult = data.get("max_multiplier", 1.0)
        if isinstance(mult, bool) or not isinstance(mult, (int, float)) \
                or not math.isfinite(mult):
            raise UserError(f"{where}.max_multiplier: {mult!r} is not a number")
        if not 1 <= mult <= MAX_MULTIPLIER:
            raise UserError(f"{where}.max_multiplier: {mult} is out of range; must be in "
                            f"[1, {MAX_MULTIPLIER:g}] (1 keeps each base width as its maximum)")
        # a group narrower than min_width (or the divisor) keeps its base width as its only
        # width: the base network stays in the space, and nothing grows above it unasked
        bounds = {g.name: (min(min_width, g.base),
                           max(min(min_width, g.base),
                               _widened(g.base, float(mult), divisors.get(g.name, divisor))))
                  for g in family.groups()}
        overrides = _mapping(data.get("bounds"), f"{where}.bounds", "[min, max] per width group")
        for gname, pair in overrides.items():
            if gname not in bounds:
                raise UserError(f"{where}.bounds.{gname}: not a width group of {family.name}")
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise UserError(f"{where}.bounds.{gname}: expected [min, max]")
            bounds[gname] = (_int(pair[0], f"{where}.bounds.{gname}[0]", 1, MAX_WIDTH),
                             _int(pair[1], f"{where}.bounds.{gname}[1]", 1, MAX_WIDTH))
        for gname, (lo, hi) in bounds.items():
            if not 1 <= lo <= hi:
                raise UserError(f"{where}.bounds.{gname}: need 1 <= min <= max, got [{lo}, {hi}]")
            if hi > MAX_WIDTH:
                raise UserError(f"{where}.bounds.{gname}: max {hi} is out of range; must be "
                                f"<= {MAX_WIDTH} (lower max_multiplier)")
        for key in ("dataset", "description"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise UserError(f"{where}.{key}: {data[key]!r} is not a string")
        _count(family, family.base_widths(), where)
        return cls(name=name, family=family, divisor=divisor, bounds=bounds,
                   dataset=data.get("dataset"), divisors=divisors)

    @classmethod
    def load(cls, name_or_path: str | Path) -> SearchSpace:
        """A space by name (``search_spaces/NAME.yaml``) or by path."""
        name, data = space_source(name_or_path)
        return cls.from_dict(data, name=name)

    @classmethod
    def full(cls, family: Family, *, divisor: int = 1, name: str = "full") -> SearchSpace:
        """Bounds [1, base] for every group: a space for validating arbitrary architectures."""
        return cls(name=name, family=family, divisor=divisor,
                   bounds={g.name: (1, g.base) for g in family.groups()})

    # ---- widths ------------------------------------------------------------------------
    @property
    def group_names(self) -> list[str]:
        return self.family.group_names()

    def base_widths(self) -> Widths:
        return self.family.base_widths()

    def min_widths(self) -> Widths:
        return {g: self.snap_one(g, self.bounds[g][0], up=True) for g in self.group_names}

    def max_widths(self) -> Widths:
        return {g: hi for g, (_, hi) in self.bounds.items()}

    def widened_groups(self) -> list[str]:
        """The groups whose maximum lies above their base width (``max_multiplier`` or bounds)."""
        base = self.base_widths()
        return [g for g, (_, hi) in self.bounds.items() if hi > base[g]]

    def divisor_of(self, group: str) -> int:
        """The channel divisor of ``group``."""
        return self.divisors.get(group, self.divisor)

    def on_grid(self, group: str, width: int) -> bool:
        lo, hi = self.bounds[group]
        return lo <= width <= hi and (width % self.divisor_of(group) == 0 or width == hi)

    def grid(self, group: str) -> list[int]:
        """The allowed widths of ``group``: multiples of the divisor in its bounds, and its max."""
        lo, hi = self.bounds[group]
        d = self.divisor_of(group)
        vals = list(range(math.ceil(lo / d) * d, hi + 1, d))
        if not vals or vals[-1] != hi:
            vals.append(hi)
        return vals

    def snap_one(self, group: str, value: float, *, up: bool = False) -> int:
        """The nearest on-grid width (ties go up); ``up``: the smallest on-grid width >= value."""
        vals = self.grid(group)
        if up:
            return next((v for v in vals if v >= value - 1e-9), vals[-1])
        return min(vals, key=lambda v: (abs(v - value), -v))

    def snap(self, widths: Mapping[str, float]) -> Widths:
        """Round every width to the grid and clip it to the group's bounds."""
        return {g: self.snap_one(g, float(widths[g])) for g in self.group_names}

    def validate(self, widths: Mapping[str, Any], *, where: str = "widths") -> Widths:
        """A clean width vector, or a one-line error naming the offending group."""
        out = check_widths(self.family, widths, where=where)
        for g, w in out.items():
            lo, hi = self.bounds[g]
            if not lo <= w <= hi:
                raise UserError(f"{where}.{g}: {w} is outside the bounds [{lo}, {hi}] of space "
                                f"{self.name}")
            if not self.on_grid(g, w):
                raise UserError(f"{where}.{g}: {w} is not a multiple of the divisor "
                                f"{self.divisor_of(g)} (nor the maximum {hi})")
        return out

    # ---- costs -------------------------------------------------------------------------
    def count(self, widths: Mapping[str, int]) -> tuple[int, int]:
        return _flops.count(self.family, widths)

    def cost(self, widths: Mapping[str, int], metric: str = "flops") -> int:
        """FLOPs (MACs), params, or predicted latency in nanoseconds (with a predictor
        attached by :meth:`with_latency`)."""
        if metric == "latency":
            if self.latency is None:
                raise UserError(f"budget metric 'latency': space {self.name} has no latency "
                                f"predictor; run with --metric latency and a latency config")
            return self.latency.predict(widths)
        f, p = self.count(widths)
        if metric not in ("flops", "params"):
            raise UserError(f"budget metric {metric!r}: choose flops, params or latency")
        return f if metric == "flops" else p

    def with_latency(self, cfg: Any) -> SearchSpace:
        """This space with a latency predictor (:class:`~nas_prune.latency.LatencyPredictor`)
        for ``cfg`` (a :class:`~nas_prune.latency.LatencyConfig`)."""
        from .latency import LatencyPredictor

        return dataclasses.replace(self, latency=LatencyPredictor(self.family, cfg,
                                                                  divisor=self.divisor))

    def base_cost(self, metric: str = "flops") -> int:
        return self.cost(self.base_widths(), metric)

    def spec(self, widths: Mapping[str, int], *, metrics: dict | None = None,
             provenance: dict | None = None) -> ArchSpec:
        return ArchSpec.from_family(self.family, self.validate(widths), space=self.name,
                                    metrics=metrics, provenance=provenance)


FROM_DATA = "from_data"


def takes_input_from_data(raw: Mapping[str, Any]) -> bool:
    """Whether a raw space leaves its input (all of it, or some keys) to the data set."""
    inp = raw.get("input")
    return inp == FROM_DATA or (isinstance(inp, Mapping) and FROM_DATA in inp.values())


def input_size_of(raw: Mapping[str, Any]) -> int | None:
    """The image size a raw space asks for (None when the data decides)."""
    inp = raw.get("input")
    size = inp.get("size") if isinstance(inp, Mapping) else None
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def with_input(raw: Mapping[str, Any], shape: InputShape) -> dict[str, Any]:
    """``raw`` with every ``from_data`` input key filled from ``shape``."""
    inp = raw.get("input")
    given = dict(inp) if isinstance(inp, Mapping) else {}
    filled = {k: (v if given.get(k, FROM_DATA) == FROM_DATA else given[k])
              for k, v in shape.to_dict().items()}
    return {**raw, "input": filled}


def space_source(name_or_path: str | Path) -> tuple[str, dict[str, Any]]:
    """(name, raw YAML mapping) of a space by name or path: plain data that can travel to other
    processes and be rebuilt there with :meth:`SearchSpace.from_dict`."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SPACES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UserError(f"search space {name_or_path!r}: not found; choose one of "
                            f"{', '.join(available_spaces())} or give a path")
    return path.stem, read_yaml(path, what="search space")


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


@dataclass
class ArchSpec:
    """One architecture: everything needed to rebuild the exact model, plus what it scored."""

    family: str
    family_args: dict[str, Any]
    input: InputShape
    widths: Widths
    flops: int
    params: int
    space: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_family(cls, family: Family, widths: Mapping[str, int], *, space: str | None = None,
                    metrics: dict | None = None, provenance: dict | None = None) -> ArchSpec:
        widths = check_widths(family, widths)
        f, p = _flops.count(family, widths)
        prov = {"code": code_version(), **(provenance or {})}
        return cls(family=family.name, family_args=family.arguments(), input=family.input_shape,
                   widths=widths, flops=f, params=p, space=space, metrics=dict(metrics or {}),
                   provenance=prov)

    def family_obj(self) -> Family:
        return get_family(self.family, self.family_args, self.input)

    def layers(self) -> dict[str, int]:
        return self.family_obj().layer_channels(self.widths)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "family": self.family,
            "family_args": dict(self.family_args),
            "input": self.input.to_dict(),
            "space": self.space,
            "widths": dict(self.widths),
            "layers": self.layers(),
            "flops": int(self.flops),
            "params": int(self.params),
            "flops_convention": "multiply-accumulates of conv and linear layers, one image",
            "metrics": plain(self.metrics),
            "provenance": plain(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "architecture") -> ArchSpec:
        if not isinstance(data, Mapping):
            raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
        _check_keys(data, {"format_version", "family", "family_args", "input", "space", "widths",
                           "layers", "flops", "params", "flops_convention", "metrics",
                           "provenance"}, {"family", "input", "widths"}, where)
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise UserError(f"{where}.format_version: {version!r} is not supported "
                            f"(this nas-prune reads version {FORMAT_VERSION})")
        family = _family(data, "family_args", where)
        widths = check_widths(family, data["widths"], where=f"{where}.widths")
        f, p = _count(family, widths, where)
        for key, actual in (("flops", f), ("params", p)):
            rec = data.get(key)
            if rec is not None and (isinstance(rec, bool) or rec != actual):
                raise UserError(f"{where}.{key}: records {rec!r} but the widths give "
                                f"{actual}; the file was edited or written by another version")
        if "layers" in data and data["layers"] is not None:
            if dict(_mapping(data["layers"], f"{where}.layers", "layer channels")) \
                    != family.layer_channels(widths):
                raise UserError(f"{where}.layers: does not match the widths; "
                                f"delete it or fix the widths")
        space = data.get("space")
        if space is not None and not isinstance(space, str):
            raise UserError(f"{where}.space: {space!r} is not a space name")
        return cls(family=family.name, family_args=family.arguments(), input=family.input_shape,
                   widths=widths, flops=f, params=p, space=space,
                   metrics=dict(_mapping(data.get("metrics"), f"{where}.metrics", "metrics")),
                   provenance=dict(_mapping(data.get("provenance"), f"{where}.provenance",
                                            "provenance")))

    @classmethod
    def load(cls, path: str | Path) -> ArchSpec:
        return cls.from_dict(read_yaml(path, what="architecture"), where=str(path))

    def save(self, path: str | Path) -> Path:
        return write_yaml(path, self.to_dict())

    def build(self) -> nn.Module:
        return self.family_obj().build(self.widths)

    def with_metrics(self, **metrics: Any) -> ArchSpec:
        new = copy.deepcopy(self)
        new.metrics.update(metrics)
        return new


def load_spec(path_or_dict: str | Path | Mapping[str, Any] | ArchSpec) -> ArchSpec:
    if isinstance(path_or_dict, ArchSpec):
        return path_or_dict
    if isinstance(path_or_dict, Mapping):
        return ArchSpec.from_dict(path_or_dict)
    return ArchSpec.load(path_or_dict)


def build_model(path_or_dict: str | Path | Mapping[str, Any] | ArchSpec) -> nn.Module:
    """Rebuild the exact (untrained, CPU fp32) model an architecture YAML describes."""
    return load_spec(path_or_dict).build()
