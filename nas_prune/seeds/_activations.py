"""Sampled inputs of the layers that consume a width group: what data-driven seed methods read.

ThiNet (Luo et al. 2017) and the regression method (He et al. 2017) judge the channels of width
group *i* by the layer(s) that read them (``WidthGroup.consumers``: a conv, or the linear
classifier after global pooling). Both look at a sample of the consumer's output values and at
how much each input channel contributes to each value: for a conv consumer with weights
``W[o, c, k]`` (``k`` over the kernel taps) and the input patch ``P[c, k]`` under an output
position, channel ``c`` contributes ``sum_k W[o, c, k] * P[c, k]`` to output filter ``o``; the
output (without bias) is the sum of the contributions. For a linear consumer the patch is the
pooled input feature itself (one tap).

:func:`sample_groups` runs the base network over a few images with forward pre-hooks on the
consumers and keeps, per consumer, only the input patches under randomly drawn output positions
(the authors' code draws 10 per image), never the whole feature maps. Groups are gathered in as
few forward passes as fit a memory cap, so a deep network does not hold every consumer's samples
at once.

:class:`ReconstructionMethod` is the scaffold both methods share: sample, score each group from
its consumers' samples, fit the widths to the budget, report. ``thinet.py`` and
``regression.py`` hold only their criteria (the greedy selection; the LASSO and least squares).
"""

from __future__ import annotations

import zlib
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..budget import check_budget, fit_threshold
from ..families import WidthGroup, Widths
from ..widths import SearchSpace
from ._base import Proposal, SeedContext, SeedMethod, make_proposal

#: Stored samples per forward pass are kept under this many bytes (float32 patches).
MAX_PASS_BYTES = 512 * 2**20


@dataclass
class ConsumerSamples:
    """Sampled input patches of one consumer layer, on the CPU in float32.

    ``patches[n, c, k]``: input channel ``c``, kernel tap ``k`` under sampled output position
    ``n`` (a conv: one position per sample; a linear layer: one sample per image, ``k`` = 1).
    ``weight[o, c, k]``: the consumer's weights. ``filters[n, f]``: output filters drawn at random
    for sample ``n`` (ThiNet's (filter, row, column) locations; a conv has one per position, a
    linear layer ``points`` per image).
    """

    name: str
    kind: str  # conv | linear
    patches: torch.Tensor
    weight: torch.Tensor
    filters: torch.Tensor
    positions: torch.Tensor | None = None  # conv: [N, 3] (image, row, column) of each sample

    @property
    def channels(self) -> int:
        return int(self.patches.shape[1])

    def outputs(self) -> torch.Tensor:
        """The consumer's output (bias excluded) at every sampled position: ``[N, O]``."""
        return torch.einsum("nck,ock->no", self.patches, self.weight)

    def sampled_contributions(self, chunk: int = 4096) -> torch.Tensor:
        """ThiNet's ``x_hat``: each channel's contribution to each sampled output value.

        Returns ``[N * F, C]``: row (n, f) holds, per input channel, the contribution to output
        filter ``filters[n, f]`` at position ``n``.
        """
        out = []
        for i in range(0, self.patches.shape[0], chunk):
            p = self.patches[i: i + chunk]  # n c k
            w = self.weight[self.filters[i: i + chunk]]  # n f c k
            out.append(torch.einsum("nfck,nck->nfc", w, p).flatten(0, 1))
        return torch.cat(out) if out else self.patches.new_zeros(0, self.channels)


def consumer_generator(seed: int, name: str) -> torch.Generator:
    """A generator per (seed, consumer), so samples do not depend on how passes are grouped."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def conv_pads(m: nn.Conv2d) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding as the conv applies it, also for ``padding='same'``
    (the odd pixel on the right/bottom, as PyTorch does) and ``'valid'``."""
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0, 0, 0, 0)
        (th, tw) = (d * (k - 1) for d, k in zip(m.dilation, m.kernel_size, strict=True))
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    ph, pw = m.padding
    return (pw, pw, ph, ph)


