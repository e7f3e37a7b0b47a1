"""benchmarks/oneshot_ranking.py: its statistics helpers, and a tiny run that resumes from its
checkpoints without training again (no real data, seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from nas_prune.errors import UserError

from .conftest import tiny_overrides

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import oneshot_ranking as rk  # noqa: E402


def test_bootstrap_interval_brackets_the_coefficient_and_is_reproducible():
    rng = np.random.default_rng(1)
    x = rng.normal(size=24)
    y = x + rng.normal(size=24)
    rho = spearmanr(x, y).statistic
    a = rk.spearman_bootstrap(x, y)
    assert a == rk.spearman_bootstrap(x, y)  # fixed RNG seed
    lo, hi = a["ci95"]
    assert -1 <= lo < rho < hi <= 1 and a["resamples"] == 2000
    # perfectly monotone pairs: every defined resample gives 1
    assert rk.spearman_bootstrap(range(10), [v ** 3 for v in range(10)])["ci95"] == [1.0, 1.0]
    with pytest.raises(ValueError):
        rk.spearman_bootstrap([1, 2], [1, 2])


def test_bootstrap_leaves_out_resamples_without_a_coefficient():
    # a resample of only the constant-x points has no coefficient
    out = rk.spearman_bootstrap([0, 0, 0, 1], [1, 2, 3, 4], resamples=500)
    assert out["undefined"] > 0 and not np.isnan(out["ci95"]).any()
    assert rk.spearman_bootstrap([1, 1, 1], [1, 2, 3])["ci95"] is None
    assert rk._corr([1, 1, 1], [1, 2, 3]) == {"n": 3, "spearman": None, "kendall": None}


def test_top_k_ranks_by_accuracy():
    scores = [0.5, 0.9, 0.9, 0.1, 0.7]
    acc = [0.80, 0.70, 0.90, 0.85, 0.85]
    top = rk.top_k_ranks(scores, acc, k=3)
    # candidates 1 and 2 tie on score: the earlier first; 3 and 4 tie on accuracy: rank 2.5
    assert [t["candidate"] for t in top] == [1, 2, 4]
    assert [t["rank"] for t in top] == [5.0, 1.0, 2.5]


def test_seed_to_seed_and_per_seed_statistics():
    a, b = [0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.3, 0.2, 0.4, 0.5]
    (pair,) = rk.seed_to_seed([a, b], [10000, 10001])
    assert pair["seeds"] == [10000, 10001] and pair["n"] == 5
    assert pair["spearman"] == pytest.approx(0.9)
    s = rk.score_stats([1, 2, 3, 4, 5], [a, b])
    assert s["spearman"] == pytest.approx(spearmanr([1, 2, 3, 4, 5], np.mean([a, b], 0))[0])
    assert [p["spearman"] for p in s["per_seed"]] == pytest.approx([1.0, 0.9])
    assert "per_seed" not in rk.score_stats([1, 2, 3, 4, 5], [a])


def test_a_killed_run_resumes_without_training_again(tiny_space_file, tmp_path, monkeypatch,
                                                    capsys):
    argv = ["--config", "default", "--candidates", "3", "--seeds", "2",
            "--out", str(tmp_path / "r.json"), "--run-dir", str(tmp_path / "run"),
            "--set", *tiny_overrides(tiny_space_file), "search.screening.epochs=1",
            "seed_method.base_epochs=1", "search.rungs=[{epochs: 1}]"]
    assert rk.main(argv) == 0
    first = json.loads((tmp_path / "r.json").read_text())
    lines = (tmp_path / "r.scratch.jsonl").read_text().splitlines()
    assert len(lines) == 6 and first["scratch_seeds"] == [10000, 10001]
    assert first["resumed_trainings"] == 0
    assert (tmp_path / "run" / "shared.pt").is_file() and (tmp_path / "run" / "base.pt").is_file()
    # kill after the fourth training: drop two lines, cut the last short
    (tmp_path / "r.scratch.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])
    calls = []
    real = rk.train_spec
    monkeypatch.setattr(rk, "train_spec", lambda *a, **k: calls.append(k["seed"]) or real(*a, **k))
    monkeypatch.setattr(rk, "train_shared", None)  # loaded, never trained again
    monkeypatch.setattr(rk, "train", None)
    assert rk.main(argv) == 0
    again = json.loads((tmp_path / "r.json").read_text())
    assert len(calls) == 2 and again["resumed_trainings"] == 4
    # the line cut short by the kill did not swallow the first one appended after it
    readable = []
    for line in (tmp_path / "r.scratch.jsonl").read_text().splitlines():
        try:
            readable.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    assert len({(json.dumps(r["widths"]), r["seed"]) for r in readable}) == 6
    assert again["summary"]["shared_training"]["loaded"] and again["summary"]["base_loaded"]
    for k in ("shared_vs_scratch", "base_adaptive_bn_vs_scratch"):
        assert again["summary"][k] == first["summary"][k]  # same scores, same accuracies
    def drop_seconds(cands):
        return [{k: v for k, v in c.items() if k != "seconds"} for c in cands]

    assert drop_seconds(again["candidates"]) == drop_seconds(first["candidates"])
    capsys.readouterr()
    assert rk.main(["--out", str(tmp_path / "r.json"), "--table"]) == 0
    table = capsys.readouterr().out
    assert "| **seed 10000 vs seed 10001 (the ceiling)** |" in table
    assert "adaptive BN vs seed 10001" in table and "weight-sharing top 3: ranks" in table


def test_a_latency_budget_run_keeps_its_drawn_candidates(tiny_space_file, tmp_path, monkeypatch):
    """Under a latency budget the draw depends on measured latencies, so a rerun reuses the
    first run's candidates (and so finds its finished trainings) instead of drawing again."""
    argv = ["--config", "default", "--candidates", "3", "--seeds", "1",
            "--out", str(tmp_path / "r.json"), "--run-dir", str(tmp_path / "run"),
            "--set", *tiny_overrides(tiny_space_file), "search.screening.epochs=1",
            "seed_method.base_epochs=1", "search.rungs=[{epochs: 1}]",
            "seed_method.metric=latency", "seed_method.budget=0.95", "search.tolerance=0.3"]
    assert rk.main(argv) == 0
    first = json.loads((tmp_path / "r.json").read_text())
    assert first["budget"]["metric"] == "latency"
    assert all(0 < c["latency_ratio_predicted"] and 0 < c["flops_ratio"] <= 1
               for c in first["candidates"])
    monkeypatch.setattr(rk, "draw", None)  # a second draw would fail
    monkeypatch.setattr(rk, "train_spec", None)  # and so would a training
    assert rk.main(argv) == 0
    again = json.loads((tmp_path / "r.json").read_text())
    assert [c["widths"] for c in again["candidates"]] == [c["widths"] for c in first["candidates"]]
    assert again["resumed_trainings"] == 3


