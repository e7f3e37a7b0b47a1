"""One-shot screening: rank thousands of width vectors for the price of a few trainings.

A **weight-sharing network** (:class:`SharedNet`) is one network at the space's widest widths.
It runs any width vector of the space with the *leading* channels of every width group: the
candidate that :meth:`Family.build` makes for the width vector (residual groups, depthwise groups
and consumers follow exactly as they do for a candidate trained from scratch) is called with its
parameters replaced by leading slices of the shared ones (:func:`torch.func.functional_call`;
views, so gradients flow into the shared tensors). The shared network at a width vector
therefore computes *exactly* what the candidate does when the leading slices are copied into it
(:meth:`SharedNet.extract`); the family conformance suite checks this for every shipped space.
The candidate's structure is built once per width vector on the ``meta`` device (no memory, no
initialisation) and cached.

It is trained with the **sandwich rule** and **in-place distillation** (AutoSlim, BigNAS): each
step trains the widest network on the labels, then the narrowest and ``random_widths`` random
width vectors on the widest network's soft labels, and takes one optimizer step on the summed
gradients (:func:`train_shared`). Its cost is stated in trainings of the base network
(:func:`sandwich_cost`).

A **screening score** (:func:`screen`) is a candidate's accuracy on a fixed validation subset
after its BatchNorm statistics were recalibrated (:func:`recalibrate_bn`: running statistics
reset, then a cumulative average over a fixed set of training batches). The candidate comes from
the shared network (:meth:`SharedNet.extract`) or, with no weight-sharing training at all, from
the trained base network of a seed method cut to the width vector with its channels ordered by
that method's importance (:class:`BaseNetCandidates`, EagleEye's adaptive BatchNorm). Shared
weights only *rank*: nothing here is inherited by a candidate that is trained for real.
"""

from __future__ import annotations

import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ._meta import __version__ as NAS_PRUNE_VERSION
from .data import Splits, augment, batches
from .errors import UserError
from .surgery import cut_down, keep_from_scores
from .train import TrainConfig, lr_lambda, make_optimizer
from .widths import SearchSpace

__all__ = ["CHECKPOINT_FORMAT", "FORWARD_PER_TRAINING_PASS", "SCORES", "STRATEGIES",
           "BaseNetCandidates", "OneShotConfig", "ScreeningData", "SharedNet", "load_shared", "planned_sandwich_cost",
           "planned_screening_images", "random_widths", "recalibrate_bn", "sandwich_cost",
           "sandwich_widths", "save_shared", "screen", "screening_cost", "screening_data",
           "train_shared"]

#: bumped when the checkpoint's layout or the shared network's slicing rule changes
CHECKPOINT_FORMAT = 1
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CACHE = 64  # candidate structures kept per shared network
MAX_POPULATION = 1_000_000  # screened candidates of one search
#: where a screened candidate's weights come from: the weight-sharing network, or a seed
#: method's trained base network cut to the candidate's widths (no training)
SCORES = ("shared", "base")
#: how a search picks the candidates it screens: independent random draws, or aging evolution
#: on the screening score (:func:`nas_prune.search.screening.evolve`)
STRATEGIES = ("random", "evolution")
#: a training step (forward and backward) counted as this many forward passes, to state
#: screening (forward passes only) in trainings of the base network
FORWARD_PER_TRAINING_PASS = 3


