"""Weight surgery: cut a trained network down to kept channels, copying the surviving weights.

This is the one place nas-prune reuses pruned weights, and only for the *Fine-tuned* row of
``nas-prune rethink`` (Liu et al.'s comparison). The search never does: it trains every candidate
from scratch.

:func:`cut_down` builds ``family.build({g: len(keep[g])})`` and copies, for every width group, the
kept output channels of the group's convs and their BatchNorms (weight, bias, running mean and
variance), and the kept input channels of the group's consumers (convs and linears), as the
family's :class:`~nas_prune.families.WidthGroup` lists them. Layers that belong to no group (the
first conv's input, Li's 512-wide hidden classifier layer, the class outputs) are copied whole.

**When the cut network computes exactly what the full one does.** If every removed channel's
BatchNorm output is zero (gamma = beta = 0), removed channels carry zeros everywhere (ReLU(0) = 0,
pooling of zeros is zero, an identity shortcut adds a zero) and the cut network is exact for VGG
(both heads) and for ResNets with option-B (1x1 projection) shortcuts.

Option-A shortcuts are parameter-free: between stages they subsample and zero-pad ``(out - in) //
2`` channels in front (or, when a stage is narrower than the one before, keep the first ``out``
channels). The full network therefore feeds stage-S channel ``i`` into stage-S+1 channel
``i + P`` (``P = (C_{S+1} - C_S) // 2``), while the cut network feeds its kept channel at position
``j`` into position ``j + p`` (``p = (k_{S+1} - k_S) // 2``): fixed positions that sorted kept
indices do not respect in general. Channel order inside a group is free (every layer and consumer
of the group is permuted together), so :func:`cut_down` orders each residual group's kept channels
so that every kept stage-S channel lands opposite its full-network partner. This is exact if and
only if, at every stage transition, (1) each kept stage-S channel whose full-network partner
exists has that partner kept in stage S+1 (otherwise the removed partner carries the kept
channel's activations and is not zero), and (2) every position the cut shortcut connects holds
such a kept pair. With base widths 16/32/64 that means: kept stage-S+1 channels include ``i + P``
for every kept stage-S channel ``i``; in particular it always holds when the next stage is not cut
(the unpruned-stage-width case) or no residual group is cut. :func:`shortcut_mismatches` lists
the violations; when there are any, the copy is the best alignment (partners placed opposite each
other where they exist) and fine-tuning has to repair the rest.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .errors import UserError
from .families import Family, WidthGroup

__all__ = ["channel_orders", "cut_down", "filter_l1_scores", "keep_from_scores",
           "model_widths", "shortcut_mismatches"]


# ---- choosing channels ---------------------------------------------------------------------
def keep_from_scores(scores: Mapping[str, torch.Tensor],
                     widths: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Per group, the indices of the ``widths[g]`` highest-scoring channels, sorted ascending.

    Ties keep the lower index (a stable sort), so equal scores give a deterministic choice.
    """
    keep: dict[str, torch.Tensor] = {}
    for g, w in widths.items():
        if g not in scores:
            raise UserError(f"scores: no scores for width group {g!r}")
        s = scores[g].detach().flatten().float().cpu()
        if not 1 <= int(w) <= s.numel():
            raise UserError(f"widths.{g}: {w} channels asked for but the group has {s.numel()}")
        order = torch.sort(s, descending=True, stable=True).indices[: int(w)]
        keep[g] = order.sort().values.to(torch.long)
    return keep


def filter_l1_scores(model: nn.Module, family: Family) -> dict[str, torch.Tensor]:
    """Li et al.'s criterion per group: the L1 norm of each output filter.

    A group spanning several convs (a residual stage) sums each conv's mean-normalised norms, so
    every layer of the group has the same say.
    """
    out: dict[str, torch.Tensor] = {}
    for g in family.groups():
        per_layer = []
        for name in g.convs:
            w = model.get_submodule(name).weight.detach().float().cpu()
            norms = w.abs().flatten(1).sum(1)
            per_layer.append(norms / norms.mean().clamp_min(1e-12))
        out[g.name] = torch.stack(per_layer).sum(0)
    return out


# ---- widths and channel orders --------------------------------------------------------------
def model_widths(model: nn.Module, family: Family) -> dict[str, int]:
    """The width vector of a family model, read from its first conv per group."""
    try:
        return {g.name: int(model.get_submodule(g.convs[0]).weight.shape[0])
                for g in family.groups()}
    except AttributeError as exc:
        raise UserError(f"model: does not have the module names of family {family.name} "
                        f"({exc}); cut down a model built by that family") from None


