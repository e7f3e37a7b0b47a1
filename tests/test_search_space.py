"""The candidate space: budget projection, rejections, exact baselines, serialisation."""

from __future__ import annotations

import random

import optuna
import pytest

from nas_prune.budget import check_budget
from nas_prune.search import CandidateSpace
from nas_prune.search.space import KEEP, MULT, START
from nas_prune.seeds import uniform_widths
from nas_prune.widths import SearchSpace, space_source

from .test_search_common import TINY

RESNET = {"family": "resnet_cifar", "args": {"depth": 8, "shortcut": "A"},
          "input": {"channels": 1, "size": 12, "classes": 4}, "divisor": 2, "min_width": 2}


def _cspace(data: dict | str, *, budget: float = 0.5, tolerance: float = 0.02,
            extra_start=None, objective: str = "single") -> CandidateSpace:
    if isinstance(data, str):  # a shipped space by name
        data = space_source(data)[1]
    space = SearchSpace.from_dict(data, name="t")
    starts = {}
    if extra_start is not None:
        starts["other"] = extra_start(space)
    starts["uniform"] = uniform_widths(space, budget)
    return CandidateSpace(space, starts=starts, target=check_budget(space, budget),
                          tolerance=tolerance, objective=objective,
                          source={"name": "t", "data": data})


def _random_params(cs: CandidateSpace, rng: random.Random) -> dict:
    params = {START: rng.choice(list(cs.starts))}
    params.update({f"{MULT}{g}": rng.uniform(cs.low, cs.high) for g in cs.groups})
    return params


@pytest.mark.parametrize("data,tolerance", [("vgg_small_fmnist", 0.02), (RESNET, 0.02),
                                            (TINY, 0.02), (TINY, 0.05)])
def test_projection_lands_every_candidate_within_tolerance(data, tolerance) -> None:
    cs = _cspace(data, tolerance=tolerance)
    rng = random.Random(0)
    accepted = rejected = 0
    for _ in range(300):
        cand = cs.decode(_random_params(cs, rng))
        if cand.rejected:
            rejected += 1
            assert cand.reason and cand.cost is None
            continue
        accepted += 1
        assert cs.space.validate(cand.widths) == cand.widths  # on the grid, within bounds
        cost = cs.space.cost(cand.widths)
        assert cost == cand.cost
        assert abs(cost - cs.target) <= tolerance * cs.target
    assert accepted > 100
    if data == "vgg_small_fmnist":
        assert rejected == 0  # a fine grid: one common factor always lands


def test_projection_refines_where_the_common_scale_jumps_over_the_band() -> None:
    """Narrow ResNet stage groups make the snapped cost jump; single-group steps still land."""
    cs = _cspace("resnet56_cifar", tolerance=0.02)
    rng = random.Random(0)
    cands = [cs.decode(_random_params(cs, rng)) for _ in range(200)]
    assert not [c for c in cands if c.rejected]
    assert all(abs(c.cost - cs.target) <= 0.02 * cs.target for c in cands)


def test_a_candidate_that_cannot_land_is_rejected_with_a_reason() -> None:
    # one free group with four widths; the target lies midway between two of their costs
    data = {**TINY, "divisor": 2, "min_width": 2, "bounds": {"conv2": [16, 16], "conv3": [16, 16],
                                                              "conv1": [2, 8]}}
    space = SearchSpace.from_dict(data, name="t")
    costs = [space.cost({**space.base_widths(), "conv1": w}) for w in space.grid("conv1")]
    target = (costs[1] + costs[2]) // 2
    assert not any(abs(space.cost({**space.base_widths(), "conv1": w}) - target) <= 0.005 * target
                   for w in space.grid("conv1"))
    cs = CandidateSpace(space, starts={"uniform": space.base_widths()}, target=target,
                        tolerance=0.005, objective="single", source={"name": "t", "data": data})
    cands = [cs.decode(_random_params(cs, random.Random(i))) for i in range(20)]
    cand = next(c for c in cands if c.role == "search")
    assert cand.rejected and "no common scale lands within" in cand.reason


def test_impossible_budget_is_rejected_not_raised() -> None:
    cs = _cspace(TINY)
    # the target is far below the smallest network of the space
    cs.target = cs.space.cost(cs.space.min_widths()) // 3
    w, s, reason = cs.project(cs.starts["uniform"], {g: 1.0 for g in cs.groups})
    assert w is None and s is None and "smallest widths" in reason


