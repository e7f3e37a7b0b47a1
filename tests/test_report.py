"""``nas-prune report``: a hand-built run directory following the search's contract."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from PIL import Image

from nas_prune.cli import main
from nas_prune.errors import UserError
from nas_prune.report import fmt_mean_std, mean_std, pareto_front, read_trials, write_report
from nas_prune.widths import SearchSpace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPACE = {"family": "vgg", "args": {"cfg": "vgg_tiny", "head": "slimming"},
         "input": {"channels": 1, "size": 8, "classes": 4}, "divisor": 2, "min_width": 2}
FIELDS = ["number", "state", "role", "seed_method", "widths", "flops", "params", "flops_ratio",
          "val_acc", "best_val_acc", "val_curve", "epochs", "wall_time", "datetime_start",
          "datetime_complete", "reason", "backend"]


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
        _trial(space, 1, "COMPLETE", "uniform", WIDTHS["uniform"], 0.69),
        _trial(space, 2, "COMPLETE", "search", WIDTHS["a"], 0.74),
        _trial(space, 3, "PRUNED", "search", WIDTHS["b"], 0.40,
               reason="stopped early after epoch 1"),
        _trial(space, 4, "FAIL", "search", WIDTHS["c"], None, reason="non-finite loss in epoch 1"),
        _trial(space, 5, "COMPLETE", "search", WIDTHS["win"], 0.77),
    ]
    with (run / "trials.jsonl").open("w") as f:
        for t in trials:
            f.write(json.dumps(t) + "\n")
    with (run / "trials.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for t in trials:
            w.writerow({**t, "widths": json.dumps(t["widths"]),
                        "val_curve": json.dumps(t["val_curve"]),
                        "val_acc": "" if t["val_acc"] is None else t["val_acc"],
                        "best_val_acc": "" if t["best_val_acc"] is None else t["best_val_acc"],
                        "seed_method": t["seed_method"] or ""})
    if finished:
        space.spec(WIDTHS["win"], metrics={"val_acc": 0.77}).save(run / "best.yaml")
        rows = [{"name": "best", "widths": WIDTHS["win"], "test_acc": [0.80, 0.82]},
                {"name": "seed:slimming", "widths": WIDTHS["seed"], "test_acc": [0.75, 0.74]},
                {"name": "uniform", "widths": WIDTHS["uniform"], "test_acc": [0.70, 0.73]}]
        for r in rows:
            f_, p_ = space.count(r["widths"])
            r.update(flops=f_, params=p_, flops_ratio=f_ / base_f, val_acc=0.7,
                     test_mean=sum(r["test_acc"]) / 2, test_std=0.01)
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


def test_report_of_a_finished_run(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    md_path = write_report(run)
    assert md_path == run / "report.md"
    md, page = md_path.read_text(), (run / "report.html").read_text()
    pngs = ["accuracy_vs_flops.png", "width_profile.png", "search_progress.png"]
    for name in pngs:
        _check_png(run / name)
        assert f"]({name})" in md
    # provenance: command, versions, hardware, config
    assert "nas-prune search --seed-method slimming --budget 0.5" in md
    assert "TestCPU 9000" in md and "2.x-test" in md and "epochs: 2" in md
    assert "multiply-accumulates" in md
    # every trial, with its state; the failed and stopped ones with their reason
    rows = {int(r[0]): r for r in _table_rows(_section(md, "Every trial"))}
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    assert [n for n, r in rows.items() if r[1] == "COMPLETE"] == [0, 1, 2, 5]
    assert rows[4][1] == "FAIL" and rows[4][-1] == "non-finite loss in epoch 1"
    assert rows[3][1] == "PRUNED" and "stopped early" in rows[3][-1]
    assert rows[5][6] == "77.00"
    # the final table: mean ± sample std over n seeds
    final = {r[0]: r for r in _table_rows(_section(md, "Final comparison (test split)"))}
    assert set(final) == {"best", "seed:slimming", "uniform"}
    assert final["best"][-1] == "81.00 ± 1.41 (n=2)"
    # HTML: self-contained, every image embedded
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(pngs)
    assert all(base64.b64decode(b)[:8] == PNG_MAGIC for b in embedded)
    assert ".png\"" not in page
    assert "non-finite loss in epoch 1" in page and "81.00 ± 1.41 (n=2)" in page


def test_report_of_an_interrupted_run(tmp_path: Path) -> None:
    run = _make_run(tmp_path, finished=False)
    with (run / "trials.jsonl").open("a") as f:
        f.write('{"number": 6, "state": "COMPL')  # a write cut off by the interruption
    md = write_report(run).read_text()
    assert "not finished" in md
    assert "final.json not found" in md
    assert "trials.jsonl line 7" in md
    assert "best completed trial so far (#5)" in md
    rows = _table_rows(_section(md, "Every trial"))
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4, 5]
    for name in ("accuracy_vs_flops.png", "width_profile.png", "search_progress.png"):
        _check_png(run / name)


def test_report_with_only_a_few_records(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    (run / "trials.jsonl").write_text(json.dumps(
        {"number": 0, "state": "FAIL", "role": "seed", "reason": "out of memory"}) + "\n")
    md = write_report(run).read_text()
    assert "out of memory" in md and "No completed trial" in md
    assert (run / "report.html").is_file()
    assert not (run / "accuracy_vs_flops.png").exists()


def test_csv_is_read_when_jsonl_is_missing(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    from_jsonl, _ = read_trials(run)
    (run / "trials.jsonl").unlink()
    from_csv, notes = read_trials(run)
    assert notes == []
    assert [(t.number, t.state, t.widths, t.val_acc, t.val_curve) for t in from_csv] == \
        [(t.number, t.state, t.widths, t.val_acc, t.val_curve) for t in from_jsonl]


def test_not_a_run_directory_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        write_report(tmp_path / "missing")
    with pytest.raises(UserError, match="no search records"):
        write_report(tmp_path)


def test_cli_report(tmp_path: Path, capsys) -> None:
    run = _make_run(tmp_path)
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_pareto_front_and_mean_std() -> None:
    pts = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.65), (20, 0.6), (40, 0.9), (5, 0.5)]
    assert pareto_front(pts) == [(5, 0.5), (20, 0.7), (40, 0.9)]
    m, s, n = mean_std([0.8, None, 0.82])
    assert (round(m, 6), round(s, 6), n) == (0.81, round(0.0141421356, 6), 2)
    assert fmt_mean_std([0.5]) == "50.00 (n=1, no std)"
    assert fmt_mean_std([]) == "-"
