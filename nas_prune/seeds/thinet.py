"""ThiNet (Luo et al. 2017, arXiv 1707.06342): channels chosen by the next layer's reconstruction.

The channels of layer *i* are judged by the layer that reads them. The authors' code samples
images (10 per class) and 10 random (filter, row, column) locations of layer *i+1*'s output per
image; for each sampled output value it records every input channel's contribution ``x_hat_c``
(the consumer's weights of that filter applied to channel ``c``'s input patch; the value is the
sum of the contributions). The greedy selection starts with an empty set ``T`` of channels to
remove and repeatedly adds the channel ``j`` that minimises ``sum over samples of
(sum_{k in T + j} x_hat_k)^2``, i.e. whose removal together with ``T`` changes the sampled
outputs least, until ``C - int(C x keep_ratio)`` channels are in ``T``. (Their code then rescales
the kept weights by least squares; nas-prune throws weights away, so it does not.)

Here (the sampling and the propose steps are
:class:`~nas_prune.seeds.ReconstructionMethod`'s; this file holds the criterion):

* :func:`thinet_select` runs the greedy on a contribution matrix ``[N samples, C]`` without a
  loop over samples: with the Gram matrix ``G = X^T X`` the objective of ``T + j`` is
  ``t'Gt + 2 (Gt)_j + G_jj`` (``t`` the indicator of ``T``), updated in O(C) per step.
  :func:`thinet_select_reference` is the paper's algorithm written literally, with Python loops
  over candidates and samples; the tests and ``benchmarks/seed_methods.py`` check one against the
  other.
* Scores: the greedy is run to ``C - 1`` removals; a channel's score is the relative
  reconstruction error (sampled output energy lost, divided by the total) once it and every
  channel removed before it are gone, made non-decreasing along the removal order, plus a 1e-6
  tie-break by that order. So the removal order is the ranking, and scores lie in about [0, 1]
  in every group, comparable across layers.
* Budget (``Options.allocation``): ``error`` (default) fits one global threshold on the scores,
  i.e. each group is pruned until its relative reconstruction error reaches a common level, so
  the widths carry ThiNet's judgement of each layer; ``ratio`` (the paper's way) bisects one keep
  ratio shared by every group, then moves single groups a grid step to land on the budget, by
  score. ``ratio`` gives (almost) the uniform baseline's widths, which is why nas-prune, where a
  seed method's worth is its width vector, defaults to ``error``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..budget import fit_scalar, fit_threshold
from ..errors import UserError
from ..families import Widths
from ._activations import ConsumerSamples, ReconstructionMethod
from ._base import SeedContext

ALLOCATIONS = ("ratio", "error")
TIE_BREAK = 1e-6


def _greedy(gram: torch.Tensor, n_remove: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy on a Gram matrix: (removed indices in order, objective after each removal)."""
    c = gram.shape[0]
    if not 0 <= n_remove <= c:
        raise ValueError(f"n_remove={n_remove} must lie in [0, {c}]")
    diag = gram.diagonal()
    g_t = torch.zeros(c, dtype=gram.dtype)  # G @ t
    current = torch.zeros((), dtype=gram.dtype)  # t' G t
    taken = torch.zeros(c, dtype=torch.bool)
    order = torch.empty(n_remove, dtype=torch.long)
    values = torch.empty(n_remove, dtype=gram.dtype)
    for step in range(n_remove):
        cand = current + 2.0 * g_t + diag
        cand = cand.masked_fill(taken, math.inf)
        j = int(torch.argmin(cand))  # first minimum, as the reference loop
        order[step], values[step] = j, cand[j]
        current = cand[j]
        g_t += gram[:, j]
        taken[j] = True
    return order, values


def thinet_select(contrib: torch.Tensor, n_remove: int) -> torch.Tensor:
    """ThiNet's greedy channel selection, vectorised over samples.

    ``contrib[n, c]`` is channel ``c``'s contribution to sampled output value ``n``. Returns the
    ``n_remove`` channels to remove, in the order the greedy picks them (float64 arithmetic).
    """
    x = contrib.detach().double().cpu()
    return _greedy(x.T @ x, n_remove)[0]


def thinet_select_reference(contrib: torch.Tensor, n_remove: int) -> torch.Tensor:
    """The paper's Algorithm 1 with plain Python loops (slow; for tests and the benchmark).

    ``T`` starts empty; while ``|T| < n_remove``: for every channel ``j`` not in ``T``, value =
    sum over samples ``i`` of (sum over ``k`` in ``T + j`` of ``contrib[i, k]``)^2; add the
    channel with the smallest value (the first on ties). The per-sample sums over ``T`` are kept
    as a running list rather than recomputed for every candidate.
    """
    columns = contrib.detach().double().cpu().T.tolist()  # C lists of N floats
    n = len(columns[0]) if columns else 0
    running = [0.0] * n  # sum over T of contrib[i, k], per sample i
    remaining = list(range(len(columns)))
    removed: list[int] = []
    for _ in range(n_remove):
        best, best_value = -1, math.inf
        for j in remaining:
            col = columns[j]
            value = 0.0
            for i in range(n):
                s = running[i] + col[i]
                value += s * s
            if value < best_value:
                best, best_value = j, value
        removed.append(best)
        remaining.remove(best)
        col = columns[best]
        for i in range(n):
            running[i] += col[i]
    return torch.tensor(removed, dtype=torch.long)