def test_multipliers_of_one_keep_a_start_that_meets_the_budget() -> None:
    cs = _cspace(RESNET)
    w0 = cs.starts["uniform"]
    widths, scale, _ = cs.project(w0, {g: 1.0 for g in cs.groups})
    assert widths == w0 and scale == 1.0


def test_baselines_decode_to_the_proposals_exactly_even_under_a_tight_tolerance() -> None:
    def lopsided(space):  # a valid start that is not near the target at all
        return {g: hi for g, (_, hi) in space.bounds.items()}

    cs = _cspace(TINY, tolerance=0.001, extra_start=lopsided)
    points = cs.baseline_points()
    assert [(role, name) for _, role, name in points] == [("seed", "other"),
                                                          ("uniform", "uniform")]
    for params, role, name in points:
        cand = cs.decode(params)
        assert cand.widths == cs.starts[name] and cand.role == role
        assert cand.seed_method == name
    # the same multipliers on a search trial are projected (here: onto the budget)
    search = dict(points[0][0])
    search[f"{MULT}conv1"] = 1.0 + 1e-9
    cand = cs.decode(search)
    assert cand.role == "search"
    assert cand.rejected or abs(cand.cost - cs.target) <= 0.001 * cs.target


def test_multi_objective_keep_ratios_reproduce_the_seeds() -> None:
    cs = _cspace(RESNET, objective="multi")
    for params, role, name in cs.baseline_points():
        assert set(params) == {f"{KEEP}{g}" for g in cs.groups}
        cand = cs.decode(params)
        assert cand.widths == cs.starts[name] and cand.role == role
    lo, hi = cs.keep_range(cs.groups[0])
    assert 0 < lo < hi == 1.0


def test_suggest_samples_the_declared_parameters_and_round_trips() -> None:
    cs = _cspace(TINY)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = cs.suggest(trial)
    assert params == trial.params
    assert set(params) == {START} | {f"{MULT}{g}" for g in cs.groups}
    again = CandidateSpace.from_dict(cs.to_dict())
    assert again.decode(params) == cs.decode(params)
    assert again.starts == cs.starts and again.target == cs.target


class _ScriptedLatency:
    """A latency predictor whose prediction is the FLOPs and whose measured ratios to the base
    network come from a script, one per measurement."""

    def __init__(self, space: SearchSpace, measured: list[float]) -> None:
        self.space, self.measured = space, list(measured)

    def predict(self, widths) -> int:
        return self.space.cost(widths)

    def measure_ratio(self, widths):
        from types import SimpleNamespace

        v = self.measured.pop(0)
        return SimpleNamespace(value=v, low=v - 0.001, high=v + 0.001), None


def test_a_missed_latency_is_corrected_against_the_budget_not_compounded() -> None:
    import dataclasses

    plain = SearchSpace.from_dict(TINY, name="t")
    # measured: over the budget, over again although the prediction fell, then on it
    space = dataclasses.replace(plain, latency=_ScriptedLatency(plain, [0.29, 0.29, 0.25]))
    base = space.base_cost("latency")
    cs = CandidateSpace(space, starts={"uniform": uniform_widths(plain, 0.25)}, metric="latency",
                        target=round(0.25 * base), tolerance=0.02, objective="single",
                        source={"name": "t", "data": TINY})
    asked, project = [], cs.project

    def recording(start, mults, target=None):
        out = project(start, mults, target=target)
        asked.append((target, space.cost(out[0]) / base))  # (target, its projection's ratio)
        return out

    cs.project = recording
    params = {START: "uniform", **{f"{MULT}{g}": 1.1 for g in cs.groups}}
    first = project(cs.starts["uniform"], {g: 1.1 for g in cs.groups})[0]
    cand = cs.decode(params)
    assert cand.latency.value == 0.25 and not cand.rejected
    predicted = [space.cost(first) / base, asked[1][1]]
    assert len(asked) == 3  # the decode's own projection, then two corrections
    for (target, _), pred, meas in zip(asked[1:], predicted, [0.29, 0.29], strict=True):
        # each correction is the budget times the last candidate's predicted / measured
        assert target == pytest.approx(0.25 * base * pred / meas, abs=1)