def _check_keep(keep: Mapping[str, torch.Tensor],
                widths: Mapping[str, int]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    unknown = sorted(set(keep) - set(widths))
    if unknown:
        raise UserError(f"keep.{unknown[0]}: not a width group; groups are {', '.join(widths)}")
    for g, n in widths.items():
        if g not in keep:
            raise UserError(f"keep.{g}: missing; every width group needs its kept channels")
        idx = torch.as_tensor(keep[g]).flatten().tolist()
        if not idx:
            raise UserError(f"keep.{g}: empty; keep at least one channel")
        if any(not isinstance(i, int) for i in idx) or idx != sorted(set(idx)):
            raise UserError(f"keep.{g}: expected sorted, distinct integer channel indices")
        if idx[0] < 0 or idx[-1] >= n:
            raise UserError(f"keep.{g}: indices must lie in [0, {n}) (the model's width)")
        out[g] = idx
    return out


def _pad_map(n_in: int, n_out: int) -> list[int | None]:
    """Where an option-A shortcut sends each input channel (None: dropped)."""
    if n_out >= n_in:
        front = (n_out - n_in) // 2
        return [i + front for i in range(n_in)]
    return [i if i < n_out else None for i in range(n_in)]


def _stage_chain(family: Family) -> list[WidthGroup]:
    """The residual groups joined by parameter-free (option-A) shortcuts, in order."""
    if getattr(family, "name", "") != "resnet_cifar" or getattr(family, "shortcut", "B") != "A":
        return []
    return [g for g in family.groups() if g.residual]


def channel_orders(family: Family, keep: Mapping[str, torch.Tensor],
                   widths: Mapping[str, int]) -> dict[str, list[int]]:
    """The kept channels of each group in the order the cut network holds them.

    Sorted, except along option-A stage transitions, where each stage's order puts every kept
    channel opposite its full-network shortcut partner (see the module docstring); the kept
    channels without a partner fill the remaining positions in ascending order.
    """
    kept = _check_keep(keep, widths)
    orders = {g: list(v) for g, v in kept.items()}
    chain = _stage_chain(family)
    for prev, cur in zip(chain, chain[1:], strict=False):
        src, dst = orders[prev.name], kept[cur.name]
        full = _pad_map(widths[prev.name], widths[cur.name])
        cut = _pad_map(len(src), len(dst))
        if len(src) > len(dst) and prev is chain[0]:
            # only the first len(dst) positions reach the next stage: partners go there first
            # (the first stage's order is free; later stages' orders are set by the one before)
            dst_set = set(dst)
            src = sorted(src, key=lambda i: (full[i] is None or full[i] not in dst_set, i))
            orders[prev.name] = src
        slots: list[int | None] = [None] * len(dst)
        used: set[int] = set()
        dst_set = set(dst)
        for j, i in enumerate(src):
            target, pos = full[i], cut[j]
            if pos is not None and target is not None and target in dst_set:
                slots[pos] = target
                used.add(target)
        rest = iter(c for c in dst if c not in used)
        orders[cur.name] = [s if s is not None else next(rest) for s in slots]
    return orders


def shortcut_mismatches(family: Family, keep: Mapping[str, torch.Tensor],
                        widths: Mapping[str, int]) -> list[str]:
    """Why an option-A cut is not exact (empty: exact when removed channels output zero)."""
    orders = channel_orders(family, keep, widths)
    problems: list[str] = []
    chain = _stage_chain(family)
    for prev, cur in zip(chain, chain[1:], strict=False):
        src, dst = orders[prev.name], orders[cur.name]
        full = _pad_map(widths[prev.name], widths[cur.name])
        cut = _pad_map(len(src), len(dst))
        dst_set = set(dst)
        lost = [i for i in src if full[i] is not None and full[i] not in dst_set]
        if lost:
            problems.append(f"{prev.name}->{cur.name}: kept {prev.name} channels {lost} feed "
                            f"removed {cur.name} channels {[full[i] for i in lost]}")
        wrong = [j for j, i in enumerate(src) if cut[j] is not None
                 and (full[i] is None or dst[cut[j]] != full[i])]
        if wrong:
            problems.append(f"{prev.name}->{cur.name}: {len(wrong)} shortcut position(s) join "
                            f"channels that the full network does not join")
    return problems


# ---- the surgery ---------------------------------------------------------------------------
def cut_down(model: nn.Module, family: Family, keep: Mapping[str, torch.Tensor],
             *, strict: bool = False) -> nn.Module:
    """A CPU fp32 ``family`` model with ``len(keep[g])`` channels per group and the kept weights.

    ``keep[g]`` holds the sorted indices of the kept channels of group ``g`` in ``model``
    (:func:`keep_from_scores` makes them from per-channel scores). ``strict``: raise when an
    option-A shortcut makes the copy inexact (see :func:`shortcut_mismatches`). The result is in
    the same train/eval mode as ``model``.
    """
    widths = model_widths(model, family)
    orders = channel_orders(family, keep, widths)
    if strict:
        problems = shortcut_mismatches(family, keep, widths)
        if problems:
            raise UserError(f"keep: the option-A shortcuts cannot be cut exactly: {problems[0]}")
    index = {g: torch.tensor(o, dtype=torch.long) for g, o in orders.items()}
    out_of: dict[str, str] = {}
    in_of: dict[str, str] = {}
    for g in family.groups():
        out_of.update({name: g.name for name in (*g.convs, *g.bns)})
        in_of.update({name: g.name for name in g.consumers})
    cut = family.build({g: len(o) for g, o in orders.items()})
    full_state = model.state_dict()
    new_state: dict[str, torch.Tensor] = {}
    for key, target in cut.state_dict().items():
        if key not in full_state:
            raise UserError(f"model: has no {key!r}; cut down a model built by family "
                            f"{family.name} with the same arguments")
        module, _, leaf = key.rpartition(".")
        t = full_state[key].detach().to("cpu", torch.float32 if full_state[key].is_floating_point()
                                        else full_state[key].dtype)
        if t.dim() >= 1 and module in out_of and leaf != "num_batches_tracked":
            t = t.index_select(0, index[out_of[module]])
        if t.dim() >= 2 and module in in_of and leaf == "weight":
            t = t.index_select(1, index[in_of[module]])
        if t.shape != target.shape:
            raise UserError(f"model: {key} has shape {tuple(t.shape)} after the cut but the "
                            f"cut network expects {tuple(target.shape)}; the model and family "
                            f"{family.name} do not match")
        new_state[key] = t.clone()
    cut.load_state_dict(new_state, strict=True)
    return cut.train(model.training)
