"""The final table's evidence: evaluation seeds disjoint from the search's, per-seed values kept,
paired differences with 95% t-intervals and verdicts that claim only what the interval holds."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

import nas_prune.scratch
from nas_prune.config import Config
from nas_prune.rundir import read_json
from nas_prune.search.finalize import comparisons
from nas_prune.seeding import (
    FINAL_SEED_OFFSET,
    final_seeds,
    search_seeds,
    selection_seeds,
)
from nas_prune.stats import mean_std, paired_difference, t_quantile

from .test_search_common import search

T95_DF2 = 4.302652729911275  # t(0.975, 2), from tables


def _cfg(seed: int, n: int) -> Config:
    cfg = Config()
    return replace(cfg, random_seed=seed, search=replace(cfg.search, final_seeds=n))


@pytest.mark.parametrize("seed", [0, 1, 7, 123, FINAL_SEED_OFFSET - 1])
@pytest.mark.parametrize("n", [1, 3, 10])
def test_evaluation_seeds_never_equal_a_search_or_selection_seed(seed: int, n: int) -> None:
    cfg = _cfg(seed, n)
    search = set(search_seeds(cfg, repeats=50))
    final, selection = final_seeds(cfg), selection_seeds(cfg)
    assert len(set(final)) == n == len(final)
    assert not search & set(final)
    assert not search & set(selection)
    assert not set(selection) & set(final)
    # the same seeds for every row: a function of the config alone
    assert final == final_seeds(_cfg(seed, n))


def test_t_quantile_matches_tables() -> None:
    assert t_quantile(2) == pytest.approx(T95_DF2, rel=1e-9)
    assert t_quantile(4) == pytest.approx(2.776445105, rel=1e-8)
    assert t_quantile(1000) == pytest.approx(1.962339, rel=1e-5)


def test_one_rule_for_the_std_of_one_seed() -> None:
    assert mean_std([0.5]) == (0.5, None, 1)
    assert mean_std([None, float("nan")]) == (None, None, 0)
    m, s, n = mean_std([0.1, 0.2, 0.3])
    assert (m, n) == (pytest.approx(0.2), 3) and s == pytest.approx(0.1)


def _row(name: str, tests: dict[int, float], widths: dict[str, int] | None = None) -> dict:
    return {"name": name, "widths": widths or {"a": len(name)},
            "runs": [{"seed": s, "test_acc": v, "val_acc": v} for s, v in tests.items()]}


def test_paired_interval_agrees_with_a_hand_computation() -> None:
    # best - seed:x per seed: +0.01, +0.02, +0.03 -> mean 0.02, sample std 0.01,
    # half-width t(0.975, 2) * 0.01 / sqrt(3)
    rows = [_row("best", {10: 0.81, 11: 0.82, 12: 0.83}),
            _row("seed:x", {10: 0.80, 11: 0.80, 12: 0.80}),
            _row("uniform", {10: 0.70, 11: 0.71, 12: 0.72})]
    out = {c["b"]: c for c in comparisons(rows)}
    assert set(out) == {"seed:x", "uniform"}
    half = T95_DF2 * 0.01 / math.sqrt(3)
    c = out["seed:x"]
    assert c["mean"] == pytest.approx(0.02) and c["std"] == pytest.approx(0.01)
    assert c["ci95"] == [pytest.approx(0.02 - half), pytest.approx(0.02 + half)]
    assert c["n"] == 3 and c["seeds"] == [10, 11, 12]
    assert c["verdict"] == "not resolved at n = 3"  # -0.0048 < 0 < 0.0448
    assert out["uniform"]["mean"] == pytest.approx(0.11)
    assert out["uniform"]["std"] == pytest.approx(0.0)
    assert out["uniform"]["verdict"] == "better"


def test_verdicts_follow_the_interval_and_pair_by_seed() -> None:
    worse = paired_difference({1: 0.5, 2: 0.6, 3: 0.55}, {1: 0.6, 2: 0.7, 3: 0.66})
    assert worse.high < 0 and worse.verdict == "worse"
    # seeds missing on one side are left out of the pairing, not matched by position
    d = paired_difference({1: 0.9, 2: 0.8, 5: 0.1}, {1: 0.85, 2: 0.75, 3: 0.2})
    assert d.seeds == (1, 2) and d.mean == pytest.approx(0.05)
    one = paired_difference({1: 0.9}, {1: 0.8})
    assert one.n == 1 and one.low is None and one.verdict == "not resolved at n = 1"
    assert paired_difference({1: 0.9, 2: 0.92}, {1: 0.9, 2: 0.9}).seeds_to_resolve() > 2


class SeedSpy:
    """Wraps scratch.train_spec and records the seed of every search and final training."""

    def __init__(self, monkeypatch) -> None:
        self.search: list[int] = []
        self.final: list[int] = []
        real = nas_prune.scratch.train_spec

        def wrapped(spec, cfg, **kw):
            (self.final if kw.get("evaluate_test") else self.search).append(kw["seed"])
            return real(spec, cfg, **kw)

        monkeypatch.setattr(nas_prune.scratch, "train_spec", wrapped)


def test_a_search_evaluates_on_fresh_paired_seeds_and_keeps_every_value(
        tmp_path: Path, monkeypatch) -> None:
    spy = SeedSpy(monkeypatch)
    run = tmp_path / "run"
    # --finalists 1: no selection round, so every training that scores the test split is a
    # final one (the selection seeds are checked in the finalists' own tests)
    assert search(tmp_path, run, "--n-trials", "4", "--final-seeds", "3", "--finalists", "1") == 0
    final = read_json(run / "final.json")
    assert spy.search and spy.final
    assert not set(spy.search) & set(spy.final)
    assert final["seeds"] == sorted(set(spy.final))
    for row in final["rows"]:
        assert row["seeds"] == final["seeds"]  # paired: the same seeds for every row
        assert [r["seed"] for r in row["runs"]] == final["seeds"]
        assert all(r["val_acc"] is not None and r["test_acc"] is not None for r in row["runs"])
        assert row["test_mean"] == pytest.approx(
            sum(r["test_acc"] for r in row["runs"]) / 3)
    # the comparisons are recomputable from the per-seed values
    names = {r["name"] for r in final["rows"]} - {"best"}
    assert {c["b"] for c in final["comparisons"]} == names
    by_name = {r["name"]: r for r in final["rows"]}
    for c in final["comparisons"]:
        a = {r["seed"]: r["test_acc"] for r in by_name["best"]["runs"]}
        b = {r["seed"]: r["test_acc"] for r in by_name[c["b"]]["runs"]}
        again = paired_difference(a, b)
        assert c["mean"] == pytest.approx(again.mean) and c["verdict"] == again.verdict
    assert final["noise"]["val_images"] == 100 and final["noise"]["test_images"] == 200
    assert "random_seed + 10000" in final["seed_rule"]
