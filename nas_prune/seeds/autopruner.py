"""AutoPruner (Luo & Wu 2018, arXiv 1805.08941): trainable channel gates with a keep-rate penalty.

What the paper and the authors' code do: a gate branch on a layer's output feature map takes the
batch-wise mean, pools it, applies a small FC and ``sigmoid(alpha * x)``; the gate vector ``v``
multiplies the feature map channel-wise. The loss is
``cross-entropy + lambda * (||v||_1 / C - r)^2`` with ``r`` the kept fraction. ``alpha`` grows
during training (their code: 1 to 100 in steps), which drives the gates to 0 or 1; at the end the
gates are binarised (``v > 0.5``) and the open ones give the layer's width.

Here (one pass over every width group at once, rather than the authors' layer by layer):

* The base network is the plain one (``base_key() == "plain"``, shared with the other methods
  through the cache); the gates are trained inside :meth:`AutoPruner.propose` for
  ``gate_epochs`` on ``ctx.data`` with ``ctx.train``'s batch size and augmentation, a constant
  ``gate_lr`` and no weight decay. The backbone is **frozen** by default (``backbone_lr=0``); a
  positive ``backbone_lr`` fine-tunes it jointly, as the authors do, by scaling its gradients by
  ``backbone_lr / gate_lr`` (equal to a smaller SGD learning rate, as weight decay is off).
* :class:`GatedNetwork` wraps a copy of the base network and owns the gate FCs, so the trainer's
  optimizer sees them; forward hooks on the BatchNorm modules of each group (``WidthGroup.bns``)
  apply the gates. Gate branch: batch-wise mean -> global average pool -> FC (C -> C) ->
  ``sigmoid(alpha * x)``. The statistic is taken after ReLU: right after a BatchNorm in training
  mode the batch-and-spatial mean of every channel is exactly its beta, whatever the input. As
  ``v > 0``, ``v * relu(y) == relu(v * y)``, so gating the BN output gates what the next layer
  reads.
* A residual stage group spans several BNs: **one** gate vector, computed at the group's first BN
  to run in the forward pass (the stem for stage 1, the first block's output BN otherwise), is
  applied at every BN of the group. It gates the residual branches; the shortcut still carries
  the channel, so a closed gate in a stage removes that channel's residual contributions.
* ``alpha`` grows linearly from 1 to ``alpha_max`` (100) over the gate-training steps;
  ``lambda`` is the fixed ``penalty`` (10, the authors' starting value) summed over groups. Each
  group's target is ``r`` rounded to its channel lattice, ``round(r C) / C``: with ``r C`` not an
  integer the penalty's minimum keeps one gate half open whatever alpha is.
* ``r`` is the keep ratio that scaling every group uniformly would need to meet the budget,
  bisected on the cost model (about ``sqrt(budget)`` for FLOPs, which scale about quadratically
  in widths).
* The scores are the trained gates' pre-activations ``x`` averaged over sampled batches
  (``v > 0.5`` exactly when ``x > 0``; unlike ``v`` they do not saturate into ties). The widths
  start from the binarised gates (threshold 0 on ``x``); the threshold is then bisected globally
  until the budget is met within 1%, and the widths rounded to the grid (:func:`fit_threshold`).
  The proposal's diagnostics report how binary the gates ended and their open fraction at 0.5.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..budget import check_budget, fit_scalar, fit_threshold
from ..errors import UserError
from ..train import TrainHooks, train
from ..widths import SearchSpace
from ._base import Proposal, SeedContext, SeedMethod, make_proposal

NEAR_BINARY = 0.05  # a gate within this of 0 or 1 counts as binary


class GateBranch(nn.Module):
    """Batch-wise mean -> global average pool -> FC (C -> C); returns the pre-activation ``x``."""

    def __init__(self, channels: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)
        bound = 1.0 / math.sqrt(channels)  # nn.Linear's default range, drawn from ``generator``
        with torch.no_grad():
            self.fc.weight.copy_(torch.empty_like(self.fc.weight).uniform_(-bound, bound,
                                                                           generator=generator))
            self.fc.bias.copy_(torch.empty_like(self.fc.bias).uniform_(-bound, bound,
                                                                       generator=generator))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        # fp32 even under autocast: sigmoid(100 x) needs x finer than bf16 gives
        with torch.autocast(device_type=feature.device.type, enabled=False):
            stat = F.relu(feature).float().mean(dim=(0, 2, 3))  # batch-wise mean, spatial pool
            return self.fc(stat)


class GatedNetwork(nn.Module):
    """A base network with one gate vector per width group, applied by BatchNorm forward hooks.

    ``gates`` (a ModuleDict keyed by group name, dots replaced) holds the FCs; ``alpha`` is the
    sigmoid slope; after each forward ``last[group] = (v, x)`` holds the gate vector and its
    pre-activation for that batch.
    """

    def __init__(self, net: nn.Module, space: SearchSpace, *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.net = net
        self.alpha = 1.0
        self.groups = list(space.group_names)
        self.gates = nn.ModuleDict({_key(g): GateBranch(b, generator)
                                    for g, b in space.base_widths().items()})
        self.last: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles = []
        for group in space.family.groups():
            for bn in group.bns or group.convs:  # a group without BN: gate its conv outputs
                module = net.get_submodule(bn)
                self._handles.append(module.register_forward_hook(self._gate_hook(group.name)))

    def _gate_hook(self, group: str):
        def hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
            if group not in self.last:  # the group's first BN in this forward pass
                x = self.gates[_key(group)](out)
                self.last[group] = (torch.sigmoid(self.alpha * x), x)
            v = self.last[group][0]
            return out * v.to(out.dtype).view(1, -1, 1, 1)
        return hook

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.last = {}
        return self.net(images)

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _key(group: str) -> str:
    return group.replace(".", "_")


class GateTraining(TrainHooks):
    """The keep-rate penalty, the alpha schedule and the backbone's learning-rate scale."""

    def __init__(self, *, keep_ratio: float, penalty: float, alpha_max: float, total_steps: int,
                 backbone_scale: float) -> None:
        self.keep_ratio, self.penalty, self.alpha_max = keep_ratio, penalty, alpha_max
        self.total_steps = max(1, total_steps)
        self.backbone_scale = backbone_scale

    def alpha_at(self, step: int) -> float:
        """Linear from 1 at step 0 to ``alpha_max`` at the last step."""
        t = min(1.0, step / max(1, self.total_steps - 1))
        return 1.0 + (self.alpha_max - 1.0) * t

    def target(self, channels: int) -> float:
        """The group's kept fraction on its channel lattice: ``round(r C) / C``, at least 1/C.

        ``(||v||_1 / C - r)^2`` has a binary minimiser only when ``r C`` is an integer;
        otherwise it holds one gate half open, however large alpha grows.
        """
        return max(1, round(self.keep_ratio * channels)) / channels

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """``penalty * sum over groups of (||v||_1 / C - target)^2``."""
        terms = [(v.float().mean() - self.target(v.numel())) ** 2
                 for v, _ in model.last.values()]
        return self.penalty * torch.stack(terms).sum() if terms else None

    def after_backward(self, model: nn.Module, step: int) -> None:
        if 0 < self.backbone_scale != 1:
            for p in model.net.parameters():
                if p.grad is not None:
                    p.grad.mul_(self.backbone_scale)
        model.alpha = self.alpha_at(step + 1)


