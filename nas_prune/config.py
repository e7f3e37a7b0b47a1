"""Strict experiment configs: YAML -> typed dataclasses, ``--set key.sub=value`` overrides.

Unknown keys and wrong types are one-line :class:`UserError` s that name the key. The resolved
config is written into every run directory (:func:`save_config`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._meta import data_dir
from ._yaml import read_yaml, write_yaml
from .data import DataConfig
from .errors import UserError
from .train import TrainConfig

CONFIGS_DIR = data_dir("configs")
DEFAULT_CONFIG = "default"


@dataclass(frozen=True)
class SeedMethodConfig:
    """Which seed method(s) propose widths, for what budget, from what base network."""

    name: str = "slimming"  # one method, several comma-separated, or "all"
    budget: float = 0.5  # target ratio of the base cost
    metric: str = "flops"  # flops | params
    base_epochs: int = 3  # epochs to train the base network (with the method's regulariser)
    base_checkpoint: str | None = None  # a state dict to start from instead of training
    samples: int = 500  # images a data-driven method (thinet, regression) looks at
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method knobs


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port": join
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    max_concurrent: int = 1
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265


@dataclass(frozen=True)
class SearchConfig:
    backend: str = "optuna"  # optuna | ray
    n_trials: int = 8  # trials after the enqueued seed/uniform ones count too
    timeout: float | None = None  # seconds
    sampler: str = "tpe"  # tpe | cmaes | random | nsga2
    early_stopping: str = "median"  # median | halving | none
    objective: str = "single"  # single (val accuracy at the budget) | multi (accuracy, FLOPs)
    multiplier_low: float = 0.5
    multiplier_high: float = 1.5
    tolerance: float = 0.02  # candidates' FLOPs within this of the target
    storage: str | None = None  # default sqlite:///RUN/study.db
    study_name: str | None = None
    final_seeds: int = 1
    # the top-K trials by search validation accuracy are all retrained on the final seeds and the
    # winner is the one with the highest mean *validation* accuracy there (single objective); 1
    # keeps the search's own best. Guards against picking a trial that was lucky once.
    finalists: int = 1
    final_epochs: int | None = None  # base epochs of the final retraining (default train.epochs)
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass(frozen=True)
class Config:
    space: str = "vgg_small_fmnist"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed_method: SeedMethodConfig = field(default_factory=SeedMethodConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    device: str = "auto"
    random_seed: int = 0
    run_dir: str = "runs/search"


# ---- strict conversion ---------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except UserError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if tp is Any:
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config type {tp}")
    raise UserError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise UserError(f"{where}.{key}: unknown key; allowed keys: {', '.join(names)}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k),
                                                                              dict) else v
    return out


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["search.n_trials=4", "data.name=synthetic"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set {item}: expected key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item}: {p} is set twice")
        node[parts[-1]] = value
    return out


def config_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return CONFIGS_DIR / f"{name_or_path}.yaml"


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None,
                **extra: Any) -> Config:
    """Defaults <- config file (default ``configs/default.yaml``) <- ``extra`` <- ``--set``."""
    data: dict[str, Any] = {}
    path = config_path(name_or_path or DEFAULT_CONFIG)
    if name_or_path is not None or path.is_file():
        data = read_yaml(path, what="config")
    data = _deep_merge(data, {k: v for k, v in extra.items() if v is not None})
    data = _deep_merge(data, parse_set(overrides))
    return from_dict(Config, data)


def save_config(cfg: Config, path: str | Path) -> Path:
    return write_yaml(path, to_dict(cfg))
