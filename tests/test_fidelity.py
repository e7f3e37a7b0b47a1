"""Rungs of complete schedules: promotion, reuse of measurements, and rank correlations."""

from __future__ import annotations

import json
import zlib

import pytest

from nas_prune.errors import UserError
from nas_prune.rundir import read_json, read_records
from nas_prune.search.fidelity import (
    Rung,
    check_rungs,
    curve_correlations,
    known_results,
    rank_correlations,
    rung_step,
    train_rungs,
)

from .test_search_backends import FakeTrain
from .test_search_common import search

RUNGS = [Rung(epochs=1), Rung(epochs=3), Rung(epochs=3, seeds=3)]


def seeds_of(rung: Rung) -> list[int]:
    return list(range(rung.seeds))


class FakeTrainer:
    """measure(k, rung, seed): accuracy = base + 0.1 * k + 0.01 * seed; counts trainings."""

    def __init__(self, base: float = 0.5) -> None:
        self.base = base
        self.calls: list[tuple[int, int]] = []

    def __call__(self, k: int, rung: Rung, seed: int) -> dict:
        self.calls.append((k, seed))
        return {"status": "ok", "val_acc": self.base + 0.1 * k + 0.01 * seed,
                "epochs": rung.epochs, "val_curve": []}


def test_a_trial_goes_up_every_rung_and_its_value_is_the_top_rungs_mean() -> None:
    fake = FakeTrainer()
    out = train_rungs(RUNGS, seeds_of, fake)
    assert out.state == "COMPLETE"
    assert fake.calls == [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert out.rung_values == pytest.approx([0.5, 0.6, 0.71])  # top: mean of .70 .71 .72
    assert out.val_acc == pytest.approx(0.71)
    assert [(m["rung"], m["seed"]) for m in out.measurements] == fake.calls


def test_early_stopping_ends_a_trial_at_a_rung_below_the_top() -> None:
    fake = FakeTrainer()
    seen = []
    out = train_rungs(RUNGS, seeds_of, fake, on_rung=lambda k, v: seen.append((k, v)) or k == 1)
    assert out.state == "PRUNED" and out.rung_values == pytest.approx([0.5, 0.6])
    assert [k for k, _ in seen] == [0, 1] and fake.calls == [(0, 0), (1, 0)]
    # the rule is never asked at the top rung: the last value is the objective
    out = train_rungs(RUNGS, seeds_of, FakeTrainer(), on_rung=lambda k, v: True)
    assert out.state == "PRUNED" and len(out.rung_values) == 1


def test_a_failed_measurement_fails_the_trial_with_its_reason() -> None:
    def measure(k, rung, seed):
        return {"status": "diverged", "val_acc": None, "reason": "loss is nan"} if k == 1 \
            else {"status": "ok", "val_acc": 0.4}

    out = train_rungs(RUNGS, seeds_of, measure)
    assert out.state == "FAIL" and "rung 1" in out.reason and "nan" in out.reason


def test_a_duplicate_width_vector_reuses_what_was_measured() -> None:
    first = train_rungs(RUNGS, seeds_of, FakeTrainer(), on_rung=lambda k, v: k == 1)
    trials = [{"number": 4, "widths": {"a": 3, "b": 5}, "measurements": first.measurements},
              {"number": 5, "widths": {"a": 4, "b": 5},
               "measurements": [{"rung": 2, "seed": 0, "status": "ok", "val_acc": 0.99}]}]
    known = known_results({"b": 5, "a": 3}, trials)  # key order does not matter
    assert set(known) == {(0, 0), (1, 0)} and known[(0, 0)]["from_trial"] == 4
    again = FakeTrainer()
    out = train_rungs(RUNGS, seeds_of, again, known=known)
    assert out.state == "COMPLETE"
    assert again.calls == [(2, 0), (2, 1), (2, 2)]  # rungs 0 and 1 were not trained again
    assert out.trained == 3 and len(out.measurements) == 5
    # failed measurements are not reused
    bad = [{"number": 1, "widths": {"a": 1}, "measurements": [
        {"rung": 0, "seed": 0, "status": "diverged", "val_acc": None}]}]
    assert known_results({"a": 1}, bad) == {}


def test_rungs_are_checked() -> None:
    assert check_rungs(RUNGS, reduction_factor=3) == RUNGS
    with pytest.raises(UserError, match="at least one rung"):
        check_rungs([], reduction_factor=3)
    with pytest.raises(UserError, match=r"search.rungs\[1\].epochs"):
        check_rungs([Rung(1), Rung(0)], reduction_factor=3)
    with pytest.raises(UserError, match=r"search.rungs\[0\].seeds"):
        check_rungs([Rung(1, seeds=0)], reduction_factor=3)
    with pytest.raises(UserError, match="cheap to expensive"):
        check_rungs([Rung(4), Rung(2)], reduction_factor=3)
    with pytest.raises(UserError, match="search.reduction_factor"):
        check_rungs(RUNGS, reduction_factor=1)
    assert [rung_step(k, 3) for k in range(3)] == [1, 3, 9]


def test_rank_correlations_against_the_top_rung() -> None:
    # rung 0 ranks the four trials exactly as the top rung does; rung 1 in reverse
    trials = [{"rung_values": [0.1, 0.9, 0.5]}, {"rung_values": [0.2, 0.8, 0.6]},
              {"rung_values": [0.3, 0.7, 0.7]}, {"rung_values": [0.4, 0.6, 0.8]},
              {"rung_values": [0.9]}]  # stopped at rung 0: not counted
    out = rank_correlations(trials, 3)
    assert [r["rung"] for r in out] == [0, 1] and all(r["n"] == 4 for r in out)
    assert out[0]["spearman"] == pytest.approx(1.0) and out[0]["kendall"] == pytest.approx(1.0)
    assert out[1]["spearman"] == pytest.approx(-1.0)
    assert rank_correlations(trials[:2], 3)[0]["spearman"] is None  # n < 3: no claim


def test_curve_correlations_measure_a_truncated_schedule() -> None:
    curves = [[0.1, 0.3, 0.5], [0.2, 0.2, 0.6], [0.3, 0.1, 0.7], [0.5]]
    out = curve_correlations(curves)
    assert [(r["epoch"], r["vs_epoch"], r["n"]) for r in out] == [(1, 3, 3), (2, 3, 3)]
    assert out[0]["spearman"] == pytest.approx(1.0) and out[1]["spearman"] == pytest.approx(-1.0)


# ---- in a real (tiny, synthetic) search -----------------------------------------------------
class TrainSpy:
    """Counts the search's real trainings (final ones excluded) by width vector."""

    def __init__(self, monkeypatch) -> None:
        import nas_prune.scratch

        self.calls: list[tuple[str, int, int]] = []
        real = nas_prune.scratch.train_spec

        def wrapped(spec, cfg, **kw):
            if not kw.get("evaluate_test"):
                self.calls.append((json.dumps(spec.widths, sort_keys=True), kw["seed"],
                                   kw["epochs"]))
            return real(spec, cfg, **kw)

        monkeypatch.setattr(nas_prune.scratch, "train_spec", wrapped)


def distinct_by_widths(spec, n: int) -> list[float]:
    """A deterministic accuracy that differs between width vectors (and a little between
    schedules): promotion is then decided by known values, not by a one-epoch run's noise."""
    key = json.dumps(spec.widths, sort_keys=True)
    return [0.3 + (zlib.crc32(key.encode()) % 500) / 1000 + 0.002 * n] * n


@pytest.mark.slow
def test_a_multi_fidelity_search_promotes_by_rung_and_records_each_rung(
        tmp_path, monkeypatch) -> None:
    spy = FakeTrain(monkeypatch, distinct_by_widths)
    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "12", "--rungs", "1,2x2", "--early-stopping",
                  "halving", "--reduction-factor", "3", "--sampler", "random") == 0
    records = read_records(run)
    trained = [r for r in records if r.state in ("COMPLETE", "PRUNED")]
    assert trained
    for r in trained:
        rungs = [m["rung"] for m in r.measurements]
        if r.state == "COMPLETE":
            assert len(r.rung_values) == 2 and r.val_acc == pytest.approx(r.rung_values[-1])
            # the top rung: two seeds, its value their mean
            top = [m for m in r.measurements if m["rung"] == 1]
            assert sorted(m["seed"] for m in top) == [1, 2]
            assert r.rung_values[1] == pytest.approx(sum(m["val_acc"] for m in top) / 2)
            assert r.epochs == sum(m["epochs_run"] for m in r.measurements
                                   if m.get("from_trial") is None)
        else:
            assert len(r.rung_values) == 1 and rungs == [0] and "rung" in r.reason
        # a rung is a complete schedule of its own: 1 base epoch -> 2 at half the FLOPs
        # (Scratch-B), 2 base epochs -> 4
        assert {m["epochs"] for m in r.measurements if m["rung"] == 0} == {2}
        assert {m["epochs"] for m in r.measurements if m["rung"] == 1} <= {4}
    assert any(r.state == "PRUNED" for r in trained)  # successive halving stopped someone
    for r in records:
        if r.role in ("seed", "uniform"):
            assert r.state == "COMPLETE"  # the baselines always reach the top rung
    info = read_json(run / "search.json")
    fid = info["fidelity"]
    assert fid["mode"] == "rungs" and fid["reached"][0] == len(trained)
    assert fid["reached"][1] == sum(r.state == "COMPLETE" for r in trained)
    assert fid["correlations"][0]["n"] == fid["reached"][1]
    # every training the spy saw is one recorded measurement (none hidden, none repeated)
    measured = sum(sum(1 for m in r.measurements if m.get("from_trial") is None)
                   for r in records)
    assert measured == len(spy.calls)


