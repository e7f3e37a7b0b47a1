"""`nas-prune compare`: the search, its uniform-start control and random search at equal
compute, then one paired final evaluation (tiny synthetic case, end to end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas_prune.cli import main
from nas_prune.config import Config, from_dict
from nas_prune.errors import UserError
from nas_prune.rundir import read_json, read_records
from nas_prune.search.compare import parse_arms, parse_budgets
from nas_prune.seeding import final_seeds
from nas_prune.stats import paired_difference

from .test_search_common import tiny_args


def test_budgets_and_arms_are_parsed_and_checked() -> None:
    assert parse_budgets("0.5,0.25, 0.1") == [0.5, 0.25, 0.1]
    for bad in ("0", "1.5", "a,b", ""):
        with pytest.raises(UserError, match="--budget"):
            parse_budgets(bad)
    assert parse_arms("seeds,random,seeds") == ["seeds", "random"]
    with pytest.raises(UserError, match="--arms"):
        parse_arms("seeds,bogus")


@pytest.mark.slow
def test_compare_runs_every_arm_at_every_budget_and_pairs_the_final_rows(
        tmp_path: Path, capsys) -> None:
    run = tmp_path / "cmp"
    args = tiny_args(tmp_path, run)
    i = args.index("--budget")
    args[i + 1] = "0.5,0.35"
    assert main(["compare", *args, "--n-trials", "4", "--final-seeds", "2"]) == 0
    out = read_json(run / "compare.json")
    assert [r["budget"] for r in out["results"]] == [0.5, 0.35]
    for res in out["results"]:
        assert set(res["arms"]) == {"seeds", "uniform", "random"}
        for a in res["arms"].values():
            arm_dir = Path(a["run_dir"])
            records = read_records(arm_dir)
            assert len(records) == 4  # equal trial budgets
            assert a["compute"]["trials"] == 4
            # no arm wrote its own final table: the joint one replaces it
            assert not (arm_dir / "final.json").exists()
        uniform_arm = read_records(Path(res["arms"]["uniform"]["run_dir"]))
        assert {r.seed_method for r in uniform_arm} == {"uniform"}
        seeds_arm = read_json(Path(res["arms"]["random"]["run_dir"]) / "search.json")
        assert seeds_arm["sampler"] == "random"
        names = [r["name"] for r in res["rows"]]
        assert {"arm:seeds", "arm:uniform", "arm:random", "seed:random", "uniform"} <= set(names)
        seeds = final_seeds_of(out)
        for r in res["rows"]:
            assert r["seeds"] == seeds  # paired: one set of evaluation seeds for every row
        by = {r["name"]: r for r in res["rows"]}
        for c in res["comparisons"]:
            a = {x["seed"]: x["test_acc"] for x in by[c["a"]]["runs"]}
            b = {x["seed"]: x["test_acc"] for x in by[c["b"]]["runs"]}
            assert c["mean"] == pytest.approx(paired_difference(a, b).mean, abs=1e-12)
    md = (run / "compare.md").read_text()
    assert "Paired differences" in md and "arm:seeds - uniform" in md
    assert (run / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def final_seeds_of(out: dict) -> list[int]:
    return final_seeds(from_dict(Config, out["config"]))


@pytest.mark.slow  # two arms of two trials and a final table of two seeds (~25 s)
def test_compare_under_a_latency_budget_measures_every_row(tmp_path: Path, capsys) -> None:
    """--metric latency with the flops arm: every final row carries its latency
    ratio measured against the base network with the halves' interval, FLOPs and params, and
    the rows fitted to the budget land near it."""
    import json

    from .test_latency import SMALL

    run = tmp_path / "cmp"
    space = tmp_path / "small.yaml"
    space.write_text(json.dumps(SMALL))
    args = tiny_args(tmp_path, run, train=200, extra=[
        f"space={space}", "data.synthetic_size=28", "search.tolerance=0.1",
        f"latency.table_dir={tmp_path / 't'}", "latency.threads=1", "latency.busy_spread=10"])
    assert main(["compare", *args, "--metric", "latency", "--arms", "seeds,flops",
                 "--n-trials", "2", "--final-seeds", "2"]) == 0
    printed = capsys.readouterr().out
    out = read_json(run / "compare.json")
    res = out["results"][0]
    assert res["metric"] == "latency"
    assert set(res["arms"]) == {"seeds", "flops"}
    assert res["arms"]["flops"]["metric"] == "flops"
    assert res["arms"]["seeds"]["metric"] == "latency"
    names = {r["name"] for r in res["rows"]}
    assert {"arm:seeds", "arm:flops", "uniform", "seed:random"} <= names
    for r in res["rows"]:
        assert r["latency_ms"] > 0 and isinstance(r["within_budget"], bool)
        assert r["latency_ratio_low"] <= r["latency_ratio_high"]
        assert 0 < r["flops_ratio"] and 0 < r["params_ratio"]
        if r["name"] != "arm:flops":  # fitted to the latency budget, then measured again
            assert abs(r["latency_ratio"] - 0.5) < 0.25, r
    uniform = next(r for r in res["rows"] if r["name"] == "uniform")
    assert uniform["flops_vs_uniform"] == pytest.approx(1.0)
    md = (run / "compare.md").read_text()
    assert "Budget 0.5 of the base latency" in md and "latency ratio [halves]" in md
    assert "meets budget" in printed


def test_the_flops_arm_needs_another_metric() -> None:
    assert parse_arms(None) == ["seeds", "uniform", "random"]
    assert parse_arms(None, "latency") == ["seeds", "uniform", "random", "flops"]
    with pytest.raises(UserError, match="--arms: flops .* --metric latency or params"):
        parse_arms("seeds,flops", "flops")
    with pytest.raises(UserError, match="--arms: flops alone has no row held to the budget"):
        parse_arms("flops", "latency")
