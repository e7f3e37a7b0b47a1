"""The space a search samples: widths around seed proposals, projected onto the budget.

Single objective (``search.objective: single``), the default:

* ``start`` (categorical) picks the width vector to start from: one of the seed methods'
  proposals or the ``uniform`` baseline (a separate choice, so the search can also explore around
  uniform scaling and the comparison stays fair). With one start the parameter has one choice.
* ``m_<group>`` (float in ``[multiplier_low, multiplier_high]``) multiplies the start's width of
  every width group. A residual group (all block outputs of a stage) is one group and gets one
  multiplier, like any other.
* Projection: one common scale factor ``s`` is bisected so that
  ``cost(snap(s * m_g * w0_g))`` lands within ``tolerance`` of the target cost, where ``snap``
  rounds to the space's divisor grid and clips to its bounds. ``s = 1`` is tried first, so
  multipliers that already meet the budget are kept as they are. The enqueued baseline params
  ``start=<name>, m_g=1.0`` decode to the proposal itself, unprojected (a seed method meets the
  budget within its own 1%, which a tighter ``tolerance`` must not overrule). Because snapping
  makes the cost a step function of ``s``, some multiplier vectors have no ``s`` within tolerance;
  single groups are then moved one grid step at a time to land (see ``project``); what still
  cannot land is *rejected* (recorded with the reason, never trained).

Multi objective (``search.objective: multi``, accuracy up and cost down, NSGA-II): no start and no
projection; ``keep_<group>`` is the group's keep ratio of the base width, in
``[min_g / base_g, max_g / base_g]``, and the widths are ``snap(keep_g * base_g)``. The seeds are
enqueued with ``keep_g = w0_g / base_g``, which snaps back to ``w0_g`` exactly.

Everything here is plain data (:meth:`CandidateSpace.to_dict`), so a worker process or a Ray actor
rebuilds the same space from a study's user attributes or a trial's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..budget import refine_to_budget
from ..errors import UserError
from ..families import Widths
from ..widths import SearchSpace

START = "start"
MULT = "m_"
KEEP = "keep_"
UNIFORM = "uniform"
OBJECTIVES = ("single", "multi")
ROLES = ("seed", "uniform", "search")
_BISECT_STEPS = 60


@dataclass(frozen=True)
class Candidate:
    """A decoded trial: the widths to train, or why there are none (``rejected``)."""

    role: str  # seed | uniform | search
    seed_method: str | None  # the start it was built from (None: multi-objective search trial)
    widths: Widths | None
    cost: int | None  # in the budget metric
    scale: float | None  # the projection's common factor (single objective)
    reason: str = ""
    latency: Any = None  # metric latency: the measured Ratio the budget check used

    @property
    def rejected(self) -> bool:
        return self.widths is None


class CandidateSpace:
    """Sampling, decoding and budget projection around a set of start width vectors.

    ``starts`` maps a name (a seed method, or ``uniform``) to its width vector, in order: seed
    methods first, ``uniform`` last. ``metric`` is the budget's cost (flops or params) and
    ``target`` its target value.
    """

    def __init__(self, space: SearchSpace, *, starts: Mapping[str, Mapping[str, int]],
                 objective: str = "single", metric: str = "flops", target: int,
                 tolerance: float = 0.02, multiplier_low: float = 0.5,
                 multiplier_high: float = 1.5, source: Mapping[str, Any] | None = None,
                 latency: Mapping[str, Any] | None = None) -> None:
        if objective not in OBJECTIVES:
            raise UserError(f"search.objective: {objective!r}; choose one of "
                            f"{', '.join(OBJECTIVES)}")
        if not 0 < multiplier_low <= 1 <= multiplier_high:
            raise UserError(f"search.multiplier_low/high: need 0 < low <= 1 <= high, got "
                            f"[{multiplier_low}, {multiplier_high}]")
        if not 0 < tolerance < 1:
            raise UserError(f"search.tolerance: {tolerance} must be a fraction in (0, 1)")
        if not starts:
            raise UserError("seed_method.name: at least one seed proposal is needed")
        self.space = space
        self.starts = {name: space.validate(w, where=f"proposal {name}")
                       for name, w in starts.items()}
        self.objective = objective
        self.metric = metric
        self.target = int(target)
        self.tolerance = float(tolerance)
        self.low, self.high = float(multiplier_low), float(multiplier_high)
        self.source = dict(source) if source is not None else None
        self.latency = dict(latency) if latency is not None else None  # LatencyConfig fields
        if metric == "latency" and space.latency is None:
            if self.latency is None:
                raise UserError("seed_method.metric: latency needs the latency section of the "
                                "config")
            from ..latency import LatencyConfig

            space = space.with_latency(LatencyConfig(**self.latency))
            self.space = space
        self.base = space.base_widths()

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        if self.source is None:
            raise ValueError("a CandidateSpace without its space source cannot be serialised")
        return {"space": self.source, "starts": {k: dict(v) for k, v in self.starts.items()},
                "objective": self.objective, "metric": self.metric, "target": self.target,
                "tolerance": self.tolerance, "multiplier_low": self.low,
                "multiplier_high": self.high, "latency": self.latency}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateSpace:
        src = data["space"]
        space = SearchSpace.from_dict(src["data"], name=src["name"])
        return cls(space, starts=data["starts"], objective=data["objective"],
                   metric=data["metric"], target=int(data["target"]),
                   tolerance=float(data["tolerance"]), multiplier_low=float(data["multiplier_low"]),
                   multiplier_high=float(data["multiplier_high"]), source=src,
                   latency=data.get("latency"))

    # ---- parameters -------------------------------------------------------------------------
    @property
    def groups(self) -> list[str]:
        return self.space.group_names

    def keep_range(self, group: str) -> tuple[float, float]:
        lo, hi = self.space.bounds[group]
        return self.space.min_widths()[group] / self.base[group], hi / self.base[group]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample one point with an Optuna trial (or Ray's define-by-run captor)."""
        if self.objective == "multi":
            return {f"{KEEP}{g}": trial.suggest_float(f"{KEEP}{g}", *self.keep_range(g))
                    for g in self.groups}
        params: dict[str, Any] = {START: trial.suggest_categorical(START, list(self.starts))}
        for g in self.groups:
            params[f"{MULT}{g}"] = trial.suggest_float(f"{MULT}{g}", self.low, self.high)
        return params

    def baseline_points(self) -> list[tuple[dict[str, Any], str, str]]:
        """(params, role, seed method) of the trials that go first: the seeds, then uniform."""
        out = []
        for name, w0 in self.starts.items():
            role = "uniform" if name == UNIFORM else "seed"
            if self.objective == "multi":
                params = {f"{KEEP}{g}": w0[g] / self.base[g] for g in self.groups}
            else:
                params = {START: name, **{f"{MULT}{g}": 1.0 for g in self.groups}}
            out.append((params, role, name))
        return out

    def role_of(self, params: Mapping[str, Any]) -> tuple[str, str | None]:
        """(role, seed method) of a point: a baseline when it equals one exactly."""
        for point, role, name in self.baseline_points():
            if all(k in params and params[k] == v for k, v in point.items()):
                return role, name
        return "search", (str(params[START]) if START in params else None)

    # ---- decoding ---------------------------------------------------------------------------
    def decode(self, params: Mapping[str, Any]) -> Candidate:
        """The candidate a point stands for (projected onto the budget when single objective).

        With the latency metric the candidate is then measured directly, and the measurement is
        what the budget check uses (:meth:`_measured`)."""
        cand = self._decode(params)
        if self.metric != "latency" or cand.widths is None:
            return cand
        return self._measured(cand, params)

    def decode_predicted(self, params: Mapping[str, Any]) -> Candidate:
        """The candidate a point stands for on the space's cost model alone, never measured:
        what one-shot screening draws thousands of under a latency budget (the trial a screened
        candidate becomes is decoded, and so measured, again by :meth:`decode`)."""
        return self._decode(params)

    def within_measured(self, r: Any) -> bool:
        """A measured latency ratio (:class:`~nas_prune.latency.Ratio`, to the base network)
        meets the budget: within the tolerance, or within half the ratio's own interquartile
        range (a measurement cannot place a network more finely than its spread: with the 2%
        band alone, the first real latency search on onnxruntime rejected all five search
        candidates it ran at 0.78-0.91x the target)."""
        budget = self.target / self.space.base_cost("latency")
        band = max(self.tolerance * budget, (r.high - r.low) / 2)
        return abs(r.value - budget) <= band

    def _measured(self, cand: Candidate, params: Mapping[str, Any]) -> Candidate:
        """A projected candidate measured on the latency backend as its ratio to the base
        network (interleaved; :meth:`~nas_prune.latency.LatencyPredictor.measure_ratio`), its
        cost that ratio times the base network's predicted latency. Outside the band of
        :meth:`within_measured`, the projection is repeated (three times at most) against the
        budget corrected by the last candidate's ratio of predicted to measured latency; what
        still misses is rejected. The correction is always of the budget, never of the previous
        corrected target: compounded, a measurement that stays put while the grid steps down
        (ResNet-20 at 25% of the ONNX Runtime latency: measured 0.257 at predicted 0.248 and
        again at 0.237) drove the target to 0.19 and rejected half the trials as too fast.
        Baselines and multi-objective points are measured and kept as they are."""
        from dataclasses import replace

        base = self.space.base_cost("latency")
        widths = cand.widths
        r, _ = self.space.latency.measure_ratio(widths)
        if self.within_measured(r) or cand.role != "search" or self.objective == "multi":
            return replace(cand, cost=int(round(r.value * base)), latency=r)
        for _ in range(3):
            predicted = self.space.cost(widths, "latency") / base
            target = max(1, int(round(self.target * predicted / r.value)))
            mults = {g: float(params[f"{MULT}{g}"]) for g in self.groups}
            w, scale, _ = self.project(self.starts[str(params[START])], mults, target=target)
            if w is None:
                break
            widths = w
            r, _ = self.space.latency.measure_ratio(widths)
            if self.within_measured(r):
                return replace(cand, widths=widths, cost=int(round(r.value * base)),
                               scale=scale, latency=r)
        budget = self.target / base
        return Candidate(cand.role, cand.seed_method, None, None, None,
                         f"measured latency ratio {r.value:.3f} (halves {r.low:.3f}-"
                         f"{r.high:.3f}) is {r.value / budget:.3f} x the budget {budget:.3f} "
                         f"after correcting the prediction", latency=r)

    def _decode(self, params: Mapping[str, Any]) -> Candidate:
        role, method = self.role_of(params)
        if self.objective == "multi":
            widths = self.space.snap({g: float(params[f"{KEEP}{g}"]) * self.base[g]
                                      for g in self.groups})
            return Candidate(role, method, widths, self.space.cost(widths, self.metric), None)
        start = str(params[START])
        if start not in self.starts:
            raise UserError(f"trial parameter {START}={start!r} is not one of the starts "
                            f"{', '.join(self.starts)}; the study belongs to another run")
        if role != "search":  # a baseline is trained as proposed, whatever the tolerance
            widths = dict(self.starts[start])
            return Candidate(role, start, widths, self.space.cost(widths, self.metric), 1.0)
        mults = {g: float(params[f"{MULT}{g}"]) for g in self.groups}
        widths, scale, reason = self.project(self.starts[start], mults)
        cost = self.space.cost(widths, self.metric) if widths is not None else None
        return Candidate(role, start, widths, cost, scale, reason)

    def within(self, cost: int, target: int | None = None) -> bool:
        target = self.target if target is None else target
        return abs(cost - target) <= self.tolerance * target

    def project(self, start: Mapping[str, int], mults: Mapping[str, float], *,
                target: int | None = None) -> tuple[Widths | None, float | None, str]:
        """Bisect one common factor ``s`` so that the snapped widths meet the target.

        When the snapped cost jumps over the tolerance band, single groups are moved one grid
        step from the nearer side (:func:`~nas_prune.budget.refine_to_budget`). Returns
        (widths, s, "") or (None, None, reason) when nothing lands within tolerance.
        The cost is non-decreasing in ``s`` (snapping and clipping are monotone), from the
        space's minimum widths at ``s -> 0`` to its maximum widths for large ``s``.
        """
        target = self.target if target is None else int(target)
        raw = {g: max(1e-9, float(mults[g]) * float(start[g])) for g in self.groups}

        def at(s: float) -> tuple[Widths, int]:
            w = self.space.snap({g: s * raw[g] for g in self.groups})
            return w, self.space.cost(w, self.metric)

        w, c = at(1.0)
        if self.within(c, target):
            return w, 1.0, ""
        s_max = max(self.space.bounds[g][1] / raw[g] for g in self.groups) * 1.01
        w_lo, c_lo = at(0.0)
        w_hi, c_hi = at(s_max)
        if c_lo > target * (1 + self.tolerance):
            return None, None, (f"even the smallest widths cost {c_lo / target:.3f} x the "
                                f"target")
        if c_hi < target * (1 - self.tolerance):
            return None, None, f"even the largest widths cost {c_hi / target:.3f} x the target"
        lo, hi = (0.0, 1.0) if c > target else (1.0, s_max)
        c_lo, c_hi = (c_lo, c) if c > target else (c, c_hi)
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            w, c = at(mid)
            if self.within(c, target):
                return w, mid, ""
            if c > target:
                hi, c_hi = mid, c
            else:
                lo, c_lo = mid, c
            if hi - lo <= 1e-12 * max(1.0, hi):
                break
        # The grid jumps over the band (common with few, narrow groups such as a ResNet's
        # 16-channel stages): move single groups one grid step from the nearer side instead.
        near_lo = abs(c_lo - target) <= abs(c_hi - target)
        w_near = at(lo)[0] if near_lo else at(hi)[0]
        try:
            w = refine_to_budget(self.space, w_near, target, self.metric,
                                 tolerance=self.tolerance)
            return w, lo if near_lo else hi, ""
        except UserError:
            pass
        return None, None, (f"no common scale lands within {self.tolerance:.0%} of the target: "
                            f"the grid jumps from {c_lo / target:.3f} to "
                            f"{c_hi / target:.3f} x the target")


def widths_summary(widths: Mapping[str, int] | None, limit: int = 8) -> str:
    """A compact, human-readable width vector: the list when short, else min-max and count."""
    if not widths:
        return "-"
    vals = list(widths.values())
    if len(vals) <= limit:
        return "[" + ",".join(str(v) for v in vals) + "]"
    return f"{min(vals)}-{max(vals)} ({len(vals)} groups, mean {sum(vals) / len(vals):.0f})"
