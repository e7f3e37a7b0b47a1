"""Regression-based channel pruning (He et al. 2017, arXiv 1707.06168): LASSO + least squares.

For layer *i*'s channels, the authors sample images and 10 random spatial points per image of the
next layer's output; per point, each input channel's contribution to every output filter,
``Z[n, c, o] = sum_k W[o, c, k] * P[n, c, k]``, and the output ``Y[n, o] = sum_c Z[n, c, o]``.
Channel selection is a LASSO on one coefficient per channel, ``Y ~ sum_c beta_c Z_c``, solved by
scikit-learn's ``Lasso`` on a random subset of sampled points; the penalty ``alpha`` starts at
1e-3, doubles until fewer than the wanted number of coefficients are non-zero, then is bisected
until the count lies in [target, 1.1 x target]. The kept channels' weights are then refitted by
least squares to reconstruct ``Y``.

Here (the sampling and the propose steps are
:class:`~nas_prune.seeds.ReconstructionMethod`'s; this file holds the criterion):

* Each group's problem is scaled so that its sampled outputs have unit RMS, which makes one
  ``alpha`` mean the same thing in every layer. The LASSO only depends on ``Z'Z`` and ``Z'Y``, so
  those are accumulated over the points (chunked, never materialising ``Z`` for all of them) and
  handed to ``Lasso`` as an equivalent C x C design (``R'R = Z'Z``, ``R'y = Z'Y``, rows rescaled
  so scikit-learn's 1/(2 n_samples) factor matches): the same minimiser at the same ``alpha``.
* Scores: the LASSO path on a lattice of ``alpha`` values shared by every group (8 per decade
  down to 1e-6); a channel scores by the largest ``alpha`` at which its coefficient is non-zero
  (``log10(alpha / 1e-7)``), plus a tie-break below one lattice step that grows with the
  coefficient's size there. Channels that never enter (dead, or more channels than sampled
  rows) score below all others, by their contribution energy.
* Budget: one global threshold on the scores, i.e. one ``alpha`` for the whole network, bisected
  until the budget is met (each group keeps its channels still active at that ``alpha``), then
  rounded to the grid and moved a step at a time by score. Then, per group, the authors' ``alpha``
  search selects exactly the proposed number of channels (the largest ``|beta|`` among the
  non-zero ones when the search stops above the target), and ridge least squares (lambda 1e-3 x
  the mean input energy) refits the kept channels' weights on 75% of the points; the relative
  error on the other 25% (and the same for a random selection of the same size) is reported in
  the diagnostics. The refitted weights are not reused.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..families import Widths
from ._activations import ConsumerSamples, ReconstructionMethod
from ._base import SeedContext

ALPHA_FLOOR = 1e-7  # score 0 point of the alpha lattice
ALPHA_MIN = 1e-6  # smallest alpha on the path
STEPS_PER_DECADE = 8


@dataclass
class LassoProblem:
    """One group's LASSO ``min_beta 1/(2M) ||y - Z beta||^2 + alpha ||beta||_1``, compressed.

    ``design`` (C x C) and ``target`` (C) reproduce the objective of the M-row problem up to a
    constant, so scikit-learn fits it at a cost independent of the number of sampled points.
    """

    design: np.ndarray
    target: np.ndarray
    alpha_max: float  # the smallest alpha at which every coefficient is zero
    energy: np.ndarray  # mean squared contribution of each channel (diag of Z'Z / M)

    @classmethod
    def from_moments(cls, gram: torch.Tensor, zy: torch.Tensor, rows: int) -> LassoProblem:
        gram = gram.double()
        c = gram.shape[0]
        evals, evecs = torch.linalg.eigh(0.5 * (gram + gram.T))
        keep = evals > evals.max().clamp_min(0) * 1e-12
        root = evals.clamp_min(0).sqrt()
        design = root[:, None] * evecs.T  # R, with R'R = G
        proj = evecs.T @ zy.double()
        target = torch.where(keep, proj / root.clamp_min(1e-300), torch.zeros_like(proj))
        scale = math.sqrt(c / max(rows, 1))
        alpha_max = float(zy.abs().max()) / max(rows, 1)
        energy = (gram.diagonal() / max(rows, 1)).numpy()
        return cls((design * scale).numpy(), (target * scale).numpy(), alpha_max, energy)

    @classmethod
    def from_samples(cls, samples: list[ConsumerSamples], points: int,
                     generator: torch.Generator, chunk: int = 64) -> LassoProblem:
        """Moments of ``Z`` over up to ``points`` random points of every consumer (stacked).

        Each consumer's ``Z`` is divided by the RMS of its sampled outputs.
        """
        c = samples[0].channels
        gram = torch.zeros(c, c, dtype=torch.float64)
        zy = torch.zeros(c, dtype=torch.float64)
        rows = 0
        for s in samples:
            n = s.patches.shape[0]
            idx = torch.randperm(n, generator=generator)[: min(points, n)]
            patches = s.patches[idx]
            weight = s.weight
            y_all = torch.einsum("nck,ock->no", patches, weight)
            rms = float(y_all.double().pow(2).mean().sqrt().clamp_min(1e-12))
            for i in range(0, patches.shape[0], chunk):
                z = torch.einsum("nck,ock->cno", patches[i: i + chunk], weight)
                z = z.reshape(c, -1) / rms
                y = z.sum(0)
                gram += (z @ z.T).double()  # float32 products per chunk, float64 sums
                zy += (z @ y).double()
                rows += y.numel()
        return cls.from_moments(gram, zy, rows)

    def fit(self, alpha: float, *, seed: int, warm: np.ndarray | None = None) -> np.ndarray:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import Lasso

        lasso = Lasso(alpha=alpha, fit_intercept=False, max_iter=20000, tol=1e-6,
                      warm_start=warm is not None, selection="random", random_state=seed)
        if warm is not None:
            lasso.coef_ = warm.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lasso.fit(self.design, self.target)
        return lasso.coef_.copy()

    def path(self, alphas: np.ndarray, *, chunk: int = STEPS_PER_DECADE, tol: float = 1e-4,
             max_iter: int = 2000) -> np.ndarray:
        """Coefficients ``[C, len(alphas)]`` along decreasing ``alphas``.

        Walked one chunk (a decade) at a time, warm-started; once every coefficient has been
        non-zero somewhere, the remaining (smaller) alphas are left as zeros: only the largest
        alpha at which each channel is active is needed for the scores.
        """
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import lasso_path

        c = self.design.shape[1]
        coefs = np.zeros((c, len(alphas)))
        seen = np.zeros(c, dtype=bool)
        init = None
        for start in range(0, len(alphas), chunk):
            part = alphas[start: start + chunk]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                _, got, _ = lasso_path(self.design, self.target, alphas=part, coef_init=init,
                                       max_iter=max_iter, tol=tol)
            coefs[:, start: start + len(part)] = got
            init = got[:, -1].copy()
            seen |= (got != 0).any(1)
            if seen.all():
                break
        return coefs


def alpha_lattice(alpha_max: float) -> np.ndarray:
    """Alphas ``10**(j / 8)`` from just above ``alpha_max`` down to ``ALPHA_MIN``, decreasing."""
    top = math.ceil(math.log10(max(alpha_max, ALPHA_MIN)) * STEPS_PER_DECADE)
    bottom = math.floor(math.log10(ALPHA_MIN) * STEPS_PER_DECADE)
    return 10.0 ** (np.arange(top, bottom - 1, -1) / STEPS_PER_DECADE)


def path_scores(problem: LassoProblem) -> torch.Tensor:
    """Per channel: log10(largest lattice alpha with a non-zero coefficient / 1e-7) + tie-break.

    The tie-break (below one lattice step) grows with the coefficient there. A channel that
    never enters the path (a dead channel, or more channels than sampled rows) scores below
    every entering one: half a step times its contribution energy relative to the largest.
    """
    alphas = alpha_lattice(problem.alpha_max)
    coefs = np.abs(problem.path(alphas))  # C x A, alphas decreasing
    active = coefs > 0
    step = 1.0 / STEPS_PER_DECADE
    scores = 0.5 * step * problem.energy / max(float(problem.energy.max()), 1e-30)
    for c in range(coefs.shape[0]):
        hits = np.flatnonzero(active[c])
        if hits.size:
            a = hits[0]
            size = coefs[c, a]
            scores[c] = math.log10(alphas[a] / ALPHA_FLOOR) + step * size / (1.0 + size)
    return torch.from_numpy(scores).float()


def lasso_select(problem: LassoProblem, keep: int, *, seed: int, alpha0: float = 1e-3,
                 max_steps: int = 60) -> tuple[torch.Tensor, float, int]:
    """The authors' alpha search: ``keep`` channel indices, the alpha used, its non-zero count.

    alpha starts at ``alpha0``; it doubles while at least ``keep`` coefficients are non-zero
    (halves first if fewer are), then bisection (geometric) until the count lies in
    [keep, 1.1 x keep]; the ``keep`` largest ``|beta|`` at that alpha are kept (ties, such as
    channels no alpha makes non-zero: the larger contribution energy, then the lower index).
    """
    c = problem.design.shape[1]
    if keep >= c:
        return torch.arange(c), 0.0, c
    upper = max(keep, int(math.floor(1.1 * keep)))

    def count(alpha: float, warm: np.ndarray | None) -> tuple[int, np.ndarray]:
        coef = problem.fit(alpha, seed=seed, warm=warm)
        return int(np.count_nonzero(coef)), coef

    lo_alpha, lo_coef = None, None  # count >= keep
    hi_alpha = None  # count < keep
    alpha, warm = alpha0, None
    for _ in range(max_steps):
        n, coef = count(alpha, warm)
        warm = coef
        if n >= keep:
            lo_alpha, lo_coef = alpha, coef
            if n <= upper:
                break
            if hi_alpha is not None:
                alpha = math.sqrt(lo_alpha * hi_alpha)
            else:
                alpha *= 2.0
        else:
            hi_alpha = alpha
            if lo_alpha is None:
                alpha *= 0.5
                if alpha < 1e-12:
                    break
            else:
                alpha = math.sqrt(lo_alpha * hi_alpha)
        if lo_alpha is not None and hi_alpha is not None and hi_alpha / lo_alpha < 1 + 1e-6:
            break
    if lo_coef is None:  # even a tiny alpha leaves fewer than ``keep`` (rank-deficient)
        lo_alpha, lo_coef = alpha, warm
    size = np.abs(lo_coef)
    order = np.lexsort((np.arange(c), -problem.energy, -size))  # largest |beta| first
    kept = np.sort(order[:keep])
    return torch.from_numpy(kept).long(), float(lo_alpha), int(np.count_nonzero(lo_coef))


def reconstruction_error(samples: list[ConsumerSamples], kept: torch.Tensor,
                         generator: torch.Generator, *, ridge: float = 1e-3,
                         holdout: float = 0.25) -> float:
    """Relative error of the consumers' outputs rebuilt from the ``kept`` channels only.

    Per consumer: ridge least squares of the full output ``Y`` on the kept channels' patches,
    fitted on (1 - ``holdout``) of the sampled points, ``||Y - Y_hat||^2 / ||Y||^2`` on the rest;
    the mean over consumers.
    """
    errs = []
    for s in samples:
        n = s.patches.shape[0]
        perm = torch.randperm(n, generator=generator)
        n_test = max(1, int(round(holdout * n)))
        test, fit = perm[:n_test], perm[n_test:]
        y = s.outputs().double()
        x = s.patches[:, kept].flatten(1).double()
        a = x[fit].T @ x[fit]
        lam = ridge * float(a.diagonal().mean().clamp_min(1e-12))
        w = torch.linalg.solve(a + lam * torch.eye(a.shape[0], dtype=a.dtype), x[fit].T @ y[fit])
        resid = y[test] - x[test] @ w
        errs.append(float(resid.pow(2).sum() / y[test].pow(2).sum().clamp_min(1e-30)))
    return float(np.mean(errs))


class Regression(ReconstructionMethod):
    name = "regression"
    paper = "He et al. 2017, arXiv 1707.06168"
    summary = ("LASSO channel selection on the next layer's output + least-squares "
               "reconstruction; one global LASSO penalty sets the widths")
    groups_note = ("a group is judged by every layer that reads it: for a residual stage the "
                   "contributions to each reader (each block's first conv, the next stage's "
                   "first conv or the classifier), each scaled to unit output RMS, are stacked "
                   "into one LASSO with one coefficient per stage channel; a group with a "
                   "depthwise conv (graph family) is judged at the readers after it, the "
                   "depthwise filters themselves are not part of the regression")
    limitations = ("the identity shortcuts that also carry a residual stage's channels are not "
                   "reconstructed; the authors' extra channels for sensitive ResNet blocks are "
                   "not modelled; a linear consumer gives one sample per image, so with fewer "
                   "images x outputs than channels the LASSO cannot separate them all; with few "
                   "sampled points the least-squares refit is ridge-regularised and scored on "
                   "held-out points")

    @dataclass(frozen=True)
    class Options:
        """``points``: sampled output positions per image (authors: 10). ``lasso_points``:
        random points (per consumer) the LASSO sees (authors: at most 400). ``alpha0``: the
        first LASSO penalty of the selection search (authors: 1e-3). ``compare_random``: also
        report the reconstruction error of a random selection of the same size."""

        points: int = 10
        lasso_points: int = 400
        alpha0: float = 1e-3
        compare_random: bool = True

        def __post_init__(self) -> None:
            for key in ("points", "lasso_points"):
                v = getattr(self, key)
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise UserError(f"seed_method.options.regression.{key}: {v!r} must be a "
                                    f"positive integer")
            if not isinstance(self.alpha0, (int, float)) or not self.alpha0 > 0:
                raise UserError(f"seed_method.options.regression.alpha0: {self.alpha0!r} must "
                                f"be a positive number")

    image_offset = 211
    rng_offset = 223  # the LASSO's random subsets of points

    @property
    def points(self) -> int:
        return self.options.points

    def analyse_group(self, samples: list[ConsumerSamples], rng: torch.Generator
                      ) -> tuple[torch.Tensor, tuple[LassoProblem, list[ConsumerSamples]]]:
        """Path scores, and (the group's LASSO problem, its samples for the refit)."""
        problem = LassoProblem.from_samples(samples, self.options.lasso_points, rng)
        return path_scores(problem), (problem, samples)

    def describe(self, ctx: SeedContext, widths: Widths, knob: dict[str, Any],
                 details: Mapping[str, tuple[LassoProblem, list[ConsumerSamples]]]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Per group: the authors' alpha search for exactly the proposed width, and the
        reconstruction error of that selection (and of a random one) on held-out points."""
        alpha = ALPHA_FLOOR * 10.0 ** knob["threshold"]
        per_group: dict[str, dict[str, Any]] = {}
        gen = ctx.generator(offset=227)
        for g, w in widths.items():
            problem, samples = details[g]
            kept, a, nnz = lasso_select(problem, w, seed=ctx.seed, alpha0=self.options.alpha0)
            info: dict[str, Any] = {"kept": int(w), "lasso_alpha": _sig(a), "lasso_nonzero": nnz}
            c = problem.design.shape[1]
            if w < c:
                split = int(torch.randint(0, 2**31, (), generator=gen))  # same held-out points
                info["rel_error"] = _held_out_error(samples, kept, split)
                if self.options.compare_random:
                    random_pick = torch.randperm(c, generator=gen)[:w].sort().values
                    info["random_rel_error"] = _held_out_error(samples, random_pick, split)
            per_group[g] = info
        diagnostics = {"reconstruction": per_group,
                       "note": "relative error of the consumers' sampled outputs rebuilt from the "
                               "LASSO-selected channels by ridge least squares (held-out points)"}
        return {"global_alpha": _sig(alpha)}, diagnostics


def _held_out_error(samples: list[ConsumerSamples], kept: torch.Tensor, split: int) -> float:
    """:func:`reconstruction_error` with the held-out points drawn from seed ``split``."""
    return _sig(reconstruction_error(samples, kept, torch.Generator().manual_seed(split)))


def _sig(x: float) -> float:
    """Four significant digits, for readable diagnostics."""
    return float(f"{x:.4g}")