def _patch_sampler(module: nn.Module, points: int, gen: torch.Generator):
    """A function from the consumer's input batch to (patches, filters, positions)."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise ValueError(f"sampling supports convs with groups=1, not {module}")
        kh, kw = module.kernel_size
        sh, sw = module.stride
        dh, dw = module.dilation
        pads = conv_pads(module)
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode

        def conv_patches(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            b, c, h, w = x.shape
            ho = (h + pads[2] + pads[3] - dh * (kh - 1) - 1) // sh + 1
            wo = (w + pads[0] + pads[1] - dw * (kw - 1) - 1) // sw + 1
            rows = torch.randint(0, ho, (b, points), generator=gen)
            cols = torch.randint(0, wo, (b, points), generator=gen)
            filt = torch.randint(0, module.out_channels, (b * points, 1), generator=gen)
            xp = F.pad(x, pads, mode=mode).permute(0, 2, 3, 1)  # b h w c
            dev = x.device
            r = (rows.view(b, points, 1, 1) * sh
                 + (torch.arange(kh) * dh).view(1, 1, kh, 1)).to(dev)
            q = (cols.view(b, points, 1, 1) * sw
                 + (torch.arange(kw) * dw).view(1, 1, 1, kw)).to(dev)
            bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
            patches = xp[bi, r, q]  # b p kh kw c
            where = torch.stack([torch.arange(b).view(b, 1).expand(b, points), rows, cols], -1)
            return (patches.reshape(b * points, kh * kw, c).transpose(1, 2), filt,
                    where.view(b * points, 3))

        return conv_patches
    if isinstance(module, nn.Linear):

        def linear_patches(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
            x = x.flatten(1)
            filt = torch.randint(0, module.out_features, (x.shape[0], points), generator=gen)
            return x.unsqueeze(-1), filt, None

        return linear_patches
    raise ValueError(f"cannot sample the input of a {type(module).__name__}; consumers must be "
                     f"Conv2d or Linear")


def _weight(module: nn.Module) -> torch.Tensor:
    w = module.weight.detach().float().cpu()
    return w.flatten(2) if w.dim() == 4 else w.unsqueeze(-1)


@torch.no_grad()
def sample_consumers(model: nn.Module, names: Sequence[str], images: torch.Tensor, *,
                     points: int, seed: int, batch_size: int = 128) -> dict[str, ConsumerSamples]:
    """Run ``images`` through ``model`` once and sample the inputs of the ``names`` modules.

    A conv consumer gets ``points`` random output positions (and one random output filter each)
    per image; a linear consumer one sample per image with ``points`` random output filters.
    """
    parts: dict[str, list[tuple]] = {n: [] for n in names}
    offset = {n: 0 for n in names}
    handles = []
    for name in names:
        module = model.get_submodule(name)
        sampler = _patch_sampler(module, points, consumer_generator(seed, name))

        def hook(mod, inputs, _sampler=sampler, _name=name):
            x = inputs[0].detach()
            patches, filt, where = _sampler(x)
            if where is not None:
                where[:, 0] += offset[_name]
            offset[_name] += x.shape[0]
            parts[_name].append((patches.float().cpu(), filt, where))

        handles.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, images.shape[0], batch_size):
            model(images[i: i + batch_size])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    out = {}
    for name in names:
        module = model.get_submodule(name)
        kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
        patches = torch.cat([p[0] for p in parts[name]])
        filters = torch.cat([p[1] for p in parts[name]])
        where = torch.cat([p[2] for p in parts[name]]) if kind == "conv" else None
        weight = _weight(module)
        if patches.shape[1] != weight.shape[1]:
            raise ValueError(f"consumer {name} reads {weight.shape[1]} channels but its input "
                             f"has {patches.shape[1]}; a flatten over space is not supported")
        out[name] = ConsumerSamples(name, kind, patches, weight, filters, where)
    return out


def _sample_bytes(model: nn.Module, name: str, images: int, points: int) -> int:
    m = model.get_submodule(name)
    if isinstance(m, nn.Conv2d):
        return images * points * m.in_channels * m.kernel_size[0] * m.kernel_size[1] * 4
    return images * int(getattr(m, "in_features", 1)) * 4


def sample_groups(model: nn.Module, space: SearchSpace, images: torch.Tensor, *, points: int,
                  seed: int, max_bytes: int = MAX_PASS_BYTES,
                  ) -> Iterator[tuple[WidthGroup, list[ConsumerSamples]]]:
    """Yield ``(group, samples of each of its consumers)`` for every width group, in order.

    Consecutive groups share a forward pass while their samples fit ``max_bytes``; a consumer's
    samples depend only on (seed, its name, the images), not on the packing.
    """
    groups = space.family.groups()
    batch: list[WidthGroup] = []
    size = 0

    def flush() -> Iterator[tuple[WidthGroup, list[ConsumerSamples]]]:
        names = list(dict.fromkeys(c for g in batch for c in g.consumers))
        got = sample_consumers(model, names, images, points=points, seed=seed)
        for g in batch:
            yield g, [got[c] for c in g.consumers]

    for g in groups:
        need = sum(_sample_bytes(model, c, images.shape[0], points) for c in g.consumers)
        if batch and size + need > max_bytes:
            yield from flush()
            batch, size = [], 0
        batch.append(g)
        size += need
    if batch:
        yield from flush()


class ReconstructionMethod(SeedMethod):
    """Base of the seed methods that judge a group by its consumers' sampled outputs.

    ThiNet and regression: a subclass gives its criterion for one group and what its proposal
    reports. :meth:`propose` checks the budget before any work, then calls, in this order:

    1. :meth:`analyse`: draws ``ctx.samples`` training images (``image_offset`` of the context's
       generators), samples the consumers of every group on them (:func:`sample_groups`,
       :attr:`points` per image) and calls :meth:`analyse_group` once per group, in the family's
       order, with one generator (``rng_offset``) that the groups share for the criterion's own
       random draws;
    2. :meth:`fit_widths`: scores -> widths at the budget (default: one global threshold,
       :func:`~nas_prune.budget.fit_threshold`, knob ``{"threshold": t}``);
    3. :meth:`describe`: the proposal's knob and diagnostics, from the widths, the knob of step 2
       and the per-group details that :meth:`analyse_group` returned.

    :meth:`scores` is step 1 alone.
    """

    #: Offset of ``ctx.sample_images``: each method draws its own images.
    image_offset: ClassVar[int]
    #: Offset of the generator handed to :meth:`analyse_group` (unused by a criterion that draws
    #: nothing).
    rng_offset: ClassVar[int] = 0

    @property
    @abstractmethod
    def points(self) -> int:
        """Sampled output positions per image (:func:`sample_groups`'s ``points``)."""

    @abstractmethod
    def analyse_group(self, samples: list[ConsumerSamples], rng: torch.Generator
                      ) -> tuple[torch.Tensor, Any]:
        """One score per channel of a group from its consumers' samples, and the details of the
        group that :meth:`describe` needs."""

    def fit_widths(self, ctx: SeedContext, scores: Mapping[str, torch.Tensor], budget: float
                   ) -> tuple[Widths, dict[str, Any]]:
        """Widths at the budget and the knob found: one global threshold on the scores."""
        return fit_threshold(ctx.space, scores, budget, ctx.metric)

    @abstractmethod
    def describe(self, ctx: SeedContext, widths: Widths, knob: dict[str, Any],
                 details: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The proposal's (knob, diagnostics)."""

    def analyse(self, model: nn.Module, ctx: SeedContext
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(scores, details) of every group, keyed by group name."""
        images = ctx.sample_images(offset=self.image_offset)
        rng = ctx.generator(offset=self.rng_offset)
        scores, details = {}, {}
        for group, samples in sample_groups(model, ctx.space, images, points=self.points,
                                            seed=ctx.seed):
            scores[group.name], details[group.name] = self.analyse_group(samples, rng)
        return scores, details

    def scores(self, model: nn.Module, ctx: SeedContext) -> dict[str, torch.Tensor]:
        return self.analyse(model, ctx)[0]

    def propose(self, model: nn.Module, ctx: SeedContext, budget: float) -> Proposal:
        check_budget(ctx.space, budget, ctx.metric)  # fail before any work
        scores, details = self.analyse(model, ctx)
        widths, knob = self.fit_widths(ctx, scores, budget)
        knob, diagnostics = self.describe(ctx, widths, knob, details)
        return make_proposal(self.name, ctx, budget, widths, scores, knob, diagnostics)


__all__ = ["MAX_PASS_BYTES", "ConsumerSamples", "ReconstructionMethod", "consumer_generator",
           "sample_consumers", "sample_groups"]
