"""``nas-prune report``: hand-built run directories following the search's contract, damaged
records through the real CLI, and the report of a real tiny search."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from PIL import Image

from nas_prune import report, stats
from nas_prune.cli import main
from nas_prune.errors import UserError
from nas_prune.report import IMAGES, fmt_count, fmt_mean_std, write_report
from nas_prune.rundir import FINAL_JSON, TrialRecord, read_json, read_records, write_records
from nas_prune.widths import SearchSpace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPACE = {"family": "vgg", "args": {"cfg": "vgg_tiny", "head": "slimming"},
         "input": {"channels": 1, "size": 8, "classes": 4}, "divisor": 2, "min_width": 2}
OUTPUTS = ("report.md", "report.html", *IMAGES)


def _space() -> SearchSpace:
    return SearchSpace.from_dict(SPACE, name="tiny")


def _trial(space: SearchSpace, number: int, state: str, role: str, widths: dict[str, int],
           acc: float | None, reason: str = "", method: str | None = None) -> dict:
    flops, params = space.count(widths)
    base = space.base_cost("flops")
    curve = [] if acc is None else [acc - 0.1, acc]
    return {"number": number, "state": state, "role": role, "seed_method": method,
            "widths": widths, "flops": flops, "params": params, "flops_ratio": flops / base,
            "val_acc": acc, "best_val_acc": max(curve) if curve else None, "val_curve": curve,
            "epochs": 2, "wall_time": 1.5 + number,
            "datetime_start": f"2025-01-01T10:{2 * number:02d}:00",
            "datetime_complete": f"2025-01-01T10:{2 * number + 1:02d}:30", "reason": reason,
            "backend": "optuna"}


WIDTHS = {
    "seed": {"conv1": 6, "conv2": 10, "conv3": 8},
    "uniform": {"conv1": 6, "conv2": 12, "conv3": 12},
    "a": {"conv1": 4, "conv2": 16, "conv3": 10},
    "b": {"conv1": 8, "conv2": 8, "conv3": 16},
    "c": {"conv1": 2, "conv2": 4, "conv3": 4},
    "win": {"conv1": 8, "conv2": 12, "conv3": 8},
}


def _make_run(tmp_path: Path, *, finished: bool = True) -> Path:
    space = _space()
    run = tmp_path / "run"
    (run / "proposals").mkdir(parents=True)
    base_f, base_p = space.count(space.base_widths())
    (run / "search.json").write_text(json.dumps({
        "command": "nas-prune search --seed-method slimming --budget 0.5", "backend": "optuna",
        "space": "tiny", "seed_methods": ["slimming"], "budget": 0.5, "metric": "flops",
        "base_flops": base_f, "base_params": base_p, "target_cost": base_f // 2,
        "started": "2025-01-01T10:00:00", "finished": "2025-01-01T10:20:00" if finished else None,
        "hardware": {"device": "cpu", "cpu": "TestCPU 9000", "gpu": None},
        "versions": {"nas_prune": "0.1.0", "torch": "2.x-test"}, "study_name": "tiny-study",
        "storage": "sqlite:///run/study.db"}))
    (run / "config.yaml").write_text("space: tiny\ntrain:\n  epochs: 2\n")
    space.spec(WIDTHS["seed"]).save(run / "proposals" / "slimming.yaml")
    space.spec(WIDTHS["uniform"]).save(run / "proposals" / "uniform.yaml")
    trials = [
        _trial(space, 0, "COMPLETE", "seed", WIDTHS["seed"], 0.71, method="slimming"),
        _trial(space, 1, "COMPLETE", "uniform", WIDTHS["uniform"], 0.69, method="uniform"),
        _trial(space, 2, "COMPLETE", "search", WIDTHS["a"], 0.74),
        _trial(space, 3, "PRUNED", "search", WIDTHS["b"], 0.40,
               reason="stopped early after epoch 1"),
        _trial(space, 4, "FAIL", "search", WIDTHS["c"], None, reason="non-finite loss in epoch 1"),
        _trial(space, 5, "COMPLETE", "search", WIDTHS["win"], 0.77),
    ]
    write_records(run, [TrialRecord.from_dict(t) for t in trials])
    if finished:
        space.spec(WIDTHS["win"], metrics={"val_acc": 0.77}).save(run / "best.yaml")
        rows = [{"name": "best", "widths": WIDTHS["win"], "test_acc": [0.80, 0.82]},
                {"name": "seed:slimming", "widths": WIDTHS["seed"], "test_acc": [0.75, 0.74]},
                {"name": "uniform", "widths": WIDTHS["uniform"], "test_acc": [0.70, 0.73]}]
        for r in rows:
            f_, p_ = space.count(r["widths"])
            r.update(flops=f_, params=p_, flops_ratio=f_ / base_f, val_acc=0.7, seeds=[1, 2],
                     test_mean=sum(r["test_acc"]) / 2, test_std=0.01, n=2)
        (run / "final.json").write_text(json.dumps({"n_seeds": 2, "rows": rows}))
    return run


def _section(md: str, title: str) -> str:
    part = md.split(f"## {title}", 1)[1]
    return part.split("\n## ", 1)[0]


def _table_rows(section: str) -> list[list[str]]:
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[1:]]


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    arr = mpimg.imread(path)
    assert arr.ndim == 3 and arr.shape[0] > 100 and arr.shape[1] > 100


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas_prune.cli", *argv], capture_output=True,
                          text=True, timeout=300)


# ---- the page of a hand-built run ----------------------------------------------------------
def test_report_of_a_finished_run(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    rep = write_report(run)
    assert rep.markdown == run / "report.md" and Path(rep) == rep.markdown
    assert rep.warnings == ()
    md, page = rep.markdown.read_text(), rep.html.read_text()
    assert rep.images == tuple(run / name for name in IMAGES)
    for name in IMAGES:
        _check_png(run / name)
        assert f"]({name})" in md
    # provenance: command, versions, hardware, config
    assert "nas-prune search --seed-method slimming --budget 0.5" in md
    assert "TestCPU 9000" in md and "2.x-test" in md and "epochs: 2" in md
    assert "multiply-accumulates" in md and "Damaged records" not in md
    # every trial, with its state; the failed and stopped ones with their reason
    rows = {int(r[0]): r for r in _table_rows(_section(md, "Every trial"))}
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    assert [n for n, r in rows.items() if r[1] == "COMPLETE"] == [0, 1, 2, 5]
    assert rows[4][1] == "FAIL" and rows[4][-1] == "non-finite loss in epoch 1"
    assert rows[3][1] == "PRUNED" and "stopped early" in rows[3][-1]
    assert rows[5][6] == "77.00"
    assert "6 trials: 4 complete, 1 pruned, 1 fail." in md
    # the final table: mean ± sample std over n seeds
    final = {r[0]: r for r in _table_rows(_section(md, "Final comparison (test split)"))}
    assert set(final) == {"best", "seed:slimming", "uniform"}
    assert final["best"][-1] == "81.00 ± 1.41 (n=2)"
    # an old final.json without comparisons: the report pairs the rows' per-seed values itself
    diffs = _table_rows(_section(md, "Paired differences (95% t-interval)"))
    assert [r[0] for r in diffs] == ["best − seed:slimming", "best − uniform"]
    assert diffs[0][2] == "+6.50" and diffs[0][-1].startswith("not resolved at n = 2")
    assert "computed by this report" in md
    # HTML: self-contained, every image embedded
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(IMAGES)
    assert all(base64.b64decode(b)[:8] == PNG_MAGIC for b in embedded)
    assert ".png\"" not in page
    assert "non-finite loss in epoch 1" in page and "81.00 ± 1.41 (n=2)" in page


def test_report_of_an_interrupted_run(tmp_path: Path) -> None:
    run = _make_run(tmp_path, finished=False)
    md = write_report(run).markdown.read_text()
    assert "not finished" in md
    assert "final.json not found" in md
    assert "best completed trial so far (#5)" in md
    rows = _table_rows(_section(md, "Every trial"))
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4, 5]
    for name in IMAGES:
        _check_png(run / name)


def test_a_cut_off_trials_jsonl_is_rebuilt_from_the_csv_and_said(tmp_path: Path) -> None:
    run = _make_run(tmp_path, finished=False)
    with (run / "trials.jsonl").open("a") as f:
        f.write('{"number": 6, "state": "COMPL')  # a write cut off
    rep = write_report(run)
    assert len(rep.warnings) == 1
    assert "trials.jsonl" in rep.warnings[0] and "line 7" in rep.warnings[0]
    assert "rebuilt from trials.csv" in rep.warnings[0] and "up to 1 trial" in rep.warnings[0]
    md = rep.markdown.read_text()
    assert rep.warnings[0] in _section(md, "Damaged records")
    assert [int(r[0]) for r in _table_rows(_section(md, "Every trial"))] == [0, 1, 2, 3, 4, 5]


def test_report_with_only_a_few_records(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    write_records(run, [TrialRecord(number=0, state="FAIL", role="seed", seed_method="l1norm",
                                    widths=None, reason="out of memory")])
    md = write_report(run).markdown.read_text()
    assert "out of memory" in md and "No completed trial" in md
    assert "search.json not found" in md and "final.json not found" in md
    assert (run / "report.html").is_file()
    assert not (run / "accuracy_vs_flops.png").exists()


def test_csv_is_read_when_jsonl_is_missing(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    from_jsonl = _table_rows(_section(write_report(run).markdown.read_text(), "Every trial"))
    (run / "trials.jsonl").unlink()
    rep = write_report(run)
    md = rep.markdown.read_text()
    assert _table_rows(_section(md, "Every trial")) == from_jsonl
    assert rep.warnings == () and "trials.jsonl not found" in md


def test_not_a_run_directory_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such directory"):
        write_report(tmp_path / "missing")
    with pytest.raises(UserError, match="not a nas-prune run directory"):
        write_report(tmp_path)


def test_cli_report(tmp_path: Path, capsys) -> None:
    run = _make_run(tmp_path)
    assert main(["report", str(run)]) == 0
    captured = capsys.readouterr()
    assert "report.html" in captured.out and captured.err == ""
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_the_numbers_are_the_stats_module() -> None:
    assert report.mean_std is stats.mean_std and report.fmt_mean_std is stats.fmt_mean_std
    assert fmt_mean_std([0.8, None, 0.82]) == "81.00 ± 1.41 (n=2)"
    assert fmt_mean_std([0.5]) == "50.00 (n=1, one seed: no std)"


# ---- paired differences against a hand computation ------------------------------------------
def _final_with_seeds(run: Path, tests: dict[str, list[float]], **extra) -> None:
    space = _space()
    widths = {"best": WIDTHS["win"], "seed:slimming": WIDTHS["seed"], "seed:l1norm": WIDTHS["a"],
              "uniform": WIDTHS["uniform"]}
    rows = []
    for name, accs in tests.items():
        f_, p_ = space.count(widths[name])
        runs = [{"seed": 100 + k, "val_acc": 0.7, "test_acc": a, "status": "ok", "epochs": 2,
                 "reason": ""} for k, a in enumerate(accs)]
        rows.append({"name": name, "widths": widths[name], "flops": f_, "params": p_,
                     "flops_ratio": 0.5, "val_acc": 0.7, "test_acc": accs, "runs": runs,
                     "seeds": [r["seed"] for r in runs], "n": len(accs)})
    (run / FINAL_JSON).write_text(json.dumps({"n_seeds": 3, "rows": rows, **extra}))


# winner minus: seed:slimming 1, 2, 3 points; seed:l1norm 2, 3, 4; uniform -2, -3, -4.
# mean 2 (3, -3), std 1, t(0.975, 2) = 4.303, half-width 4.303 / sqrt(3) = 2.484 points
HAND = {"best": [0.80, 0.81, 0.82], "seed:slimming": [0.79, 0.79, 0.79],
        "seed:l1norm": [0.78, 0.78, 0.78], "uniform": [0.82, 0.84, 0.86]}
EXPECTED = [["best − seed:slimming", "test_acc", "+2.00", "1.00", "[-0.48, +4.48]", "3",
             "not resolved at n = 3"],
            ["best − seed:l1norm", "test_acc", "+3.00", "1.00", "[+0.52, +5.48]", "3", "better"],
            ["best − uniform", "test_acc", "-3.00", "1.00", "[-5.48, -0.52]", "3", "worse"]]


def test_paired_differences_computed_from_the_rows(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    _final_with_seeds(run, HAND)
    md = write_report(run).markdown.read_text()
    diffs = _table_rows(_section(md, "Paired differences (95% t-interval)"))
    # the not-resolved row also says how many seeds would resolve a difference this size
    assert diffs[0][-1].startswith("not resolved at n = 3 (about ")
    diffs[0][-1] = "not resolved at n = 3"
    assert diffs == EXPECTED
    final = {r[0]: r for r in _table_rows(_section(md, "Final comparison (test split)"))}
    assert final["best"][-1] == "81.00 ± 1.00 (n=3)"
    assert final["uniform"][-1] == "84.00 ± 2.00 (n=3)"


def test_paired_differences_recorded_in_final_json(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    comps = [{"a": "best", "b": "seed:slimming", "metric": "test_acc", "mean": 0.02,
              "std": 0.01, "n": 3, "ci95": [-0.00484, 0.04484], "seeds": [100, 101, 102],
              "verdict": "not resolved at n = 3"},
             {"a": "best", "b": "uniform", "metric": "test_acc", "mean": 0.01, "std": None,
              "n": 1, "ci95": [None, None], "seeds": [100], "verdict": "not resolved at n = 1"}]
    _final_with_seeds(run, HAND, comparisons=comps,
                      seed_rule="every row on the evaluation seeds 100, 101, 102",
                      noise={"val_images": 2000, "test_images": 10000,
                             "binomial_std_val": 0.0085, "binomial_std_test": 0.0036})
    md = write_report(run).markdown.read_text()
    diffs = _table_rows(_section(md, "Paired differences (95% t-interval)"))
    assert diffs == [EXPECTED[0], ["best − uniform", "test_acc", "+1.00", "-", "- (n < 2)", "1",
                                   "not resolved at n = 1"]]
    assert "as recorded in final.json" in md
    assert "Seeds: every row on the evaluation seeds 100, 101, 102." in md
    assert "0.85 points on the 2,000 validation images" in md
    assert "0.36 points on the 10,000 test images" in md


# ---- damaged records, through the real command line -----------------------------------------
def _corrupt_jsonl(run: Path) -> None:
    lines = (run / "trials.jsonl").read_text().splitlines()
    lines[2] = lines[2][:25]
    (run / "trials.jsonl").write_text("\n".join(lines) + "\n")


def _no_csv(run: Path) -> None:
    _corrupt_jsonl(run)
    (run / "trials.csv").unlink()


def _bad_csv(run: Path) -> None:
    _corrupt_jsonl(run)
    with (run / "trials.csv").open("a") as f:
        f.write("7,COMPLETE,search,,{not json,1,2,0.5,0.7,0.7,[],1,1.0,,,,optuna\n")


def _bad_type(run: Path) -> None:
    recs = [json.loads(ln) for ln in (run / "trials.jsonl").read_text().splitlines()]
    recs[2]["val_acc"] = "0.74"
    (run / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


DAMAGED = {
    # case: (damage, what the one error line says)
    "missing directory": (None, ["no such directory"]),
    "not a run directory": (lambda run: run.parent, ["not a nas-prune run directory"]),
    "jsonl corrupt, no csv": (_no_csv, ["trials.jsonl", "line 3", "no trials.csv"]),
    "jsonl and csv corrupt": (_bad_csv, ["trials.jsonl", "line 3", "trials.csv", "line 8"]),
    "a field of the wrong type": (_bad_type, ["trials.jsonl", "trial 2", "val_acc"]),
    "search.json corrupt": (lambda run: (run / "search.json").write_text('{"command": "nas'),
                            ["search.json", "not valid JSON"]),
    "final.json corrupt": (lambda run: (run / "final.json").write_text("[1, 2"),
                           ["final.json", "not valid JSON"]),
    "final.json of the wrong shape": (lambda run: (run / "final.json").write_text(
        json.dumps({"rows": {"best": 1}})), ["final.json", "rows", "not a list"]),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_records_are_one_line_errors(tmp_path: Path, case: str) -> None:
    damage, says = DAMAGED[case]
    run = _make_run(tmp_path)
    if damage is None:
        run = tmp_path / "no-such-run"
    else:
        other = damage(run)  # a damage may name another folder to report on
        run = other if isinstance(other, Path) else run
    proc = _cli("report", str(run))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas-prune: error: "), proc.stderr
    assert str(run) in lines[0]
    for word in says:
        assert word in lines[0], (word, lines[0])
    assert proc.stdout == ""
    for name in OUTPUTS:  # nothing half-written
        assert not (run / name).exists(), name


def test_damaged_records_worked_around_are_warned_about(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    _corrupt_jsonl(run)
    (run / "config.yaml").write_text("space: tiny\ntrain: [1\n")
    proc = _cli("report", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("nas-prune: warning: ") for w in warnings)
    assert any("rebuilt from trials.csv" in w and "line 3" in w for w in warnings)
    assert any("config.yaml" in w and "not valid YAML" in w for w in warnings)
    assert "wrote" in proc.stdout
    damaged = _section((run / "report.md").read_text(), "Damaged records")
    assert "rebuilt from trials.csv" in damaged and "config.yaml" in damaged
    assert "train: [1" in (run / "report.md").read_text()  # the config text, as it is


# ---- the report of a real search -------------------------------------------------------------
@pytest.mark.slow
def test_the_report_of_a_real_search(tmp_path: Path, capsys) -> None:
    from .test_search_common import search

    run = tmp_path / "run"
    assert search(tmp_path, run, "--n-trials", "4", "--final-seeds", "3") == 0
    for name in OUTPUTS:  # the search wrote a report; write it again through the command
        (run / name).unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().err == ""
    md, page = (run / "report.md").read_text(), (run / "report.html").read_text()
    final, records = read_json(run / FINAL_JSON), read_records(run)

    # the final table: one line per row of final.json, with its numbers
    table = _table_rows(_section(md, "Final comparison (test split)"))
    names = [r["name"] for r in final["rows"]]
    assert [r[0] for r in table] == names
    assert names[0] == "best" and "uniform" in names and any(n.startswith("seed:") for n in names)
    for row, line in zip(final["rows"], table, strict=True):
        assert line[2] == fmt_count(row["flops"]) and line[4] == f"{row['flops_ratio']:.3f}"
        per_seed = [r["test_acc"] for r in row["runs"]] if "runs" in row else row["test_acc"]
        assert per_seed == row["test_acc"]
        assert line[-1] == fmt_mean_std(per_seed)
        assert f"(n={row['n']})" in line[-1]
        assert float(line[-1].split()[0]) == pytest.approx(100 * row["test_mean"], abs=0.006)

    # the paired differences: the winner minus each seed proposal and uniform
    diffs = _table_rows(_section(md, "Paired differences (95% t-interval)"))
    others = [n for n in names if n.startswith("seed:") or n == "uniform"]
    assert [r[0] for r in diffs] == [f"best − {n}" for n in others]
    for c, line in zip(final.get("comparisons") or [], diffs, strict=False):
        assert line[0] == f"{c['a']} − {c['b']}" and line[-1].startswith(c["verdict"])
        assert line[5] == str(c["n"])

    # every trial of trials.jsonl, with its state
    trials = {int(r[0]): r[1] for r in _table_rows(_section(md, "Every trial"))}
    assert trials == {r.number: r.state for r in records} and len(trials) == 4

    # the images: valid PNGs, linked from the Markdown, embedded in the HTML
    for name in IMAGES:
        _check_png(run / name)
        assert f"]({name})" in md
    assert len(re.findall(r'src="data:image/png;base64,', page)) == len(IMAGES)
