"""End-to-end searches with the Optuna backend on the tiny space (in-process, seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

import nas_prune.scratch
from nas_prune import build_model, load_spec
from nas_prune._yaml import write_yaml
from nas_prune.budget import check_budget
from nas_prune.cli import main
from nas_prune.rundir import CSV_FIELDS, read_json
from nas_prune.widths import SearchSpace

from .test_search_common import (
    TINY,
    assert_pareto_front,
    read_csv,
    search,
    storage_of,
    tiny_args,
    tiny_space_file,
)


class TrainCounter:
    """Wraps scratch.train_spec: counts search trainings, optionally raises on the k-th one."""

    def __init__(self, monkeypatch, fail_on: int | None = None) -> None:
        self.search_calls = 0
        self.final_calls = 0
        self.fail_on = fail_on
        real = nas_prune.scratch.train_spec

        def wrapped(spec, cfg, **kw):
            if kw.get("evaluate_test"):
                self.final_calls += 1
            else:
                self.search_calls += 1
                if self.search_calls == self.fail_on:
                    raise RuntimeError("injected failure: boom")
            return real(spec, cfg, **kw)

        monkeypatch.setattr(nas_prune.scratch, "train_spec", wrapped)


def test_search_writes_the_run_directory_and_the_study(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "5", "--final-seeds", "2") == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("trial ") for line in out.splitlines()) == 5
    assert "test acc (mean +- std)" in out

    # best.yaml rebuilds and meets the budget
    space = SearchSpace.load(tiny_space_file(tmp_path))
    target = check_budget(space, 0.5)
    best = load_spec(run / "best.yaml")
    model = build_model(run / "best.yaml")
    assert sum(p.numel() for p in model.parameters()) == best.params
    assert abs(best.flops - target) <= 0.05 * target
    assert len(best.metrics["test_acc"]) == 2 and best.metrics["n_seeds"] == 2
    assert best.provenance["config"]["search"]["n_trials"] == 5
    assert best.provenance["seed_method"] in ("random", "uniform")
    assert (run / "best.pt").is_file()

    # trials.csv and the study hold every trial, the seed and uniform first
    rows = read_csv(run)
    assert [int(r["number"]) for r in rows] == list(range(5))
    assert tuple(rows[0]) == CSV_FIELDS
    proposals = {m: load_spec(run / "proposals" / f"{m}.yaml").widths
                 for m in ("random", "uniform")}
    assert (rows[0]["role"], rows[0]["seed_method"]) == ("seed", "random")
    assert (rows[1]["role"], rows[1]["seed_method"]) == ("uniform", "uniform")
    assert json.loads(rows[0]["widths"]) == proposals["random"]
    assert json.loads(rows[1]["widths"]) == proposals["uniform"]
    assert {r["role"] for r in rows[2:]} == {"search"}
    study = optuna.load_study(study_name=None, storage=storage_of(run))
    trials = study.get_trials()
    assert len(trials) == 5
    assert trials[0].params["start"] == "random"
    assert all(v == 1.0 for k, v in trials[0].params.items() if k.startswith("m_"))
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            for key in ("widths", "flops", "params", "flops_ratio", "val_curve", "epochs",
                        "wall_time", "seed_method", "role"):
                assert key in t.user_attrs, key
            assert t.value == t.user_attrs["val_acc"]
    assert "nas_prune_setup" in study.user_attrs

    # search.json and final.json
    info = read_json(run / "search.json")
    for key in ("command", "backend", "space", "seed_methods", "budget", "metric",
                "base_flops", "base_params", "target_cost", "started", "finished",
                "hardware", "versions", "study_name", "storage"):
        assert key in info, key
    assert info["finished"] is not None and info["target_cost"] == target
    final = read_json(run / "final.json")
    assert final["n_seeds"] == 2
    assert [r["name"] for r in final["rows"]] == ["best", "seed:random", "uniform"]
    assert all(len(r["test_acc"]) == 2 for r in final["rows"])

    # export: top-K, Pareto front and ONNX from the stored study, no training
    assert main(["export", str(run), "--top", "2", "--onnx"]) == 0
    assert len(list((run / "top").glob("rank*-trial*.yaml"))) == 2
    assert (run / "best.onnx").is_file()
    assert main(["export", str(run), "--pareto"]) == 0
    front = [load_spec(p) for p in sorted((run / "pareto").glob("*.yaml"))]
    assert front and all(p.metrics["val_acc"] is not None for p in front)


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path: Path, monkeypatch,
                                                            capsys) -> None:
    counter = TrainCounter(monkeypatch, fail_on=3)
    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "5") == 0
    rows = read_csv(run)
    assert len(rows) == 5
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert len(failed) == 1 and "boom" in failed[0]["reason"]
    assert all(r["state"] in ("COMPLETE", "REJECTED") for r in rows if r is not failed[0])
    study = optuna.load_study(study_name=None, storage=storage_of(run))
    fail = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(fail) == 1 and "injected failure" in fail[0].user_attrs["fail_reason"]
    assert counter.search_calls >= 3 and (run / "best.yaml").is_file()
    assert "FAIL  (RuntimeError: injected failure: boom)" in capsys.readouterr().out


def test_rejected_candidates_are_counted_and_never_trained(tmp_path: Path,
                                                           monkeypatch) -> None:
    counter = TrainCounter(monkeypatch)
    run = tmp_path / "run"
    # one free group (the others pinned by their bounds) and a target 0.5% off the nearest
    # cost: the baselines land within their 1%, a candidate cannot within a 0.1% tolerance
    data = {**TINY, "bounds": {"conv1": [8, 8], "conv3": [16, 16]}}
    space_file = write_yaml(tmp_path / "pinned.yaml", data)
    space = SearchSpace.from_dict(data, name="pinned")
    cost = space.cost({**space.base_widths(), "conv2": 8})
    budget = 1.005 * cost / space.base_cost()
    assert search(tmp_path, run, "--n-trials", "8", "--sampler", "random", "--budget",
                  f"{budget:.6f}", extra=[f"space={space_file}", "search.tolerance=0.001"]) == 0
    rows = read_csv(run)
    rejected = [r for r in rows if r["state"] == "REJECTED"]
    trained = [r for r in rows if r["state"] != "REJECTED"]
    assert rejected, "expected some rejected candidates"
    assert all("no common scale" in r["reason"] and r["val_acc"] == "" for r in rejected)
    # one training per distinct width vector (here the two baselines coincide: the second
    # reuses the first's measurement)
    assert counter.search_calls == len({r["widths"] for r in trained})
    assert {r["role"] for r in rows[:2]} == {"seed", "uniform"}  # baselines are never rejected
    info = read_json(run / "search.json")
    assert info["state_counts"]["REJECTED"] == len(rejected)
    study = optuna.load_study(study_name=None, storage=storage_of(run))
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == len(rejected)
    assert all(t.user_attrs["state_detail"] == "REJECTED" for t in pruned)


def test_multi_objective_search_exports_a_pareto_front(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "5", "--objective", "multi") == 0
    study = optuna.load_study(study_name=None, storage=storage_of(run))
    assert len(study.directions) == 2
    info = read_json(run / "search.json")
    assert info["sampler"] == "nsga2" and info["early_stopping"] == "none"
    # the exported front is exactly the completed trials that no completed trial dominates
    front, _ = assert_pareto_front(run)
    specs = sorted((load_spec(p) for p in (run / "pareto").glob("trial*.yaml")),
                   key=lambda s: s.flops)
    accs = [s.metrics["val_acc"] for s in specs]
    # along the front, more FLOPs must buy strictly more accuracy
    assert all(a2 > a1 for a1, a2 in zip(accs, accs[1:], strict=False))
    assert {s.provenance["trial"] for s in specs} <= front


def test_a_second_run_in_the_same_directory_needs_resume(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "2") == 0
    capsys.readouterr()
    assert search(tmp_path, run, "--n-trials", "2") == 2
    assert "--resume" in capsys.readouterr().err
    # a finished study resumes without retraining its trials, and may grow; final runs of the
    # baselines that already exist are reused
    assert search(tmp_path, run, "--n-trials", "3", "--resume") == 0
    assert len(read_csv(run)) == 3
    out = capsys.readouterr().out
    assert sum(line.startswith("trial ") for line in out.splitlines()) == 1
    seed_row = [line for line in out.splitlines() if line.startswith("final seed:random")]
    assert seed_row and all("(reused from an earlier run)" in line for line in seed_row)
    # a changed search definition is refused on resume
    assert search(tmp_path, run, "--resume", "--budget", "0.6") == 2
    assert "seed_method.budget" in capsys.readouterr().err


@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2"])
def test_samplers_run(tmp_path: Path, sampler: str) -> None:
    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "3", "--sampler", sampler,
                  "--early-stopping", "halving") == 0
    assert len(read_csv(run)) == 3


def test_the_study_opens_in_optuna_dashboard(tmp_path: Path) -> None:
    dashboard = pytest.importorskip("optuna_dashboard")
    from wsgiref.util import setup_testing_defaults

    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "2") == 0
    app = dashboard.wsgi(storage_of(run))

    def get(path: str) -> tuple[str, dict]:
        env: dict = {}
        setup_testing_defaults(env)
        env.update(PATH_INFO=path, REQUEST_METHOD="GET")
        status = {}
        body = b"".join(app(env, lambda s, h, exc=None: status.setdefault("s", s)))
        return status["s"], json.loads(body)

    status, summaries = get("/api/studies")
    assert status.startswith("200")
    study_id = summaries["study_summaries"][0]["study_id"]
    status, detail = get(f"/api/studies/{study_id}")
    assert status.startswith("200") and len(detail["trials"]) == 2
    keys = {a["key"] for a in detail["trials"][0]["user_attrs"]}
    assert {"widths", "flops", "params", "flops_ratio", "val_curve", "epochs", "wall_time",
            "seed_method", "role"} <= keys


def test_the_default_run_dir_is_not_reused_silently(tmp_path: Path, capsys) -> None:
    """Without --run-dir, a second search goes to RUN-2 rather than failing or mixing studies."""
    run = tmp_path / "runs" / "search"
    args = [a for a in tiny_args(tmp_path, run) if a not in ("--run-dir", str(run))]
    args += ["--set", f"run_dir={run}", "--n-trials", "2"]
    assert main(["search", *args]) == 0
    assert main(["search", *args]) == 0
    assert "this one goes to" in capsys.readouterr().out
    assert (run / "best.yaml").is_file() and (run.with_name("search-2") / "best.yaml").is_file()


@pytest.mark.parametrize("winner", ["third finalist", "uniform"])
def test_finalists_pick_the_winner_by_mean_validation_over_the_final_seeds(
        tmp_path: Path, monkeypatch, capsys, winner: str) -> None:
    # Final runs of one width vector score best on validation, the rest low: the third distinct
    # vector trained (the third finalist by search validation accuracy), or uniform's proposal
    # (a baseline, retrained for the table anyway). It must become "best".
    real = nas_prune.scratch.train_spec
    order: list[str] = []
    run = tmp_path / "run"

    def wrapped(spec, cfg, **kw):
        result, extra = real(spec, cfg, **kw)
        if kw.get("evaluate_test"):
            key = json.dumps(spec.widths, sort_keys=True)
            if key not in order:
                order.append(key)
            if winner == "uniform":
                wins = spec.widths == load_spec(run / "proposals" / "uniform.yaml").widths
            else:
                wins = order.index(key) == 2
            result.val_acc_final = 0.9 if wins else 0.1
        return result, extra

    monkeypatch.setattr(nas_prune.scratch, "train_spec", wrapped)
    assert search(tmp_path, run, "--n-trials", "6", "--final-seeds", "2", "--finalists",
                  "3") == 0
    final = read_json(run / "final.json")
    finalists = final["finalist_trials"]
    assert len(finalists) == 3
    # the finalists are the three best distinct trials by search validation accuracy
    rows = [r for r in read_csv(run) if r["state"] == "COMPLETE"]
    by_acc = sorted(rows, key=lambda r: (-float(r["val_acc"]), int(r["flops"]),
                                         int(r["number"])))
    distinct: list[int] = []
    for r in by_acc:
        if all(json.loads(r["widths"]) != json.loads(o["widths"]) for o in by_acc
               if int(o["number"]) in distinct):
            distinct.append(int(r["number"]))
    assert finalists == distinct[:3]
    expected = finalists[2] if winner == "third finalist" else \
        next(int(r["number"]) for r in rows if r["role"] == "uniform")
    assert final["rows"][0]["name"] == "best" and final["rows"][0]["trial"] == expected
    # the other finalists are not retrained on the evaluation seeds: the round that chose the
    # winner ran on the selection seeds, disjoint from the evaluation seeds
    assert [r["name"] for r in final["rows"]].count("finalist") == 0
    selection = final["selection"]
    assert selection["winner"] == expected and selection["pool"][0]["trial"] == expected
    assert not set(selection["seeds"]) & set(final["seeds"])
    assert all(set(r["seeds"]) == set(final["seeds"]) for r in final["rows"])
    assert final["rows"][0]["val_acc"] == pytest.approx(0.9)
    assert "selection seed" in final["best_rule"] and "test split and the evaluation seeds " \
        "choose nothing" in final["best_rule"]
    best = load_spec(run / "best.yaml")
    assert best.provenance["trial"] == expected
    assert best.metrics["final_val_acc"] == pytest.approx(0.9)
    # export keeps the finalists' choice (it reads final.json), and does not train
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    assert load_spec(run / "best.yaml").provenance["trial"] == expected
    assert f"best: trial {expected} " in capsys.readouterr().out


def test_finalists_must_be_at_least_one(tmp_path: Path, capsys) -> None:
    assert search(tmp_path, tmp_path / "r", "--finalists", "0") == 2
