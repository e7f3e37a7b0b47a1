"""``nas-prune rethink``: Liu et al.'s four rows plus the rewinding control on tiny networks and
synthetic data; the side-by-side summary on hand-made records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nas_prune.cli import main
from nas_prune.config import load_config
from nas_prune.errors import UserError
from nas_prune.rethink import (
    LIU_ROWS,
    REWIND,
    ROWS,
    RethinkPlan,
    finetune_config,
    lr_schedule,
    prune_weights,
    run_rethink,
)
from nas_prune.rethink_summary import paired_gap, read_record, summary_table, write_summary
from nas_prune.scratch import data_for
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
    # graph-derived: depthwise convs in the expansion groups, residual stage groups
    "mobilenet": {"family": "graph", "args": {"model": "zoo:mobilenet_v2_small",
                                              "kwargs": {"setting": "tiny", "last_channel": 32}},
                  "input": SHAPE, "divisor": 1, "min_width": 1},
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


def test_rethink_writes_every_row(tmp_path: Path) -> None:
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
    assert len(rec["runs"]) == len(ROWS) * 2 and rec["seeds"] == [0, 1]
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
    assert by_row[REWIND]["epochs"] == [2]  # the base epochs, as Scratch-E
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
    assert [r["n"] for r in rec["rows"]] == [1] * len(ROWS)
    pruned = rec["pruned"][0]
    assert isinstance(pruned["shortcut_mismatches"], list)
    assert {g: len(k) for g, k in pruned["kept"].items()} == pruned["widths"]
    assert rec["epochs"]["finetune"] == 2


def test_rethink_on_a_graph_derived_mobilenet(tmp_path: Path) -> None:
    """Every row on a graph-derived space: the fine-tuned row starts from weight surgery on the
    trained base (the channels L1-norm ranks highest on the trained network)."""
    cfg = load_config(_config(tmp_path, "mobilenet"))
    result = run_rethink(cfg, RethinkPlan(method="l1norm", budget=0.5, seeds=1), tmp_path / "r")
    rec = result.record
    assert [r["row"] for r in rec["rows"]] == list(ROWS)
    assert all(r["n"] == 1 and 0.0 <= r["test_acc"][0] <= 1.0 for r in rec["rows"])
    pruned = rec["pruned"][0]
    assert {g: len(k) for g, k in pruned["kept"].items()} == pruned["widths"]
    spec = ArchSpec.load(tmp_path / "r" / "pruned.yaml")
    assert spec.family == "graph" and abs(spec.flops / rec["unpruned"]["flops"] - 0.5) <= 0.005


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
    assert lr_schedule(cfg) == {"lr": 0.001, "schedule": "constant"}
    base = load_config().train
    assert lr_schedule(base)["schedule"] == base.schedule and lr_schedule(base)["lr"] == base.lr


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
    assert "(n=1, one seed: no std)" in out
    assert "Scratch-B - Fine-tuned (rewind)" in out and "not resolved at n = 1" in out
    rec = json.loads((run / "rethink.json").read_text())
    assert rec["command"].startswith("nas-prune rethink --seed-method uniform --budget 0.5")
    assert "train.epochs=1" in rec["command"]
    assert rec["epochs"]["unpruned"] == 1
    # --no-rewind: Liu et al.'s four rows alone, as before the rewinding row existed
    code = main(["rethink", "--seed-method", "uniform", "--budget", "0.5", "--seeds", "1",
                 "--config", str(cfg), "--run-dir", str(tmp_path / "liu"), "--no-rewind",
                 "--set", "train.epochs=1"])
    assert code == 0 and REWIND not in capsys.readouterr().out
    rec = json.loads((tmp_path / "liu" / "rethink.json").read_text())
    assert [r["row"] for r in rec["rows"]] == list(LIU_ROWS) == rec["rows_run"]
    assert rec["rewind"] is None and list(rec["differences"]) == ["Scratch-B - Fine-tuned"]
    assert "--no-rewind" in rec["command"]
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
    # a second method where fine-tuning wins on both seeds, by 0.2 and 0.1: gap -0.15 ± 0.0707,
    # 95% interval -0.15 ± t(0.975, 1) x 0.0707 / sqrt(2) = -0.15 ± 0.6353
    record.update(seed_method="made_up", wall_time=120.0)
    record["epochs"].update(method_base=1, scratch_b=[3])  # its own base and Scratch-B epochs
    _set_row(record, "Fine-tuned", [0.8, 0.7])
    _set_row(record, "Scratch-B", [0.6, 0.6])
    other = tmp_path / "runs" / "made_up"
    other.mkdir()
    (other / "rethink.json").write_text(json.dumps(record))
    gap = paired_gap(record, "Scratch-B", "Fine-tuned")
    assert (gap.mean, gap.std, gap.n) == pytest.approx((-0.15, 0.0707107, 2), rel=1e-5)
    assert (gap.low, gap.high) == pytest.approx((-0.78531, 0.48531), abs=1e-5)

    assert main(["report", str(real), str(other)]) == 0
    assert "rethink-summary.md" in capsys.readouterr().out
    md = (tmp_path / "runs" / "rethink-summary.md").read_text()
    png = tmp_path / "runs" / "rethink-summary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (tmp_path / "runs" / "rethink-summary.html").read_text()
    lines = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines()
             if line.startswith("| ")}
    # an interval across 0 resolves nothing; at this mean and std, 4 seeds would (t(3) = 3.18)
    assert "| -15.00 ± 7.07 [-78.53, +48.53] (n=2) | not resolved at n = 2 (about 4 seeds " \
        "would resolve a gap this size) |" in lines["made_up"]
    assert lines["made_up"].endswith(" | 2.0 |")
    assert "75.00 ± 7.07 (n=2) |" in lines["made_up"]
    assert "60.00 ± 0.00 (n=2) |" in lines["made_up"]
    assert "Scratch-B - Fine-tuned (rewind)" in lines["method"]
    # the real run's verdicts agree with its own numbers
    real_rec = json.loads((real / "rethink.json").read_text())
    for a, b in (("Scratch-B", "Fine-tuned"), ("Scratch-B", REWIND)):
        assert f" | {paired_gap(real_rec, a, b).verdict}" in lines["uniform"]
        assert real_rec["differences"][f"{a} - {b}"] == paired_gap(real_rec, a, b).to_dict()
    assert "The runs differ" not in md
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


def _hand_made(method: str, rows: dict[str, list[float]]) -> dict:
    """A minimal rethink record with these per-seed test accuracies (seeds 0, 1, 2, ...)."""
    n = len(next(iter(rows.values())))
    return {"seed_method": method, "budget": 0.5, "metric": "flops", "dataset": "synthetic",
            "space": "tiny", "seeds": list(range(n)), "command": None, "wall_time": 60.0,
            "epochs": {"unpruned": 4, "finetune": 1, "scratch_b": [8]},
            "finetune": {"lr": 0.001, "schedule": "constant"},
            "rewind": {"epochs": 4, "steps": 28, "lr_schedule": {
                "lr": 0.1, "schedule": "cosine", "warmup_epochs": 0.0}} if REWIND in rows
            else None,
            "pruned": [{"flops_ratio": 0.5}] * n,
            "rows": [{"row": r, "test_acc": accs} for r, accs in rows.items()],
            "runs": [{"row": r, "seed": k, "test_acc": a} for r, accs in rows.items()
                     for k, a in enumerate(accs)]}


def test_summary_interval_matches_a_hand_computation(tmp_path: Path) -> None:
    rows = {"Unpruned": [0.90, 0.90, 0.90], "Fine-tuned": [0.85, 0.85, 0.85],
            REWIND: [0.93, 0.94, 0.96], "Scratch-E": [0.88, 0.88, 0.88],
            "Scratch-B": [0.90, 0.91, 0.92]}
    new = _hand_made("new", rows)
    old = _hand_made("old", {r: a for r, a in rows.items() if r != REWIND})  # before the row
    # Scratch-B - Fine-tuned: 0.05, 0.06, 0.07 -> mean 0.06, std 0.01, half-width of the 95%
    # interval t(0.975, 2) x 0.01 / sqrt(3) with t(0.975, 2) = 4.302653 (a t table)
    half = 4.302653 * 0.01 / math.sqrt(3)
    gap = paired_gap(new, "Scratch-B", "Fine-tuned")
    assert (gap.low, gap.high) == pytest.approx((0.06 - half, 0.06 + half), abs=1e-6)
    assert gap.verdict == "better"
    # Scratch-B - rewind: -0.03, -0.03, -0.04 -> mean -1/30, std 0.0057735: below 0
    std = math.sqrt(((0.1 / 3) ** 2 * 2 + (0.2 / 3) ** 2) / 2) / 10
    half_rw = 4.302653 * std / math.sqrt(3)
    rw = paired_gap(new, "Scratch-B", REWIND)
    assert (rw.mean, rw.std) == pytest.approx((-1 / 30, std), abs=1e-9)
    assert (rw.low, rw.high) == pytest.approx((-1 / 30 - half_rw, -1 / 30 + half_rw), abs=1e-6)
    assert rw.verdict == "worse"
    assert paired_gap(old, "Scratch-B", REWIND).n == 0
    headers, lines = summary_table([new, old])
    assert headers[:6] == ["method", *ROWS]
    cells = dict(zip(headers, lines[0], strict=True))
    assert cells["Scratch-B - Fine-tuned (points, ± std [95% CI])"] == \
        f"+6.00 ± 1.00 [{100 * (0.06 - half):+.2f}, {100 * (0.06 + half):+.2f}] (n=3)" == \
        "+6.00 ± 1.00 [+3.52, +8.48] (n=3)"
    assert cells["Scratch-B vs Fine-tuned"] == "better"
    assert cells["Scratch-B - Fine-tuned (rewind) (points, ± std [95% CI])"] == \
        "-3.33 ± 0.58 [-4.77, -1.90] (n=3)"
    assert cells["Scratch-B vs Fine-tuned (rewind)"] == "worse"
    old_cells = dict(zip(headers, lines[1], strict=True))
    assert old_cells[REWIND] == "-" and old_cells["Scratch-B vs Fine-tuned (rewind)"] == "-"
    assert old_cells["Scratch-B vs Fine-tuned"] == "better"
    # only old records: the table has Liu et al.'s columns alone
    headers, _ = summary_table([old])
    assert REWIND not in " ".join(headers) and headers[1:5] == list(LIU_ROWS)
    for name, rec in (("new", new), ("old", old)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rethink.json").write_text(json.dumps(rec))
    md = write_summary([tmp_path / "new", tmp_path / "old"], tmp_path).read_text()
    assert "No Fine-tuned (rewind) row in the run(s) of old" in md
    assert "4 epochs = 28 SGD steps" in md and "lr 0.1, cosine, no warm-up" in md


COMMITTED = Path(__file__).resolve().parents[1] / "reports" / "rethink"


@pytest.mark.skipif(not (COMMITTED / "l1norm" / "rethink.json").is_file(),
                    reason="no committed rethink reports in this checkout")
def test_committed_reports_still_summarise(tmp_path: Path) -> None:
    runs = [COMMITTED / m for m in ("l1norm", "thinet") if (COMMITTED / m).is_dir()]
    md = write_summary(runs, tmp_path).read_text()
    assert "| l1norm |" in md and "[95% CI]" in md


def test_rewind_trains_the_steps_it_claims_at_the_base_schedule(tmp_path: Path,
                                                                monkeypatch) -> None:
    """Spy on every optimizer step: the rewind row takes as many steps as Scratch-E, each at the
    learning rate the base training used at that step (base lr first), and records them."""
    import nas_prune.rethink as rethink_module
    import nas_prune.train as train_module

    lrs: dict[str, list[float]] = {}
    current: list[str] = []
    real_train, real_optimizer = rethink_module.train, train_module.make_optimizer

    def tagged_train(*args, **kwargs):
        current[:] = [kwargs["desc"]]
        lrs[kwargs["desc"]] = []
        return real_train(*args, **kwargs)

    def spied_optimizer(model, cfg):
        opt = real_optimizer(model, cfg)
        opt.register_step_pre_hook(
            lambda o, *_: lrs[current[0]].append(o.param_groups[0]["lr"]))
        return opt

    monkeypatch.setattr(rethink_module, "train", tagged_train)
    monkeypatch.setattr(train_module, "make_optimizer", spied_optimizer)
    cfg = load_config(_config(tmp_path, "vgg"), ["train.epochs=3"])
    rec = run_rethink(cfg, RethinkPlan(method="uniform", budget=0.5, seeds=1),
                      tmp_path / "run").record
    # the trainer takes full batches only: steps = epochs x floor(n_train / batch)
    n_train = len(data_for(cfg.data, "cpu").train)
    per_epoch = n_train // cfg.train.batch_size
    assert per_epoch == 240 // 32 == 7
    runs = {r["row"]: r for r in rec["runs"]}
    for row, epochs in (("Unpruned", 3), ("Fine-tuned", 1), (REWIND, 3), ("Scratch-E", 3)):
        spied = lrs[f"{row.lower()} seed 0"]
        assert runs[row]["steps"] == runs[row]["steps_planned"] == len(spied) == \
            epochs * per_epoch
    rewind = lrs["fine-tuned (rewind) seed 0"]
    assert rewind[0] == cfg.train.lr == 0.05  # the base lr at its first step (no warm-up)
    assert rewind == lrs["unpruned seed 0"] == lrs["scratch-e seed 0"]  # the base schedule
    assert rewind[-1] < 0.1 * cfg.train.lr  # ... annealed by cosine, not constant
    assert set(lrs["fine-tuned seed 0"]) == {0.001}  # Liu et al.'s constant lr
    assert rec["rewind"]["steps"] == runs["Scratch-E"]["steps"] == 21
    assert runs[REWIND]["lr_schedule"] == rec["rewind"]["lr_schedule"] == \
        {"lr": 0.05, "schedule": "cosine", "warmup_epochs": 0.0}
    assert runs["Fine-tuned"]["lr_schedule"] == {"lr": 0.001, "schedule": "constant"}
    # both fine-tuned rows start from the same cut weights
    before = runs["Fine-tuned"]["test_acc_before_finetune"]
    assert runs[REWIND]["test_acc_before_finetune"] == before


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