@dataclass(frozen=True)
class OneShotConfig:
    """Weight-sharing training and screening settings (``search.screening`` in a config)."""

    epochs: int = 3  # epochs of sandwich-rule training of the weight-sharing network
    random_widths: int = 2  # random width vectors per step, besides the widest and narrowest
    distill: bool = True  # in-place distillation from the widest network's soft labels
    # the defaults screen 1,000 vgg_small_fmnist candidates faster than 3 trainings on one CPU
    # core (benchmarks/results/oneshot_speed.json); 4 x 256 and 1,000 images did not
    recal_batches: int = 2  # fixed training batches that recalibrate BatchNorm per candidate
    recal_batch_size: int = 128  # images per recalibration batch
    val_images: int = 256  # the fixed validation subset a candidate is scored on
    # a search screens this many candidates before its trials (0: no screening); a screened
    # candidate is kept as its widths and score only (~1 KB), hence the cap of MAX_POPULATION
    population: int = 0
    promote: int = 8  # the best this many by screening score become trials
    random_checks: int = 2  # and this many other screened candidates, drawn at random
    # shared: a weight-sharing network trained for `epochs` scores the candidates; base: they
    # are cut from the first seed method's trained base network, channels by its importance
    # (no training at all)
    score: str = "shared"
    # random: `population` independent draws; evolution: aging evolution on the screening
    # score (its first `evolution_size` candidates are random draws, each later one a mutation)
    strategy: str = "random"
    evolution_size: int = 64  # evolution: the youngest candidates parents are chosen from
    tournament: int = 16  # evolution: candidates drawn per step; the best of them is mutated
    mutation: float = 0.3  # evolution: the chance each multiplier of the parent is drawn again

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise UserError(f"search.screening.score: {self.score!r}; choose one of "
                            f"{', '.join(SCORES)}")
        if self.strategy not in STRATEGIES:
            raise UserError(f"search.screening.strategy: {self.strategy!r}; choose one of "
                            f"{', '.join(STRATEGIES)}")
        m = self.mutation
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m <= 1:
            raise UserError(f"search.screening.mutation: {m!r} is out of range; must be a "
                            f"probability in (0, 1]")
        for key, lo, hi in (("epochs", 1, 100_000), ("random_widths", 0, 64),
                            ("recal_batches", 1, 10_000), ("recal_batch_size", 1, 1 << 20),
                            ("val_images", 1, 1 << 30), ("population", 0, MAX_POPULATION),
                            ("promote", 1, 10_000), ("random_checks", 0, 10_000),
                            ("evolution_size", 2, MAX_POPULATION), ("tournament", 1, 10_000)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise UserError(f"search.screening.{key}: {v!r} is out of range; must be in "
                                f"[{lo}, {hi}]")
        if self.strategy == "evolution" and self.population:
            self._check_evolution()

    def _check_evolution(self) -> None:
        """Settings under which evolution would not evolve, or would leave too few random
        draws for the random checks, are refused (only where evolution runs)."""
        if self.tournament > self.evolution_size:
            raise UserError(f"search.screening.tournament: {self.tournament} is more than the "
                            f"{self.evolution_size} candidates alive (evolution_size); lower it")
        if self.evolution_size >= self.population:
            raise UserError(f"search.screening.evolution_size: {self.evolution_size} random "
                            f"draws leave nothing to evolve in a population of "
                            f"{self.population}; lower it below the population (or use "
                            f"strategy: random)")
        if self.evolution_size < self.promote + self.random_checks:
            raise UserError(f"search.screening.evolution_size: the random checks come from "
                            f"the {self.evolution_size} random draws, fewer than promote + "
                            f"random_checks = {self.promote + self.random_checks}; raise it")


# ---- the weight-sharing network ------------------------------------------------------------
def _space_key(space: SearchSpace) -> dict[str, Any]:
    """What a shared network's weights depend on: the family, its input and the widest widths."""
    return {"name": space.name, "family": space.family.name,
            "family_args": space.family.arguments(),
            "input": space.family.input_shape.to_dict(), "max_widths": space.max_widths()}


class SharedNet:
    """One network at the space's widest widths that runs any width vector of the space.

    ``model`` holds the shared parameters (a CPU fp32 module; move it with :meth:`to`).
    """

    def __init__(self, space: SearchSpace, *, seed: int = 0) -> None:
        self.space = space
        self.family = space.family
        self.max_widths = space.max_widths()
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left alone
            torch.manual_seed(seed)
            self.model = self.family.build(self.max_widths)
        self._structures: OrderedDict[tuple[int, ...], nn.Module] = OrderedDict()
        self.structure(space.min_widths())  # a family that cannot slice fails here, at once

    def to(self, device: torch.device | str) -> SharedNet:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def structure(self, widths: Mapping[str, int]) -> nn.Module:
        """The candidate's module on the ``meta`` device (cached): its structure, no weights."""
        key = tuple(int(widths[g]) for g in self.space.group_names)
        if key in self._structures:
            self._structures.move_to_end(key)
            return self._structures[key]
        net = self._build_meta(widths)
        self._structures[key] = net
        if len(self._structures) > _CACHE:
            self._structures.popitem(last=False)
        return net

    def _build_meta(self, widths: Mapping[str, int]) -> nn.Module:
        with torch.device("meta"):
            net = self.family.build({g: int(widths[g]) for g in self.space.group_names})
        full = self._full()
        for name, t in (*net.named_parameters(), *net.named_buffers()):
            f = full.get(name)
            if f is None or f.dim() != t.dim() or any(a > b for a, b in zip(t.shape, f.shape,
                                                                           strict=True)):
                got = "missing" if f is None else tuple(f.shape)
                raise UserError(f"family {self.family.name}: cannot slice a candidate out of "
                                f"the shared network ({name}: {tuple(t.shape)} from {got}); "
                                f"one-shot screening needs every layer of a candidate to be a "
                                f"leading slice of the widest network's")
        return net

    def _full(self) -> dict[str, torch.Tensor]:
        return dict(self.model.named_parameters()) | dict(self.model.named_buffers())

    def _slices(self, net: nn.Module) -> dict[str, torch.Tensor]:
        full = self._full()
        return {name: _lead(full[name], t.shape)
                for name, t in (*net.named_parameters(), *net.named_buffers())}

    def tensors(self, widths: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """The candidate's parameters and buffers as leading slices (views) of the shared ones."""
        return self._slices(self.structure(widths))

    def forward(self, widths: Mapping[str, int], x: torch.Tensor) -> torch.Tensor:
        """The shared network's output at ``widths`` (in the shared module's train/eval mode;
        in train mode BatchNorm also updates the shared running statistics' leading slices)."""
        net = self.structure(widths).train(self.model.training)
        return functional_call(net, self._slices(net), (x,))

    def extract(self, widths: Mapping[str, int]) -> nn.Module:
        """A standalone candidate (on the shared network's device) holding copies of the leading
        slices: for screening, never for training a candidate for real."""
        out = self._build_meta(widths)
        state = {k: v.detach().clone() for k, v in self._slices(out).items()}
        out.load_state_dict(state, strict=True, assign=True)
        return out.train(self.model.training)


def _lead(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if t.dim() == 0 or tuple(t.shape) == tuple(shape):
        return t
    return t[tuple(slice(0, s) for s in shape)]


def random_widths(space: SearchSpace, rng: random.Random) -> dict[str, int]:
    """A width vector drawn uniformly on each group's grid between its bounds."""
    return {g: rng.choice(space.grid(g)) for g in space.group_names}


# ---- sandwich-rule training ----------------------------------------------------------------
def sandwich_widths(space: SearchSpace, rng: random.Random, random_count: int
                    ) -> list[dict[str, int]]:
    """The width vectors one sandwich step trains: the widest, the narrowest and
    ``random_count`` random ones drawn from ``rng``."""
    return [space.max_widths(), space.min_widths()] + [random_widths(space, rng)
                                                       for _ in range(random_count)]


def sandwich_cost(space: SearchSpace, widths_per_step: Sequence[Sequence[Mapping[str, int]]],
                  *, epochs: int, base_epochs: int) -> float:
    """The training cost in trainings of the base network (``base_epochs`` epochs at the base
    widths): forward and backward FLOPs of every network a step trains, over the steps of one
    epoch (``widths_per_step``), times ``epochs`` / ``base_epochs``."""
    if not widths_per_step:
        return 0.0
    base = space.cost(space.base_widths())
    per_step = sum(sum(space.cost(w) for w in step) for step in widths_per_step)
    return per_step / len(widths_per_step) / base * epochs / base_epochs


def planned_sandwich_cost(space: SearchSpace, *, n_train: int, train: TrainConfig,
                          oneshot: OneShotConfig, seed: int = 0) -> float:
    """The cost :func:`train_shared` will record, in trainings of the base network, without
    training: the same width vectors drawn from the same seed over the steps of one epoch
    (``n_train`` images in batches of ``train.batch_size``, the last partial one dropped)."""
    bs = min(train.batch_size, n_train)
    if bs < 1:
        return 0.0
    rng = random.Random(seed)
    steps = [sandwich_widths(space, rng, oneshot.random_widths) for _ in range(n_train // bs)]
    return sandwich_cost(space, steps, epochs=oneshot.epochs, base_epochs=train.epochs)


def train_shared(shared: SharedNet, data: Splits, cfg: TrainConfig, oneshot: OneShotConfig, *,
                 seed: int = 0, on_step: Callable[[int, list[dict[str, int]]], None] | None = None
                 ) -> dict[str, Any]:
    """Train ``shared`` in place with the sandwich rule on ``data.train`` (its device).

    Every step: the widest network on the labels, the narrowest and ``oneshot.random_widths``
    random width vectors on the widest network's soft labels (``oneshot.distill``; else on the
    labels), one optimizer step (``cfg``'s SGD, schedule and warm-up) on the summed gradients.
    ``on_step(step, widths)`` sees each step's width vectors. Returns the record: epochs, steps,
    loss per epoch, wall time and the cost in trainings of the base network.
    """
    device = data.device
    space = shared.space
    shared.to(device)
    model = shared.model.train()
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    rng = random.Random(seed)
    n = len(data.train)
    if n == 0:
        raise UserError("data: the training split is empty; raise data.train_subset")
    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs
    epochs = oneshot.epochs
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps_per_epoch * epochs,
                                                             steps_per_epoch))
    widest = space.max_widths()
    losses: list[float] = []
    step_widths: list[list[dict[str, int]]] = []
    t0, step = time.perf_counter(), 0
    for _ in range(epochs):
        loss_sum = torch.zeros((), device=device)
        for x, y in batches(data.train, bs, shuffle=True, drop_last=True, generator=gen):
            if data.crop_padding or data.hflip:
                x = augment(x, padding=data.crop_padding, hflip=data.hflip, generator=gen)
            ws = sandwich_widths(space, rng, oneshot.random_widths)
            opt.zero_grad(set_to_none=True)
            out = shared.forward(widest, x)
            loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
            loss.backward()
            soft = out.detach().softmax(1)
            for w in ws[1:]:
                student = shared.forward(w, x)
                if oneshot.distill:
                    sub = -(soft * F.log_softmax(student, 1)).sum(1).mean()
                else:
                    sub = F.cross_entropy(student, y, label_smoothing=cfg.label_smoothing)
                sub.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
            if on_step is not None:
                on_step(step, ws)
            if len(step_widths) < steps_per_epoch:
                step_widths.append(ws)
            step += 1
        mean = float(loss_sum.item()) / max(1, steps_per_epoch)
        losses.append(mean)
        if not math.isfinite(mean):
            raise UserError(f"search.screening: the weight-sharing network's loss is {mean} in "
                            f"epoch {len(losses)}; lower train.lr")
    return {"epochs": epochs, "steps": step, "train_loss": losses,
            "wall_time": time.perf_counter() - t0,
            "cost_base_trainings": sandwich_cost(space, step_widths, epochs=epochs,
                                                 base_epochs=cfg.epochs),
            "config": asdict(oneshot)}


# ---- checkpoint ----------------------------------------------------------------------------
def save_shared(shared: SharedNet, path: str | Path, record: Mapping[str, Any]) -> Path:
    """Write the shared weights with the space and code version they belong to (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "nas_prune": NAS_PRUNE_VERSION,
                "space": _space_key(shared.space), "record": dict(record),
                "state": {k: v.detach().cpu() for k, v in shared.model.state_dict().items()}},
               tmp)
    tmp.replace(path)
    return path


def load_shared(space: SearchSpace, path: str | Path) -> tuple[SharedNet, dict[str, Any]]:
    """A shared network and its training record from a checkpoint of :func:`save_shared`; one
    from another space or another code version is refused, naming both."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise UserError(f"{path}: not a weight-sharing checkpoint ({type(exc).__name__})") \
            from None
    if not isinstance(ck, dict) or "state" not in ck:
        raise UserError(f"{path}: not a weight-sharing checkpoint")
    mine = f"format {CHECKPOINT_FORMAT}, nas-prune {NAS_PRUNE_VERSION}"
    theirs = f"format {ck.get('format')}, nas-prune {ck.get('nas_prune')}"
    if theirs != mine:
        raise UserError(f"{path}: written by another code version ({theirs}); this is {mine}; "
                        f"delete it to train the weight-sharing network again")
    want = _space_key(space)
    if ck.get("space") != want:
        raise UserError(f"{path}: a weight-sharing network of space "
                        f"{ck.get('space', {}).get('name')!r} "
                        f"({ck.get('space', {}).get('max_widths')}), not of space "
                        f"{space.name!r} ({want['max_widths']}); delete it or use another run "
                        f"directory")
    shared = SharedNet(space)
    shared.model.load_state_dict(ck["state"], strict=True)
    return shared, dict(ck.get("record") or {})


# ---- screening -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScreeningData:
    """The fixed recalibration batches and validation subset, as tensors on the device."""

    recal: tuple[torch.Tensor, ...]
    val_x: torch.Tensor
    val_y: torch.Tensor

    @property
    def images(self) -> int:
        """Images a candidate's screening runs forward: recalibration and validation."""
        return sum(len(x) for x in self.recal) + len(self.val_y)


def planned_screening_images(oneshot: OneShotConfig, *, n_train: int, n_val: int) -> int:
    """What :attr:`ScreeningData.images` will be for splits of these sizes."""
    return oneshot.recal_batches * min(oneshot.recal_batch_size, n_train) + \
        min(oneshot.val_images, n_val)


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def screening_data(data: Splits, oneshot: OneShotConfig, *, seed: int = 0) -> ScreeningData:
    """``oneshot.recal_batches`` training batches (normalised, unaugmented) and the first
    ``oneshot.val_images`` of a fixed shuffle of the validation split, on the data's device,
    images channels-last (1.4-1.7x faster screening on one CPU core than contiguous, measured
    on vgg_small_fmnist)."""
    if len(data.val) == 0:
        raise UserError("search.screening: the validation split is empty; raise data.val_size")
    gen = torch.Generator().manual_seed(seed)
    n = len(data.train)
    bs = min(oneshot.recal_batch_size, n)
    order = torch.randperm(n, generator=gen)
    recal = tuple(_cl(data.train.images(order[(i * bs) % n: (i * bs) % n + bs]
                                        .to(data.device)))
                  for i in range(oneshot.recal_batches))
    vidx = torch.randperm(len(data.val), generator=gen)[: oneshot.val_images].sort().values
    vidx = vidx.to(data.device)
    return ScreeningData(recal=recal, val_x=_cl(data.val.images(vidx)), val_y=data.val.y[vidx])


@torch.no_grad()
def recalibrate_bn(model: nn.Module, recal: Sequence[torch.Tensor]) -> nn.Module:
    """Reset every BatchNorm's running statistics and set them to the cumulative average over
    ``recal`` (batch-statistics forward passes); nothing else changes. Leaves ``model`` in
    eval mode."""
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
        m.train()
    try:
        for x in recal:
            model(x)
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.eval()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000
             ) -> float:
    model.eval()
    correct = sum(int((model(x[i: i + batch_size]).argmax(1) == y[i: i + batch_size]).sum())
                  for i in range(0, len(y), batch_size))
    return correct / max(1, len(y))


def screening_cost(space: SearchSpace, flops: Sequence[int], *, images: int, n_train: int,
                   base_epochs: int) -> float:
    """Screening in trainings of the base network, by FLOPs: each candidate (``flops``, one
    entry per candidate) runs ``images`` images forward (recalibration and validation); a
    training of the base network is ``base_epochs`` epochs of ``n_train`` images at the base
    widths, a forward and backward pass counted as :data:`FORWARD_PER_TRAINING_PASS` forward
    passes."""
    if n_train < 1 or base_epochs < 1:
        return 0.0
    return sum(int(f) for f in flops) * images / (
        FORWARD_PER_TRAINING_PASS * space.base_cost("flops") * n_train * base_epochs)


def screen(candidate: nn.Module, sdata: ScreeningData) -> float:
    """The screening score: accuracy on the fixed validation subset after BatchNorm
    recalibration on the fixed training batches."""
    if sdata.val_x.dim() == 4:
        candidate = candidate.to(memory_format=torch.channels_last)
    return accuracy(recalibrate_bn(candidate, sdata.recal), sdata.val_x, sdata.val_y)


class BaseNetCandidates:
    """Candidates cut from a trained base network, each group's channels ordered by a seed
    method's importance (``scores``: group -> per-channel score): EagleEye-style screening with
    no weight-sharing training. The base network must be at the space's widest widths."""

    def __init__(self, space: SearchSpace, model: nn.Module,
                 scores: Mapping[str, torch.Tensor]) -> None:
        self.space, self.model, self.scores = space, model, dict(scores)
        self.device = next(model.parameters()).device

    def extract(self, widths: Mapping[str, int]) -> nn.Module:
        keep = keep_from_scores(self.scores, widths)
        return cut_down(self.model, self.space.family, keep).to(self.device)
