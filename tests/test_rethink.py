"""``nas-prune rethink``: Liu et al.'s four rows on tiny networks and synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas_prune.cli import main
from nas_prune.config import load_config
from nas_prune.errors import UserError
from nas_prune.rethink import (
    ROWS,
    RethinkPlan,
    finetune_config,
    paired_gap,
    prune_weights,
    read_record,
    run_rethink,
)
from nas_prune.seeds import Proposal
from nas_prune.surgery import filter_l1_scores
from nas_prune.train import lr_lambda
from nas_prune.widths import ArchSpec, SearchSpace

SHAPE = {"channels": 1, "size": 8, "classes": 4}
SPACES = {
    "vgg": {"family": "vgg", "args": {"cfg": "vgg_tiny", "head": "slimming"}, "input": SHAPE,
            "divisor": 1, "min_width": 1},
    "resnet": {"family": "resnet_cifar", "args": {"depth": 8, "shortcut": "A"}, "input": SHAPE,
               "divisor": 1, "min_width": 1},
}


def _config(tmp_path: Path, space: str) -> Path:
    (tmp_path / "space.yaml").write_text(json.dumps(SPACES[space]))
    cfg = {"space": str(tmp_path / "space.yaml"), "device": "cpu",
           "data": {"name": "synthetic", "val_size": 60, "synthetic_train": 300,
                    "synthetic_test": 120, "synthetic_size": 8, "synthetic_classes": 4},
           "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "warmup_epochs": 0.0}}
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_rethink_writes_the_four_rows(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, "vgg"))
    run = tmp_path / "run"
    result = run_rethink(cfg, RethinkPlan(method="uniform", budget=0.5, seeds=2), run,
                         command="test")
    rec = json.loads((run / "rethink.json").read_text())
    assert rec == json.loads(json.dumps(result.record, default=str))
    assert [r["row"] for r in rec["rows"]] == list(ROWS)
    for r in rec["rows"]:
        assert r["n"] == 2 and len(r["test_acc"]) == 2
        assert all(0.0 <= a <= 1.0 for a in r["test_acc"])
        assert r["mean"] == pytest.approx(sum(r["test_acc"]) / 2)
    assert len(rec["runs"]) == 4 * 2 and rec["seeds"] == [0, 1]
    # the pruned architecture: the uniform proposal at the budget, exported as an ArchSpec
    spec = ArchSpec.load(run / "pruned.yaml")
    base_flops = rec["unpruned"]["flops"]
    assert spec.flops == rec["pruned"][0]["flops"]
    assert abs(spec.flops / base_flops - 0.5) <= 0.01 * 0.5
    assert spec.flops < base_flops and spec.params < rec["unpruned"]["params"]
    # epochs: base 2, fine-tuning max(1, 2 // 4), Scratch-B 2 x base/pruned rounded, capped at 2x
    by_row = {r["row"]: r for r in rec["rows"]}
    assert by_row["Unpruned"]["epochs"] == [2] and by_row["Scratch-E"]["epochs"] == [2]
    assert by_row["Fine-tuned"]["epochs"] == [1]
    expected_b = max(2, int(2 * min(2.0, base_flops / spec.flops) + 0.5))
    assert by_row["Scratch-B"]["epochs"] == [expected_b]
    assert by_row["Fine-tuned"]["flops"] == [spec.flops]
    assert rec["cut_by"] == "l1norm"  # uniform needs no base network: cut by filter norms
    assert "Unpruned network" in by_row["Fine-tuned"]["base"]
    # the table and the plot
    md = (run / "rethink.md").read_text()
    for row in ROWS:
        assert any(line.startswith(f"| {row} |") and "(n=2)" in line for line in md.splitlines())
    assert "multiply-accumulates" in md
    assert (run / "rethink.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rethink_on_an_option_a_resnet(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, "resnet"))
    result = run_rethink(cfg, RethinkPlan(method="random", budget=0.5, seeds=1,
                                          finetune_epochs=2), tmp_path / "run")
    rec = result.record
    assert [r["n"] for r in rec["rows"]] == [1, 1, 1, 1]
    pruned = rec["pruned"][0]
    assert isinstance(pruned["shortcut_mismatches"], list)
    assert {g: len(k) for g, k in pruned["kept"].items()} == pruned["widths"]
    assert rec["epochs"]["finetune"] == 2


def test_prune_weights_keeps_the_chosen_channels() -> None:
    space = SearchSpace.from_dict(SPACES["vgg"], name="tiny")
    torch.manual_seed(0)
    model = space.family.build(space.base_widths()).eval()
    widths = {"conv1": 3, "conv2": 5, "conv3": 4}
    scores = {g: torch.arange(w, dtype=torch.float32) for g, w in space.base_widths().items()}
    proposal = Proposal(method="t", widths=widths, scores=scores, budget=0.5, metric="flops",
                        cost=0, base_cost=1)
    cut, keep, notes = prune_weights(model, space, proposal, "scores")
    assert notes == []
    assert keep["conv1"].tolist() == [5, 6, 7]  # the highest scores
    assert torch.equal(cut.get_submodule("features.conv1").weight,
                       model.get_submodule("features.conv1").weight[5:8])
    assert torch.equal(cut.get_submodule("features.conv2").weight,
                       model.get_submodule("features.conv2").weight[11:16][:, 5:8])
    cut, keep, _ = prune_weights(model, space, proposal, "l1norm")
    l1 = filter_l1_scores(model, space.family)
    for g, w in widths.items():
        assert set(keep[g].tolist()) == set(l1[g].topk(w).indices.tolist())
    with pytest.raises(UserError, match="cut_by"):
        prune_weights(model, space, proposal, "magic")


def test_finetune_lr_is_constant() -> None:
    cfg = finetune_config(load_config().train, 0.001)
    assert cfg.lr == 0.001
    factor = lr_lambda(cfg, total_steps=100, steps_per_epoch=10)
    assert {factor(s) for s in range(100)} == {1.0}


def test_bad_requests_fail_before_training(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--seeds"):
        RethinkPlan(method="uniform", budget=0.5, seeds=0)
    with pytest.raises(UserError, match="--cut-by"):
        RethinkPlan(method="uniform", budget=0.5, cut_by="nope")
    cfg = load_config(_config(tmp_path, "vgg"))
    with pytest.raises(UserError, match="budget"):
        run_rethink(cfg, RethinkPlan(method="uniform", budget=1.5, seeds=1), tmp_path / "r1")
    with pytest.raises(UserError, match="unknown"):
        run_rethink(cfg, RethinkPlan(method="nope", budget=0.5, seeds=1), tmp_path / "r2")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_cli_rethink(tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path, "vgg")
    run = tmp_path / "cli-run"
    code = main(["rethink", "--seed-method", "uniform", "--budget", "0.5", "--seeds", "1",
                 "--config", str(cfg), "--run-dir", str(run), "--set", "train.epochs=1"])
    out = capsys.readouterr().out
    assert code == 0
    for row in ROWS:
        assert row in out
    assert "(n=1, no std)" in out
    rec = json.loads((run / "rethink.json").read_text())
    assert rec["command"].startswith("nas-prune rethink --seed-method uniform --budget 0.5")
    assert "train.epochs=1" in rec["command"]
    assert rec["epochs"]["unpruned"] == 1
    assert main(["rethink", "--seed-method", "uniform,uniform", "--budget", "0.5",
                 "--config", str(cfg), "--run-dir", str(run)]) == 2
    assert "twice" in capsys.readouterr().err


@pytest.fixture
def one_thread():
    """One intra-op thread: training is then bitwise reproducible on the CPU (with several
    threads, runs under load have been seen to differ in the last digits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_rethink_of_several_methods_trains_unpruned_once(tmp_path: Path, capsys, monkeypatch,
                                                          one_thread) -> None:
    import nas_prune.rethink as rethink_module

    calls: list[str] = []
    real_train = rethink_module.train

    def counting_train(*args, **kwargs):
        calls.append(kwargs.get("desc", ""))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(rethink_module, "train", counting_train)
    cfg = _config(tmp_path, "vgg")
    run = tmp_path / "many"
    assert main(["rethink", "--seed-method", "uniform,random", "--budget", "0.5", "--seeds",
                 "2", "--config", str(cfg), "--run-dir", str(run),
                 "--set", "train.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "Scratch-B - Fine-tuned" in out and "random" in out
    assert sorted(c for c in calls if c.startswith("unpruned")) == \
        ["unpruned seed 0", "unpruned seed 1"]
    recs = [json.loads((run / m / "rethink.json").read_text()) for m in ("uniform", "random")]
    unpruned = [[(r["seed"], r["test_acc"]) for r in rec["runs"] if r["row"] == "Unpruned"]
                for rec in recs]
    assert unpruned[0] == unpruned[1]
    assert [r.get("shared", False) for r in recs[1]["runs"] if r["row"] == "Unpruned"] == \
        [True, True]
    assert "trained once per seed" in (run / "random" / "rethink.md").read_text()
    summary = (run / "rethink-summary.md").read_text()
    assert "| uniform |" in summary and "| random |" in summary
    # sharing changes no number: a run of its own trains the same Unpruned networks
    alone = run_rethink(load_config(cfg, ["train.epochs=1"]),
                        RethinkPlan(method="random", budget=0.5, seeds=2), tmp_path / "alone")
    assert [(r["seed"], r["test_acc"]) for r in alone.record["runs"]
            if r["row"] == "Unpruned"] == unpruned[1]


def test_input_shape_mismatch_is_a_user_error(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, "vgg"), ["data.synthetic_size=10"])
    with pytest.raises(UserError, match="data.name"):
        run_rethink(cfg, RethinkPlan(method="uniform", budget=0.5, seeds=1), tmp_path / "r")


def _set_row(record: dict, row: str, accs: list[float]) -> None:
    """Give ``row`` these per-seed test accuracies in both the runs and the summary rows."""
    runs = [r for r in record["runs"] if r["row"] == row]
    for run, acc in zip(runs, accs, strict=True):
        run["test_acc"] = acc
    summary = next(r for r in record["rows"] if r["row"] == row)
    summary["test_acc"] = list(accs)


def test_summary_puts_methods_side_by_side(tmp_path: Path, capsys) -> None:
    cfg = load_config(_config(tmp_path, "vgg"), ["train.epochs=1"])
    real = tmp_path / "runs" / "uniform"
    run_rethink(cfg, RethinkPlan(method="uniform", budget=0.5, seeds=2), real, command="test")
    record = json.loads((real / "rethink.json").read_text())
    # a second method where fine-tuning wins on both seeds, by 0.2 and 0.1: gap -0.15 ± 0.0707
    record.update(seed_method="made_up", wall_time=120.0)
    record["epochs"].update(method_base=1, scratch_b=[3])  # its own base and Scratch-B epochs
    _set_row(record, "Fine-tuned", [0.8, 0.7])
    _set_row(record, "Scratch-B", [0.6, 0.6])
    other = tmp_path / "runs" / "made_up"
    other.mkdir()
    (other / "rethink.json").write_text(json.dumps(record))
    assert paired_gap(record, "Scratch-B", "Fine-tuned") == \
        pytest.approx((-0.15, 0.0707107, 2), rel=1e-5)

    assert main(["report", str(real), str(other)]) == 0
    assert "rethink-summary.md" in capsys.readouterr().out
    md = (tmp_path / "runs" / "rethink-summary.md").read_text()
    png = tmp_path / "runs" / "rethink-summary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (tmp_path / "runs" / "rethink-summary.html").read_text()
    lines = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines()
             if line.startswith("| ")}
    assert "| -15.00 ± 7.07 (n=2) | no | 2.0 |" in lines["made_up"]
    assert "75.00 ± 7.07 (n=2) |" in lines["made_up"]
    assert "60.00 ± 0.00 (n=2) |" in lines["made_up"]
    # the real run's verdict agrees with its own numbers
    real_rec = json.loads((real / "rethink.json").read_text())
    gap = paired_gap(real_rec, "Scratch-B", "Fine-tuned")[0]
    assert (" | yes" if gap >= 0 else " | no") in lines["uniform"]
    assert "differ" not in md
    # runs at different budgets are flagged, not silently tabulated together
    record["budget"] = 0.3
    (other / "rethink.json").write_text(json.dumps(record))
    out = tmp_path / "summary"
    assert main(["report", str(real), str(other), "--out", str(out)]) == 0
    assert "differ in 'budget'" in (out / "rethink-summary.md").read_text()
    record["config"]["train"]["lr"] = 0.2
    (other / "rethink.json").write_text(json.dumps(record))
    assert main(["report", str(real), str(other), "--out", str(out)]) == 0
    assert "differ in 'config.train (lr)' (uniform: lr=0.05; made_up: lr=0.2)" in \
        (out / "rethink-summary.md").read_text()


def test_summary_refuses_what_is_not_a_rethink_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "rethink.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "rethink.json").write_text(json.dumps({"rows": []}))
    assert main(["report", str(tmp_path / "bad")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "odd")]) == 2
    assert "not a rethink record" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "odd"), str(tmp_path / "empty")]) == 2
    assert "no rethink.json" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "empty"), str(tmp_path / "empty")]) == 2
    assert "one run directory" in capsys.readouterr().err
    with pytest.raises(UserError, match="no rethink.json"):
        read_record(tmp_path / "empty")
