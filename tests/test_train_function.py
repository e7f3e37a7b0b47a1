"""Your own training loop (``train.function``): a tiny plain-PyTorch loop with its own optimizer
and data drives a search (trials, rungs, the finalists' round, the final table), and what it
reports is what the trials record; a trainer that returns NaN, raises or has the wrong signature
behaves as nas_prune.trainfn says (a failed trial with the reason, or a one-line error first).

The trainers are module-level functions, so the config names them by import path
(``tests.test_train_function:fit``), as a user's YAML would."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas_prune import scratch
from nas_prune.config import load_config
from nas_prune.errors import UserError
from nas_prune.rundir import read_json, read_records
from nas_prune.trainfn import TrainFunctionError, check_function, register, run_function
from tests.test_search_common import search

pytestmark = pytest.mark.timeout(60)

HERE = "tests.test_train_function"
CALLS: list[dict] = []  # every call of fit: seed, epochs, reported curve, returned values


def _data() -> tuple[torch.Tensor, ...]:
    """1x12x12 images, 4 classes, a class-dependent offset so there is something to learn."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (240,), generator=g)
    x = torch.randn(240, 1, 12, 12, generator=g) + 0.7 * y.view(-1, 1, 1, 1).float()
    return x[:160], y[:160], x[160:200], y[160:200], x[200:], y[200:]


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def fit(model, *, epochs, seed, device, report, test=False):
    """The user's loop: Adam, its own data and batches, seeded by ``seed``."""
    xtr, ytr, xva, yva, xte, yte = _data()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    curve: list[float] = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 40):
            idx = perm[i:i + 40]
            loss = F.cross_entropy(model(xtr[idx].to(device)), ytr[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = _accuracy(model, xva, yva)
        curve.append(acc)
        if report(epoch, acc):
            break
    out = {"val_acc": curve[-1]}
    if test:
        out["test_acc"] = _accuracy(model, xte, yte)
    CALLS.append({"seed": seed, "epochs": epochs, "curve": curve, **out})
    return out


def returns_nan(model, *, epochs, seed, device, report):
    return {"val_acc": math.nan}


def raises(model, *, epochs, seed, device, report):
    raise RuntimeError("my loader broke")


def percent(model, *, epochs, seed, device, report):
    return {"val_acc": 87.5}


def wrong_signature(model, lr):
    return {"val_acc": 0.5}


NOT_CALLABLE = 3


def _run(tmp_path: Path, function: str, *flags: str, extra: tuple[str, ...] = ()) -> Path:
    run_dir = tmp_path / "run"
    assert search(tmp_path, run_dir, "--n-trials", "3", *flags,
                  extra=[f"train.function={function}", "search.finalists=1", *extra]) == 0
    return run_dir


@pytest.fixture
def no_builtin_trainer(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the built-in trainer ran")

    monkeypatch.setattr(scratch, "train", refuse)


@pytest.mark.slow
def test_the_users_loop_drives_trials_rungs_finalists_and_the_final_table(
        tmp_path, no_builtin_trainer):
    CALLS.clear()
    run_dir = _run(tmp_path, f"{HERE}:fit", "--rungs", "1,2", "--final-seeds", "2",
                   extra=("search.finalists=2",))
    records = read_records(run_dir)
    assert records and all(r.state in ("COMPLETE", "PRUNED") for r in records)
    by_seed_epochs = {}
    for c in CALLS:
        by_seed_epochs.setdefault((c["seed"], c["epochs"]), []).append(c)
    trained = 0
    for r in records:
        for m in r.measurements:
            if m.get("from_trial") is not None:
                continue
            calls = by_seed_epochs[(m["seed"], m["epochs"])]
            # what the trial records is what the function reported and returned
            assert any(c["curve"] == m["val_curve"] and c["val_acc"] == m["val_acc"]
                       for c in calls), (m, calls)
            trained += 1
    assert trained >= 3
    final = read_json(run_dir / "final.json")
    assert final["selection"] is not None  # the finalists' round ran with the user's loop
    tests = {(c["seed"], c["test_acc"]) for c in CALLS if "test_acc" in c}
    for row in final["rows"]:
        assert row["n"] == 2 and row["test_mean"] is not None
        assert all((run["seed"], run["test_acc"]) in tests for run in row["runs"])
    assert final["noise"]["test_images"] is None  # the user's splits are not ours to count
    setup = read_json(run_dir / "setup.json")
    assert setup["config"]["train"]["function"] == f"{HERE}:fit"
    info = read_json(run_dir / "search.json")
    assert info["data"] == {"train_function": f"{HERE}:fit"}
    assert (run_dir / "best.pt").is_file()


def test_a_trainer_that_raises_fails_its_trials_and_the_search_goes_on(tmp_path, capsys):
    run_dir = _run(tmp_path, f"{HERE}:raises", "--early-stopping", "none")
    records = read_records(run_dir)
    assert len(records) == 3 and all(r.state == "FAIL" for r in records)
    assert all("raised RuntimeError: my loader broke" in r.reason for r in records)
    assert "best.yaml was not written" in capsys.readouterr().out


@pytest.mark.parametrize("function, reason", [
    ("returns_nan", "returned val_acc nan"),
    ("percent", "returned val_acc 87.5, not in [0, 1]"),
    ("raises", "raised RuntimeError: my loader broke"),
])
def test_a_bad_result_is_a_training_error_with_its_reason(function, reason):
    with pytest.raises(TrainFunctionError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        run_function(f"{HERE}:{function}", torch.nn.Identity(), epochs=1, seed=0,
                     device=torch.device("cpu"))


@pytest.mark.parametrize("function, message", [
    (f"{HERE}:wrong_signature", "nas-prune calls fn(model, *, epochs, seed, device, report)"),
    (f"{HERE}:NOT_CALLABLE", "not callable"),
    (f"{HERE}:missing", "has no 'missing'"),
    ("no_such_pkg.train:fit", "cannot import no_such_pkg"),
    ("fit", "give the import path"),
])
def test_what_can_be_checked_first_is_a_one_line_error(tmp_path, function, message, capsys):
    run_dir = tmp_path / "run"
    assert search(tmp_path, run_dir, "--n-trials", "3",
                  extra=[f"train.function={function}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.function" in err and message in err and len(err.splitlines()) == 1, err
    assert not (run_dir / "trials.csv").exists()


def test_table_and_function_together_are_refused():
    with pytest.raises(UserError, match="both replace the trainer"):
        load_config(None, ["train.function=a.b:c", "train.source=table:x.json"])


def test_report_stops_early_and_the_run_says_so():
    seen = []

    def stop_after_two(epoch, acc, loss):
        seen.append(epoch)
        return epoch == 1

    CALLS.clear()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 4))
    res = run_function(f"{HERE}:fit", model, epochs=5, seed=3, device=torch.device("cpu"),
                       on_epoch=stop_after_two)
    assert seen == [0, 1] and res.status == "stopped" and res.epochs_run == 2
    assert res.val_acc == CALLS[-1]["curve"] and res.val_acc_final == CALLS[-1]["val_acc"]


def test_a_final_run_without_test_acc_fails_with_the_fix():
    def no_test(model, *, epochs, seed, device, report):
        return {"val_acc": 0.5}

    path = register(no_test)
    with pytest.raises(TrainFunctionError, match="no 'test_acc'"):
        run_function(path, torch.nn.Identity(), epochs=1, seed=0, device=torch.device("cpu"),
                     evaluate_test=True)


def test_a_python_function_is_registered_and_ray_needs_an_import_path(tmp_path, capsys):
    def local(model, *, epochs, seed, device, report):
        return {"val_acc": 0.5}

    path = register(local)
    assert "<locals>" in path and check_function(path) is local
    run_dir = tmp_path / "run"
    assert search(tmp_path, run_dir, "--n-trials", "3", "--backend", "ray",
                  extra=[f"train.function={path}"]) == 2
    err = capsys.readouterr().err
    assert "cannot be imported by the ray backend" in err or "needs Ray Tune" in err