def group_contributions(samples: list[ConsumerSamples]) -> torch.Tensor:
    """The contribution rows of every consumer of a group, stacked (``[sum N_i, C]``).

    Each consumer's rows are divided by the RMS of its sampled output values, so a group read by
    several layers (a residual stage) weighs each reader equally.
    """
    rows = []
    for s in samples:
        x = s.sampled_contributions().double()
        rms = x.sum(1).pow(2).mean().sqrt().clamp_min(1e-12)
        rows.append(x / rms)
    return torch.cat(rows)


def removal_scores(contrib: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel scores from a greedy run to C - 1 removals, and the relative error curve.

    ``curve[k]`` is the relative reconstruction error once ``k`` channels are removed (``k`` = 0
    .. C, made non-decreasing); channel removed at step ``k`` scores ``curve[k + 1]`` plus the
    tie-break ``1e-6 * (k + 1) / C``; the last channel scores ``max(1, curve[C - 1])`` + 1e-6.
    """
    x = contrib.detach().double().cpu()
    c = x.shape[1]
    gram = x.T @ x
    total = gram.sum().clamp_min(1e-30)
    order, values = _greedy(gram, c - 1)
    rel = torch.cat([torch.zeros(1, dtype=torch.float64), values / total,
                     torch.ones(1, dtype=torch.float64)])
    curve = torch.cummax(rel, 0).values
    scores = torch.empty(c, dtype=torch.float64)
    rank = torch.arange(1, c, dtype=torch.float64) / c
    scores[order] = curve[1:c] + TIE_BREAK * rank
    last = sorted(set(range(c)) - set(order.tolist()))
    scores[last] = max(1.0, float(curve[c - 1])) + TIE_BREAK
    return scores.float(), curve


class ThiNet(ReconstructionMethod):
    name = "thinet"
    paper = "Luo et al. 2017, arXiv 1707.06342"
    summary = ("greedy channel selection minimising the next layer's reconstruction error on "
               "sampled output values")
    groups_note = ("a group is judged by every layer that reads it: a residual stage's samples "
                   "from each block's first conv and the next stage's first conv (or the "
                   "classifier) are stacked, each reader's rows scaled to unit output RMS, and "
                   "one greedy selection is run over the stacked samples; a group with a "
                   "depthwise conv (graph family) is judged at the readers after it (the "
                   "depthwise conv is channel-wise, so a removed channel is exactly a removed "
                   "input there); the depthwise filters themselves are not reconstructed")
    limitations = ("the identity shortcuts that also carry a residual stage's channels are not "
                   "sampled; the least-squares rescaling of the kept weights is skipped (weights "
                   "are not reused); images are drawn at random, not 10 per class")

    @dataclass(frozen=True)
    class Options:
        """``locations``: sampled (filter, row, column) output values per image (authors: 10).
        ``allocation``: ``ratio`` (one keep ratio for every group, the paper's way) or ``error``
        (one threshold on the relative reconstruction error)."""

        locations: int = 10
        allocation: str = "error"

        def __post_init__(self) -> None:
            if isinstance(self.locations, bool) or not isinstance(self.locations, int) \
                    or self.locations < 1:
                raise UserError(f"seed_method.options.thinet.locations: {self.locations!r} must "
                                f"be a positive integer")
            if self.allocation not in ALLOCATIONS:
                raise UserError(f"seed_method.options.thinet.allocation: {self.allocation!r}; "
                                f"choose one of {', '.join(ALLOCATIONS)}")

    image_offset = 101

    @property
    def points(self) -> int:
        return self.options.locations

    def analyse_group(self, samples: list[ConsumerSamples], rng: torch.Generator
                      ) -> tuple[torch.Tensor, tuple[torch.Tensor, int]]:
        """Scores, and (the relative error curve, the number of contribution rows). The greedy
        draws nothing: ``rng`` is unused."""
        contrib = group_contributions(samples)
        scores, curve = removal_scores(contrib)
        return scores, (curve, int(contrib.shape[0]))

    def fit_widths(self, ctx: SeedContext, scores: Mapping[str, torch.Tensor], budget: float
                   ) -> tuple[Widths, dict[str, Any]]:
        """``ratio``: one keep ratio for every group; ``error``: one threshold on the scores."""
        knob: dict[str, Any] = {"allocation": self.options.allocation}
        if self.options.allocation == "ratio":
            base = ctx.space.base_widths()
            widths, ratio = fit_scalar(ctx.space, lambda x: {g: b * x for g, b in base.items()},
                                       budget, ctx.metric, scores=scores)
            knob["keep_ratio"] = round(ratio, 6)
        else:
            widths, found = fit_threshold(ctx.space, scores, budget, ctx.metric)
            knob["error_threshold"] = round(found["threshold"], 6)
        return widths, knob

    def describe(self, ctx: SeedContext, widths: Widths, knob: dict[str, Any],
                 details: Mapping[str, tuple[torch.Tensor, int]]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The knob as fitted; per group the relative error at the proposed width."""
        base = ctx.space.base_widths()
        errors = {g: float(f"{float(curve[base[g] - widths[g]]):.4g}")
                  for g, (curve, _) in details.items()}
        diagnostics = {"samples_per_group": {g: rows for g, (_, rows) in details.items()},
                       "relative_reconstruction_error": errors,
                       "note": "sampled output energy of the consumer layer(s) lost by removing "
                               "the greedy's first (base - proposed) channels"}
        return knob, diagnostics
