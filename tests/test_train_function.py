"""Your own training loop (``train.function``): a tiny plain-PyTorch loop with its own optimizer
and data drives a search (trials, rungs, the finalists' round, the final table), and what it
reports is what the trials record; a trainer that returns NaN, raises or has the wrong signature
behaves as nas_prune.trainfn says (a failed trial with the reason, or a one-line error first).

The trainers are module-level functions, so the config names them by import path
(``tests.test_train_function:fit``), as a user's YAML would."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

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
    """Past the up-front check (skipped here: it would stop the search at once), a trainer that
    raises fails each trial with the reason, and the search goes on."""
    run_dir = _run(tmp_path, f"{HERE}:raises", "--early-stopping", "none",
                   extra=("train.function_check=false",))
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
    (f"{HERE}:missing", "has no function 'missing'"),
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


# ---- the fine-tuned final row ---------------------------------------------------------------
SNAPSHOTS: list[dict] = []  # every call of snapshot_fit: widths, epochs, weights in and out


def snapshot_fit(model, *, epochs, seed, device, report, test=False):
    """``fit``, keeping the weights each call starts from and ends with."""
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = fit(model, epochs=epochs, seed=seed, device=device, report=report, test=test)
    SNAPSHOTS.append({"seed": seed, "epochs": epochs, "start": start,
                      "end": {k: v.detach().clone() for k, v in model.state_dict().items()}})
    return out


@pytest.mark.slow
def test_the_fine_tuned_row_starts_from_the_cut_base_and_trains_what_it_claims(tmp_path):
    from nas_prune.search.finalize import FINETUNED
    from nas_prune.surgery import cut_down, filter_l1_scores, keep_from_scores
    from nas_prune.widths import SearchSpace

    SNAPSHOTS.clear()
    run_dir = _run(tmp_path, f"{HERE}:snapshot_fit", "--final-seeds", "2",
                   extra=("search.finetune_epochs=2", "seed_method.base_epochs=1",
                          "search.best_weights=finetuned"))
    final = read_json(run_dir / "final.json")
    names = [r["name"] for r in final["rows"]]
    assert names[:2] == ["best", FINETUNED]
    best, tuned = final["rows"][0], final["rows"][1]
    assert tuned["widths"] == best["widths"] and tuned["seeds"] == best["seeds"]
    assert tuned["epochs"] == [2, 2] and tuned["n"] == 2
    assert [r["base_epochs"] for r in tuned["runs"]] == [1, 1]
    assert tuned["compute_base_epochs"] == pytest.approx(2 * tuned["flops_ratio"] + 1, abs=1e-3)
    assert best["compute_base_epochs"] == pytest.approx(best["epochs"][0] * best["flops_ratio"],
                                                        abs=1e-3)
    # the last calls are the fine-tuned row's: per seed, the base network, then the cut one
    space = SearchSpace.from_dict(json.loads((run_dir / "setup.json").read_text())
                                  ["candidate_space"]["space"]["data"], name="tiny")
    calls = SNAPSHOTS[-4:]
    for k, seed in enumerate(tuned["seeds"]):
        base, ft = calls[2 * k], calls[2 * k + 1]
        assert (base["seed"], base["epochs"], ft["seed"], ft["epochs"]) == (seed, 1, seed, 2)
        net = space.family.build(space.base_widths())
        net.load_state_dict(base["end"])
        keep = keep_from_scores(filter_l1_scores(net, space.family), tuned["widths"])
        cut = cut_down(net, space.family, keep).state_dict()
        assert ft["start"].keys() == cut.keys()
        assert all(torch.equal(ft["start"][n], cut[n]) for n in cut)
        test_acc = next(r["test_acc"] for r in tuned["runs"] if r["seed"] == seed)
        assert test_acc == CALLS[-(4 - 2 * k - 1)]["test_acc"]
    assert any(c["b"] == FINETUNED and not c["same_widths"] and c["n"] == 2
               for c in final["comparisons"])
    assert final["best_weights"]["source"] == FINETUNED
    shipped = torch.load(run_dir / "best.pt", weights_only=True)
    assert all(torch.equal(shipped[n], calls[1]["end"][n]) for n in shipped)


def test_best_weights_finetuned_needs_finetune_epochs():
    with pytest.raises(UserError, match="search.best_weights: 'finetuned' needs"):
        load_config(None, ["search.best_weights=finetuned"])


def test_the_fine_tuned_row_with_the_built_in_trainer(tmp_path, monkeypatch):
    """The built-in trainer trains the cut weights it is given (nothing rebuilt), for the
    epochs the row records; and with best_weights: scratch, best.pt is the scratch row's."""
    from nas_prune.search.finalize import FINETUNED

    real, seen = scratch.train, []

    def spy(model, data, cfg, *, epochs=None, **kw):
        start = {k: v.detach().clone() for k, v in model.state_dict().items()}
        res = real(model, data, cfg, epochs=epochs, **kw)
        seen.append({"epochs": epochs, "start": start, "epochs_run": res.epochs_run,
                     "end": {k: v.detach().clone() for k, v in model.state_dict().items()}})
        return res

    monkeypatch.setattr(scratch, "train", spy)
    run_dir = tmp_path / "run"
    assert search(tmp_path, run_dir, "--n-trials", "2", "--seed-method", "uniform",
                  extra=["search.finalists=1", "search.finetune_epochs=2",
                         "seed_method.base_epochs=1"]) == 0
    final = read_json(run_dir / "final.json")
    tuned = next(r for r in final["rows"] if r["name"] == FINETUNED)
    assert tuned["status"] == ["ok"] and tuned["epochs"] == [2]
    base, ft = seen[-2], seen[-1]
    assert (base["epochs"], base["epochs_run"], ft["epochs"], ft["epochs_run"]) == (1, 1, 2, 2)
    saved = torch.load(run_dir / tuned["dir"] / f"seed{tuned['seeds'][0]}" / "model.pt",
                       weights_only=True)
    assert all(torch.equal(saved[n], ft["end"][n]) for n in saved)
    # the cut network started from the trained base's weights, not a fresh initialisation
    w = next(n for n in ft["start"] if n.endswith("weight") and ft["start"][n].dim() == 4)
    assert any(torch.equal(ft["start"][w][0], base["end"][w][i])
               for i in range(base["end"][w].shape[0]))
    best = next(r for r in final["rows"] if r["name"] == "best")
    shipped = torch.load(run_dir / "best.pt", weights_only=True)
    scratch_pt = torch.load(run_dir / best["dir"] / f"seed{best['seeds'][0]}" / "model.pt",
                            weights_only=True)
    assert all(torch.equal(shipped[n], scratch_pt[n]) for n in shipped)


