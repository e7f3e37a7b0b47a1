"""One-shot screening as a fidelity of the search (nas_prune.search.screening) and the
``oneshot`` arm of ``nas-prune compare``, on the tiny space and synthetic data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import nas_prune.search.screening as screening
from nas_prune._io import write_json
from nas_prune._yaml import write_yaml
from nas_prune.cli import main
from nas_prune.config import load_config
from nas_prune.oneshot import SharedNet, save_shared
from nas_prune.rundir import read_json
from nas_prune.search import load_run
from nas_prune.widths import SearchSpace

from .conftest import TINY_RESNET, TINY_VGG, tiny_overrides
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
    assert "screening (shared) vs top-rung validation accuracy: Spearman" in out
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
    assert info["screening"]["score"] == "shared"
    cost = info["screening"]["cost"]
    assert cost["network_base_trainings"] == pytest.approx(
        info["screening"]["shared_training"]["cost_base_trainings"], rel=1e-5)
    assert cost["screening_base_trainings"] > 0 and cost["trial_base_trainings"] > 0

    # screening again in the same run directory loads the shared network: never retrains it
    def refuse(*a, **k):
        raise AssertionError("the weight-sharing network was trained again")

    monkeypatch.setattr(screening, "train_shared", refuse)
    _, setup, _ = load_run(run)
    chosen, summary = screening.run_screening(setup, run)
    assert summary["shared_training"]["loaded"] is True
    assert [c["widths"] for c in chosen] == [c["widths"] for c in top + rand]


@pytest.mark.slow  # 8-26 s: a base network, a search with screening, trials, a final run
def test_base_network_screening_trains_no_shared_network(tmp_path, capsys, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("score: base trained a weight-sharing network")

    monkeypatch.setattr(screening, "train_shared", refuse)
    run = tmp_path / "run"
    extra = SCREEN + ["search.screening.score=base", "seed_method.base_epochs=1",
                      "search.screening.population=12"]
    assert search(tmp_path, run, "--seed-method", "slimming", "--n-trials", "4",
                  "--final-seeds", "1", extra=extra) == 0
    out = capsys.readouterr().out
    assert "screening (base) vs top-rung validation accuracy: Spearman" in out
    assert "candidates cut from slimming's base network (cached, no training)" in out
    assert not (run / "oneshot" / "shared.pt").exists()
    info = read_json(run / "search.json")["screening"]
    assert info["score"] == "base" and "shared_training" not in info
    assert info["base_network"]["method"] == "slimming"
    assert info["base_network"]["source"] == "cached"  # the proposal's, from RUN/bases
    assert info["base_network"]["order"].startswith("slimming importance")
    assert info["cost"]["network_base_trainings"] == 0 and info["cost"]["screening_trials"] > 0
    corr = info["correlation"]
    assert corr["n"] == 2 and corr["by_pick"]["top"]["n"] == 1
    screened = _jsonl(run / "oneshot" / "screened.jsonl")
    assert len(screened) >= 3 and all(0 <= c["score"] <= 1 for c in screened)
    # without the proposals' scores at hand (run_screening called on its own): L1 norms
    _, setup, _ = load_run(run)
    _, summary = screening.run_screening(setup, run)
    assert summary["base_network"]["order"] == "L1 norm of each filter"


def test_the_base_score_refuses_a_space_above_the_base(tmp_path, capsys, no_training):
    space = write_yaml(tmp_path / "wide.yaml", {**TINY_VGG, "max_multiplier": 1.5})
    run = tmp_path / "run"
    rc = main(["search", *tiny_args(tmp_path, run, extra=SCREEN + [
        f"space={space}", "search.screening.score=base"]), "--seed-method", "l1norm",
        "--n-trials", "5"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "search.screening.score: base cuts candidates from the base " \
        "network, and space wide widens" in err[0] and "score: shared" in err[0], err
    assert not run.exists()


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
    (["search.screening.promote=9"], "search.n_trials: 5 is fewer than"),
    (["search.objective=multi"], "one-shot screening needs search.objective: single"),
    (["train.function=tests.test_train_function:fit"], "not train.function; set it to 0"),
    (["search.screening.score=eagle"],
     "search.screening.score: 'eagle'; choose one of shared, base"),
    (["search.screening.score=base"], "and random trains none; seed a method with a base"),
    (["search.screening.strategy=genetic"],
     "search.screening.strategy: 'genetic'; choose one of random, evolution"),
    (["search.screening.strategy=evolution", "search.screening.evolution_size=8",
      "search.screening.tournament=9"], "search.screening.tournament: 9 is more than the 8"),
    (["search.screening.strategy=evolution", "search.screening.evolution_size=24",
      "search.screening.tournament=4"], "evolution_size: 24 random draws leave nothing"),
    (["search.screening.strategy=evolution", "search.screening.evolution_size=2",
      "search.screening.tournament=2", "search.screening.random_checks=2"],
     "fewer than promote + random_checks = 3"),
    (["search.screening.mutation=0"], "search.screening.mutation"),
    (["search.screening.evolution_size=1"], "search.screening.evolution_size"),
])
def test_bad_screening_settings_are_one_line_errors(tmp_path, capsys, no_training, extra,
                                                    fragment):
    run = tmp_path / "run"
    rc = main(["search", *tiny_args(tmp_path, run, extra=SCREEN + extra), "--n-trials", "5"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not (run / "oneshot").exists()


@pytest.mark.slow  # ~17 s: two arms (7 trials of compute each) and their final runs
def test_oneshot_compare_arm_runs_end_to_end(tmp_path, capsys):
    run = tmp_path / "cmp"
    args = tiny_args(tmp_path, run, extra=SCREEN + ["search.final_seeds=2"])
    rc = main(["compare", *args, "--arms", "uniform,oneshot", "--n-trials", "7",
               "--rungs", "1"])
    assert rc == 0, capsys.readouterr().err
    out = read_json(run / "compare.json")
    res = out["results"][0]
    assert set(res["arms"]) == {"uniform", "oneshot"}
    comp = res["arms"]["oneshot"]["compute"]
    assert comp["screening"]["screened"] >= 2 and comp["screening"]["shared_base_trainings"] > 0
    assert "screening" not in res["arms"]["uniform"]["compute"]
    assert any(r["name"] == "arm:oneshot" for r in res["rows"])
    # equal compute: the oneshot arm's trials were cut by what its screening costs in trials
    uni = res["arms"]["uniform"]["compute"]
    assert uni["trials"] == res["arms"]["uniform"]["n_trials"] == 7
    assert comp["trials"] == res["arms"]["oneshot"]["n_trials"] < 7
    # measured compute, in trainings of the base network: without early stopping the plan holds
    # near (here 6.80 against 5.99: the uniform arm reused a duplicate's measurement), and the
    # warning is there exactly when the oneshot arm spent over one average trial more
    per_trial = uni["base_trainings"] / uni["trials"]
    assert uni["base_trainings"] == uni["trials_base_trainings"] > 0
    assert comp["base_trainings"] == pytest.approx(
        comp["trials_base_trainings"] + comp["screening"]["network_base_trainings"]
        + comp["screening"]["screening_base_trainings"], abs=1e-5)
    over = comp["base_trainings"] - uni["base_trainings"]
    assert ("compute_note" in res) == (over > per_trial) and over < 2 * per_trial
    planned = res["arms"]["oneshot"]["planned_screening"]
    assert planned["network_base_trainings"] == pytest.approx(  # predicted before training
        comp["screening"]["shared_base_trainings"], rel=1e-5)
    assert comp["trials"] == 7 - math.ceil(planned["trials"])
    text = (run / "compare.md").read_text()
    assert "| compute (base trainings) |" in text
    assert f"oneshot: {comp['base_trainings']:.2f} trainings of the base network = " \
           f"{comp['trials_base_trainings']:.2f} for its {comp['trials']} from-scratch " \
           f"trials + " in text and "weight-sharing training" in text
    assert torch.load(Path(res["arms"]["oneshot"]["run_dir"]) / "oneshot" / "shared.pt",
                      weights_only=True)["space"]["name"] == "tiny_search"


@pytest.mark.slow  # ~25 s: the oneshot arm at two budgets and the final runs
def test_a_compare_over_budgets_trains_the_shared_network_once(tmp_path, capsys, monkeypatch):
    calls = []
    real = screening.train_shared
    monkeypatch.setattr(screening, "train_shared",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    run = tmp_path / "cmp"
    args = tiny_args(tmp_path, run, extra=SCREEN + ["search.final_seeds=1"])
    rc = main(["compare", *args, "--arms", "uniform,oneshot", "--n-trials", "7", "--rungs", "1",
               "--budget", "0.6,0.5"])
    assert rc == 0, capsys.readouterr().err
    assert len(calls) == 1
    assert "weight-sharing network copied from" in capsys.readouterr().out
    first, second = read_json(run / "compare.json")["results"]
    one, two = (r["arms"]["oneshot"]["compute"]["screening"] for r in (first, second))
    # trained once, charged at both budgets: each budget's comparison stands alone
    assert one["shared_base_trainings"] == two["shared_base_trainings"] > 0
    assert read_json(run / "b0.5" / "oneshot" / "oneshot" / "screening.json")[
        "shared_training"]["loaded"] is True


# ---- equal compute: the arithmetic, without training ----------------------------------------
def _cfg(tmp_path, *sets: str):
    space = tmp_path / "tiny_vgg.yaml"
    if not space.is_file():
        write_yaml(space, TINY_VGG)
    return load_config(None, tiny_overrides(space) + ["seed_method.budget=0.5", *sets])


def test_a_trial_costs_its_planned_epochs_at_its_flops(tmp_path):
    from nas_prune.search.screening import trial_base_trainings
    from nas_prune.search.space import CandidateSpace

    cfg = _cfg(tmp_path, "train.epochs=4", "train.budget=scratch-e")
    space = SearchSpace.load(cfg.space)
    base = space.base_cost("flops")
    target = CandidateSpace(space, starts={"uniform": space.base_widths()},
                            target=base // 2).target
    # Scratch-E: the base epochs at half the FLOPs: half a training of the base network
    assert trial_base_trainings(space, cfg) == pytest.approx(target / base, rel=0.02)
    # Scratch-B: twice the epochs at half the FLOPs: one training of the base network
    cfg_b = _cfg(tmp_path, "train.epochs=4", "train.budget=scratch-b")
    assert trial_base_trainings(space, cfg_b) == pytest.approx(2 * target / base, rel=0.02)
    # rungs: every rung's complete schedule on each of its seeds
    cfg_r = _cfg(tmp_path, "train.epochs=4", "train.budget=scratch-e",
                 "search.rungs=[{epochs: 1, seeds: 1}, {epochs: 4, seeds: 2}]")
    assert trial_base_trainings(space, cfg_r) == pytest.approx(
        trial_base_trainings(space, cfg) * (1 + 4 * 2) / 4)


def test_under_halving_a_trial_is_priced_at_its_expected_cost(tmp_path):
    from nas_prune.search.screening import rung_reach, trial_base_trainings

    rungs = "search.rungs=[{epochs: 1, seeds: 1}, {epochs: 4, seeds: 2}]"
    one = _cfg(tmp_path, "train.epochs=4", "train.budget=scratch-e")
    space = SearchSpace.load(one.space)
    per_epoch = trial_base_trainings(space, one) / 4
    halving = _cfg(tmp_path, "train.epochs=4", "train.budget=scratch-e", rungs,
                   "search.early_stopping=halving", "search.reduction_factor=2")
    # successive halving promotes 1/eta: rung 1 (4 epochs on 2 seeds) is reached by half
    assert rung_reach(halving) == [1.0, 0.5]
    assert trial_base_trainings(space, halving) == pytest.approx(per_epoch * (1 + 4 * 2 / 2))
    assert trial_base_trainings(space, halving, full=True) == pytest.approx(
        per_epoch * (1 + 4 * 2))
    # median, none, or no rungs: the full schedule
    median = _cfg(tmp_path, "train.epochs=4", "train.budget=scratch-e", rungs,
                  "search.early_stopping=median")
    assert rung_reach(median) == [1.0, 1.0]
    assert trial_base_trainings(space, median) == pytest.approx(per_epoch * (1 + 4 * 2))
    single = _cfg(tmp_path, "train.epochs=4", "train.budget=scratch-e",
                  "search.early_stopping=halving")
    assert rung_reach(single) == [1.0]


def _record(number, state, flops, measurements, epochs=0):
    from nas_prune.rundir import TrialRecord

    return TrialRecord(number=number, state=state, role="search", seed_method=None,
                       widths={"a": number}, flops=flops, epochs=epochs,
                       measurements=measurements)


MEASURED = [  # base network: 100 FLOPs, train.epochs 4
    # pruned after rung 0: its 2 epochs at half the FLOPs only
    _record(0, "PRUNED", 50, [{"rung": 0, "seed": 0, "epochs": 2, "epochs_run": 2,
                               "status": "ok", "val_acc": 0.5}]),
    # rung 0 reused from trial 0 (trained nothing), rung 1 trained 6 epochs at the base FLOPs
    _record(1, "COMPLETE", 100, [{"rung": 0, "seed": 0, "epochs": 2, "epochs_run": 2,
                                  "status": "ok", "val_acc": 0.5, "from_trial": 0},
                                 {"rung": 1, "seed": 0, "epochs": 6, "epochs_run": 6,
                                  "status": "ok", "val_acc": 0.6}]),
    # failed (diverged) after 1 of 2 epochs at a quarter of the FLOPs: what it trained
    _record(2, "FAIL", 25, [{"rung": 0, "seed": 0, "epochs": 2, "epochs_run": 1,
                             "status": "diverged: nan", "val_acc": None}]),
]


def test_measured_compute_counts_what_trials_trained():
    from nas_prune.search.screening import measured_base_trainings

    def total(records):
        return measured_base_trainings(records, base_flops=100, base_epochs=4)

    assert total(MEASURED[:1]) == pytest.approx(2 * 0.5 / 4)
    assert total(MEASURED[1:2]) == pytest.approx(6 * 1.0 / 4)
    assert total(MEASURED[2:]) == pytest.approx(1 * 0.25 / 4)
    assert total(MEASURED) == pytest.approx(0.25 + 1.5 + 0.0625)
    # a record without measurements counts the epochs it trained itself
    assert total([_record(3, "COMPLETE", 50, [], epochs=4)]) == pytest.approx(0.5)


def test_compare_reports_measured_compute_and_warns_when_oneshot_spent_more(tmp_path):
    from types import SimpleNamespace

    from nas_prune.search.compare import _compute, compute_note, markdown

    setup = SimpleNamespace(base_flops=100, cfg=SimpleNamespace(
        train=SimpleNamespace(epochs=4)))
    other = _compute(MEASURED, None, setup)
    assert other["base_trainings"] == pytest.approx(1.8125) and other["trainings"] == 3
    arm_dir = tmp_path / "oneshot"
    write_json(arm_dir / "oneshot" / "screening.json", {
        "score": "shared", "screened": 24, "screen_seconds": 1.0,
        "shared_training": {"cost_base_trainings": 0.5, "wall_time": 3.0},
        "cost": {"screening_base_trainings": 0.25, "trial_base_trainings": 0.3}})
    one = _compute(MEASURED[1:], arm_dir, setup)
    assert one["trials_base_trainings"] == pytest.approx(1.5625)
    assert one["base_trainings"] == pytest.approx(1.5625 + 0.5 + 0.25)
    # its wall time counts the weight-sharing training (3 s) and the screening (1 s)
    assert one["wall_s"] == pytest.approx(one["trials_wall_s"] + 4.0)
    assert one["trials_wall_s"] == _compute(MEASURED[1:], None, setup)["wall_s"]
    arms = {"uniform": {"compute": other}, "oneshot": {"compute": one}}
    # 2.31 spent against 1.81: over by 0.50, under an average trial of 1.81 / 3 = 0.60
    assert compute_note(arms) is None
    one["base_trainings"] += 0.2  # over by 0.70
    note = compute_note(arms)
    assert note and "0.70 more than the other arms' mean" in note
    res = {"budget": 0.5, "metric": "flops", "rows": [], "comparisons": [],
           "compute_note": note,
           "arms": {k: {**a, "best_trial": None, "best_search_val_acc": None}
                    for k, a in arms.items()}}
    text = markdown({"results": [res]})
    assert "| compute (base trainings) |" in text and f"Warning: {note}." in text
    assert "| uniform | 1.81 | 3 (0) | 3 |" in text


def test_screening_cost_counts_forward_passes_against_a_training(tiny_vgg_space):
    from nas_prune.oneshot import screening_cost

    base = tiny_vgg_space.base_cost("flops")
    # 30 candidates at the base FLOPs, 100 images each, against 2 epochs of 500 images
    # trained (a step = 3 forward passes): 3000 / 3000
    assert screening_cost(tiny_vgg_space, [base] * 30, images=100, n_train=500,
                          base_epochs=2) == pytest.approx(1.0)
    assert screening_cost(tiny_vgg_space, [base // 2] * 30, images=100, n_train=500,
                          base_epochs=2) == pytest.approx(0.5, rel=1e-3)


def test_planned_cost_and_the_oneshot_arms_trials(tmp_path):
    from nas_prune.search.compare import oneshot_config
    from nas_prune.search.screening import planned_cost

    sets = ["search.screening.population=50", "search.screening.epochs=2",
            "search.screening.promote=2", "search.screening.random_checks=1",
            "search.screening.recal_batches=1", "search.screening.recal_batch_size=50",
            "search.screening.val_images=50", "search.n_trials=12"]
    cfg = _cfg(tmp_path, *sets)
    space = SearchSpace.load(cfg.space)
    cost = planned_cost(cfg, space, n_train=400, n_val=100)
    assert cost.network > 1.0  # two sandwich epochs, each more than a widest-network epoch
    assert cost.trials == pytest.approx((cost.network + cost.screening) / cost.trial)
    base_cost = planned_cost(_cfg(tmp_path, *sets, "search.screening.score=base"), space,
                             n_train=400, n_val=100)
    assert base_cost.network == 0 and base_cost.screening == pytest.approx(cost.screening)
    acfg, planned = oneshot_config(cfg)  # the tiny data: 400 training, 100 validation images
    assert planned.to_dict() == cost.to_dict()
    assert acfg.search.n_trials == 12 - math.ceil(cost.trials)
    assert acfg.search.n_trials + cost.trials == pytest.approx(12, abs=1)
    assert acfg.search.n_trials + cost.trials <= 12


@pytest.mark.parametrize("trials, network, n, expected", [
    (2.3, 1.0, 10, 7), (2.0, 1.0, 10, 8), (0.0, 0.0, 10, 10), (5.0, 0.0, 10, 5)])
def test_the_oneshot_arm_never_spends_more_than_the_others(trials, network, n, expected):
    from nas_prune.search.compare import oneshot_trials
    from nas_prune.search.screening import ScreeningCost

    cost = ScreeningCost(score="shared", trial=0.5, network=network * 0.5,
                         screening=(trials - network) * 0.5, candidates=100)
    got = oneshot_trials(n, cost, n_base=2, promote=2, random_checks=1, epochs=3)
    assert got == expected and n - 1 < got + cost.trials <= n + 1e-9


@pytest.mark.parametrize("network, screening, fragments", [
    (12.0, 0.5, ["search.n_trials", "search.screening.epochs: 3", "costs 12.00 trials",
                 "more than the 10 trials"]),
    (5.0, 1.5, ["search.n_trials: 10 trials per arm leave the oneshot arm 3",
                "weight-sharing training (search.screening.epochs: 3, 5.00 trials)",
                "100 candidates, 1.50 trials", "fewer than the 5 it needs",
                "lower search.screening.promote, .epochs or .population"]),
])
def test_too_few_trials_for_the_oneshot_arm_is_one_line(network, screening, fragments):
    from nas_prune.errors import UserError
    from nas_prune.search.compare import oneshot_trials
    from nas_prune.search.screening import ScreeningCost

    cost = ScreeningCost(score="shared", trial=1.0, network=network, screening=screening,
                         candidates=100)
    with pytest.raises(UserError) as err:
        oneshot_trials(10, cost, n_base=2, promote=2, random_checks=1, epochs=3)
    msg = str(err.value)
    assert "\n" not in msg and all(f in msg for f in fragments), msg


def test_too_few_trials_with_the_base_score_names_no_network_training():
    from nas_prune.errors import UserError
    from nas_prune.search.compare import oneshot_trials
    from nas_prune.search.screening import ScreeningCost

    cost = ScreeningCost(score="base", trial=1.0, network=0.0, screening=8.5, candidates=1000)
    with pytest.raises(UserError) as err:
        oneshot_trials(12, cost, n_base=2, promote=8, random_checks=2, epochs=3)
    assert str(err.value) == (
        "search.n_trials: 12 trials per arm leave the oneshot arm 3 from-scratch trials after "
        "its screening (1000 candidates, 8.50 trials), fewer than the 12 it needs "
        "(2 seed/uniform, 8 promoted, 2 random); raise search.n_trials or lower "
        "search.screening.promote or .population")


def test_evolution_settings_are_checked_only_where_evolution_runs():
    from nas_prune.oneshot import OneShotConfig

    OneShotConfig(evolution_size=8)  # tournament 16 > 8, but strategy random: not used
    OneShotConfig(strategy="evolution", evolution_size=8)  # population 0: no screening


def _vgg_small_candidates():
    from nas_prune.budget import check_budget, uniform_widths
    from nas_prune.search.space import CandidateSpace
    from nas_prune.widths import space_source

    name, raw = space_source("vgg_small_fmnist")
    space = SearchSpace.from_dict(raw, name=name)
    return CandidateSpace(space, starts={"uniform": uniform_widths(space, 0.25)},
                          target=check_budget(space, 0.25), tolerance=0.02)


def test_evolution_beats_as_many_random_draws_on_a_score_with_one_optimum():
    """Aging evolution, given the same number of screens as random draws, finds candidates
    nearer a known optimum (the score is minus the distance to a lopsided allocation)."""
    import random

    from nas_prune.search.space import MULT, START

    cs = _vgg_small_candidates()
    lopsided = {START: "uniform", **{f"{MULT}{g}": (1.45 if i % 2 else 0.55)
                                     for i, g in enumerate(cs.groups)}}
    best = cs.decode(lopsided).widths
    base = cs.space.base_widths()

    def score(w):
        return -sum(abs(w[g] - best[g]) / base[g] for g in w)

    gains = []
    for seed in range(5):
        drawn = screening.draw(cs, 150, random.Random(seed))
        evo = screening.evolve(cs, 150, random.Random(seed), score, size=24, tournament=6,
                               mutation=0.3)
        assert len(evo) == 150 and len({tuple(c["widths"].values()) for c in evo}) == 150
        # the first `size` are the random draws, the same ones draw() makes with that seed
        assert [c["widths"] for c in evo[:24]] == [c["widths"] for c in drawn[:24]]
        assert all(c["parent"] is None for c in evo[:24])
        assert all(c["parent"] is not None and c["parent"] < i for i, c in enumerate(evo)
                   if i >= 24)
        assert all(c["score"] == score(c["widths"]) for c in evo)
        assert all(cs.space.cost(c["widths"], "flops") <= cs.target * (1 + cs.tolerance)
                   for c in evo)
        gains.append(max(c["score"] for c in evo) - max(score(c["widths"]) for c in drawn))
    assert sum(g > 0 for g in gains) >= 4 and sum(gains) > 0, gains


@pytest.mark.slow  # ~10 s: a search with evolutionary screening, trials and a final run
def test_evolutionary_screening_records_its_lineage_and_checks_random_draws(tmp_path, capsys):
    run = tmp_path / "run"
    extra = SCREEN + ["search.screening.strategy=evolution", "search.screening.evolution_size=8",
                      "search.screening.tournament=4"]
    assert search(tmp_path, run, "--n-trials", "4", "--final-seeds", "1", extra=extra) == 0
    assert "screening (shared, evolution):" in capsys.readouterr().out
    screened = _jsonl(run / "oneshot" / "screened.jsonl")
    assert any(c["parent"] is not None for c in screened)
    assert all(c["parent"] is None for c in screened[:8])
    rand = [c for c in screened if c["pick"] == "random"]
    assert len(rand) == 1 and rand[0]["parent"] is None  # a check the score did not choose
    info = read_json(run / "search.json")["screening"]
    evo = info["evolution"]
    assert info["strategy"] == "evolution" and evo["random_draws"] == 8
    assert evo["mutations"] == len(screened) - 8 > 0
    assert evo["best_score"] >= evo["best_score_random_draws"]


@pytest.mark.slow  # ~15 s: a latency search with screening, every trial measured
def test_screening_under_a_latency_budget_draws_on_predicted_latency(tmp_path, capsys,
                                                                     monkeypatch):
    """Screening draws its population on the predicted latency (measuring a thousand
    candidates would cost more than the screening); every trial, the promoted ones included,
    is measured when it decodes, as in any latency search."""
    import nas_prune.search.run as run_module
    from nas_prune.search.space import CandidateSpace

    measured = []
    real = CandidateSpace._measured

    def count(self, cand, params):
        measured.append(dict(cand.widths))
        return real(self, cand, params)

    monkeypatch.setattr(CandidateSpace, "_measured", count)
    during = []
    real_screening = run_module.run_screening

    def screening_alone(*a, **k):
        before = len(measured)
        out = real_screening(*a, **k)
        during.append(len(measured) - before)
        return out

    monkeypatch.setattr(run_module, "run_screening", screening_alone)
    run = tmp_path / "run"
    extra = SCREEN + ["seed_method.metric=latency", "seed_method.budget=0.95",
                      "search.tolerance=0.3"]
    assert search(tmp_path, run, "--n-trials", "4", "--final-seeds", "1", extra=extra) == 0
    screened = _jsonl(run / "oneshot" / "screened.jsonl")
    assert len(screened) > 4  # more candidates screened than measured
    picks = [c for c in screened if c["pick"]]
    assert len(picks) == 2
    trials = _jsonl(run / "trials.jsonl")
    assert during == [0]  # screening measured no candidate (only the uniform start, once)
    lat = read_json(run / "search.json")["screening"]["latency"]
    assert lat["start"] == "uniform" and lat["budget_ratio"] == pytest.approx(0.95, abs=0.01)
    assert lat["screening_target_ratio"] == pytest.approx(
        lat["budget_ratio"] * lat["predicted_ratio"] / lat["measured_ratio"], rel=0.01)
    assert len(measured) >= len(trials) >= 4  # every trial was measured
    info = read_json(run / "search.json")["screening"]["correlation"]
    assert info["n"] + info["picks_without_a_completed_trial"] == 2
