"""Train an architecture from scratch under a config: the unit of work of every trial.

Resolves the epoch budget (Scratch-E / Scratch-B against the space's base FLOPs), checks that the
data set fits the architecture's input, builds the model under the seed and trains it. Data sets
are loaded once per process and device (:func:`data_for`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch

from ._io import save_state_dict
from .config import Config, save_config, to_dict
from .data import DataConfig, Splits, load_data
from .errors import UserError
from .table import DATA, lookup_train
from .train import TrainResult, budget_epochs, resolve_device, train
from .trainfn import run_function
from .widths import (
    ArchSpec,
    SearchSpace,
    input_size_of,
    space_source,
    takes_input_from_data,
    with_input,
)


@functools.lru_cache(maxsize=4)
def _cached_data(cfg: DataConfig, device: str, size: int | None) -> Splits:
    return load_data(cfg, device=device, size=size)


def data_for(cfg: DataConfig, device: torch.device | str, spec: ArchSpec | None = None) -> Splits:
    """The data set on ``device`` (loaded once per process); checked against the architecture.

    Decoded data (image folders, torchvision data sets) take the architecture's input size
    unless ``data.image_size`` sets one.
    """
    size = spec.input.size if spec is not None and cfg.decoded and not cfg.image_size else None
    data = _cached_data(cfg, str(device), size)
    if spec is not None and data.input_shape != spec.input:
        what = f"space {spec.space}" if spec.space else "the architecture"
        raise UserError(f"data.name: {cfg.name} gives {data.input_shape.to_dict()} but {what} "
                        f"expects {spec.input.to_dict()}; choose the matching data set or search "
                        f"space (or a space with input: from_data)")
    return data


def resolve_space(cfg: Config, device: torch.device | str | None = None
                  ) -> tuple[str, dict[str, Any], SearchSpace]:
    """(name, raw mapping, space) of ``cfg.space``; a space whose input comes from the data
    (``input: from_data``) gets the channels, size and classes of ``cfg.data``."""
    name, raw = space_source(cfg.space)
    if takes_input_from_data(raw):
        size = input_size_of(raw)
        if cfg.data.decoded:
            size = cfg.data.image_size or size
            if size is None:
                raise UserError(f"data.image_size: space {name} takes its input from the data "
                                f"and sets no input.size; set data.image_size (e.g. 32)")
        dev = str(resolve_device(device or cfg.device))
        data = _cached_data(cfg.data, dev, size if cfg.data.decoded else None)
        if not cfg.data.decoded and size is not None and data.input_shape.size != size:
            raise UserError(f"search space {name}: input.size {size} but data.name "
                            f"{cfg.data.name} has {data.input_shape.size}-pixel images; drop "
                            f"input.size or use an image folder")
        raw = with_input(raw, data.input_shape)
    space = SearchSpace.from_dict(raw, name=name)
    if cfg.seed_method.metric == "latency":
        space = space.with_latency(cfg.latency)
    return name, raw, space


def time_budget(cfg: Config, nanoseconds: int) -> Config:
    """``cfg`` with an absolute latency budget turned into a ratio of the base network's
    predicted latency (one-line error when it is above it)."""
    _, _, space = resolve_space(cfg)
    base = space.base_cost("latency")
    ratio = nanoseconds / base
    if not 0 < ratio <= 1:
        raise UserError(f"--budget: {nanoseconds / 1e6:g}ms is above the base network's "
                        f"latency ({base / 1e6:.3f}ms on {cfg.latency.backend}); give less or a "
                        f"ratio")
    return dataclasses.replace(cfg, seed_method=dataclasses.replace(cfg.seed_method,
                                                                    budget=ratio))


def base_flops_of(spec: ArchSpec) -> int | None:
    """FLOPs of the full-width network the architecture was cut from (None when unknown)."""
    if spec.space:
        try:
            space = SearchSpace.load(spec.space)
        except UserError:
            space = None
        if space is not None and space.family.arguments() == spec.family_args:
            return space.base_cost("flops")
    return int(spec.provenance.get("base_flops", 0)) or None


def epochs_for(spec: ArchSpec, cfg: Config, epochs: int | None = None) -> int:
    """Epochs for this architecture under the config's budget rule."""
    tc = cfg.train if epochs is None else dataclasses.replace(cfg.train, epochs=int(epochs))
    base = base_flops_of(spec)
    if base is None:
        return tc.epochs
    return budget_epochs(tc, base_flops=base, flops=spec.flops)