def test_a_scratch_only_helper_shares_the_trainings(tiny_space_file, tmp_path, monkeypatch):
    """--scratch-only trains the journal's missing candidates last first and writes no --out;
    the benchmark then finds them in the journal and trains nothing again."""
    argv = ["--config", "default", "--candidates", "3", "--seeds", "1",
            "--out", str(tmp_path / "r.json"), "--run-dir", str(tmp_path / "run"),
            "--set", *tiny_overrides(tiny_space_file), "search.screening.epochs=1",
            "seed_method.base_epochs=1", "search.rungs=[{epochs: 1}]"]
    with pytest.raises(UserError, match="--scratch-only: .* holds no candidates"):
        rk.main([*argv, "--scratch-only"])  # the benchmark has not drawn them yet
    assert not (tmp_path / "r.scratch.jsonl").exists()
    rk._candidates(tmp_path / "run" / "candidates.json", *_drawn(argv))
    assert rk.main([*argv, "--scratch-only"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "r.scratch.jsonl").read_text().splitlines()]
    assert [r["candidate"] for r in lines] == [2, 1, 0]
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "run" / "shared.pt").exists()
    monkeypatch.setattr(rk, "train_spec", None)  # nothing is trained twice
    assert rk.main(argv) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["resumed_trainings"] == 3 and result["helper_trainings"] == 0
    assert [c["val_acc"] for c in result["candidates"]] == [r["val_acc"] for r in lines[::-1]]


def _drawn(argv):
    """What _candidates needs to draw as the benchmark would: cspace, start, args, cfg."""
    import argparse

    from nas_prune.config import load_config

    args = argparse.Namespace(config="default", set=argv[argv.index("--set") + 1:],
                              candidates=3, scratch_only=False)
    cfg = load_config("default", ["device=cpu", *args.set])
    _, start, cspace = rk.around_uniform(cfg)
    return cspace, start, args, cfg


def test_trainings_counted_by_who_ran_them(tiny_space_file, tmp_path, monkeypatch):
    """A helper's trainings done while the benchmark trains its networks count as the
    helper's; lines of an older run with other candidates count as nothing."""
    argv = ["--config", "default", "--candidates", "3", "--seeds", "1",
            "--out", str(tmp_path / "r.json"), "--run-dir", str(tmp_path / "run"),
            "--set", *tiny_overrides(tiny_space_file), "search.screening.epochs=1",
            "seed_method.base_epochs=1", "search.rungs=[{epochs: 1}]"]
    journal = tmp_path / "r.scratch.jsonl"
    old = {"config": "default", "set": argv[argv.index("--set") + 1:], "base_epochs": 1,
           "candidate": 0, "widths": {"none": 1}, "seed": 10000, "val_acc": 0.5}
    journal.write_text("\n".join(json.dumps({**old, "widths": {"none": k}}) for k in range(5))
                       + "\n")
    real = rk._base_net

    def base_then_helper(*a, **k):  # the helper finishes everything while the base trains
        out = real(*a, **k)
        assert rk.main([*argv, "--scratch-only"]) == 0
        return out

    monkeypatch.setattr(rk, "_base_net", base_then_helper)
    assert rk.main(argv) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["resumed_trainings"] == 0 and result["helper_trainings"] == 3
