"""Latency as a budget: measurement, the lookup-table predictor, budget fitting, bad input, and a
search under a latency budget. Timing checks compare ratios measured in the same test, never
absolute numbers."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from torch import nn

from nas_prune.budget import BUDGET_TOLERANCE, uniform_widths
from nas_prune.cli import main
from nas_prune.errors import UserError
from nas_prune.families import InputShape
from nas_prune.latency import LatencyConfig, LatencyPredictor, measure, parse_budget
from nas_prune.search.space import CandidateSpace
from nas_prune.widths import SearchSpace

from .conftest import TINY_VGG, tiny_overrides

SHAPE = InputShape(1, 28, 10)
# vgg_small at 28 pixels for synthetic 4-class data: big enough that compute, not per-call
# overhead, sets its latency (the tiny test spaces are nearly all overhead)
SMALL = {"family": "vgg", "args": {"cfg": "vgg_small", "head": "slimming"},
         "input": {"channels": 1, "size": 28, "classes": 4}, "divisor": 4, "min_width": 4}


def cfg(tmp_path: Path, **kw) -> LatencyConfig:
    base = dict(backend="torch", threads=1, warmup=5, repeats=25, table_dir=str(tmp_path / "t"))
    base.update(kw)
    return LatencyConfig(**base)


def convs(n: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(1, 32, 3, padding=1)]
    layers += [nn.Conv2d(32, 32, 3, padding=1) for _ in range(n - 1)]
    return nn.Sequential(*layers)


def test_a_model_that_does_nothing_takes_next_to_no_time(tmp_path):
    c = cfg(tmp_path)
    nothing = measure(nn.Identity(), SHAPE, c)
    work = measure(convs(4), SHAPE, c)
    assert nothing.median_ns < 0.05 * work.median_ns
    assert nothing.q25_ns <= nothing.median_ns <= nothing.q75_ns and nothing.repeats == 25


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_twice_the_work_measures_more(tmp_path, backend):
    pytest.importorskip("onnxruntime") if backend == "onnxruntime" else None
    c = cfg(tmp_path, backend=backend)
    one, two = measure(convs(3), SHAPE, c), measure(convs(6), SHAPE, c)
    assert two.median_ns > 1.3 * one.median_ns


def test_measurement_pins_threads_and_restores_them(tmp_path):
    import os

    before = (torch.get_num_threads(), os.sched_getaffinity(0))
    measure(convs(1), SHAPE, cfg(tmp_path, threads=1))
    assert (torch.get_num_threads(), os.sched_getaffinity(0)) == before


@pytest.mark.slow  # measures a few dozen layers and networks (~15 s)
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_the_table_predicts_measured_latency_within_tolerance(tmp_path, backend):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    space = SearchSpace.load("vgg_small_fmnist").with_latency(cfg(tmp_path, backend=backend))
    pred = space.latency
    g = torch.Generator().manual_seed(0)
    errors = []
    for _ in range(6):
        keep = {n: float(0.3 + 0.7 * torch.rand(1, generator=g)) for n in space.group_names}
        w = space.snap({n: keep[n] * b for n, b in space.base_widths().items()})
        errors.append(abs(pred.predict(w) / pred.measure(w).median_ns - 1))
    # a stated tolerance on ratios measured in this run: the median error under 25%
    assert statistics.median(errors) < 0.25, errors
    table = json.loads(pred.path.read_text())  # the table is kept per device signature
    assert table["device"]["backend"] == backend and len(table["entries"]) == len(pred.table)
    again = LatencyPredictor(space.family, pred.cfg, divisor=space.divisor)
    assert again.table == pred.table  # read back, nothing measured again


def test_depthwise_convs_are_in_the_table_with_their_group(tmp_path):
    """A graph-derived MobileNetV2: each depthwise conv is one table entry whose channels and
    groups follow its width group."""
    from nas_prune.latency import _unit_module

    space = SearchSpace.from_dict({
        "family": "graph", "args": {"model": "zoo:mobilenet_v2_small",
                                    "kwargs": {"setting": "tiny", "last_channel": 32}},
        "input": {"channels": 1, "size": 16, "classes": 4}, "divisor": 2, "min_width": 2},
        name="tiny_mbv2").with_latency(cfg(tmp_path, repeats=10))
    pred = space.latency
    half = space.snap({n: 0.5 * b for n, b in space.base_widths().items()})
    dw = [u for u in pred.units if u.groups == 0]
    assert len(dw) == sum(len(g.depthwise) for g in space.family.groups()) > 0
    key = dw[0].key(half)
    c = half[dw[0].out_group]
    assert key.startswith(f"conv:{c}:{c}:") and key.endswith(f":g{c}")
    module, shape = _unit_module(key)
    assert module[0].groups == c and module(torch.zeros(1, *shape)).shape[1] == c
    # measured into the table like any layer (this tiny net is all call overhead, so its
    # predictions say nothing about ratios; the vgg_small tests above judge those)
    assert pred.predict(half) > 0 and pred.table[key] > 0


def test_budget_fitting_meets_a_latency_budget_on_predicted_latency(tmp_path):
    space = SearchSpace.load("vgg_small_fmnist").with_latency(cfg(tmp_path, repeats=10))
    base = space.base_cost("latency")
    for budget in (0.8, 0.6):
        w = uniform_widths(space, budget, "latency")
        assert abs(space.cost(w, "latency") - budget * base) <= BUDGET_TOLERANCE * budget * base


def test_the_candidate_space_travels_with_its_latency_config(tmp_path):
    space = SearchSpace.from_dict(TINY_VGG, name="t").with_latency(cfg(tmp_path, repeats=10))
    w0 = space.base_widths()
    lat = {"backend": "torch", "threads": 1, "warmup": 5, "repeats": 10,
           "table_dir": str(tmp_path / "t"), "batch_size": 1}
    cs = CandidateSpace(space, starts={"uniform": w0}, metric="latency",
                        target=space.base_cost("latency"), tolerance=0.5,
                        source={"name": "t", "data": TINY_VGG}, latency=lat)
    again = CandidateSpace.from_dict(json.loads(json.dumps(cs.to_dict())))
    assert again.space.latency is not None and again.latency == lat
    cand = again.decode({"start": "uniform", **{f"m_{g}": 1.0 for g in again.groups}})
    assert cand.latency is not None and cand.cost == cand.latency.median_ns


# ---- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, fragment", [
    ("3.5parsecs", "neither a ratio in (0, 1] nor a time"),
    ("-2ms", "must be a positive time"),
    ("abc", "neither a ratio"),
])
def test_budget_text_errors(text, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_budget(text, "latency")


def test_budget_parsing():
    assert parse_budget("0.5", "latency") == (0.5, None)
    assert parse_budget("3.5ms", "latency") == (None, 3_500_000)
    assert parse_budget("800us", "latency") == (None, 800_000)
    with pytest.raises(UserError, match="is a time; a flops budget"):
        parse_budget("3ms", "flops")


def _cli(argv, capsys) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


@pytest.mark.parametrize("extra, fragment", [
    (["--set", "latency.backend=tpu"], "latency.backend: 'tpu'; choose one of torch"),
    (["--budget", "3.5parsecs"], "--budget: '3.5parsecs' is neither"),
    (["--budget", "2ms", "--metric", "flops"], "--budget: 2ms is a time; a flops budget"),
    (["--budget", "10s"], "is above the base network's latency"),
    (["--set", "latency.repeats=0"], "latency.repeats: 0 is out of range"),
])
def test_bad_latency_input_is_one_line_exit_2(tmp_path, capsys, no_training, extra, fragment):
    space = tmp_path / "tiny.yaml"
    space.write_text(json.dumps(TINY_VGG))
    sets = [x for s in tiny_overrides(space, tmp_path / "run") for x in ("--set", s)]
    argv = ["propose", *sets, "--metric", "latency", "--set",
            f"latency.table_dir={tmp_path / 't'}", *extra]
    code, err = _cli(argv, capsys)
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert "Traceback" not in err[0] and not (tmp_path / "run").exists()


def test_onnxruntime_missing_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ort(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("no onnxruntime")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(UserError, match="onnxruntime is not installed; pip install"):
        measure(nn.Identity(), SHAPE, cfg(tmp_path, backend="onnxruntime"))


# ---- a search under a latency budget -----------------------------------------------------------
@pytest.mark.slow
def test_a_search_under_a_latency_budget_measures_every_candidate(tmp_path, capsys):
    space = tmp_path / "small.yaml"
    space.write_text(json.dumps(SMALL))
    run = tmp_path / "run"
    sets = [x for s in tiny_overrides(space, run) + ["data.synthetic_size=28"]
            for x in ("--set", s)]
    code = main(["search", *sets, "--seed-method", "l1norm", "--metric", "latency",
                 "--budget", "0.5", "--n-trials", "4", "--set", "search.tolerance=0.1",
                 "--set", f"latency.table_dir={tmp_path / 't'}", "--set", "latency.threads=1",
                 "--set", "seed_method.base_epochs=1"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    trials = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert complete and all(t.get("cost_ratio") is not None for t in complete)
    for t in complete:
        if t["role"] == "search":  # the direct measurement met the budget, within the
            # tolerance or half the measurement's interquartile range
            iqr_ratio = t["latency_iqr_ms"] * t["cost_ratio"] / t["latency_ms"]
            assert abs(t["cost_ratio"] - 0.5) <= max(0.1 * 0.5, iqr_ratio / 2) + 1e-9
    final = json.loads((run / "final.json").read_text())
    assert all(r["latency_ms"] > 0 and r["latency_iqr_ms"] >= 0 for r in final["rows"])
    assert "latency ms" in out
    best = (run / "best.yaml").read_text()
    assert "latency_device" in best
