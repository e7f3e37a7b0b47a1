"""Base networks for seed methods: train with the method's regulariser, load, or reuse a cache.

A trained base is cached under ``cache_dir`` keyed by everything that determines it (space,
regulariser, data and training config, epochs, seed, and who trained it), so a second proposal
does not retrain.

With ``train.function`` (:mod:`nas_prune.trainfn`) the user's function trains the base of a
method that needs only trained weights (l1norm, thinet, regression, autopruner: the plain
family model), for ``seed_method.base_epochs`` epochs with the config's random seed; a method
whose base needs a regulariser while it trains (``SeedMethod.builtin_base``: slimming) keeps
nas-prune's trainer. The base's info (``base_metrics``, ``RUN/bases/*.json``) says which
trained it (``trainer``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import load_state_dict, read_json, save_state_dict, write_json
from ..budget import check_budget
from ..data import DataConfig, Splits
from ..errors import UserError
from ..train import TrainConfig, TrainResult, train
from ..trainfn import TrainFunctionError, run_function
from ..widths import SearchSpace
from ._base import Proposal, SeedContext, SeedMethod


@dataclass
class ProposalRun:
    """A proposal plus where its base network came from and how long each part took."""

    proposal: Proposal
    base_source: str  # trained | cached | checkpoint | none
    base_train_s: float
    propose_s: float
    base_metrics: dict[str, Any] = field(default_factory=dict)
    #: who trained the base: "builtin", "builtin (why)" when train.function is set but the
    #: method needs nas-prune's trainer, or "train.function PATH"; None without a trained base
    base_trainer: str | None = None


BUILTIN = "builtin"


def base_function(method: SeedMethod, train_cfg: TrainConfig) -> str | None:
    """The ``train.function`` that trains ``method``'s base network, or None (nas-prune's
    trainer: no function set, or the method needs its regulariser while training)."""
    return None if method.builtin_base else train_cfg.function


def trainer_label(method: SeedMethod, train_cfg: TrainConfig) -> str:
    """Who trains ``method``'s base under ``train_cfg``, in words (for provenance)."""
    fn = base_function(method, train_cfg)
    if fn is not None:
        return f"train.function {fn}"
    if train_cfg.function is not None:
        return f"{BUILTIN} ({method.builtin_base})"
    return BUILTIN


