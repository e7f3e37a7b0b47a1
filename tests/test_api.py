"""The Python API (``nas_prune.search``, ``propose``, ``compare``): the same run directory as the
CLI for the same config, a result object that reads it back (rows, winner, its module with the
weights of best.pt), a training function given in Python, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nas_prune
from nas_prune.config import Config, load_config
from nas_prune.errors import UserError
from nas_prune.rundir import read_json, read_records
from tests.test_search_common import search, tiny_args

pytestmark = pytest.mark.timeout(60)

TRAIN = 200  # synthetic training images (100 of them validation): a trial in a fraction of a s


def _overrides(tmp_path: Path, **more) -> list[str]:
    """What ``tiny_args`` gives the CLI (flags and ``--set``), as the API's overrides."""
    args = tiny_args(tmp_path, tmp_path / "unused", train=TRAIN)
    flags = dict(zip(args[:10:2], args[1:10:2], strict=True))
    sets = [args[i + 1] for i in range(10, len(args), 2)]
    more = {"search.n_trials": 3, "search.finalists": 1, **more}
    return [f"device={flags['--device']}", f"random_seed={flags['--seed']}",
            f"seed_method.name={flags['--seed-method']}",
            f"seed_method.budget={flags['--budget']}", *sets,
            *(f"{k}={v}" for k, v in more.items())]


def _trials(run_dir: Path) -> list[dict]:
    keys = ("number", "state", "role", "seed_method", "widths", "val_acc", "val_curve",
            "epochs", "flops")
    return [{k: getattr(r, k) for k in keys} for r in read_records(run_dir)]


def _final(run_dir: Path) -> list[tuple]:
    final = read_json(run_dir / "final.json")
    return [(r["name"], r["widths"], r["test_acc"], r["val_acc"]) for r in final["rows"]]


@pytest.mark.slow
def test_the_api_and_the_cli_write_the_same_run_directory(tmp_path, monkeypatch):
    cli_dir, api_dir = tmp_path / "cli", tmp_path / "api"
    # both write the report through nas_prune.api._report; its plots cost 4 s a run here
    def report(run_dir: Path) -> Path:
        (run_dir / "report.md").write_text("report")
        return run_dir / "report.md"

    monkeypatch.setattr(nas_prune.api, "_report", report)
    assert search(tmp_path, cli_dir, "--n-trials", "3", train=TRAIN,
                  extra=["search.finalists=1"]) == 0
    run = nas_prune.search(overrides=_overrides(tmp_path), run_dir=api_dir)
    assert run.run_dir == api_dir
    cfg_cli = load_config(cli_dir / "config.yaml")
    cfg_api = load_config(api_dir / "config.yaml")
    assert cfg_api == Config(**{**cfg_cli.__dict__, "run_dir": str(api_dir)})
    assert _trials(api_dir) == _trials(cli_dir)
    assert _final(api_dir) == _final(cli_dir)
    names = {p.name for p in cli_dir.iterdir()}
    assert names == {p.name for p in api_dir.iterdir()} and "report.md" in names
    # the result object is what the run directory holds
    assert [r.number for r in run.records] == [t["number"] for t in _trials(api_dir)]
    assert [(r["name"], r["widths"], r["test_acc"], r["val_acc"]) for r in run.rows] == \
        _final(api_dir)
    assert run.winner.widths == run.best.widths == run.rows[0]["widths"]
    state = torch.load(api_dir / "best.pt", weights_only=True)
    built = run.build().state_dict()
    assert built.keys() == state.keys() and all(torch.equal(built[k], state[k]) for k in state)


def fake_fit(model, *, epochs, seed, device, report, test=False):
    """No training: an accuracy that grows with the model's size (so rows differ)."""
    n = sum(p.numel() for p in model.parameters())
    acc = min(0.99, n / 20_000)
    for epoch in range(epochs):
        if report(epoch, acc):
            break
    return {"val_acc": acc, **({"test_acc": acc} if test else {})}


def test_a_function_given_in_python_trains_and_is_recorded(tmp_path):
    calls = []

    def fit(model, *, epochs, seed, device, report, test=False):
        calls.append((seed, epochs, test))
        return fake_fit(model, epochs=epochs, seed=seed, device=device, report=report,
                        test=test)

    run = nas_prune.search(overrides=_overrides(tmp_path), train_fn=fit,
                           run_dir=tmp_path / "run", report=False)
    assert all(r.state == "COMPLETE" for r in run.records) and len(run.records) == 3
    assert run.config.train.function.endswith("<locals>.fit")
    assert [c for c in calls if c[2]] and not [c for c in calls[:3] if c[2]]
    assert run.rows and all(r["test_mean"] is not None for r in run.rows)
    assert not (tmp_path / "run" / "report.md").exists()


def test_propose_writes_the_proposal_the_cli_writes(tmp_path, capsys):
    over = [*_overrides(tmp_path), f"run_dir={tmp_path / 'p'}"]
    res = nas_prune.propose(overrides=over, out=tmp_path / "api.yaml")
    assert res.path.is_file() and res.widths == nas_prune.load_spec(res.path).widths
    assert abs(res.spec.flops / res.space.base_cost("flops") - 0.5) < 0.05
    cli = tmp_path / "cli.yaml"
    args = tiny_args(tmp_path, tmp_path / "p", train=TRAIN)
    from nas_prune.cli import main

    flags = [a for a in args if a != "--run-dir" and a != str(tmp_path / "p")]
    assert main(["propose", *flags, "--run-dir", str(tmp_path / "p"), "--out", str(cli)]) == 0
    assert nas_prune.load_spec(cli).widths == res.widths
    assert isinstance(res.build(), torch.nn.Module)


def test_compare_from_python(tmp_path):
    over = _overrides(tmp_path, **{"search.n_trials": 2, "search.final_seeds": 1})
    run = nas_prune.compare(overrides=over, train_fn=fake_fit, arms=["seeds", "random"],
                            run_dir=tmp_path / "cmp")
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["budget"] for r in run.results] == [r["budget"] for r in data["results"]] == [0.5]
    assert set(run.results[0]["arms"]) == {"seeds", "random"}


@pytest.mark.parametrize("overrides, match", [
    ("search.n_trials=3", "give a mapping"),
    ({"search.nope": 1}, "search.nope: unknown key"),
    ({"train.lr": -1}, "train.lr"),
])
def test_bad_overrides_are_one_line_errors(overrides, match):
    with pytest.raises(UserError, match=match):
        nas_prune.search(overrides=overrides)


def test_a_train_fn_that_is_not_callable_is_refused():
    with pytest.raises(UserError, match="train_fn: a int is not callable"):
        nas_prune.search(train_fn=3)


def test_search_is_the_callable_package_and_propose_the_apis():
    import nas_prune.search as package

    assert nas_prune.search is package and callable(package)
    assert nas_prune.propose.__module__ == nas_prune.compare.__module__ == "nas_prune.api"
