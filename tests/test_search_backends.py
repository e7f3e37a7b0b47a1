"""The backend interface and its registries, and what the sampler and early-stopping choices do.

Search trials here are trained by :class:`FakeTrain` (instant, with controlled validation curves),
so a test can say exactly which trials an early-stopping rule must stop; the final retraining
after the search runs for real on the tiny space.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

import nas_prune.api
import nas_prune.scratch
import nas_prune.search.run
from nas_prune.budget import check_budget, uniform_widths
from nas_prune.cli import build_parser
from nas_prune.config import Config
from nas_prune.errors import UserError
from nas_prune.rundir import read_json, read_records
from nas_prune.search import (
    BACKENDS,
    EARLY_STOPPING,
    SAMPLERS,
    CandidateSpace,
    Location,
    OptunaBackend,
    RayBackend,
    SearchBackend,
    SearchSetup,
    get_backend,
)
from nas_prune.search import backends as backends_module
from nas_prune.search.ray_backend import SCHEDULERS, collect_records, experiment_dir
from nas_prune.search.run import resumed_setup
from nas_prune.train import TrainResult
from nas_prune.widths import ArchSpec, SearchSpace

from .test_search_common import TINY, assert_pareto_front, search

Curve = Callable[[ArchSpec, int], list[float]]


class FakeTrain:
    """Replaces scratch.train_spec for search trials: ``curve(spec, epochs)`` is the validation
    accuracy of every epoch, reported through the trainer's ``on_epoch`` hook, which may stop the
    run. Final retraining (``evaluate_test``) runs the real trainer."""

    def __init__(self, monkeypatch, curve: Curve) -> None:
        self.search_calls = 0
        self.calls: list[tuple[str, int, int]] = []  # (widths as JSON, seed, epochs)
        real = nas_prune.scratch.train_spec

        def fake(spec, cfg, **kw):
            if kw.get("evaluate_test"):
                return real(spec, cfg, **kw)
            self.search_calls += 1
            self.calls.append((json.dumps(spec.widths, sort_keys=True), kw["seed"],
                               kw["epochs"]))
            n = int(kw["epochs"])
            result = TrainResult(status="ok", epochs_planned=n)
            hook = kw.get("on_epoch")
            for epoch, acc in enumerate(curve(spec, n)):
                result.val_acc.append(acc)
                result.epochs_run = epoch + 1
                if hook is not None and hook(epoch, acc, 0.0):
                    result.status = "stopped"
                    break
            result.val_acc_final = result.val_acc[-1]
            return result, spec

        monkeypatch.setattr(nas_prune.scratch, "train_spec", fake)


def by_widths(spec: ArchSpec, n: int) -> list[float]:
    """A deterministic accuracy that depends on the widths (so a model-based sampler learns)."""
    w = spec.widths
    acc = 0.3 + 0.02 * w.get("conv1", 0) - 0.01 * abs(w.get("conv2", 0) - 10)
    return [min(0.99, max(0.01, acc))] * n


def no_final_retraining(monkeypatch) -> None:
    """These tests are about the trials: skip the final table and the report after them."""
    monkeypatch.setattr(nas_prune.search.run, "finalize", lambda *a, **k: (None, []))
    monkeypatch.setattr(nas_prune.api, "_report", lambda run_dir: None)


class RuleSpy:
    """Records the class of the sampler and the early-stopping rule of every optimize call."""

    def __init__(self, monkeypatch) -> None:
        self.samplers: list[str] = []
        self.rules: list[str] = []
        real = optuna.study.Study.optimize
        spy = self

        def optimize(self, *args, **kw):
            spy.samplers.append(type(self.sampler).__name__)
            spy.rules.append(type(self.pruner).__name__)
            return real(self, *args, **kw)

        monkeypatch.setattr(optuna.study.Study, "optimize", optimize)


def search_params(run: Path) -> list[dict]:
    return [r.trial_params for r in sorted(read_records(run), key=lambda r: r.number)
            if r.role == "search"]


# ---- the registries and the interface ------------------------------------------------------
def test_registries_name_their_implementations_and_feed_the_cli() -> None:
    assert set(BACKENDS) == {"optuna", "ray"}
    for name, cls in BACKENDS.items():
        assert issubclass(cls, SearchBackend) and cls.name == name
        assert isinstance(get_backend(name), cls)
    with pytest.raises(UserError, match="choose one of optuna, ray"):
        get_backend("dask")
    with pytest.raises(ValueError, match="registered twice"):
        backends_module._register(BACKENDS["optuna"])
    # the Ray backend knows every early-stopping rule by the same name
    assert set(SCHEDULERS) == set(EARLY_STOPPING)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["search"]
    choices = {a.dest: a.choices for a in sub._actions}
    assert list(choices["backend"]) == list(BACKENDS)
    assert list(choices["sampler"]) == list(SAMPLERS)
    assert list(choices["early_stopping"]) == list(EARLY_STOPPING)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_checks_its_settings_and_finds_nothing_in_an_empty_directory(
        name: str, tmp_path: Path) -> None:
    backend = get_backend(name)
    cfg = Config()
    backend.check(cfg)
    for key, bad in (("sampler", "grid"), ("early_stopping", "sometimes")):
        wrong = replace(cfg, search=replace(cfg.search, **{key: bad}))
        with pytest.raises(UserError, match=f"search.{key}: '{bad}'; choose one of"):
            backend.check(wrong)
    loc = backend.location(cfg, tmp_path)
    assert isinstance(loc, Location) and loc.label
    assert backend.stored(cfg, tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # looking creates nothing


@pytest.mark.parametrize("flags,key", [
    (["--cpus-per-trial", "0"], "search.ray.cpus_per_trial"),
    (["--gpus-per-trial", "-1"], "search.ray.gpus_per_trial"),
    (["--max-concurrent", "0"], "search.ray.max_concurrent"),
])
def test_ray_resources_are_checked_before_anything_trains(tmp_path: Path, capsys, flags,
                                                          key: str) -> None:
    run = tmp_path / "run"
    assert search(tmp_path, run, "--backend", "ray", "--seed-method", "l1norm", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]
    assert not run.exists()  # no base network trained, no proposal made


def test_ray_on_a_cuda_device_needs_gpus_per_trial() -> None:
    backend, cfg = get_backend("ray"), replace(Config(), device="cuda:0")
    with pytest.raises(UserError, match="search.ray.gpus_per_trial: device cuda:0 needs GPUs"):
        backend.check(cfg)
    with_gpus = replace(cfg.search, ray=replace(cfg.search.ray, gpus_per_trial=0.5))
    backend.check(replace(cfg, search=with_gpus))


# ---- what the choices change ---------------------------------------------------------------
def test_the_sampler_asked_for_is_the_one_that_runs_and_it_decides_the_trials(
        tmp_path: Path, monkeypatch) -> None:
    FakeTrain(monkeypatch, by_widths)
    no_final_retraining(monkeypatch)
    spy = RuleSpy(monkeypatch)
    params = {}
    for label, sampler, seed in (("tpe", "tpe", "1"), ("tpe again", "tpe", "1"),
                                 ("random", "random", "1"), ("tpe seed 2", "tpe", "2")):
        run = tmp_path / label.replace(" ", "-")
        spy.samplers.clear()
        assert search(tmp_path, run, "--n-trials", "10", "--sampler", sampler,
                      "--early-stopping", "none", "--seed", seed) == 0
        assert set(spy.samplers) == {"TPESampler" if sampler == "tpe" else "RandomSampler"}
        assert read_json(run / "search.json")["sampler"] == sampler
        params[label] = search_params(run)
        assert len(params[label]) == 8
    assert params["tpe"] == params["tpe again"]  # same sampler, same seed: the same search
    assert params["tpe"] != params["random"]
    assert params["tpe"] != params["tpe seed 2"]
    assert set(spy.rules) == {"NopPruner"}


@pytest.mark.parametrize("rule", ["median", "none"])
def test_early_stopping_stops_weak_search_trials_and_never_a_baseline(
        tmp_path: Path, monkeypatch, rule: str) -> None:
    # search trials and the seed proposal score 0.1 every epoch, uniform 0.9: the median of the
    # finished baselines (0.5) is above every search trial once the warm-up is over
    def curve(spec: ArchSpec, n: int) -> list[float]:
        return [0.9 if spec.provenance.get("role") == "uniform" else 0.1] * n

    FakeTrain(monkeypatch, curve)
    no_final_retraining(monkeypatch)
    spy = RuleSpy(monkeypatch)
    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "6", "--sampler", "random",
                  "--early-stopping", rule, epochs=2) == 0
    assert set(spy.rules) == {"MedianPruner" if rule == "median" else "NopPruner"}
    records = read_records(run)
    baselines = [r for r in records if r.role != "search"]
    trained = [r for r in records if r.role == "search" and r.state != "REJECTED"]
    assert len(baselines) == 2 and trained
    planned = baselines[0].epochs_planned
    assert planned == 4  # 2 base epochs, Scratch-B at half the FLOPs
    for r in baselines:  # the seed's low curve is never stopped: it is a baseline
        assert (r.state, r.epochs, r.epochs_planned) == ("COMPLETE", planned, planned)
    for r in trained:
        assert r.epochs_planned == planned
        if r.measurements and all(m.get("from_trial") is not None for m in r.measurements):
            assert r.epochs == 0  # a duplicate width vector reuses a trial's measurements
            continue
        if rule == "median":  # judged only after the warm-up (half the epochs)
            assert r.state == "PRUNED" and planned // 2 < r.epochs < planned
            assert r.reason == f"early stopping after epoch {r.epochs} of {planned}"
        else:
            assert r.state == "COMPLETE" and r.epochs == planned


def test_a_multi_objective_front_is_checked_against_every_completed_trial(
        tmp_path: Path, monkeypatch) -> None:
    def curve(spec: ArchSpec, n: int) -> list[float]:  # more FLOPs help, with some scatter
        ratio = spec.flops / spec.provenance["base_flops"]
        scatter = random.Random(json.dumps(spec.widths, sort_keys=True)).random()
        return [0.2 + 0.5 * ratio ** 0.5 + 0.2 * scatter] * n

    FakeTrain(monkeypatch, curve)
    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "14", "--objective", "multi") == 0
    front, completed = assert_pareto_front(run)
    assert len(front) < len(completed)  # some trial is dominated: the check checked something


# ---- resuming and reading back -------------------------------------------------------------
def test_a_resume_may_change_only_what_the_backend_can_continue_with() -> None:
    cfg = Config()
    space = SearchSpace.from_dict(TINY, name="tiny")
    cspace = CandidateSpace(space, starts={"uniform": uniform_widths(space, 0.5)},
                            target=check_budget(space, 0.5), source={"name": "t", "data": TINY})
    stored = SearchSetup(cfg=cfg, cspace=cspace, methods=["uniform"])
    more = replace(cfg, search=replace(cfg.search, n_trials=20, timeout=60.0))
    assert resumed_setup(stored, more, fixed=OptunaBackend.fixed_on_resume).cfg == more
    with pytest.raises(UserError, match="search.n_trials: a resumed Ray experiment keeps"):
        resumed_setup(stored, more, fixed=RayBackend.fixed_on_resume)
    longer = replace(cfg, search=replace(cfg.search, timeout=60.0))
    assert resumed_setup(stored, longer, fixed=RayBackend.fixed_on_resume).cfg == longer
    other = replace(cfg, seed_method=replace(cfg.seed_method, budget=0.3))
    with pytest.raises(UserError, match="--resume: seed_method.budget differs"):
        resumed_setup(stored, other)


def test_ray_results_that_cannot_be_read_are_named(tmp_path: Path) -> None:
    tune = experiment_dir(tmp_path)
    tune.mkdir(parents=True)
    with pytest.raises(UserError, match="holds a Ray Tune experiment but no setup.json"):
        RayBackend().stored(Config(), tmp_path)
    trial = tune / "run_trial_0a1b2_00001_1_start=uniform"
    trial.mkdir()
    (trial / "params.json").write_text('{"start": "uniform"}')
    (trial / "result.json").write_text('{"objective": 0.5}\n{"objective": 0.')
    with pytest.raises(UserError, match="result.json: the last line is not a Ray result"):
        collect_records(tmp_path, setup=None)