def base_cache_key(method: SeedMethod, space: SearchSpace, data_cfg: DataConfig | None,
                   train_cfg: TrainConfig, epochs: int, seed: int) -> str:
    fam = space.family
    content = {
        "family": fam.name, "args": fam.arguments(), "input": fam.input_shape.to_dict(),
        "base_widths": space.base_widths(), "regulariser": method.base_key(space),
        "data": dataclasses.asdict(data_cfg) if data_cfg else None,
        # the built-in trainer's base is keyed as before train.function existed
        "train": {k: v for k, v in dataclasses.asdict(train_cfg).items()
                  if k not in ("function", "function_check")},
        "epochs": epochs, "seed": seed,
    }
    if data_cfg is not None and data_cfg.name == "tensors" and data_cfg.root \
            and Path(data_cfg.root).expanduser().is_file():
        # a tensors file rewritten in place under the same path is other data
        from ..tensordata import file_sha256

        content["data_sha256"] = file_sha256(Path(data_cfg.root).expanduser())
    fn = base_function(method, train_cfg)
    if fn is not None:  # the user's function trained it: never shared with the built-in's
        content["trainer"] = f"train.function {fn}"
    blob = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_state(model: nn.Module, path: str | Path) -> None:
    """Load a state dict saved by torch.save (``weights_only=True``); a mismatch is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"base checkpoint {path}: no such file; check --base-checkpoint")
    state = load_state_dict(path, what="base checkpoint")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UserError(f"base checkpoint {path}: does not fit the base network of this space "
                        f"({first[:160]})") from None


def trained_base(method: SeedMethod, ctx: SeedContext, *, epochs: int,
                 checkpoint: str | Path | None = None, cache_dir: str | Path | None = None,
                 data_cfg: DataConfig | None = None,
                 progress: bool | None = None) -> tuple[nn.Module, str, float, dict]:
    """The method's base network, trained (or loaded), on ``ctx.device`` in eval mode.

    Trained by ``ctx.train.function`` where it trains this method's base
    (:func:`base_function`), else by nas-prune's trainer with the method's regulariser.
    Returns (model, source, seconds spent training, training metrics, with ``trainer``).
    """
    model = method.base_model(ctx.space)
    if checkpoint is not None:
        load_state(model, checkpoint)
        return model.to(ctx.device).eval(), "checkpoint", 0.0, {}
    path = None
    if cache_dir is not None:
        key = base_cache_key(method, ctx.space, data_cfg, ctx.train, epochs, ctx.seed)
        path = Path(cache_dir) / f"base-{method.base_key(ctx.space)}-{key}.pt"
        if path.is_file():
            model.load_state_dict(load_state_dict(path, what="cached base network"))
            info = read_json(path.with_suffix(".json"), what="cached base network info") or {}
            return model.to(ctx.device).eval(), "cached", 0.0, info
    torch.manual_seed(ctx.seed)
    model = method.base_model(ctx.space)  # rebuilt under the seed: same seed, same base
    fn = base_function(method, ctx.train)
    t0 = time.perf_counter()
    if fn is not None:
        model = model.to(ctx.device)
        result = _by_function(fn, method, model, ctx, epochs)
    else:
        result = train(model, _data_on(ctx.data, ctx.device), ctx.train, epochs=epochs,
                       seed=ctx.seed, device=ctx.device,
                       hooks=method.base_hooks(model, ctx.space), progress=progress,
                       desc=f"base ({method.base_key(ctx.space)})")
    seconds = time.perf_counter() - t0
    if result.status == "diverged":
        raise UserError(f"base network for {method.name} diverged ({result.reason}); lower "
                        f"train.lr or the method's regulariser")
    info = {"val_acc": result.val_acc_final, "epochs": epochs, "train_s": round(seconds, 2),
            "trainer": f"train.function {fn}" if fn is not None else BUILTIN}
    if path is not None:
        save_state_dict(model, path)
        write_json(path.with_suffix(".json"), info)
    return model.to(ctx.device).eval(), "trained", seconds, info


def _by_function(fn: str, method: SeedMethod, model: nn.Module, ctx: SeedContext,
                 epochs: int) -> TrainResult:
    """The base network trained by the user's function; its failure is a one-line UserError
    (the search cannot start without the proposal)."""
    try:
        return run_function(fn, model, epochs=epochs, seed=ctx.seed, device=ctx.device)
    except TrainFunctionError as exc:
        raise UserError(f"train.function {fn} failed training the base network of "
                        f"{method.name} (seed_method.base_epochs {epochs}): {exc.reason}"
                        ) from None


def _data_on(data: Splits, device: torch.device) -> Splits:
    return data if data.device == device else data.to(device)


def propose(method: SeedMethod, ctx: SeedContext, budget: float, *, base_epochs: int,
            checkpoint: str | Path | None = None, cache_dir: str | Path | None = None,
            data_cfg: DataConfig | None = None, progress: bool | None = None) -> ProposalRun:
    """Get the base network (unless the method needs none) and ask for a proposal."""
    check_budget(ctx.space, budget, ctx.metric)  # fail before any training
    model, source, base_s, info = None, "none", 0.0, {}
    if method.needs_base:
        model, source, base_s, info = trained_base(method, ctx, epochs=base_epochs,
                                                   checkpoint=checkpoint, cache_dir=cache_dir,
                                                   data_cfg=data_cfg, progress=progress)
    t0 = time.perf_counter()
    proposal = method.propose(model, ctx, budget)
    if ctx.metric == "latency":
        proposal = _measured(method, model, ctx, budget, proposal)
    trainer = None
    if source in ("trained", "cached"):  # a cache written before "trainer" was the built-in's
        trainer = info.get("trainer", BUILTIN)
        if trainer == BUILTIN:
            trainer = trainer_label(method, ctx.train)
    return ProposalRun(proposal, source, base_s, time.perf_counter() - t0, info, trainer)


#: corrections of a latency proposal whose measured ratio misses the budget's band
LATENCY_CORRECTIONS = 3


def _measured(method: SeedMethod, model: nn.Module | None, ctx: SeedContext, budget: float,
              proposal: Proposal) -> Proposal:
    """A proposal under a latency budget, measured as a ratio to the base network (interleaved).

    The budget was fitted on predicted latency. Where the measured ratio misses the budget by
    more than the band (:meth:`~nas_prune.latency.LatencyPredictor.band`, or half the ratio's
    own interquartile range, whichever is wider), the method proposes again for a corrected
    budget (:func:`_corrected`), at most :data:`LATENCY_CORRECTIONS` times; the
    proposal whose measured ratio lands closest is kept. The measured ratio, its source and
    spread, the band and whether it was met go into ``proposal.diagnostics["latency"]``.
    Measurements are kept in the latency table, so the same machine proposes the same again.
    """
    lat = ctx.space.latency
    asked, tried = budget, []
    for attempt in range(LATENCY_CORRECTIONS + 1):
        r, source = lat.measure_ratio(proposal.widths)
        band = max(lat.band() * budget, (r.high - r.low) / 2)
        tried.append((abs(r.value - budget), proposal, r, source, asked, band))
        if abs(r.value - budget) <= band or attempt == LATENCY_CORRECTIONS:
            break
        asked = _corrected(budget, [(t[4], t[2].value) for t in tried])
        try:
            proposal = method.propose(model, ctx, asked)
        except UserError:  # the corrected budget is off the grid or below the smallest net
            if all(t[2].value > budget + t[5] for t in tried):
                raise  # and every network measured above the budget: it cannot be met
            break
    miss, proposal, r, source, asked, band = min(tried, key=lambda t: t[0])
    proposal.diagnostics["latency"] = {
        "measured": r.to_dict(), "source": source, "band": round(band, 6),
        "within_band": miss <= band, "predicted_ratio": round(proposal.ratio, 6),
        "fitted_to": round(asked, 6), "corrections": len(tried) - 1,
        "busy": lat.busy or r.busy, "spread": round(lat.spread, 5),
        "calibration": lat.calibration_source,
        "tried": [{"fitted_to": round(t[4], 6), "measured": round(t[2].value, 5)}
                  for t in tried]}
    proposal.budget = budget
    return proposal


def _corrected(budget: float, tried: list[tuple[float, float]]) -> float:
    """The budget to ask the predictor for next, from ``(asked, measured ratio)`` so far: once
    one measured below and one above the budget, interpolated between the closest two on each
    side (the measured ratio is not proportional to the prediction: channel counts that the
    hardware handles worse cost more than the table says); before that, the last asked
    budget scaled by budget / measured."""
    below = [t for t in tried if t[1] < budget]
    above = [t for t in tried if t[1] > budget]
    if below and above:
        (a0, m0), (a1, m1) = max(below, key=lambda t: t[1]), min(above, key=lambda t: t[1])
        if m1 > m0:
            return a0 + (budget - m0) * (a1 - a0) / (m1 - m0)
    asked, measured = tried[-1]
    return min(1.0, asked * budget / measured)