@dataclass
class GateResult:
    """Trained gates: per group, the mean pre-activation ``x`` and gate ``v`` over sampled
    batches."""

    logits: dict[str, torch.Tensor]
    gates: dict[str, torch.Tensor]
    alpha: float
    keep_ratio: float
    steps: int
    seconds: float
    val_acc: float | None

    def near_binary(self) -> float:
        v = torch.cat(list(self.gates.values()))
        return float(((v < NEAR_BINARY) | (v > 1 - NEAR_BINARY)).float().mean())

    def open_per_group(self) -> dict[str, float]:
        return {g: float((v > 0.5).float().mean()) for g, v in self.gates.items()}

    def open_fraction(self) -> float:
        """Mean over groups of the open (v > 0.5) fraction: what the penalty drives toward r."""
        per = self.open_per_group()
        return sum(per.values()) / max(1, len(per))


def open_widths(gates: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Widths from binarised gates (``v > 0.5``), at least one channel per group."""
    return {g: max(1, int((v > 0.5).sum())) for g, v in gates.items()}


class AutoPruner(SeedMethod):
    name = "autopruner"
    paper = "Luo & Wu 2018, AutoPruner: An End-to-End Trainable Filter Pruning Method for " \
            "Efficient Deep Model Inference, arXiv 1805.08941"
    summary = "trainable gates (batch pooling -> FC -> sigmoid(alpha x), alpha growing) with " \
              "loss CE + lambda (|v|_1/C - r)^2; open gates give the widths"
    groups_note = "one shared gate vector per group, applied at every BN of a residual stage " \
                  "(it gates the residual branches; the shortcut stays); a group without " \
                  "BatchNorm (graph family) is gated at its conv outputs instead"
    limitations = "gates of all groups are trained at once (the authors go layer by layer), " \
                  "on a frozen backbone by default; a fixed lambda (the authors adapt it); " \
                  "r is one keep ratio for every group, so the proposal stays near-uniform " \
                  "unless the gates disagree with it"

    @dataclass(frozen=True)
    class Options:
        """Gate-training knobs: epochs, gate and backbone learning rates (0 freezes the
        backbone), lambda of the keep-rate penalty, the final alpha, images for the final
        gate read-out, and ``keep_ratio`` (r; None: derived from the budget)."""

        gate_epochs: int = 2
        gate_lr: float = 0.05
        backbone_lr: float = 0.0
        penalty: float = 10.0
        alpha_max: float = 100.0
        readout_images: int = 512
        keep_ratio: float | None = None

        def __post_init__(self) -> None:
            where = "seed_method.options.autopruner"
            checks = (("gate_epochs", self.gate_epochs, int, 1, "an integer >= 1"),
                      ("readout_images", self.readout_images, int, 1, "an integer >= 1"),
                      ("gate_lr", self.gate_lr, float, 1e-12, "a number > 0"),
                      ("backbone_lr", self.backbone_lr, float, 0.0, "a number >= 0"),
                      ("penalty", self.penalty, float, 0.0, "a number >= 0"),
                      ("alpha_max", self.alpha_max, float, 1.0, "a number >= 1"))
            for name, value, kind, lo, what in checks:
                types = (int,) if kind is int else (int, float)
                if isinstance(value, bool) or not isinstance(value, types) or value < lo:
                    raise UserError(f"{where}.{name}: {value!r} must be {what}")
            r = self.keep_ratio
            if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float))
                                  or not 0 < r < 1):
                raise UserError(f"{where}.keep_ratio: {r!r} must be in (0, 1) or null "
                                f"(derived from the budget)")

    # The base network is the plain family model (the default base_model/base_key).

    def keep_ratio_for(self, space: SearchSpace, budget: float, metric: str = "flops") -> float:
        """``r``: the option when set, else the uniform keep ratio that meets the budget."""
        if self.options.keep_ratio is not None:
            return float(self.options.keep_ratio)
        base = space.base_widths()
        _, r = fit_scalar(space, lambda x: {g: b * x for g, b in base.items()}, budget, metric)
        return float(r)

    def train_gates(self, model: nn.Module, ctx: SeedContext, keep_ratio: float) -> GateResult:
        """Train gates on a copy of ``model`` toward ``keep_ratio``; read them out on samples."""
        opts = self.options
        net = copy.deepcopy(model).to(ctx.device)
        gated = GatedNetwork(net, ctx.space, generator=ctx.generator(offset=41)).to(ctx.device)
        if opts.backbone_lr == 0:
            for p in gated.net.parameters():
                p.requires_grad_(False)
        n = len(ctx.data.train)
        steps = (n // min(ctx.train.batch_size, n)) * opts.gate_epochs
        cfg = dataclasses.replace(ctx.train, lr=float(opts.gate_lr), weight_decay=0.0,
                                  schedule="step", milestones=(), warmup_epochs=0.0,
                                  epochs=opts.gate_epochs)
        hooks = GateTraining(keep_ratio=keep_ratio, penalty=float(opts.penalty),
                             alpha_max=float(opts.alpha_max), total_steps=steps,
                             backbone_scale=float(opts.backbone_lr) / float(opts.gate_lr))
        t0 = time.perf_counter()
        result = train(gated, ctx.data, cfg, epochs=opts.gate_epochs, seed=ctx.seed,
                       device=ctx.device, hooks=hooks, progress=False, desc="autopruner gates")
        seconds = time.perf_counter() - t0
        if result.status == "diverged":
            raise UserError(f"autopruner: gate training diverged ({result.reason}); lower "
                            f"seed_method.options.autopruner.gate_lr or penalty")
        gated.alpha = float(opts.alpha_max)
        logits = self._read_out(gated, ctx)
        gated.remove_hooks()
        gates = {g: torch.sigmoid(gated.alpha * x) for g, x in logits.items()}
        return GateResult(logits=logits, gates=gates, alpha=gated.alpha, keep_ratio=keep_ratio,
                          steps=steps, seconds=seconds, val_acc=result.val_acc_final)

    @torch.no_grad()
    def _read_out(self, gated: GatedNetwork, ctx: SeedContext) -> dict[str, torch.Tensor]:
        """Mean gate pre-activation per channel over batches of sampled training images."""
        gated.eval()
        images = ctx.sample_images(self.options.readout_images, offset=43)
        bs = min(ctx.train.batch_size, len(images))
        count = len(images) // bs  # whole batches only: the gate is a batch statistic
        sums = {g: torch.zeros(b) for g, b in ctx.space.base_widths().items()}
        for i in range(count):
            gated(images[i * bs: (i + 1) * bs])
            for g, (_, x) in gated.last.items():
                sums[g] += x.detach().float().cpu()
        return {g: s / count for g, s in sums.items()}

    # -- scores and proposal --------------------------------------------------------------
    def scores(self, model: nn.Module, ctx: SeedContext) -> dict[str, torch.Tensor]:
        """Gate pre-activations after training toward ``keep_ratio`` (0.5 when unset)."""
        r = self.options.keep_ratio if self.options.keep_ratio is not None else 0.5
        return self.train_gates(model, ctx, r).logits

    def propose(self, model: nn.Module, ctx: SeedContext, budget: float) -> Proposal:
        check_budget(ctx.space, budget, ctx.metric)  # before any gate training
        r = self.keep_ratio_for(ctx.space, budget, ctx.metric)
        gates = self.train_gates(model, ctx, r)
        widths, knob = fit_threshold(ctx.space, gates.logits, budget, ctx.metric)
        t = float(knob["threshold"])
        diagnostics = {
            "near_binary": round(gates.near_binary(), 6),
            "open_fraction": round(gates.open_fraction(), 6),
            "open_per_group": {g: round(f, 6) for g, f in gates.open_per_group().items()},
            "gate_steps": gates.steps,
            "gate_train_s": round(gates.seconds, 3),
            "gated_val_acc": gates.val_acc,
            "open_widths": open_widths(gates.gates),
        }
        knob = {"threshold": t, "gate_threshold": float(torch.sigmoid(torch.tensor(gates.alpha
                                                                                  * t))),
                "keep_ratio": round(r, 6), "penalty": float(self.options.penalty),
                "alpha": gates.alpha, "backbone_lr": float(self.options.backbone_lr)}
        return make_proposal(self.name, ctx, budget, widths, gates.logits, knob, diagnostics)


__all__ = ["AutoPruner", "GateBranch", "GateResult", "GateTraining", "GatedNetwork",
           "open_widths"]
