"""Training replaced by a look-up in a results table (``train.source: table:PATH``) on the
Channel-Bench-Macro ResNet space: the families' counts against a table written from our own
counting, which table seed a training reads, the held-out seed of the final table, a search and
a compare end to end in seconds, and one-line errors for bad tables and settings. Every table
here is synthetic, written by the tests."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from nas_prune.cli import main
from nas_prune.config import load_config
from nas_prune.errors import UserError
from nas_prune.rundir import read_json, read_records
from nas_prune.scratch import train_spec
from nas_prune.seeding import FINAL_SEED_OFFSET, SELECTION_SEED_OFFSET
from nas_prune.table import ResultsTable, check_table, key_of, widths_of_key
from nas_prune.widths import SearchSpace

pytestmark = pytest.mark.timeout(60)

SEEDS = 3


def _acc(key: str, i: int) -> float:
    """A synthetic accuracy that tells the table seed ``i`` apart: seed 0 in [60, 70), seed 1
    in [70, 80), seed 2 (held out) in [80, 90); wider networks a little better."""
    return round(60 + 10 * i + sum(int(d) for d in key) / 3 + (int(key) % 7) * 0.01, 2)


def write_table(path: Path, space: SearchSpace, keys=None) -> Path:
    keys = keys or ["".join(d) for d in itertools.product("1234", repeat=len(space.group_names))]
    out = {}
    for key in keys:
        flops, params = space.count(widths_of_key(key, space))
        acc = [_acc(key, i) for i in range(SEEDS)]
        out[key] = {"acc": acc, "mean": sum(acc) / SEEDS, "std": 0.0, "flops": flops,
                    "params": params}
    path.write_text(json.dumps(out))
    return path


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.load("cbm_resnet")


@pytest.fixture(scope="module")
def table_file(tmp_path_factory, space) -> Path:
    return write_table(tmp_path_factory.mktemp("table") / "table.json", space)


def _cfg(table: Path, run_dir: Path, *extra: str):
    return load_config("cbm_resnet_table", [f"train.source=table:{table}",
                                            f"run_dir={run_dir}", *extra])


# ---- the space and its counts ----------------------------------------------------------------
def test_space_grid_is_the_benchmark_grid_and_keys_round_trip(space) -> None:
    assert space.group_names == ["stage1", "block1", "block2", "block3", "stage2", "block4",
                                 "block5"]
    for g, base in space.base_widths().items():
        assert space.grid(g) == [base // 4 * k for k in (1, 2, 3, 4)]
    w = widths_of_key("4432214", space)
    assert key_of(w, space) == "4432214"
    # the benchmark README's example entry (its FLOPs and params, as published)
    assert space.count(w) == (794495488, 6208394)


def test_flops_of_the_space_match_a_table_written_from_our_counting(table_file, space) -> None:
    table = ResultsTable.load(table_file)
    assert len(table.entries) == 4 ** 7
    table.check(space)  # every allocation on the grid, every FLOPs count within 1%
    for key in ("1111111", "2222222", "4444444", "1234123"):
        assert table.entries[key].flops == space.count(widths_of_key(key, space))[0]


def test_mobilenet_space_counts_its_published_architecture(tmp_path) -> None:
    space = SearchSpace.load("cbm_mobilenet")
    for g, base in space.base_widths().items():
        assert space.grid(g) == [base // 4 * k for k in (1, 2, 3, 4)]
    # MACs of the full network by hand: stem 3x3/2 to 16x16, blocks 1-2 (128 -> 768 -> 128),
    # block 3 (128 -> 768, depthwise stride 2 -> 256 at 8x8), block 4 (256 -> 1536 -> 256),
    # 1x1 head 256 -> 1024, linear 1024 -> 10
    stem = 16 * 16 * 3 * 9 * 128
    b12 = 2 * 16 * 16 * (128 * 768 + 9 * 768 + 768 * 128)
    b3 = 16 * 16 * 128 * 768 + 8 * 8 * (9 * 768 + 768 * 256)
    b4 = 8 * 8 * (256 * 1536 + 9 * 1536 + 1536 * 256)
    head = 8 * 8 * 256 * 1024 + 1024 * 10
    assert space.count(space.base_widths())[0] == stem + b12 + b3 + b4 + head
    path = write_table(tmp_path / "m.json", space, keys=["1111111", "4444444", "2413324"])
    ResultsTable.load(path).check(space)


# ---- which table seed a training reads -------------------------------------------------------
def test_a_trial_returns_the_table_value_of_its_seed(table_file, tmp_path) -> None:
    cfg = _cfg(table_file, tmp_path / "r", "random_seed=7")
    space = SearchSpace.load("cbm_resnet")
    key = "3142231"
    spec = space.spec(widths_of_key(key, space))
    expect = {7: 0, 8: 1, 9: 0, 7 + SELECTION_SEED_OFFSET: 1, 7 + SELECTION_SEED_OFFSET + 1: 0,
              7 + FINAL_SEED_OFFSET: 2}
    for seed, index in expect.items():
        result, out = train_spec(spec, cfg, seed=seed, epochs=60, exact_epochs=True,
                                 evaluate_test=True)
        assert result.status == "ok"
        assert result.val_acc_final == pytest.approx(_acc(key, index) / 100)
        assert result.test_acc == result.val_acc_final
        assert out.metrics["seed"] == seed
    with pytest.raises(UserError, match="search.final_seeds"):
        train_spec(spec, cfg, seed=7 + FINAL_SEED_OFFSET + 1)


def test_early_stopping_sees_one_value_at_the_last_epoch(table_file, tmp_path, space) -> None:
    cfg = _cfg(table_file, tmp_path / "r")
    seen = []
    train_spec(space.spec(widths_of_key("2222222", space)), cfg, epochs=5, exact_epochs=True,
               on_epoch=lambda e, acc, loss: seen.append((e, acc)) or True)
    assert seen == [(4, pytest.approx(_acc("2222222", 0) / 100))]


# ---- a search and a compare, end to end ------------------------------------------------------
def _held_out_never_searched(run: Path, space: SearchSpace) -> list:
    records = read_records(run)
    assert records
    for r in records:
        for m in r.measurements:
            key = key_of(r.widths, space)
            assert m["val_acc"] in (pytest.approx(_acc(key, 0) / 100),
                                    pytest.approx(_acc(key, 1) / 100))
            assert m["val_acc"] != pytest.approx(_acc(key, 2) / 100)
    return records


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_search_on_a_table_holds_the_final_seed_out(table_file, tmp_path, space, capsys) -> None:
    run = tmp_path / "run"
    assert main(["search", "--config", "cbm_resnet_table", "--set",
                 f"train.source=table:{table_file}", "--run-dir", str(run), "--n-trials", "12",
                 "--sampler", "random", "--finalists", "3", "--budget", "0.3"]) == 0
    records = _held_out_never_searched(run, space)
    assert len(records) == 12
    final = read_json(run / "final.json")
    # the finalist round read the second table seed, never the held-out third
    for entry in final["selection"]["pool"]:
        key = key_of(entry["widths"], space)
        assert entry["val_acc"] == pytest.approx(_acc(key, 1) / 100)
    for row in final["rows"]:  # every row scored on the held-out seed, the same for all
        key = key_of(row["widths"], space)
        assert row["seeds"] == [FINAL_SEED_OFFSET]
        assert row["test_acc"] == [pytest.approx(_acc(key, 2) / 100)]
    assert read_json(run / "search.json")["data"] == {"table": str(table_file)}
    assert (run / "best.yaml").is_file()


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_compare_on_a_table_pairs_every_row_on_the_held_out_seed(table_file, tmp_path,
                                                                 space) -> None:
    run = tmp_path / "cmp"
    assert main(["compare", "--config", "cbm_resnet_table", "--set",
                 f"train.source=table:{table_file}", "--run-dir", str(run), "--n-trials", "6",
                 "--seed-method", "random", "--budget", "0.5"]) == 0
    out = read_json(run / "compare.json")
    (res,) = out["results"]
    for arm in res["arms"].values():
        _held_out_never_searched(Path(arm["run_dir"]), space)
    for row in res["rows"]:
        key = key_of(row["widths"], space)
        assert row["test_acc"] == [pytest.approx(_acc(key, 2) / 100)]


# ---- bad input -------------------------------------------------------------------------------
def _one_line_exit_2(args: list[str], capsys, *needles: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


def _search_args(table: Path | str, run: Path, *extra: str) -> list[str]:
    return ["search", "--config", "cbm_resnet_table", "--set", f"train.source=table:{table}",
            "--run-dir", str(run), *extra]


@pytest.mark.parametrize("content, needle", [
    ("{not json", "is not JSON"),
    ("[1, 2]", "expected a non-empty mapping"),
    ('{"1111111": {"acc": [90.0], "flops": 1, "params": 1}}', "at least 2 accuracies"),
    ('{"1111111": {"acc": [90.0, 91.0], "params": 1}}', "flops"),
    ('{"1111111": {"acc": [90.0, 91.0], "flops": 1, "params": 1}, '
     '"1111112": {"acc": [1.0, 2.0, 3.0], "flops": 1, "params": 1}}', "3 accuracies"),
    ('{"1111115": {"acc": [90.0, 91.0], "flops": 1, "params": 1}}', "7 digits 1-4"),
    ('{"111111": {"acc": [90.0, 91.0], "flops": 1, "params": 1}}', "7 digits 1-4"),
])
def test_a_bad_table_is_one_line_naming_the_file(tmp_path, capsys, content, needle) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    _one_line_exit_2(_search_args(bad, tmp_path / "r"), capsys, str(bad), needle)
    assert not (tmp_path / "r").exists()  # nothing written for a search that cannot start


def test_a_missing_table_is_one_line(tmp_path, capsys) -> None:
    _one_line_exit_2(_search_args(tmp_path / "nope.json", tmp_path / "r"), capsys,
                     "nope.json", "no such file")


def test_a_table_of_another_network_names_the_first_mismatch(tmp_path, capsys, space) -> None:
    path = write_table(tmp_path / "t.json", space, keys=["1111111", "2222222", "1234123"])
    data = json.loads(path.read_text())
    data["2222222"]["flops"] = int(data["2222222"]["flops"] * 1.05)
    path.write_text(json.dumps(data))
    _one_line_exit_2(_search_args(path, tmp_path / "r"), capsys, str(path), "'2222222'",
                     "FLOPs")


def test_settings_a_table_cannot_serve_are_one_line(table_file, tmp_path, capsys) -> None:
    _one_line_exit_2(_search_args(table_file, tmp_path / "r", "--seed-method", "slimming"),
                     capsys, "seed_method.name", "slimming", "base network")
    _one_line_exit_2(_search_args(table_file, tmp_path / "r", "--final-seeds", "2"), capsys,
                     "search.final_seeds")
    _one_line_exit_2(["search", "--config", "cbm_resnet_table", "--set", "train.source=tabel:x",
                      "--run-dir", str(tmp_path / "r")], capsys, "train.source", "table:PATH")
    cfg = _cfg(table_file, tmp_path / "r", "search.rungs=[{epochs: 1, seeds: 3}]")
    with pytest.raises(UserError, match=r"search.rungs\[0\].seeds"):
        check_table(cfg, SearchSpace.load("cbm_resnet"))


def test_a_widened_space_cannot_search_a_table(table_file, tmp_path) -> None:
    """The table holds allocations up to the base widths only: a space that widens a group
    above them (max_multiplier, or bounds past the base) is refused naming it and the fix."""
    from nas_prune.widths import space_source

    _, data = space_source("cbm_resnet")
    wide = SearchSpace.from_dict({**data, "bounds": {**data["bounds"], "stage1": [64, 320]}},
                                 name="cbm_wide")
    with pytest.raises(UserError, match=r"widens stage1 above .* \(train.source: data\)"):
        check_table(_cfg(table_file, tmp_path / "r"), wide)