def train_spec(spec: ArchSpec, cfg: Config, *, epochs: int | None = None, seed: int | None = None,
               device: torch.device | str | None = None, evaluate_test: bool = False,
               on_epoch=None, out_dir: str | Path | None = None, progress: bool | None = False,
               exact_epochs: bool = False, model: torch.nn.Module | None = None
               ) -> tuple[TrainResult, ArchSpec]:
    """Build ``spec`` under ``seed`` and train it from scratch; optionally save model + YAML.

    ``epochs`` are base epochs that the budget rule scales (``exact_epochs``: used as given).
    ``model``: train this network of ``spec``'s widths in place instead (weights cut from a
    trained one: the fine-tuned final row), with the same recipe and seed.
    """
    seed = cfg.random_seed if seed is None else seed
    n_epochs = int(epochs) if exact_epochs and epochs else epochs_for(spec, cfg, epochs)
    if cfg.train.source != DATA:
        if model is not None:
            raise UserError("train.source: a results table cannot train given weights; use "
                            "train.source: data")
        return _look_up(spec, cfg, epochs=n_epochs, seed=seed, evaluate_test=evaluate_test,
                        on_epoch=on_epoch, out_dir=out_dir)
    device = resolve_device(device or cfg.device)
    if cfg.train.function is not None:
        return _user_train(spec, cfg, epochs=n_epochs, seed=seed, device=device,
                           evaluate_test=evaluate_test, on_epoch=on_epoch, out_dir=out_dir,
                           model=model)
    data = data_for(cfg.data, device, spec)
    torch.manual_seed(seed)
    if model is None:
        model = spec.build()
    result = train(model, data, cfg.train, epochs=n_epochs, seed=seed, device=device,
                   on_epoch=on_epoch, evaluate_test=evaluate_test, progress=progress,
                   desc=f"train {spec.flops / 1e6:.1f}M FLOPs")
    metrics: dict[str, Any] = result.metrics()
    metrics.update({"seed": seed, "device": str(device), "budget_rule": cfg.train.budget})
    out = spec.with_metrics(**metrics)
    out.provenance.setdefault("train_config", to_dict(cfg.train))
    out.provenance.setdefault("data", data.provenance())
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_state_dict(model, out_dir / "model.pt")
        out.save(out_dir / "model.yaml")
        save_config(cfg, out_dir / "config.yaml")
    return result, out


def _user_train(spec: ArchSpec, cfg: Config, *, epochs: int, seed: int, device: torch.device,
                evaluate_test: bool, on_epoch, out_dir: str | Path | None,
                model: torch.nn.Module | None = None) -> tuple[TrainResult, ArchSpec]:
    """:func:`train_spec` with ``train.function``: the user's function trains the model
    (:func:`nas_prune.trainfn.run_function`); its data are its own, so nas-prune loads none."""
    torch.manual_seed(seed)
    model = (spec.build() if model is None else model).to(device)
    result = run_function(cfg.train.function, model, epochs=epochs, seed=seed, device=device,
                          on_epoch=on_epoch, evaluate_test=evaluate_test)
    out = spec.with_metrics(**result.metrics(), seed=seed, device=str(device),
                            budget_rule=cfg.train.budget)
    out.provenance.setdefault("train_config", to_dict(cfg.train))
    out.provenance.setdefault("train_function", cfg.train.function)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_state_dict(model, out_dir / "model.pt")
        out.save(out_dir / "model.yaml")
        save_config(cfg, out_dir / "config.yaml")
    return result, out


def _look_up(spec: ArchSpec, cfg: Config, *, epochs: int, seed: int, evaluate_test: bool,
             on_epoch, out_dir: str | Path | None) -> tuple[TrainResult, ArchSpec]:
    """:func:`train_spec` with ``train.source: table:PATH``: no data, no model, no weights;
    the accuracy comes from the table (:func:`nas_prune.table.lookup_train`)."""
    result = lookup_train(spec, cfg, epochs=epochs, seed=seed, evaluate_test=evaluate_test,
                          on_epoch=on_epoch)
    out = spec.with_metrics(**result.metrics(), seed=seed, device="table",
                            budget_rule=cfg.train.budget)
    out.provenance.setdefault("train_config", to_dict(cfg.train))
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        out.save(out_dir / "model.yaml")
        save_config(cfg, out_dir / "config.yaml")
    return result, out
