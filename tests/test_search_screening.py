"""One-shot screening as a fidelity of the search (nas_prune.search.screening) and the
``oneshot`` arm of ``nas-prune compare``, on the tiny space and synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nas_prune.search.screening as screening
from nas_prune.cli import main
from nas_prune.oneshot import SharedNet, save_shared
from nas_prune.rundir import read_json
from nas_prune.search import load_run
from nas_prune.widths import SearchSpace

from .conftest import TINY_RESNET
from .test_search_common import search, tiny_args

SCREEN = ["search.screening.population=24", "search.screening.promote=1",
          "search.screening.random_checks=1", "search.screening.epochs=1",
          "search.screening.random_widths=1", "search.screening.recal_batches=1",
          "search.screening.recal_batch_size=50", "search.screening.val_images=50",
          "search.finalists=1", "search.early_stopping=none"]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # ~10 s: a search with screening, trials and a final run
def test_screening_promotes_by_score_and_records_the_correlation(tmp_path, capsys,
                                                                 monkeypatch):
    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "4", "--final-seeds", "1", extra=SCREEN) == 0
    out = capsys.readouterr().out
    assert "screening vs top-rung validation accuracy: Spearman" in out
    assert (run / "oneshot" / "shared.pt").is_file()
    screened = _jsonl(run / "oneshot" / "screened.jsonl")
    assert 3 <= len(screened) <= 24
    top = [c for c in screened if c["pick"] == "top"]
    rand = [c for c in screened if c["pick"] == "random"]
    assert len(top) == 1 and len(rand) == 1
    others = [c["score"] for c in screened if c["pick"] != "top"]
    assert min(c["score"] for c in top) >= max(others)
    trials = _jsonl(run / "trials.jsonl")
    trained = [t["widths"] for t in trials]
    for c in top + rand:
        assert c["widths"] in trained
    info = read_json(run / "search.json")
    corr = info["screening"]["correlation"]
    assert corr["n"] == 2 and corr["by_pick"]["top"]["n"] == 1
    assert corr["by_pick"]["random"]["n"] == 1
    assert corr["spearman"] is None or -1 <= corr["spearman"] <= 1
    assert info["screening"]["shared_training"]["cost_base_trainings"] > 0

    # screening again in the same run directory loads the shared network: never retrains it
    def refuse(*a, **k):
        raise AssertionError("the weight-sharing network was trained again")

    monkeypatch.setattr(screening, "train_shared", refuse)
    _, setup, _ = load_run(run)
    chosen, summary = screening.run_screening(setup, run)
    assert summary["shared_training"]["loaded"] is True
    assert [c["widths"] for c in chosen] == [c["widths"] for c in top + rand]


def test_a_checkpoint_of_another_space_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    other = SearchSpace.from_dict(TINY_RESNET, name="tiny_resnet")
    save_shared(SharedNet(other), run / "oneshot" / "shared.pt", {})
    rc = main(["search", *tiny_args(tmp_path, run, extra=SCREEN), "--n-trials", "5"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "space 'tiny_resnet'" in err[0] and "not of space 'tiny_search'" in err[0]
    assert sorted(p.name for p in run.iterdir()) == ["oneshot"]  # nothing written


@pytest.mark.parametrize("extra, fragment", [
    (["search.screening.epochs=0"], "search.screening.epochs: 0 is out of range"),
    (["search.screening.recal_batches=0"], "search.screening.recal_batches: 0 is out of range"),
    (["search.screening.population=2000000"], "search.screening.population: 2000000 is out"),
    (["search.backend=ray"], "one-shot screening runs with the optuna backend"),
    (["search.screening.promote=9"], "search.n_trials: 5 is fewer than"),
    (["search.objective=multi"], "one-shot screening needs search.objective: single"),
    (["train.function=tests.test_train_function:fit"], "not train.function; set it to 0"),
    (["seed_method.metric=latency"], "a latency budget measures every candidate"),
])
def test_bad_screening_settings_are_one_line_errors(tmp_path, capsys, no_training, extra,
                                                    fragment):
    run = tmp_path / "run"
    rc = main(["search", *tiny_args(tmp_path, run, extra=SCREEN + extra), "--n-trials", "5"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not (run / "oneshot").exists()


@pytest.mark.slow  # ~9 s: two arms and their final runs
def test_oneshot_compare_arm_runs_end_to_end(tmp_path, capsys):
    run = tmp_path / "cmp"
    args = tiny_args(tmp_path, run, extra=SCREEN + ["search.final_seeds=2"])
    rc = main(["compare", *args, "--arms", "uniform,oneshot", "--n-trials", "4",
               "--rungs", "1"])
    assert rc == 0, capsys.readouterr().err
    out = read_json(run / "compare.json")
    res = out["results"][0]
    assert set(res["arms"]) == {"uniform", "oneshot"}
    comp = res["arms"]["oneshot"]["compute"]
    assert comp["screening"]["screened"] >= 2 and comp["screening"]["shared_base_trainings"] > 0
    assert "screening" not in res["arms"]["uniform"]["compute"]
    assert any(r["name"] == "arm:oneshot" for r in res["rows"])
    assert "weight-sharing training" in (run / "compare.md").read_text()
    assert torch.load(Path(res["arms"]["oneshot"]["run_dir"]) / "oneshot" / "shared.pt",
                      weights_only=True)["space"]["name"] == "tiny_search"
