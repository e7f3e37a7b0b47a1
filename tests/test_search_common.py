"""Helpers for the search tests (a tiny space on synthetic data), plus tests of the records.

The tiny space is vgg_tiny on 1x12x12 synthetic images with divisor 1, so budgets of 0.5 can be
met on the grid; about 300 training images and one epoch keep a trial well under a second.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from nas_prune._yaml import write_yaml
from nas_prune.cli import main
from nas_prune.rundir import best_record, pareto_front, ranked
from nas_prune.search import CSV_FIELDS, TrialRecord, read_records, write_records

TINY = {"family": "vgg", "args": {"cfg": "vgg_tiny", "head": "slimming"},
        "input": {"channels": 1, "size": 12, "classes": 4}, "divisor": 1, "min_width": 2,
        "dataset": "synthetic"}


def tiny_space_file(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "tiny_search.yaml", TINY)


def tiny_args(tmp_path: Path, run_dir: Path, *, epochs: int = 1, train: int = 400,
              extra: list[str] | None = None) -> list[str]:
    """Flags for `nas-prune search` on the tiny space ('random' seeded so it meets 0.5)."""
    sets = [f"space={tiny_space_file(tmp_path)}", "data.name=synthetic", "data.val_size=100",
            f"data.synthetic_train={train}", "data.synthetic_test=200",
            "data.synthetic_size=12", "data.synthetic_channels=1", "data.synthetic_classes=4",
            "data.train_subset=null", f"train.epochs={epochs}", "train.batch_size=50",
            "train.lr=0.1", "train.warmup_epochs=0", "search.tolerance=0.05"]
    out = ["--device", "cpu", "--seed", "1", "--seed-method", "random", "--budget", "0.5",
           "--run-dir", str(run_dir)]
    for s in sets + list(extra or []):
        out += ["--set", s]
    return out


def search(tmp_path: Path, run_dir: Path, *flags: str, **kw) -> int:
    return main(["search", *tiny_args(tmp_path, run_dir, **kw), *flags])


def read_csv(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def storage_of(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'study.db').resolve()}"


def _dominates(a: tuple[float, int], b: tuple[float, int]) -> bool:
    """(accuracy, FLOPs) ``a`` beats ``b``: no worse in both, better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def assert_pareto_front(run_dir: Path) -> tuple[set[int], list[dict[str, str]]]:
    """RUN/pareto/ holds exactly the completed trials of trials.csv that no completed trial
    dominates (one file per distinct point); returns (front trial numbers, completed rows)."""
    from nas_prune import load_spec

    done = [r for r in read_csv(run_dir) if r["state"] == "COMPLETE"]
    point = {int(r["number"]): (float(r["val_acc"]), int(r["flops"])) for r in done}
    widths = {int(r["number"]): r["widths"] for r in done}
    front = {n for n, p in point.items() if not any(_dominates(q, p) for q in point.values())}
    files = sorted((run_dir / "pareto").glob("trial*.yaml"))
    exported = {int(p.stem[len("trial"):]) for p in files}
    assert exported, "no Pareto front written"
    assert exported <= front, f"dominated trials exported: {sorted(exported - front)}"
    for n in front - exported:  # only an exact duplicate of an exported point may be left out
        assert any(point[m] == point[n] and widths[m] == widths[n] for m in exported), n
    for path in files:  # each file describes its trial
        spec, n = load_spec(path), int(path.stem[len("trial"):])
        assert (spec.metrics["val_acc"], spec.flops) == pytest.approx(point[n])
    return front, done


# ---- records -------------------------------------------------------------------------------
def _rec(n: int, acc: float | None, flops: int, state: str = "COMPLETE", **kw) -> TrialRecord:
    return TrialRecord(number=n, state=state, role="search", seed_method="uniform",
                       widths={"a": n + 1}, flops=flops, params=10, flops_ratio=flops / 100,
                       val_acc=acc, cost_ratio=flops / 100, **kw)


def test_records_round_trip_and_csv_columns(tmp_path: Path) -> None:
    recs = [_rec(1, 0.5, 40, val_curve=[0.4, 0.5]), _rec(0, None, 50, state="REJECTED",
                                                        reason="no scale")]
    write_records(tmp_path, recs)
    back = read_records(tmp_path)
    assert [r.number for r in back] == [0, 1]  # sorted by trial number
    assert back[1] == recs[0]
    with open(tmp_path / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_FIELDS
    assert json.loads(rows[1]["widths"]) == {"a": 2}
    assert json.loads(rows[1]["val_curve"]) == [0.4, 0.5]
    assert rows[0]["val_acc"] == "" and rows[0]["reason"] == "no scale"


def test_best_ranking_and_pareto_front() -> None:
    recs = [_rec(0, 0.8, 50), _rec(1, 0.9, 60), _rec(2, 0.7, 40), _rec(3, 0.75, 55),
            _rec(4, 0.95, 90, state="PRUNED"), _rec(5, 0.9, 70)]
    assert [r.number for r in ranked(recs)] == [1, 5, 0, 3, 2]  # ties: fewer FLOPs first
    assert [r.number for r in pareto_front(recs)] == [2, 0, 1]
    best, _ = best_record(recs)
    assert best.number == 1
    # multi objective: the most accurate Pareto trial within the budget's cost ratio
    best, rule = best_record(recs, objective="multi", max_cost_ratio=0.55)
    assert best.number == 0 and "within the budget" in rule
    best, rule = best_record(recs, objective="multi", max_cost_ratio=0.1)
    assert best.number == 1 and "none within" in rule


def test_the_pareto_front_is_exactly_the_non_dominated_completed_trials() -> None:
    rng = random.Random(0)
    for _ in range(20):
        recs = [_rec(i, round(rng.uniform(0.5, 0.9), 2), rng.randrange(10, 100, 5),
                     state=rng.choice(["COMPLETE"] * 4 + ["PRUNED", "FAIL"]))
                for i in range(rng.randrange(1, 30))]
        done = [r for r in recs if r.state == "COMPLETE"]
        front = pareto_front(recs)
        numbers = {r.number for r in front}
        for r in done:
            beaten = any(_dominates((o.val_acc, o.flops), (r.val_acc, r.flops)) for o in done)
            assert (r.number in numbers) != beaten, r  # on the front iff nothing beats it
        assert [r.flops for r in front] == sorted(r.flops for r in front)


def test_search_rejects_bad_settings_before_training(tmp_path: Path, capsys) -> None:
    rc = search(tmp_path, tmp_path / "run", "--sampler", "tpe",
                extra=["search.early_stopping=sometimes"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "search.early_stopping" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "trials.csv").exists()
    rc = search(tmp_path, tmp_path / "run2", "--n-trials", "1")
    assert rc == 2
    assert "search.n_trials" in capsys.readouterr().err


def test_export_of_a_directory_that_is_no_run(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a nas-prune run directory" in err and str(tmp_path) in err
    assert main(["export", str(tmp_path / "typo")]) == 2
    err = capsys.readouterr().err
    assert "no such directory" in err and str(tmp_path / "typo") in err
    # a run directory killed before its first trial: it says so, and how to continue it
    (tmp_path / "config.yaml").write_text("run_dir: x\n")
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no search.json" in err and "--resume" in err