def test_the_fine_tuned_row_refuses_what_it_cannot_serve(tmp_path, capsys, no_training):
    """A multi-objective search has no single winner to fine-tune; a widened space's winner
    cannot be cut from the base network: one line each, before anything trains."""
    from nas_prune.cli import main

    from .conftest import TINY_VGG
    from .test_search_common import tiny_args

    run = tmp_path / "r"
    assert main(["search", *tiny_args(tmp_path, run, extra=[
        "search.finetune_epochs=2", "search.objective=multi"])]) == 2
    assert "search.finetune_epochs: the fine-tuned row follows" in capsys.readouterr().err
    wide = tmp_path / "wide.yaml"
    wide.write_text(yaml.safe_dump({**TINY_VGG, "max_multiplier": 1.5}))
    assert main(["search", *tiny_args(tmp_path, run, extra=[
        "search.finetune_epochs=2", f"space={wide}"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "widens" in err[0] and "max_multiplier" in err[0], err
    assert not run.exists()


def test_a_partial_or_a_callable_object_is_refused_naming_why():
    import functools


    class Fit:
        def __call__(self, model, *, epochs, seed, device, report):
            return {"val_acc": 0.5}

    for fn in (functools.partial(fit, test=False), Fit()):
        with pytest.raises(UserError, match="not a functools.partial or a callable object"):
            register(fn)


def test_a_failed_fine_tuned_first_seed_ships_the_scratch_weights_and_says_so(tmp_path):
    """best_weights: finetuned whose fine-tuned run left no weights: best.pt gets the scratch
    winner's first seed, and the reason names the failed row; scratch rows are unaffected."""
    from types import SimpleNamespace

    from nas_prune.search.finalize import FINETUNED, _shipped_weights

    def row(name: str, folder: str, *, weights: bool) -> dict:
        if weights:
            (tmp_path / folder / "seed10000").mkdir(parents=True)
            (tmp_path / folder / "seed10000" / "model.pt").write_bytes(b"w")
        return {"name": name, "dir": folder, "seeds": [10000]}

    rows = [row("best", "final/best", weights=True), row(FINETUNED, "final/ft", weights=False)]

    def setup(choice: str):
        return SimpleNamespace(cfg=SimpleNamespace(search=SimpleNamespace(best_weights=choice)))

    shipped, path = _shipped_weights(setup("finetuned"), rows, tmp_path)
    assert shipped["source"] == "best" and "left no weights" in shipped["why"]
    assert path == tmp_path / "final/best/seed10000/model.pt"
    shipped, path = _shipped_weights(setup("scratch"), rows, tmp_path)
    assert shipped["source"] == "best" and path is not None
    rows[1] = row(FINETUNED, "final/ft2", weights=True)
    shipped, path = _shipped_weights(setup("finetuned"), rows, tmp_path)
    assert shipped["source"] == FINETUNED and path == tmp_path / "final/ft2/seed10000/model.pt"


# ---- the up-front check and the seed methods' base networks ---------------------------------
WIDTHS: list[dict] = []  # every call of width_fit: the conv widths it trained, epochs, seed
FIRST = {"calls": 0}
SWITCH = {"narrow_broken": False}


def _convs(model: torch.nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def _tiny_space():
    from nas_prune.widths import SearchSpace

    from .test_search_common import TINY

    return SearchSpace.from_dict(TINY, name="tiny")


def _tiny_convs(which: str) -> list[int]:
    """The conv widths of the search tests' tiny space at its narrowest or full width."""
    space = _tiny_space()
    widths = space.min_widths() if which == "narrowest" else space.base_widths()
    return _convs(space.family.build(widths))


def width_fit(model, *, epochs, seed, device, report, test=False):
    """``fit``, recording the widths of every network it is given."""
    WIDTHS.append({"convs": _convs(model), "epochs": epochs, "seed": seed})
    return fit(model, epochs=epochs, seed=seed, device=device, report=report, test=test)


def _constant(test: bool) -> dict:
    return {"val_acc": 0.5, **({"test_acc": 0.5} if test else {})}


def raises_first(model, *, epochs, seed, device, report):
    FIRST["calls"] += 1
    if FIRST["calls"] == 1:
        raise ValueError("not warmed up")
    return {"val_acc": 0.5}


def returns_list(model, *, epochs, seed, device, report):
    return [0.5]


def reports_percent(model, *, epochs, seed, device, report):
    report(0, 50.0)
    return {"val_acc": 0.5}


def narrow_breaks(model, *, epochs, seed, device, report, test=False):
    if _convs(model) == _tiny_convs("narrowest"):
        raise ValueError("too few channels for my head")
    return _constant(test)


def switchable(model, *, epochs, seed, device, report, test=False):
    if SWITCH["narrow_broken"] and _convs(model) == _tiny_convs("narrowest"):
        raise ValueError("broken since the search started")
    return _constant(test)


def base_breaks(model, *, epochs, seed, device, report, test=False):
    if _convs(model) == _tiny_convs("full"):
        raise ValueError("out of patience at full width")
    return _constant(test)


@pytest.fixture
def no_builtin_base(monkeypatch):
    from nas_prune.seeds import _basenet

    def refuse(*args, **kwargs):
        raise AssertionError("the built-in trainer trained a base network")

    monkeypatch.setattr(_basenet, "train", refuse)


def test_the_users_loop_trains_the_l1norm_base_after_its_check_on_the_narrowest_network(
        tmp_path, capsys, no_builtin_trainer, no_builtin_base):
    """First one epoch on the narrowest network (search.json says what it cost), then the
    full-width base for seed_method.base_epochs with the config's seed, then the trials; the
    proposal, the base cache and the fine-tuned row say the user's function trained them."""
    WIDTHS.clear()
    path = f"{HERE}:width_fit"
    run_dir = _run(tmp_path, path, "--seed-method", "l1norm", "--n-trials", "2",
                   extra=("seed_method.base_epochs=2", "search.finetune_epochs=1"))
    narrow, full = _tiny_convs("narrowest"), _tiny_convs("full")
    assert WIDTHS[0] == {"convs": narrow, "epochs": 1, "seed": 1}  # --seed 1
    assert WIDTHS[1] == {"convs": full, "epochs": 2, "seed": 1}
    info = read_json(run_dir / "search.json")
    check = info["function_check"]
    assert check["function"] == path and check["epochs"] == 1 and check["seed"] == 1
    assert check["widths"] == _tiny_space().min_widths()
    assert 0 <= check["val_acc"] <= 1 and check["wall_s"] >= 0
    out = capsys.readouterr().out
    assert f"train.function {path}: checked on the narrowest network (1 epoch)" in out
    assert "base trained in" in out and f"by train.function {path}" in out
    prov = yaml.safe_load((run_dir / "proposals" / "l1norm.yaml").read_text())["provenance"]
    assert prov["base_source"] == "trained"
    assert prov["base_trainer"] == prov["base_metrics"]["trainer"] == f"train.function {path}"
    cached = [read_json(p) for p in (run_dir / "bases").glob("*.json")]
    assert [c["trainer"] for c in cached] == [f"train.function {path}"]
    final = read_json(run_dir / "final.json")
    assert f"by train.function {path}" in final["finetune"]["rule"]
    assert "rewinding is its built-in trainer's" in final["finetune"]["rule"]


def test_a_cached_base_is_only_reused_by_the_trainer_that_trained_it(
        tmp_path, tiny_vgg_space, tiny_data):
    """RUN/bases keys who trained a base: the built-in trainer's l1norm base is not the user's
    function's, nor the other way round; slimming's base is the built-in's either way."""
    import dataclasses

    from nas_prune.seeds import SeedContext, get_method, trained_base
    from nas_prune.train import TrainConfig

    ctx = SeedContext(space=tiny_vgg_space, data=tiny_data, device=torch.device("cpu"),
                      train=TrainConfig(epochs=1, batch_size=50, warmup_epochs=0))
    user = dataclasses.replace(ctx, train=dataclasses.replace(
        ctx.train, function=f"{HERE}:width_fit", function_check=False))

    def base(method: str, c: SeedContext) -> tuple[str, str]:
        _, source, _, info = trained_base(get_method(method), c, epochs=1, cache_dir=tmp_path,
                                          progress=False)
        return source, info["trainer"]

    WIDTHS.clear()
    mine = f"train.function {HERE}:width_fit"
    assert base("l1norm", ctx) == ("trained", "builtin")
    assert base("l1norm", user) == ("trained", mine) and len(WIDTHS) == 1
    assert base("l1norm", user) == ("cached", mine)
    assert base("autopruner", user) == ("cached", mine)  # the same plain base
    assert base("l1norm", ctx) == ("cached", "builtin")
    assert base("slimming", user) == ("trained", "builtin")
    assert base("slimming", ctx) == ("cached", "builtin")
    assert len(WIDTHS) == 1 and len(list(tmp_path.glob("*.pt"))) == 3
    # the built-in trainer's key is the one written before train.function trained bases
    # (train.function and train.function_check are not part of it): older caches still count
    import hashlib

    from nas_prune.seeds._basenet import base_cache_key

    space, method = tiny_vgg_space, get_method("l1norm")
    old = json.dumps({
        "family": space.family.name, "args": space.family.arguments(),
        "input": space.family.input_shape.to_dict(), "base_widths": space.base_widths(),
        "regulariser": "plain", "data": None, "epochs": 1, "seed": 0,
        "train": {k: v for k, v in dataclasses.asdict(ctx.train).items()
                  if k not in ("function", "function_check")}}, sort_keys=True, default=str)
    assert base_cache_key(method, space, None, ctx.train, 1, 0) == \
        hashlib.sha256(old.encode()).hexdigest()[:16]


def test_slimming_keeps_the_built_in_base_and_says_so_once(tmp_path, capsys):
    WIDTHS.clear()
    path = f"{HERE}:width_fit"
    run_dir = _run(tmp_path, path, "--seed-method", "slimming", "--n-trials", "2",
                   extra=("seed_method.base_epochs=1",))
    assert _tiny_convs("full") not in [w["convs"] for w in WIDTHS]
    prov = yaml.safe_load((run_dir / "proposals" / "slimming.yaml").read_text())["provenance"]
    assert prov["base_trainer"] == "builtin (slimming needs its sparsity regulariser)"
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if "does not train the base network" in line]
    assert len(said) == 1 and "slimming needs its sparsity regulariser" in said[0], said


@pytest.mark.parametrize("function, reason", [
    ("raises_first", "raised ValueError: not warmed up"),
    ("returns_nan", "returned val_acc nan"),
    ("returns_list", "returned a list, not a mapping with val_acc"),
    ("reports_percent", "reported val_acc 50.0 after epoch 1"),
    ("narrow_breaks", "raised ValueError: too few channels for my head"),
])
def test_a_function_that_fails_its_check_stops_the_search_before_any_trial(
        tmp_path, capsys, function, reason):
    FIRST["calls"] = 0
    run_dir = tmp_path / "run"
    assert search(tmp_path, run_dir, "--n-trials", "3",
                  extra=[f"train.function={HERE}:{function}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert (f"train.function {HERE}:{function} failed its check on the narrowest network "
            f"(1 epoch): {reason}") in err[0]
    assert "train.function_check: false" in err[0]
    assert not run_dir.exists() and read_records(run_dir) == []


def test_function_check_false_skips_the_check(tmp_path, capsys):
    """A function that fails only on the narrowest network passes a search that does not
    check it (no candidate at the budget is that narrow), and search.json says it was
    skipped."""
    run_dir = _run(tmp_path, f"{HERE}:narrow_breaks", "--n-trials", "2",
                   extra=("train.function_check=false",))
    records = read_records(run_dir)
    assert len(records) == 2 and all(r.state == "COMPLETE" for r in records)
    assert read_json(run_dir / "search.json")["function_check"] == {
        "function": f"{HERE}:narrow_breaks", "skipped": "train.function_check: false"}
    assert "checked on the narrowest network" not in capsys.readouterr().out
    # --resume runs the check again, and may turn it on
    assert search(tmp_path, run_dir, "--n-trials", "2", "--resume",
                  extra=[f"train.function={HERE}:narrow_breaks", "search.finalists=1",
                         "train.function_check=true"]) == 2
    assert "failed its check on the narrowest network" in capsys.readouterr().err
    assert len(read_records(run_dir)) == 2


def test_a_function_failing_on_the_base_network_is_a_one_line_error(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert search(tmp_path, run_dir, "--n-trials", "2", "--seed-method", "l1norm",
                  extra=[f"train.function={HERE}:base_breaks",
                         "seed_method.base_epochs=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert (f"train.function {HERE}:base_breaks failed training the base network of l1norm "
            f"(seed_method.base_epochs 1): raised ValueError: out of patience at full "
            f"width") in err[0]
    assert read_records(run_dir) == [] and not (run_dir / "search.json").exists()


def test_a_worker_checks_the_function_before_its_trials(tmp_path, capsys):
    from nas_prune.cli import main

    from .test_search_common import storage_of

    SWITCH["narrow_broken"] = False
    run_dir = _run(tmp_path, f"{HERE}:switchable", "--n-trials", "2")
    before = len(read_records(run_dir))
    capsys.readouterr()
    SWITCH["narrow_broken"] = True
    try:
        assert main(["worker", "--storage", storage_of(run_dir), "--n-trials", "1"]) == 2
    finally:
        SWITCH["narrow_broken"] = False
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed its check on the narrowest network" in err[0], err
    assert "raised ValueError: broken since the search started" in err[0]
    assert len(read_records(run_dir)) == before
