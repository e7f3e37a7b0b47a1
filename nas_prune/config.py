"""Strict experiment configs: YAML -> typed dataclasses, ``--set key.sub=value`` overrides.

Unknown keys, wrong types and out-of-range values are one-line :class:`UserError` s that name the
dotted key (``train.lr``), the bad value and what is accepted. :data:`RULES` holds one check per
field (booleans need none beyond their type); :func:`validate` applies them and the cross-field
rules, and :func:`from_dict` calls it on every :class:`Config` it builds, so a config read from
YAML, ``--set`` or a run directory's ``setup.json`` is checked before anything trains. The
resolved config is written into every run directory (:func:`save_config`).

Imports run downward only: the configs of the layers below (data, training, latency) and the seed
methods' registry (:mod:`nas_prune.seeds` takes explicit arguments and never a :class:`Config`).
The search is a layer above: it reads a :class:`Config`, so the names its registries accept
(:data:`SEARCH_BACKENDS`, :data:`SEARCH_SAMPLERS`, :data:`SEARCH_EARLY_STOPPING`,
:data:`SEARCH_OBJECTIVES`) are
listed here, and each registry in :mod:`nas_prune.search` refuses at import a name not listed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ._meta import data_dir
from ._yaml import read_yaml, write_yaml
from .data import DataConfig
from .errors import UserError
from .latency import BACKENDS as LATENCY_BACKENDS
from .latency import LatencyConfig
from .oneshot import MAX_POPULATION, SCORES, STRATEGIES, OneShotConfig
from .seeds import SEED_METHODS, get_method, parse_methods
from .train import BUDGETS, SCHEDULES, TrainConfig

CONFIGS_DIR = data_dir("configs")
DEFAULT_CONFIG = "default"
METRICS = ("flops", "params", "latency")
DEVICE_TYPES = ("cpu", "cuda", "mps")
# The names the search's registries accept (nas_prune.search.backends.BACKENDS,
# nas_prune.search.samplers.SAMPLERS and EARLY_STOPPING; the objectives of
# nas_prune.search.space): a registry refuses at import a name that is not listed here.
SEARCH_BACKENDS = ("optuna", "ray")
SEARCH_SAMPLERS = ("tpe", "cmaes", "random", "nsga2")
SEARCH_EARLY_STOPPING = ("median", "halving", "hyperband", "none")
SEARCH_OBJECTIVES = ("single", "multi")
BEST_WEIGHTS = ("scratch", "finetuned")


@dataclass(frozen=True)
class SeedMethodConfig:
    """Which seed method(s) propose widths, for what budget, from what base network."""

    name: str = "slimming"  # one method, several comma-separated, or "all"
    budget: float = 0.5  # target ratio of the base cost
    metric: str = "flops"  # flops | params | latency (measured, see the latency section)
    base_epochs: int = 3  # epochs to train the base network (with the method's regulariser)
    base_checkpoint: str | None = None  # a state dict to start from instead of training
    samples: int = 500  # images a data-driven method (thinet, regression) looks at
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method knobs


@dataclass(frozen=True)
class RungConfig:
    """One fidelity of a multi-fidelity search: a complete schedule of ``epochs`` base epochs
    (scaled by the budget rule), measured on ``seeds`` seeds (see nas_prune.search.fidelity)."""

    epochs: int = 1
    seeds: int = 1


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port": join
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    max_concurrent: int = 1
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    # custom Ray resources each trial needs (`ray start --resources '{"big_gpu": 1}'` on the
    # nodes that have them): trials then run only there
    resources: dict[str, float] = field(default_factory=dict)


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
    storage: str | None = None  # default sqlite:///RUN/study.db; journal:///PATH; postgresql://
    study_name: str | None = None
    # relational storages: a worker that sends no heartbeat for grace_period seconds is dead;
    # its trial is failed and enqueued again
    heartbeat_interval: int = 30
    grace_period: int = 120
    final_seeds: int = 1
    # the top-K trials by search validation accuracy and the baselines are all retrained on the
    # selection seeds and the winner is the one with the highest mean *validation* accuracy there
    # (single objective; a multi-objective search exports its Pareto front and ignores it); 1
    # keeps the search's own best. Guards against picking a trial that was lucky once: on the
    # Channel-Bench-Macro table the search's own best was worse than uniform on held-out seeds,
    # the finalists' winner was not (benchmarks/results/search_regret.md)
    finalists: int = 3
    final_epochs: int | None = None  # base epochs of the final retraining (default train.epochs)
    # the best model too: also cut the winner's widths (by filter L1 norm) from a base network
    # trained for seed_method.base_epochs on each evaluation seed and fine-tune them for this
    # many epochs with learning-rate rewinding (the training recipe's whole schedule): the row
    # "best (fine-tuned)" of the final table, its compute counting the base network (null: off)
    finetune_epochs: int | None = None
    # what best.pt holds: "scratch" (the winner trained from scratch, first evaluation seed) or
    # "finetuned" (the fine-tuned row's, first seed; needs finetune_epochs)
    best_weights: str = "scratch"
    # multi-fidelity: rungs of complete schedules, cheap to expensive (empty: one schedule of
    # train.epochs); early stopping (halving, hyperband, median) acts between rungs
    rungs: tuple[RungConfig, ...] = ()
    reduction_factor: int = 3  # successive halving keeps the top 1/reduction_factor per rung
    # one-shot screening (nas_prune.oneshot): the weight-sharing network and the screening score
    screening: OneShotConfig = field(default_factory=OneShotConfig)
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass(frozen=True)
class Config:
    space: str = "vgg_small_fmnist"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed_method: SeedMethodConfig = field(default_factory=SeedMethodConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
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
        return {str(k): _convert(v, args[1], _join(where, k)) for k, v in value.items()}
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


# ---- value checks --------------------------------------------------------------------------
def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """A finite number in ``[lo, hi]``; an end is open when ``lo_open``/``hi_open``, absent when
    None. ``None`` values pass (the field's type says whether null is allowed)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"

    def check(self, value: Any, key: str) -> None:
        if value is None:
            return
        ok = isinstance(value, int) or math.isfinite(value)
        if ok and self.lo is not None:
            ok = value > self.lo if self.lo_open else value >= self.lo
        if ok and self.hi is not None:
            ok = value < self.hi if self.hi_open else value <= self.hi
        if not ok:
            raise UserError(f"{key}: {value!r} is out of range; must be {self.describe()}")


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of strings."""

    choices: tuple[str, ...]

    def check(self, value: Any, key: str) -> None:
        if value not in self.choices:
            raise UserError(f"{key}: {value!r}; choose one of {', '.join(self.choices)}")


@dataclass(frozen=True)
class DataName:
    """A built-in data set, ``imagefolder`` or ``torchvision:CLASS``."""

    def check(self, value: Any, key: str) -> None:
        from .data import check_name

        check_name(value, key)


@dataclass(frozen=True)
class NonEmpty:
    """A string with something in it (or None, where the type allows it)."""

    what: str = "a non-empty string"

    def check(self, value: Any, key: str) -> None:
        if value is not None and not value.strip():
            raise UserError(f"{key}: {value!r} is empty; must be {self.what}")


@dataclass(frozen=True)
class Device:
    """``auto``, or a torch device string of a supported type: cpu, cuda, cuda:N, mps.

    Whether the device exists on this machine is checked where it is used
    (:func:`nas_prune.train.resolve_device`): a run directory's config may name a GPU that only
    the machine that runs its trials has.
    """

    def check(self, value: Any, key: str) -> None:
        if value == "auto":
            return
        try:
            dev = torch.device(value)
        except (RuntimeError, TypeError, ValueError):
            dev = None
        if dev is None or dev.type not in DEVICE_TYPES:
            raise UserError(f"{key}: {value!r} is not a device; choose auto, cpu, cuda, "
                            f"cuda:N or mps")


@dataclass(frozen=True)
class Milestones:
    """Fractions of training in (0, 1), in increasing order."""

    def check(self, value: Any, key: str) -> None:
        if any(not (math.isfinite(m) and 0 < m < 1) for m in value) or list(value) != sorted(value):
            raise UserError(f"{key}: {list(value)} must be increasing fractions of training, "
                            f"each in (0, 1)")


@dataclass(frozen=True)
class TrainSource:
    """``train.source``: ``data`` or ``table:PATH`` (the table itself is read where it is
    used, against the search space: :mod:`nas_prune.table`)."""

    def check(self, value: Any, key: str) -> None:
        from .table import check_source

        check_source(value, key)


@dataclass(frozen=True)
class TrainFunction:
    """``train.function``: null or ``package.module:function`` (imported and its signature
    checked when a search starts: :func:`nas_prune.trainfn.check_function`; then tried for one
    epoch on the narrowest network unless ``train.function_check`` is false:
    :func:`nas_prune.trainfn.check_on_narrowest`)."""

    def check(self, value: Any, key: str) -> None:
        from .trainfn import check_path

        check_path(value, key)


@dataclass(frozen=True)
class SeedMethods:
    """``seed_method.name``: a method, a comma-separated list, or ``all``."""

    def check(self, value: Any, key: str) -> None:
        try:
            parse_methods(value)
        except UserError:
            raise UserError(f"{key}: {value!r}; give a seed method, a comma-separated list or "
                            f"'all'; methods are {', '.join(SEED_METHODS)}") from None


@dataclass(frozen=True)
class MethodOptions:
    """``seed_method.options``: keys are seed methods, values options each method accepts."""

    def check(self, value: Any, key: str) -> None:
        for name, opts in value.items():
            if name not in SEED_METHODS:
                raise UserError(f"{key}.{name}: not a seed method; choose from "
                                f"{', '.join(SEED_METHODS)}")
            get_method(name, opts)  # each method checks its own options


@dataclass(frozen=True)
class Resources:
    """``search.ray.resources``: custom Ray resource names -> a positive amount per trial (CPU
    and GPU have their own keys)."""

    def check(self, value: Any, key: str) -> None:
        for name, amount in (value or {}).items():
            if name.upper() in ("CPU", "GPU") or not name.strip():
                raise UserError(f"{key}: {name!r} is not a custom resource; set CPUs and GPUs "
                                f"with search.ray.cpus_per_trial / gpus_per_trial")
            Range(0, 1e9, lo_open=True).check(amount, f"{key}.{name}")


def check_rungs(rungs: Sequence[Any], *, reduction_factor: int | None,
                where: str = "search.rungs") -> list[Any]:
    """The rungs (anything with ``epochs`` and ``seeds``: a :class:`RungConfig` or a
    :class:`nas_prune.search.fidelity.Rung`), checked: at least one, each with epochs >= 1 and
    seeds >= 1, the cost (epochs x seeds) never falling from one rung to the next;
    ``reduction_factor`` >= 2 (None: checked elsewhere, as the config's own range rule does)."""
    rungs = list(rungs)
    if not rungs:
        raise UserError(f"{where}: needs at least one rung, e.g. [{{epochs: 2}}, {{epochs: 6}}]")
    if reduction_factor is not None and (not isinstance(reduction_factor, int)
                                         or reduction_factor < 2):
        raise UserError(f"search.reduction_factor: {reduction_factor!r}; must be an integer "
                        f">= 2 (3 keeps the top third at each rung)")
    for i, r in enumerate(rungs):
        if r.epochs < 1:
            raise UserError(f"{where}[{i}].epochs: {r.epochs}; must be >= 1")
        if r.seeds < 1:
            raise UserError(f"{where}[{i}].seeds: {r.seeds}; must be >= 1")
        if i and r.epochs * r.seeds < rungs[i - 1].epochs * rungs[i - 1].seeds:
            raise UserError(f"{where}[{i}]: costs less (epochs x seeds = {r.epochs * r.seeds}) "
                            f"than the rung before it; order the rungs from cheap to expensive")
    return rungs


@dataclass(frozen=True)
class Rungs:
    """``search.rungs``: empty, or rungs each with epochs >= 1 and seeds >= 1, cheap first."""

    def check(self, value: Any, key: str) -> None:
        if not value:
            return
        check_rungs(value, reduction_factor=None, where=key)
        for i, r in enumerate(value):
            _EPOCHS.check(r.epochs, f"{key}[{i}].epochs")
            Range(1, 1000).check(r.seeds, f"{key}[{i}].seeds")


_SEED = Range(0, 2 ** 32 - 1)  # what torch, numpy and Optuna's samplers all accept
_EPOCHS = Range(1, 100_000)
_POSITIVE = Range(1, 10 ** 9)

#: One check per config field, by dotted key. Booleans are fully checked by their type.
RULES: dict[str, Any] = {
    "space": NonEmpty("a search space name or YAML path"),
    "device": Device(),
    "random_seed": _SEED,
    "run_dir": NonEmpty("a folder"),
    "data.name": DataName(),
    "data.root": NonEmpty("a folder (or null)"),
    "data.val_size": Range(0, 10 ** 8),
    "data.train_subset": _POSITIVE,
    "data.test_subset": _POSITIVE,
    "data.split_seed": _SEED,
    "data.image_size": Range(8, 1024),
    "data.channels": Range(1, 3),
    "data.test_size": _POSITIVE,
    "data.cache_dir": NonEmpty("a folder (or null)"),
    "data.decode_workers": Range(1, 1024),
    "data.memory_limit_gb": Range(0, 10 ** 6),
    "data.synthetic_train": Range(1, 10 ** 7),
    "data.synthetic_test": Range(1, 10 ** 7),
    "data.synthetic_channels": Range(1, 64),
    "data.synthetic_size": Range(1, 1024),
    "data.synthetic_classes": Range(2, 100_000),
    "train.epochs": _EPOCHS,
    "train.batch_size": _POSITIVE,
    "train.lr": Range(0, 100, lo_open=True),
    "train.momentum": Range(0, 1, hi_open=True),
    "train.weight_decay": Range(0, 1, hi_open=True),
    "train.schedule": OneOf(SCHEDULES),
    "train.milestones": Milestones(),
    "train.gamma": Range(0, 1, lo_open=True),
    "train.warmup_epochs": Range(0, 100_000),
    "train.label_smoothing": Range(0, 1, hi_open=True),
    "train.budget": OneOf(BUDGETS),
    "train.max_budget_scale": Range(1, 100),
    "train.eval_batch_size": _POSITIVE,
    "train.source": TrainSource(),
    "train.function": TrainFunction(),
    "seed_method.name": SeedMethods(),
    "seed_method.budget": Range(0, 1, lo_open=True),
    "seed_method.metric": OneOf(METRICS),
    "latency.backend": OneOf(LATENCY_BACKENDS),
    "latency.batch_size": Range(1, 4096),
    "latency.threads": Range(1, 1024),
    "latency.warmup": Range(0, 100_000),
    "latency.repeats": Range(1, 100_000),
    "latency.table_dir": NonEmpty("a folder (or null)"),
    "latency.busy_spread": Range(0, 10, lo_open=True),
    "seed_method.base_epochs": _EPOCHS,
    "seed_method.base_checkpoint": NonEmpty("a state dict path (or null)"),
    "seed_method.samples": _POSITIVE,
    "seed_method.options": MethodOptions(),
    "search.backend": OneOf(SEARCH_BACKENDS),
    "search.n_trials": Range(1, 10 ** 6),
    "search.timeout": Range(0, None, lo_open=True),
    "search.sampler": OneOf(SEARCH_SAMPLERS),
    "search.early_stopping": OneOf(SEARCH_EARLY_STOPPING),
    "search.objective": OneOf(SEARCH_OBJECTIVES),
    "search.multiplier_low": Range(0, 1, lo_open=True),
    "search.multiplier_high": Range(1, 100),
    "search.tolerance": Range(0, 1, lo_open=True, hi_open=True),
    "search.storage": NonEmpty("a storage URL (or null)"),
    "search.study_name": NonEmpty("a study name (or null)"),
    "search.heartbeat_interval": Range(1, 3600),
    "search.grace_period": Range(1, 86_400),
    "search.final_seeds": Range(1, 1000),
    "search.finalists": Range(1, 1000),
    "search.final_epochs": _EPOCHS,
    "search.finetune_epochs": _EPOCHS,
    "search.best_weights": OneOf(BEST_WEIGHTS),
    "search.screening.epochs": _EPOCHS,
    "search.screening.random_widths": Range(0, 64),
    "search.screening.recal_batches": Range(1, 10_000),
    "search.screening.recal_batch_size": Range(1, 1 << 20),
    "search.screening.val_images": Range(1, 1 << 30),
    "search.screening.population": Range(0, MAX_POPULATION),
    "search.screening.promote": Range(1, 10_000),
    "search.screening.random_checks": Range(0, 10_000),
    "search.screening.score": OneOf(SCORES),
    "search.screening.strategy": OneOf(STRATEGIES),
    "search.screening.evolution_size": Range(2, MAX_POPULATION),
    "search.screening.tournament": Range(1, 10_000),
    "search.screening.mutation": Range(0, 1, lo_open=True),
    "search.ray.address": NonEmpty("'auto' or ray://HOST:PORT (or null)"),
    "search.rungs": Rungs(),
    "search.reduction_factor": Range(2, 100),
    "search.ray.gpus_per_trial": Range(0, 1024),
    "search.ray.cpus_per_trial": Range(0, 1024, lo_open=True),
    "search.ray.max_concurrent": Range(1, 100_000),
    "search.ray.dashboard_host": NonEmpty("a host name or address"),
    "search.ray.dashboard_port": Range(1, 65535),
    "search.ray.resources": Resources(),
}
# the most a synthetic data set may hold, in float32 values (1 GiB)
MAX_SYNTHETIC_VALUES = 2 ** 28


def leaf_fields(obj: Any = Config, where: str = "") -> dict[str, Any]:
    """Dotted key -> type of every non-dataclass field of a config class (or its value)."""
    out: dict[str, Any] = {}
    cls = obj if isinstance(obj, type) else type(obj)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = _join(where, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(leaf_fields(hints[f.name], key))
        else:
            out[key] = hints[f.name]
    return out


def _value(cfg: Config, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: Config) -> Config:
    """Every :data:`RULES` check, then the rules that tie fields together; returns ``cfg``."""
    for key, rule in RULES.items():
        rule.check(_value(cfg, key), key)
    d, t, s = cfg.data, cfg.train, cfg.search
    if d.channels not in (None, 1, 3):
        raise UserError(f"data.channels: {d.channels!r}; choose 1 (grayscale), 3 (RGB) or null "
                        f"(from the data)")
    if d.name == "synthetic":
        if d.val_size >= d.synthetic_train:
            raise UserError(f"data.val_size: {d.val_size} must be below data.synthetic_train "
                            f"({d.synthetic_train}) so that training images are left")
        values = (d.synthetic_train + d.synthetic_test) * d.synthetic_channels \
            * d.synthetic_size ** 2
        if values > MAX_SYNTHETIC_VALUES:
            raise UserError(f"data.synthetic_*: {values:,} values (images x channels x size^2) "
                            f"is more than the {MAX_SYNTHETIC_VALUES:,} allowed; use fewer or "
                            f"smaller images")
    if t.warmup_epochs > t.epochs:
        raise UserError(f"train.warmup_epochs: {t.warmup_epochs:g} is more than train.epochs "
                        f"({t.epochs}); must be in [0, {t.epochs}]")
    if t.function is not None and t.source != "data":
        raise UserError(f"train.function: {t.function} and train.source: {t.source} both "
                        f"replace the trainer; set one of them (train.source: data)")
    if s.grace_period <= s.heartbeat_interval:
        raise UserError(f"search.grace_period: {s.grace_period} s must be longer than "
                        f"search.heartbeat_interval ({s.heartbeat_interval} s), or live workers "
                        f"are taken for dead")
    if s.best_weights == "finetuned" and s.finetune_epochs is None:
        raise UserError("search.best_weights: 'finetuned' needs search.finetune_epochs (the "
                        "fine-tuned row's epochs); set it, or keep best_weights: scratch")
    if s.finetune_epochs is not None and t.source != "data":
        raise UserError(f"search.finetune_epochs: a results table ({t.source}) has no weights "
                        f"to cut and fine-tune; set it to null")
    if s.sampler == "cmaes" and s.objective == "multi":
        raise UserError("search.sampler: 'cmaes' cannot optimise two objectives; use nsga2, "
                        "tpe or random with search.objective multi")
    return cfg


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """A dataclass from a plain mapping: unknown keys and wrong types are one-line errors.

    A :class:`Config` is also :func:`validate` d. ``where`` is the dotted key of ``data``.
    """
    if not isinstance(data, dict):
        raise UserError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise UserError(f"{_join(where, key)}: unknown key; allowed keys: {', '.join(names)}")
    kwargs = {k: _convert(v, hints[k], _join(where, k)) for k, v in data.items()}
    obj = cls(**kwargs)
    return validate(obj) if cls is Config else obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` laid on it, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k),
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
    data = deep_merge(data, {k: v for k, v in extra.items() if v is not None})
    data = deep_merge(data, parse_set(overrides))
    return from_dict(Config, data)


def save_config(cfg: Config, path: str | Path) -> Path:
    return write_yaml(path, to_dict(cfg))
