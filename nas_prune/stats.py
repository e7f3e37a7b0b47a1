"""The statistics every table of the project uses, in one place (see shared EVIDENCE rules).

* :func:`mean_std`: mean, sample standard deviation (ddof = 1) and n; with one value the std is
  ``None`` ("one seed": there is no spread to report), never 0.
* :func:`paired_difference`: the mean of seed-by-seed differences of two rows with its 95%
  t-interval (t quantile with n - 1 degrees of freedom), and the verdict that the interval
  supports: ``better`` (interval above 0), ``worse`` (below 0), else ``not resolved at n = k``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PairedDifference", "binomial_std", "fmt_mean_std", "mean_std", "paired_difference",
           "t_quantile"]


def _finite(values: Sequence[float | None]) -> list[float]:
    out = []
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample std (n - 1; ``None`` for n < 2) and n of the finite values."""
    vals = _finite(values)
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def fmt_mean_std(values: Sequence[float | None], *, scale: float = 100.0, digits: int = 2) -> str:
    """``"91.23 ± 0.45 (n=3)"``; accuracies are fractions shown as percent by default."""
    m, s, n = mean_std(values)
    if m is None:
        return "-"
    if s is None:
        return f"{m * scale:.{digits}f} (n={n}, one seed: no std)"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f} (n={n})"


def binomial_std(p: float, n_images: int) -> float:
    """The standard deviation of one accuracy ``p`` measured on ``n_images`` images."""
    return math.sqrt(max(p * (1 - p), 0.0) / max(n_images, 1))


def t_quantile(df: int, q: float = 0.975) -> float:
    """Student's t quantile (two-sided 95% by default) with ``df`` degrees of freedom (SciPy's;
    SciPy is a dependency of scikit-learn, which the regression seed method needs anyway)."""
    if df < 1:
        raise ValueError("t_quantile: df must be >= 1")
    from scipy.stats import t as student_t

    return float(student_t.ppf(q, df))


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` paired by seed: mean, sample std, n, the 95% t-interval and the verdict."""

    mean: float | None
    std: float | None
    n: int
    low: float | None
    high: float | None
    seeds: tuple[int, ...]

    @property
    def verdict(self) -> str:
        if self.low is None or self.high is None:
            return f"not resolved at n = {self.n}"
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return f"not resolved at n = {self.n}"

    def seeds_to_resolve(self) -> int | None:
        """Seeds that would put an interval of this std around this mean clear of 0 (an
        estimate: it assumes the observed mean and std hold); None when it cannot say."""
        if self.mean is None or self.std is None or self.mean == 0:
            return None
        if self.std == 0:
            return max(self.n, 2)
        for k in range(2, 1001):
            if t_quantile(k - 1) * self.std / math.sqrt(k) < abs(self.mean):
                return k
        return None

    def to_dict(self) -> dict[str, object]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "ci95": [self.low, self.high],
                "seeds": list(self.seeds), "verdict": self.verdict}


def paired_difference(a: Mapping[int, float | None], b: Mapping[int, float | None]
                      ) -> PairedDifference:
    """``a - b`` over the seeds both rows have a finite value for."""
    seeds = tuple(sorted(s for s in a if s in b and _finite([a[s]]) and _finite([b[s]])))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    mean, std, n = mean_std(diffs)
    if n < 2 or std is None:
        return PairedDifference(mean, std, n, None, None, seeds)
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return PairedDifference(mean, std, n, mean - half, mean + half, seeds)
