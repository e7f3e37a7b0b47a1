"""Width vectors, search spaces and architecture specs.

* A **width vector** maps each width group of a family to an absolute channel count.
* A :class:`SearchSpace` (``search_spaces/*.yaml``) is a family with its arguments, the input
  shape, per-group bounds and a channel divisor; it validates and snaps width vectors.
* An :class:`ArchSpec` is the one YAML format for every architecture the tool writes (proposals,
  trials, winners); :func:`build_model` rebuilds the exact module from it.
"""

from __future__ import annotations

import copy
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
from .families import Family, InputShape, Widths, get_family

FORMAT_VERSION = 1
SPACES_DIR = data_dir("search_spaces")


def _input_shape(data: Any, where: str) -> InputShape:
    if not isinstance(data, Mapping) or set(data) != {"channels", "size", "classes"}:
        raise UserError(f"{where}.input: expected a mapping with channels, size and classes")
    try:
        return InputShape(int(data["channels"]), int(data["size"]), int(data["classes"]))
    except (TypeError, ValueError):
        raise UserError(f"{where}.input: channels, size and classes must be integers") from None


def _check_keys(data: Mapping, allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
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
        out[name] = int(w)
    return out


@dataclass(frozen=True)
class SearchSpace:
    """A family, its input shape, per-group bounds ``[min, max]`` and a channel divisor.

    A width is on the grid when it is a multiple of ``divisor`` or equal to the group's maximum.
    """

    name: str
    family: Family
    divisor: int
    bounds: dict[str, tuple[int, int]]
    dataset: str | None = None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str) -> SearchSpace:
        where = f"search space {name}"
        _check_keys(data, {"family", "args", "input", "divisor", "min_width", "max_scale",
                           "bounds", "dataset", "description"}, {"family", "input"}, where)
        family = get_family(str(data["family"]), dict(data.get("args") or {}),
                            _input_shape(data["input"], where))
        divisor = int(data.get("divisor", 1))
        if divisor < 1:
            raise UserError(f"{where}.divisor: must be >= 1")
        min_width = int(data.get("min_width", divisor))
        max_scale = float(data.get("max_scale", 1.0))
        bounds = {g.name: (min_width, max(min_width, int(g.base * max_scale)))
                  for g in family.groups()}
        overrides = data.get("bounds") or {}
        for gname, pair in overrides.items():
            if gname not in bounds:
                raise UserError(f"{where}.bounds.{gname}: not a width group of {family.name}")
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise UserError(f"{where}.bounds.{gname}: expected [min, max]")
            bounds[gname] = (int(pair[0]), int(pair[1]))
        for gname, (lo, hi) in bounds.items():
            if not 1 <= lo <= hi:
                raise UserError(f"{where}.bounds.{gname}: need 1 <= min <= max, got [{lo}, {hi}]")
        return cls(name=name, family=family, divisor=divisor, bounds=bounds,
                   dataset=data.get("dataset"))

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

    def on_grid(self, group: str, width: int) -> bool:
        lo, hi = self.bounds[group]
        return lo <= width <= hi and (width % self.divisor == 0 or width == hi)

    def grid(self, group: str) -> list[int]:
        """The allowed widths of ``group``: multiples of the divisor in its bounds, and its max."""
        lo, hi = self.bounds[group]
        vals = list(range(math.ceil(lo / self.divisor) * self.divisor, hi + 1, self.divisor))
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
                                f"{self.divisor} (nor the maximum {hi})")
        return out

    # ---- costs -------------------------------------------------------------------------
    def count(self, widths: Mapping[str, int]) -> tuple[int, int]:
        return _flops.count(self.family, widths)

    def cost(self, widths: Mapping[str, int], metric: str = "flops") -> int:
        f, p = self.count(widths)
        if metric not in ("flops", "params"):
            raise UserError(f"budget metric {metric!r}: choose 'flops' or 'params'")
        return f if metric == "flops" else p

    def base_cost(self, metric: str = "flops") -> int:
        return self.cost(self.base_widths(), metric)

    def spec(self, widths: Mapping[str, int], *, metrics: dict | None = None,
             provenance: dict | None = None) -> ArchSpec:
        return ArchSpec.from_family(self.family, self.validate(widths), space=self.name,
                                    metrics=metrics, provenance=provenance)


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
        _check_keys(data, {"format_version", "family", "family_args", "input", "space", "widths",
                           "layers", "flops", "params", "flops_convention", "metrics",
                           "provenance"}, {"family", "input", "widths"}, where)
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise UserError(f"{where}.format_version: {version} is not supported "
                            f"(this nas-prune reads version {FORMAT_VERSION})")
        family = get_family(str(data["family"]), dict(data.get("family_args") or {}),
                            _input_shape(data["input"], where))
        widths = check_widths(family, data["widths"], where=f"{where}.widths")
        f, p = _flops.count(family, widths)
        for key, actual in (("flops", f), ("params", p)):
            if key in data and data[key] is not None and int(data[key]) != actual:
                raise UserError(f"{where}.{key}: records {data[key]} but the widths give {actual}; "
                                f"the file was edited or written by another version")
        if "layers" in data and data["layers"] is not None:
            if {k: int(v) for k, v in dict(data["layers"]).items()} != family.layer_channels(widths):
                raise UserError(f"{where}.layers: does not match the widths; "
                                f"delete it or fix the widths")
        return cls(family=family.name, family_args=family.arguments(), input=family.input_shape,
                   widths=widths, flops=f, params=p, space=data.get("space"),
                   metrics=dict(data.get("metrics") or {}),
                   provenance=dict(data.get("provenance") or {}))

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