@pytest.mark.slow
@pytest.mark.parametrize("rungs", [None, "1,2"])
def test_a_duplicate_width_vector_is_not_trained_again(tmp_path, monkeypatch, rungs) -> None:
    # multipliers fixed at 1: every search trial is one of the two starts' width vectors again
    spy = TrainSpy(monkeypatch)
    run = tmp_path / "run"
    flags = ["--n-trials", "6", "--sampler", "random", "--early-stopping", "none",
             "--set", "search.multiplier_low=1.0", "--set", "search.multiplier_high=1.0"]
    if rungs:
        flags += ["--rungs", rungs]
    assert search(tmp_path, run, *flags) == 0
    records = read_records(run)
    assert len(records) == 6 and all(r.state == "COMPLETE" for r in records)
    widths = {json.dumps(r.widths, sort_keys=True) for r in records}
    n_rungs = 2 if rungs else 1
    assert len(spy.calls) == len(widths) * n_rungs  # one training per vector and rung
    dupes = [r for r in records if all(m.get("from_trial") is not None
                                       for m in r.measurements)]
    assert len(dupes) == 6 - len(widths)
    for d in dupes:
        first = min(r.number for r in records if r.widths == d.widths)
        assert {m["from_trial"] for m in d.measurements} == {first}
        same = next(r for r in records if r.number == first)
        assert d.val_acc == same.val_acc and d.epochs == 0  # no epoch trained for it
