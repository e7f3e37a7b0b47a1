"""The from-scratch trainer and the budget rules (Scratch-E, Scratch-B).

Everything stays on the training device: the data set is a tensor there, batches are slices of it
and augmentation is batched (see :mod:`nas_prune.data`). SGD with (Nesterov) momentum, weight
decay, a cosine or step schedule with linear warm-up, optional label smoothing; bf16 autocast and
channels_last on CUDA. A NaN/inf loss ends the run with status ``diverged`` rather than an
exception. ``on_epoch`` lets a search stop a weak run early (status ``stopped``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, Splits, augment, batches
from .errors import UserError

BUDGETS = ("scratch-e", "scratch-b")
SCHEDULES = ("cosine", "step")


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. ``epochs`` are the base epochs (Scratch-E); see :func:`budget_epochs`."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule: fractions of training
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    budget: str = "scratch-b"
    max_budget_scale: float = 2.0
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    eval_batch_size: int = 1000
    # "data": train for real; "table:PATH": look each training up in a results table of a width
    # benchmark instead (nas_prune.table): a search in seconds, against known ground truth
    source: str = "data"
    # your own training loop, "package.module:function" (nas_prune.trainfn): every training of
    # a search calls it instead of the built-in trainer, whose recipe keys above it then ignores;
    # it also trains the base networks of l1norm, thinet, regression and autopruner (slimming's
    # needs its sparsity regulariser and stays with the built-in trainer)
    function: str | None = None
    # with train.function: first train the space's narrowest network for one epoch with it, so
    # a function that fails stops the search at once instead of failing every trial (its time
    # and val_acc go to search.json); false skips that check (for a loop whose epoch is costly)
    function_check: bool = True

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise UserError(f"train.schedule: {self.schedule!r}; choose one of "
                            f"{', '.join(SCHEDULES)}")
        if self.budget not in BUDGETS:
            raise UserError(f"train.budget: {self.budget!r}; choose one of {', '.join(BUDGETS)}")
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise UserError(f"train.{key}: {getattr(self, key)!r} is out of range; "
                                f"must be >= 1")


def budget_epochs(cfg: TrainConfig, *, base_flops: int, flops: int) -> int:
    """Scratch-E: the base epochs. Scratch-B: epochs x base/candidate FLOPs, capped (2x).

    Liu et al. truncate (``int(160 * ratio)``); nas-prune rounds to the nearest epoch instead, so
    that at short schedules a network at 50.4% of the FLOPs does not lose a whole epoch against
    one at 49.9% (with 2 base epochs truncation gives 3 epochs against 4).
    """
    if cfg.budget == "scratch-e" or flops <= 0:
        return cfg.epochs
    scale = min(cfg.max_budget_scale, max(1.0, base_flops / flops))
    return max(cfg.epochs, int(cfg.epochs * scale + 0.5))


@dataclass
class TrainResult:
    status: str  # ok | diverged | stopped
    epochs_planned: int
    epochs_run: int = 0
    train_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    val_acc_final: float | None = None
    test_acc: float | None = None
    wall_time: float = 0.0
    images_per_s: float = 0.0
    reason: str = ""

    def metrics(self) -> dict[str, Any]:
        return asdict(self)


class TrainHooks:
    """Extension points for regularised training (seed methods' base networks). No-ops here."""

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """Added to the task loss before backward."""
        return None

    def after_backward(self, model: nn.Module, step: int) -> None:
        """Called after backward, before the optimizer step (e.g. a subgradient on BN gammas)."""

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        """Called after every epoch."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (CUDA when there is one), or a device this machine has; else a UserError."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"device: {device!r} is not a device; choose auto, cpu, cuda, cuda:N "
                        f"or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device: {device} asked for but CUDA is not available; use 'cpu' "
                            f"or 'auto'")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise UserError(f"device: {device} asked for but this machine has {n} CUDA "
                            f"device(s): cuda:0 to cuda:{n - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"device: {device} asked for but MPS is not available; use 'cpu' "
                            f"or 'auto'")
    elif dev.type != "cpu":
        raise UserError(f"device: {device!r} is not supported; choose auto, cpu, cuda, cuda:N "
                        f"or mps")
    return dev


def lr_lambda(cfg: TrainConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "cosine":
            t = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
        frac = step / max(1, total_steps)
        return cfg.gamma ** sum(frac >= m for m in cfg.milestones)

    return factor


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def _autocast(device: torch.device, cfg: TrainConfig):
    enabled = cfg.amp and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, cfg: TrainConfig | None = None) -> float:
    """Top-1 accuracy of ``model`` on an on-device split (eval mode, restored afterwards)."""
    cfg = cfg or TrainConfig()
    device = split.device
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    cl = cfg.channels_last and device.type == "cuda"
    for x, y in batches(split, cfg.eval_batch_size, shuffle=False):
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, cfg):
            correct += (model(x).argmax(1) == y).sum()
    model.train(was_training)
    return float(correct.item()) / max(1, len(split))


def _progress(total: int, enabled: bool | None, desc: str):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, unit="batch")


def train(model: nn.Module, data: Splits, cfg: TrainConfig, *, epochs: int | None = None,
          seed: int = 0, device: torch.device | str | None = None,
          on_epoch: Callable[[int, float, float], bool] | None = None,
          hooks: TrainHooks | None = None, evaluate_test: bool = False,
          validate: bool = True, progress: bool | None = None, desc: str = "train") -> TrainResult:
    """Train ``model`` in place on ``data.train``; score on ``data.val`` each epoch.

    ``on_epoch(epoch, val_acc, train_loss)`` returning True stops the run early. The model is
    moved to ``device`` (default: the data's device). Same seed, same device -> same result.
    """
    device = resolve_device(device) if device is not None else data.device
    if data.device != device:
        data = data.to(device)
    epochs = cfg.epochs if epochs is None else int(epochs)
    hooks = hooks or TrainHooks()
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    cl = cfg.channels_last and device.type == "cuda"
    model.to(device)
    if cl:
        model.to(memory_format=torch.channels_last)
    model.train()
    opt = make_optimizer(model, cfg)
    n = len(data.train)
    if n == 0:
        raise UserError("data: the training split is empty; raise data.train_subset or lower "
                        "data.val_size")
    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps_per_epoch * epochs,
                                                             steps_per_epoch))
    result = TrainResult(status="ok", epochs_planned=epochs)
    bar = _progress(steps_per_epoch * epochs, progress, desc)
    t0, seen, step = time.perf_counter(), 0, 0
    try:
        for epoch in range(epochs):
            loss_sum = torch.zeros((), device=device)
            total_sum = torch.zeros((), device=device)
            for x, y in batches(data.train, bs, shuffle=True, drop_last=True, generator=gen):
                if data.crop_padding or data.hflip:
                    x = augment(x, padding=data.crop_padding, hflip=data.hflip, generator=gen)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(device, cfg):
                    out = model(x)
                    loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)
                    extra = hooks.extra_loss(model, step)
                    total = loss if extra is None else loss + extra
                opt.zero_grad(set_to_none=True)
                total.backward()
                hooks.after_backward(model, step)
                opt.step()
                sched.step()
                loss_sum += loss.detach()
                total_sum += total.detach()
                seen += int(y.shape[0])
                step += 1
                if bar is not None:
                    bar.update(1)
            mean_loss = float(loss_sum.item()) / max(1, steps_per_epoch)
            result.epochs_run = epoch + 1
            result.train_loss.append(mean_loss)
            if not (math.isfinite(mean_loss) and math.isfinite(float(total_sum.item()))):
                result.status, result.reason = "diverged", f"non-finite loss in epoch {epoch + 1}"
                break
            hooks.on_epoch_end(model, epoch)
            if validate and len(data.val):
                acc = evaluate(model, data.val, cfg)
                result.val_acc.append(acc)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.3f}", val=f"{acc:.3f}")
                if on_epoch is not None and on_epoch(epoch, acc, mean_loss):
                    result.status = "stopped"
                    result.reason = f"stopped early after epoch {epoch + 1}"
                    break
    finally:
        if bar is not None:
            bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result.wall_time = time.perf_counter() - t0
    result.images_per_s = seen / max(result.wall_time, 1e-9)
    if result.val_acc:
        result.val_acc_final = result.val_acc[-1]
    if evaluate_test and result.status != "diverged":
        result.test_acc = evaluate(model, data.test, cfg)
    return result
