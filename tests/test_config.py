"""Config validation: one rule per field, checked when a config is loaded, before any training.

The rules table (:data:`nas_prune.config.RULES`) is the registry these tests run over: every
field must have a rule, every rule rejects the values just outside its range with a one-line
message naming the dotted key and the value, and accepts its closed ends.
"""

from __future__ import annotations

import math
import typing

import pytest
import torch

from nas_prune import config as C
from nas_prune.config import (
    RULES,
    Config,
    Device,
    NonEmpty,
    OneOf,
    Range,
    from_dict,
    leaf_fields,
    load_config,
    to_dict,
    validate,
)
from nas_prune.data import DATASETS
from nas_prune.errors import UserError
from nas_prune.train import resolve_device


def _base(tp) -> type:
    """int for ``int | None``, tuple for ``tuple[float, ...]``..."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args and typing.get_origin(tp) is not tuple and typing.get_origin(tp) is not dict:
        return args[0]
    return typing.get_origin(tp) or tp


def _as(tp: type, x: float):
    return int(x) if tp is int else float(x)


def bad_values(key: str, tp) -> list:
    """Values of the right type that the rule of ``key`` must reject."""
    rule, tp = RULES[key], _base(tp)
    if isinstance(rule, Range):
        out = []
        if rule.lo is not None:
            out.append(_as(tp, rule.lo) if rule.lo_open else _as(tp, rule.lo - 1))
        if rule.hi is not None:
            out.append(_as(tp, rule.hi) if rule.hi_open else _as(tp, rule.hi + 1))
        if tp is float:
            out += [math.nan, math.inf, -math.inf]
        return out
    if isinstance(rule, OneOf):
        choices = rule.choices
        return ["nope", "", choices[0].upper() + "x"]
    if isinstance(rule, NonEmpty):
        return ["", "   "]
    if isinstance(rule, Device):
        return ["tpu", "cuda:banana", "cuda:-1", "meta", "CPU", ""]
    return {"train.milestones": [(0.75, 0.5), (0.0, 0.5), (0.5, 1.5), (math.nan,)],
            "data.name": ["nope", "", "torchvision:", "torchvision:not a class", "IMAGEFOLDERx"],
            "train.source": ["", "table", "table:", "table:  ", "tabel:x.json", "DATA"],
            "train.function": ["", "fit", ":fit", "mypkg.train:", "my pkg:fit"],
            "seed_method.name": ["nope", "", " , ", "slimming,nope"],
            "seed_method.options": [{"nope": {}}, {"l1norm": {"no_such_option": 1}}],
            "search.rungs": [[{"epochs": 0}], [{"epochs": 1, "seeds": 0}],
                             [{"epochs": 3}, {"epochs": 1}], [{"epochs": 10 ** 6}]],
            "search.ray.resources": [{"CPU": 1}, {"gpu": 1}, {"big": 0}, {"big": -1},
                                     {"big": math.nan}, {" ": 1}]}[key]


def good_values(key: str, tp) -> list:
    """Values at the closed ends of the rule (the accepted range is inclusive there)."""
    rule, tp = RULES[key], _base(tp)
    if isinstance(rule, Range):
        return [_as(tp, v) for v, open_ in ((rule.lo, rule.lo_open), (rule.hi, rule.hi_open))
                if v is not None and not open_ and not (key == "train.warmup_epochs" and v > 0)
                # ends that break a cross-field rule (grace_period > heartbeat_interval)
                and (key, v) not in (("search.heartbeat_interval", 3600),
                                     ("search.grace_period", 1))]
    if isinstance(rule, OneOf):  # every name, the search's registered ones (cmaes too)
        return list(rule.choices)
    if isinstance(rule, Device):
        return ["auto", "cpu", "cuda", "cuda:1", "mps", "cpu:0"]
    if key == "data.name":
        return [*DATASETS, "torchvision:MNIST", "torchvision:SVHN"]
    if key == "train.source":  # the table is read where it is used, against the space
        return ["data", "table:results.json", "table:/no/such/file.json"]
    if key == "train.function":  # imported where a search starts (nas_prune.trainfn)
        return ["mypkg.train:fit", "no_such_pkg:Trainer.fit"]
    return []


FIELDS = leaf_fields()
BAD = [(k, v) for k, tp in FIELDS.items() if k in RULES for v in bad_values(k, tp)]
GOOD = [(k, v) for k, tp in FIELDS.items() if k in RULES for v in good_values(k, tp)]


def _nest(key: str, value) -> dict:
    out: dict = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def test_every_field_has_a_rule():
    unchecked = [k for k, tp in FIELDS.items() if k not in RULES and tp is not bool]
    assert not unchecked, f"fields without a rule in nas_prune.config.RULES: {unchecked}"
    assert set(RULES) <= set(FIELDS), "rules for fields that do not exist"


@pytest.mark.parametrize("key, value", BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_out_of_range_values_are_one_line_errors_naming_key_and_value(key, value):
    with pytest.raises(UserError) as info:
        from_dict(Config, _nest(key, value))
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{key}") or f"{key}:" in message, message
    if isinstance(RULES[key], Range):
        assert repr(value) in message and "must be" in message, message


@pytest.mark.parametrize("key, value", GOOD, ids=[f"{k}={v!r}" for k, v in GOOD])
def test_the_closed_ends_of_each_range_are_accepted(key, value):
    # 100 validation images leave training images in any data set (synthetic: 2000 by default);
    # best_weights: finetuned needs the fine-tuned row (search.finetune_epochs)
    base = {"data": {"val_size": 100}}
    if key == "search.best_weights":
        base["search"] = {"finetune_epochs": 1}
    cfg = from_dict(Config, C.deep_merge(base, _nest(key, value)))
    got = cfg
    for part in key.split("."):
        got = getattr(got, part)
    assert got == value


def test_messages_state_the_accepted_range():
    cases = {
        "train.lr=-1": "train.lr: -1.0 is out of range; must be in (0, 100]",
        "train.momentum=1": "train.momentum: 1.0 is out of range; must be in [0, 1)",
        "seed_method.budget=1.5": "seed_method.budget: 1.5 is out of range; must be in (0, 1]",
        "search.tolerance=0": "search.tolerance: 0.0 is out of range; must be in (0, 1)",
        "search.timeout=0": "search.timeout: 0.0 is out of range; must be > 0",
        "train.schedule=linear": "train.schedule: 'linear'; choose one of cosine, step",
        "search.sampler=grid": "search.sampler: 'grid'; choose one of tpe",
        "device=cuda:banana": "device: 'cuda:banana' is not a device",
        "data.train_subset=0": "data.train_subset: 0 is out of range; must be in [1, ",
    }
    for override, fragment in cases.items():
        with pytest.raises(UserError) as info:
            load_config(None, [override])
        assert fragment in str(info.value)


@pytest.mark.parametrize("overrides, fragment", [
    (["data.name=synthetic", "data.val_size=2000", "data.synthetic_train=2000"],
     "data.val_size: 2000 must be below data.synthetic_train"),
    (["data.name=synthetic", "data.val_size=10", "data.synthetic_train=1000000",
      "data.synthetic_size=1024"], "data.synthetic_*"),
    (["train.epochs=2", "train.warmup_epochs=3"], "train.warmup_epochs: 3 is more than"),
    (["search.objective=multi", "search.sampler=cmaes"], "search.sampler: 'cmaes' cannot"),
])
def test_cross_field_rules(overrides, fragment):
    with pytest.raises(UserError, match=None) as info:
        load_config(None, overrides)
    assert fragment in str(info.value)


def test_finalists_default_to_three_and_a_multi_objective_search_ignores_them():
    assert load_config(None, []).search.finalists == 3
    assert load_config(None, ["search.objective=multi"]).search.finalists == 3


def test_shipped_configs_are_valid():
    for name in sorted(p.stem for p in C.CONFIGS_DIR.glob("*.yaml")):
        cfg = load_config(name)
        assert validate(cfg) is cfg


def test_wrong_types_and_unknown_keys_name_the_dotted_key():
    for override, fragment in [("train.lr=fast", "train.lr: expected float, got 'fast'"),
                               ("search.n_trails=3", "search.n_trails: unknown key"),
                               ("train=5", "train: expected a mapping, got 5"),
                               ("search.ray=[1]", "search.ray: expected a mapping"),
                               ("train.epochs=2.5", "train.epochs: expected int"),
                               ("data.download=yes please", "data.download: expected bool")]:
        with pytest.raises(UserError) as info:
            load_config(None, [override])
        assert fragment in str(info.value)
    with pytest.raises(UserError, match="config: expected a mapping"):
        from_dict(Config, [1, 2])


def test_a_stored_config_is_validated_too():
    """``setup.json`` (workers, Ray trials, export) rebuilds its config with ``from_dict``."""
    data = to_dict(load_config())
    assert from_dict(Config, data) == load_config()
    data["train"]["label_smoothing"] = 2.0
    with pytest.raises(UserError, match="train.label_smoothing"):
        from_dict(Config, data)


def test_search_enums_are_the_registries():
    """The names the config lists for the search (it imports nothing from nas_prune.search) are
    exactly those its registries hold: a registered backend, sampler or rule is accepted."""
    from nas_prune.search.backends import BACKENDS
    from nas_prune.search.samplers import EARLY_STOPPING, SAMPLERS
    from nas_prune.search.space import OBJECTIVES

    assert RULES["search.objective"].choices == tuple(OBJECTIVES)
    for key, registry in [("search.backend", BACKENDS), ("search.sampler", SAMPLERS),
                          ("search.early_stopping", EARLY_STOPPING)]:
        assert RULES[key].choices == tuple(registry)
        with pytest.raises(UserError) as info:
            from_dict(Config, _nest(key, "nope"))
        assert all(name in str(info.value) for name in registry)


def test_resolve_device_names_the_problem():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    for device, fragment in [("cuda:banana", "is not a device"), ("tpu", "is not a device"),
                             ("meta", "is not supported"), ("cuda:99", "cuda")]:
        with pytest.raises(UserError, match=fragment):
            resolve_device(device)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")
