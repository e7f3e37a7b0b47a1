"""Latency at equal FLOPs: the lookup-table predictor against direct measurement, torch vs ORT.

For each search space (``--spaces``), ``--candidates`` random width vectors are drawn at one
FLOPs target (``--flops-ratio`` of the base network's FLOPs): every width group gets a random keep
ratio in [``--min-keep``, ``--max-keep``] of its base width; the ratios are scaled by one common
factor so that the snapped widths land near the target (the random shape is kept; ``--no-rescale``
skips this), then :func:`nas_prune.budget.refine_to_budget` moves them within 2% of the target.
Candidates that cannot land, or that repeat an earlier one, are drawn again.

For each backend (``torch``: eager PyTorch on the CPU; ``onnxruntime``: the exported graph on ONNX
Runtime's CPU provider) a :class:`~nas_prune.latency.LatencyPredictor` is built on a fresh, empty
table (a temporary folder per space and backend unless ``--table-dir``); filling it is timed in two
parts: the calibration (the units of four uniformly scaled networks, and those four networks
measured whole) and the units the candidates add. Then every candidate is measured directly on
both backends, side by side: per candidate the two backends run one after the other, their order
alternating from one candidate to the next, each measurement the median of ``--repeats`` timed
runs after ``--warmup`` untimed ones (interquartile range recorded).

Reported per space and backend: measured latency min / median / max over the equal-FLOPs
candidates and max / min (how much latency varies at equal FLOPs; compare it with the median
relative IQR, the measurement noise), the predictor's error ``|pred / meas - 1|`` (median, worst,
and the median signed error; goal: median under 5%), Spearman's rho of predicted vs measured
latency (the ranking a latency budget relies on) and of measured latency vs parameters, the time
spent filling the table, and the calibration (``describe()``). Per space, torch vs onnxruntime:
the per-candidate ratio measured torch / measured onnxruntime (median, range) and Spearman's rho
of the two backends' latencies. Absolute times depend on the hardware and its load, both recorded
in ``--out``; read ratios and correlations, not milliseconds, on a loaded machine.

    python benchmarks/latency.py                                   # 2 spaces x 50 candidates
    python benchmarks/latency.py --spaces vgg_small_fmnist --candidates 3 --repeats 5 \\
        --warmup 2 --out /tmp/lat_smoke.json                       # a smoke run

**Repeatability** (``--section repeatability``): does a latency repeat from one process to the
next? Five networks of a space (uniform at 0.75, 0.5 and 0.3 of the base widths, two random
allocations) are measured in ``--processes`` separate processes, one after the other, for each
backend and thread count (``--threads-list``). Each process measures, as the predictor did before
ratios: the base network alone, then each network alone (medians of ``--repeats`` runs; "before");
then each network interleaved with the base network (:func:`nas_prune.latency.measure_ratio`;
"after"). Per setting and network: the max / min over the processes of the absolute median, of
the ratio of two separate medians, and of the interleaved ratio. Goal (a quiet machine): the
interleaved ratio spreads under 3% and the absolute median under 10%.

    python benchmarks/latency.py --section repeatability --out \\
        benchmarks/results/latency_repeatability.json

**Channel counts** (``--section channels``): does a layer's latency care whether its channel
count is a multiple of the vector width? One 3x3 conv (BatchNorm, ReLU) from C to C channels on
a 14x14 input, batch 1, for every C from 8 to 64, on each backend, each measured interleaved with
the C = 32 layer (ratio of minima). Reported: the time per output channel against C, and the
median of that for multiples of 16, of 8 (not 16), of 4 (not 8) and the rest, relative to the
multiples of 16.

    python benchmarks/latency.py --section channels --out benchmarks/results/latency_channels.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas_prune._io import write_json
from nas_prune._meta import code_version, hardware, now
from nas_prune.budget import refine_to_budget
from nas_prune.cli._common import table
from nas_prune.errors import UserError
from nas_prune.latency import (
    BACKENDS,
    LatencyConfig,
    LatencyPredictor,
    device_info,
    measure,
    measure_ratio,
)
from nas_prune.widths import SearchSpace

TOLERANCE = 0.02  # candidates' FLOPs within 2% of the common target
ERROR_GOAL = 0.05  # the predictor's median |pred / meas - 1|


# ---- candidates at equal FLOPs -------------------------------------------------------------
def _rescaled(space: SearchSpace, ratios: Mapping[str, float], target: int) -> dict[str, int]:
    """Snapped ``base x ratio x s`` with the common factor ``s`` bisected onto ``target``."""
    base = space.base_widths()

    def at(s: float) -> dict[str, int]:
        return space.snap({g: base[g] * ratios[g] * s for g in space.group_names})

    lo, hi = 0.0, 1.0 / min(ratios.values())  # at hi every group is at (or clipped to) its max
    best = at(1.0)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        w = at(mid)
        cost = space.cost(w, "flops")
        if abs(cost - target) < abs(space.cost(best, "flops") - target):
            best = w
        if cost > target:
            hi = mid
        else:
            lo = mid
    return best


def draw_candidates(space: SearchSpace, n: int, target: int, rng: random.Random,
                    keep: tuple[float, float], rescale: bool,
                    max_draws: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``n`` distinct on-grid width vectors within ``TOLERANCE`` of ``target`` FLOPs."""
    base = space.base_widths()
    kept: list[dict[str, Any]] = []
    seen: set[tuple[int, ...]] = set()
    stats = {"draws": 0, "cannot_land": 0, "outside_band": 0, "duplicates": 0}
    while len(kept) < n:
        if stats["draws"] >= max_draws:
            raise SystemExit(f"{space.name}: only {len(kept)} of {n} candidates landed within "
                             f"{TOLERANCE:.0%} of {target} FLOPs in {max_draws} draws ({stats})")
        stats["draws"] += 1
        ratios = {g: rng.uniform(*keep) for g in space.group_names}
        start = (_rescaled(space, ratios, target) if rescale
                 else space.snap({g: base[g] * r for g, r in ratios.items()}))
        try:
            widths = refine_to_budget(space, start, target, "flops", tolerance=TOLERANCE)
        except UserError:
            stats["cannot_land"] += 1
            continue
        flops, params = space.count(widths)
        if abs(flops - target) > TOLERANCE * target:  # refine_to_budget promises this; checked
            stats["outside_band"] += 1
            continue
        key = tuple(widths[g] for g in space.group_names)
        if key in seen:
            stats["duplicates"] += 1
            continue
        seen.add(key)
        kept.append({"index": len(kept), "widths": widths, "flops": flops, "params": params,
                     "flops_ratio": flops / space.base_cost("flops"),
                     "draw_ratios": {g: round(r, 4) for g, r in ratios.items()},
                     "predicted_ms": {}, "measured": {}})
    return kept, stats


# ---- statistics ----------------------------------------------------------------------------
def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho, None where it is undefined (fewer than 3 points, a constant series)."""
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def backend_summary(cands: list[dict[str, Any]], backend: str, fill: dict[str, Any],
                    describe: dict[str, Any]) -> dict[str, Any]:
    meas = [c["measured"][backend]["median_ms"] for c in cands]
    pred = [c["predicted_ms"][backend] for c in cands]
    noise = [c["measured"][backend]["iqr_ms"] / c["measured"][backend]["median_ms"]
             for c in cands]
    signed = [p / m - 1 for p, m in zip(pred, meas, strict=True)]
    err = [abs(e) for e in signed]
    return {
        "measured_ms": spread(meas),
        "measured_max_over_min": max(meas) / min(meas),
        "measured_relative_iqr_median": statistics.median(noise),
        "predicted_ms": spread(pred),
        "abs_rel_error": {"median": statistics.median(err), "worst": max(err),
                          "worst_candidate": err.index(max(err)),
                          "goal_median_below": ERROR_GOAL,
                          "goal_met": statistics.median(err) < ERROR_GOAL},
        "signed_rel_error_median": statistics.median(signed),
        "spearman_predicted_vs_measured": spearman(pred, meas),
        "spearman_measured_vs_params": spearman(meas, [c["params"] for c in cands]),
        "table_fill": fill,
        "predictor": describe,
    }


# ---- report --------------------------------------------------------------------------------
def _rho(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


# ---- repeatability ----------------------------------------------------------------------------
RATIO_GOAL = 0.03  # max / min - 1 of the interleaved ratio over processes
ABSOLUTE_GOAL = 0.10  # max / min - 1 of the absolute median over processes


def repeat_networks(space: SearchSpace, seed: int) -> dict[str, dict[str, int]]:
    """The five networks the repeatability section measures (besides the base network)."""
    rng = random.Random(f"{seed}:repeat:{space.name}")
    base = space.base_widths()
    nets = {f"uniform {k}": space.snap({g: k * b for g, b in base.items()})
            for k in (0.75, 0.5, 0.3)}
    for i in range(2):
        nets[f"random {i}"] = space.snap({g: rng.uniform(0.3, 1.0) * b for g, b in base.items()})
    return nets


def repeat_worker(args: argparse.Namespace) -> int:
    """One process of the repeatability section: prints its measurements as one JSON line."""
    import torch

    space = SearchSpace.load(args.spaces.split(",")[0])
    cfg = LatencyConfig(backend=args.backends, threads=args.threads, warmup=args.warmup,
                        repeats=args.repeats, busy_spread=10.0)
    torch.manual_seed(0)
    build = space.family.build
    base = build(space.base_widths())
    nets = {n: build(w) for n, w in repeat_networks(space, args.seed).items()}
    shape = space.family.input_shape
    alone = {"base": measure(base, shape, cfg).to_dict()}
    alone.update({n: measure(m, shape, cfg).to_dict() for n, m in nets.items()})
    inter = {n: measure_ratio(m, base, shape, cfg).to_dict() for n, m in nets.items()}
    print(json.dumps({"alone": alone, "interleaved": inter, "device": device_info(cfg)}))
    return 0


def _max_over_min(values: Sequence[float]) -> float:
    return max(values) / min(values)


def repeatability(args: argparse.Namespace) -> int:
    t_start, load_start = time.perf_counter(), os.getloadavg()
    space = SearchSpace.load(args.spaces.split(",")[0])
    threads_list = [int(t) for t in args.threads_list.split(",")]
    settings = []
    for backend in [b for b in args.backends.split(",") if b]:
        for threads in threads_list:
            runs = []
            for _ in range(args.processes):
                cmd = [sys.executable, __file__, "--section", "repeat-worker", "--spaces",
                       space.name, "--backends", backend, "--threads", str(threads),
                       "--warmup", str(args.warmup), "--repeats", str(args.repeats),
                       "--seed", str(args.seed)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            nets = {}
            for n in repeat_networks(space, args.seed):
                absolute = [r["alone"][n]["median_ms"] for r in runs]
                before = [r["alone"][n]["median_ms"] / r["alone"]["base"]["median_ms"]
                          for r in runs]
                after = [r["interleaved"][n]["ratio"] for r in runs]
                nets[n] = {"absolute_ms": absolute, "ratio_separate": before,
                           "ratio_interleaved": after,
                           "ratio_spread_median": statistics.median(
                               r["interleaved"][n]["spread"] for r in runs),
                           "absolute_max_over_min": _max_over_min(absolute),
                           "separate_max_over_min": _max_over_min(before),
                           "interleaved_max_over_min": _max_over_min(after)}
            base_abs = [r["alone"]["base"]["median_ms"] for r in runs]
            worst = {k: max(v[k] for v in nets.values()) for k in
                     ("absolute_max_over_min", "separate_max_over_min",
                      "interleaved_max_over_min")}
            worst["absolute_max_over_min"] = max(worst["absolute_max_over_min"],
                                                 _max_over_min(base_abs))
            settings.append({"backend": backend, "threads": threads, "base_ms": base_abs,
                             "networks": nets, "worst": worst,
                             "goals_met": {"ratio": worst["interleaved_max_over_min"] - 1
                                           < RATIO_GOAL,
                                           "absolute": worst["absolute_max_over_min"] - 1
                                           < ABSOLUTE_GOAL},
                             "device": runs[0]["device"]})
            w = worst
            print(f"{backend} {threads} thread(s): worst max/min over {args.processes} "
                  f"processes: absolute {w['absolute_max_over_min']:.3f}, ratio of separate "
                  f"medians {w['separate_max_over_min']:.3f}, interleaved ratio "
                  f"{w['interleaved_max_over_min']:.3f}", flush=True)
    out = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "finished": now(), "wall_s": round(time.perf_counter() - t_start, 1),
        "hardware": hardware("cpu"), "versions": code_version(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "space": space.name, "networks": repeat_networks(space, args.seed),
        "settings_measured": {"processes": args.processes, "warmup": args.warmup,
                              "repeats": args.repeats},
        "goals": {"interleaved_ratio_max_over_min_below": 1 + RATIO_GOAL,
                  "absolute_max_over_min_below": 1 + ABSOLUTE_GOAL},
        "results": settings}
    write_json(args.out, out)
    rows = [[s["backend"], s["threads"], f"{s['worst']['absolute_max_over_min']:.3f}",
             f"{s['worst']['separate_max_over_min']:.3f}",
             f"{s['worst']['interleaved_max_over_min']:.3f}",
             "met" if s["goals_met"]["absolute"] else "MISSED",
             "met" if s["goals_met"]["ratio"] else "MISSED"] for s in settings]
    print(table(rows, ["backend", "threads", "absolute", "ratio (separate)",
                       "ratio (interleaved)", "goal abs <10%", "goal ratio <3%"]))
    print(f"worst max/min over {args.processes} processes and 5 networks of {space.name}; "
          f"load {load_start[0]:.1f} -> {out['load_average']['end'][0]:.1f}; wrote {args.out}")
    return 0


def channels(args: argparse.Namespace) -> int:
    from torch import nn

    from nas_prune.latency import measure_many, ratio_of

    t_start, load_start = time.perf_counter(), os.getloadavg()

    def layer(c: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                             nn.ReLU())

    counts = list(range(8, 65))
    out_rows: dict[str, Any] = {}
    for backend in [b for b in args.backends.split(",") if b]:
        cfg = LatencyConfig(backend=backend, threads=args.threads or 1, warmup=args.warmup,
                            repeats=args.repeats, busy_spread=10.0)
        ref = layer(32)
        ref_ms = None
        per = {}
        for c in counts:
            a, b = measure_many([layer(c), ref], [(c, 14, 14), (32, 14, 14)], cfg)
            r = ratio_of(a, b)
            ref_ms = ref_ms or min(b) / 1e6
            per[c] = {"ratio_to_32": round(r.value, 5), "spread": round(r.spread, 5),
                      "ms": round(r.value * ref_ms, 6),
                      "per_channel_vs_32": round(r.value * 32 / c, 5)}
        classes = {"16": [c for c in counts if c % 16 == 0],
                   "8 (not 16)": [c for c in counts if c % 8 == 0 and c % 16],
                   "4 (not 8)": [c for c in counts if c % 4 == 0 and c % 8],
                   "other": [c for c in counts if c % 4]}
        med = {k: statistics.median(per[c]["per_channel_vs_32"] for c in v)
               for k, v in classes.items()}
        # the cost of an odd count: each count against the next multiple of 8 above it
        up8 = [per[c]["ratio_to_32"] / per[min(64, -(-c // 8) * 8)]["ratio_to_32"]
               for c in counts if c % 8]
        out_rows[backend] = {"reference_ms": ref_ms, "per_count": per,
                             "per_channel_median_by_class": med,
                             "relative_to_multiples_of_16": {k: v / med["16"]
                                                             for k, v in med.items()},
                             "over_next_multiple_of_8": spread(up8)}
        print(f"{backend}: time per output channel relative to multiples of 16: " + ", ".join(
            f"{k} {v / med['16']:.2f}" for k, v in med.items()) +
            f"; a count not a multiple of 8 over the next multiple of 8 above it: median "
            f"{statistics.median(up8):.2f}, max {max(up8):.2f}", flush=True)
    out = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
           "finished": now(), "wall_s": round(time.perf_counter() - t_start, 1),
           "hardware": hardware("cpu"), "versions": code_version(),
           "load_average": {"start": load_start, "end": os.getloadavg()},
           "layer": "conv3x3 C->C + BatchNorm + ReLU, 14x14, batch 1",
           "settings": {"threads": args.threads or 1, "warmup": args.warmup,
                        "repeats": args.repeats}, "backends": out_rows}
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--section", choices=("predictor", "repeatability", "channels",
                                         "repeat-worker"),
                   default="predictor", help="predictor: the equal-FLOPs table (default); "
                   "repeatability: the same networks measured in separate processes")
    p.add_argument("--processes", type=int, default=5, help="repeatability: processes")
    p.add_argument("--threads-list", default="1,2", help="repeatability: thread counts")
    p.add_argument("--spaces", default="vgg_small_fmnist,resnet20_fmnist",
                   help="comma-separated search spaces")
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help=f"comma-separated latency backends (default {','.join(BACKENDS)})")
    p.add_argument("--candidates", type=int, default=50, help="equal-FLOPs candidates per space")
    p.add_argument("--flops-ratio", type=float, default=0.5,
                   help="the common FLOPs target as a ratio of the base network's")
    p.add_argument("--min-keep", type=float, default=0.25, help="lowest random keep ratio")
    p.add_argument("--max-keep", type=float, default=1.0, help="highest random keep ratio")
    p.add_argument("--no-rescale", action="store_true",
                   help="move the snapped random widths onto the target with refine_to_budget "
                        "alone (it pulls them toward uniform) instead of scaling them first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1, help="latency.batch_size")
    p.add_argument("--threads", type=int, default=None,
                   help="latency.threads (default: every core this process may run on)")
    p.add_argument("--warmup", type=int, default=10, help="latency.warmup")
    p.add_argument("--repeats", type=int, default=30, help="latency.repeats")
    p.add_argument("--table-dir", default=None,
                   help="latency.table_dir (default: a fresh temporary folder per space and "
                        "backend, so filling the table is timed from empty)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/latency.json"))
    args = p.parse_args(argv)
    if args.section == "repeat-worker":
        return repeat_worker(args)
    if args.section in ("repeatability", "channels"):
        if args.out == Path("benchmarks/results/latency.json"):
            args.out = Path(f"benchmarks/results/latency_{args.section}.json")
        return repeatability(args) if args.section == "repeatability" else channels(args)
    spaces = [s for s in args.spaces.split(",") if s]
    backends = [b for b in args.backends.split(",") if b]
    if args.candidates < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--candidates and --repeats must be >= 1, --warmup >= 0")
    if not 0 < args.min_keep <= args.max_keep <= 1:
        p.error("need 0 < --min-keep <= --max-keep <= 1")
    if not 0 < args.flops_ratio <= 1:
        p.error("--flops-ratio must be in (0, 1]")
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        p.error(f"--backends: choose from {', '.join(BACKENDS)}")

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    tmp = tempfile.TemporaryDirectory(prefix="nas-prune-latency-bench-")
    results: dict[str, Any] = {}
    devices: dict[str, Any] = {}
    try:
        for name in spaces:
            space = SearchSpace.load(name)
            base_flops = space.base_cost("flops")
            target = int(round(args.flops_ratio * base_flops))
            rng = random.Random(f"{args.seed}:{name}")
            t0 = time.perf_counter()
            cands, draw_stats = draw_candidates(
                space, args.candidates, target, rng, (args.min_keep, args.max_keep),
                not args.no_rescale, max_draws=max(200, 40 * args.candidates))
            draw_s = time.perf_counter() - t0
            print(f"{name}: {len(cands)} candidates at {target:,} FLOPs "
                  f"({args.flops_ratio} of base, +-{TOLERANCE:.0%}) from {draw_stats['draws']} "
                  f"draws in {draw_s:.1f} s", flush=True)

            predictors: dict[str, LatencyPredictor] = {}
            fills: dict[str, dict[str, Any]] = {}
            for backend in backends:
                table_dir = args.table_dir or os.path.join(tmp.name, name, backend)
                cfg = LatencyConfig(backend=backend, batch_size=args.batch_size,
                                    threads=args.threads, warmup=args.warmup,
                                    repeats=args.repeats, table_dir=table_dir)
                try:
                    pred = LatencyPredictor(space.family, cfg, divisor=space.divisor)
                except UserError as exc:
                    raise SystemExit(str(exc)) from None
                devices[backend] = device_info(cfg)
                entries0 = len(pred.table)
                t0 = time.perf_counter()
                pred.calibration()
                calib_s = time.perf_counter() - t0
                entries1 = len(pred.table)
                t0 = time.perf_counter()
                for c in cands:
                    c["predicted_ms"][backend] = pred.predict(c["widths"]) / 1e6
                cand_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                for c in cands:  # again, every unit now in the table: the lookup alone
                    pred.predict(c["widths"])
                warm_us = (time.perf_counter() - t0) / len(cands) * 1e6
                fills[backend] = {
                    "table_dir_given": args.table_dir is not None,
                    "entries_before": entries0, "entries_after_calibration": entries1,
                    "entries_after_candidates": len(pred.table),
                    "calibration_s": calib_s, "candidates_s": cand_s,
                    "total_s": calib_s + cand_s, "warm_predict_us": warm_us}
                predictors[backend] = pred
                print(f"  {backend}: table {len(pred.table)} entries filled in "
                      f"{calib_s + cand_s:.1f} s (calibration {calib_s:.1f} s)", flush=True)

            t0 = time.perf_counter()
            for i, c in enumerate(cands):
                order = backends if i % 2 == 0 else backends[::-1]
                for backend in order:
                    c["measured"][backend] = predictors[backend].measure(c["widths"]).to_dict()
                if (i + 1) % 10 == 0 or i + 1 == len(cands):
                    print(f"  measured {i + 1}/{len(cands)} candidates "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)

            summary: dict[str, Any] = {
                b: backend_summary(cands, b, fills[b], predictors[b].describe())
                for b in backends}
            if "torch" in backends and "onnxruntime" in backends:
                t_ms = [c["measured"]["torch"]["median_ms"] for c in cands]
                o_ms = [c["measured"]["onnxruntime"]["median_ms"] for c in cands]
                ratio = [t / o for t, o in zip(t_ms, o_ms, strict=True)]
                for c, r in zip(cands, ratio, strict=True):
                    c["torch_over_onnxruntime"] = r
                summary["torch_vs_onnxruntime"] = {
                    "ratio_measured_torch_over_onnxruntime": spread(ratio),
                    "spearman_measured": spearman(t_ms, o_ms)}
            flops = [c["flops"] for c in cands]
            results[name] = {
                "base_widths": space.base_widths(), "base_flops": base_flops,
                "target_flops": target, "flops_tolerance": TOLERANCE,
                "flops_ratio_range": [min(flops) / base_flops, max(flops) / base_flops],
                "params_range": [min(c["params"] for c in cands),
                                 max(c["params"] for c in cands)],
                "draw": {**draw_stats, "seconds": draw_s}, "summary": summary,
                "candidates": cands}
    finally:
        tmp.cleanup()

    out = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None
                                                       else sys.argv[1:])]),
        "finished": now(), "wall_s": round(time.perf_counter() - t_start, 1),
        "hardware": hardware("cpu"), "versions": code_version(), "latency_devices": devices,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "settings": {"candidates": args.candidates, "flops_ratio": args.flops_ratio,
                     "keep_range": [args.min_keep, args.max_keep],
                     "rescale": not args.no_rescale, "seed": args.seed,
                     "batch_size": args.batch_size, "threads": args.threads,
                     "warmup": args.warmup, "repeats": args.repeats,
                     "table_dir": args.table_dir},
        "note": "measured: median of `repeats` timed forward passes (eval, random weights, "
                "fixed random input); the two backends measured one after the other per "
                "candidate, their order alternating; predictor error is |pred / meas - 1| "
                "against those measurements",
        "spaces": results,
    }
    write_json(args.out, out)

    hw = out["hardware"]
    threads = next(iter(devices.values()))["threads"] if devices else None
    print(f"\n{args.candidates} candidates per space at {args.flops_ratio} of base FLOPs "
          f"(+-{TOLERANCE:.0%}), batch {args.batch_size}, {threads} threads, median of "
          f"{args.repeats} runs each; {hw['cpu']} x{hw['cpu_count']}, load "
          f"{load_start[0]:.1f} -> {out['load_average']['end'][0]:.1f}")
    rows = []
    for name, res in results.items():
        for b in backends:
            s = res["summary"][b]
            m, e, f = s["measured_ms"], s["abs_rel_error"], s["table_fill"]
            fit = s["predictor"]["fit"]
            rows.append([f"{name} {b}", f"{m['min']:.3f}", f"{m['median']:.3f}",
                         f"{m['max']:.3f}", f"{s['measured_max_over_min']:.2f}x",
                         f"{s['measured_relative_iqr_median']:.1%}",
                         f"{e['median']:.1%}", f"{e['worst']:.1%}",
                         _rho(s["spearman_predicted_vs_measured"]),
                         _rho(s["spearman_measured_vs_params"]),
                         f"{f['total_s']:.1f}", f"{f['entries_after_candidates']}",
                         f"{fit['a']:.2f}", f"{fit['b_ms']:+.3f}"])
    print(table(rows, ["space backend", "min ms", "med ms", "max ms", "max/min", "IQR/med",
                       "err med", "err worst", "rho p~m", "rho m~par", "table s", "entries",
                       "fit a", "fit b ms"]))
    print(f"goal: predictor median |pred/meas - 1| < {ERROR_GOAL:.0%}: " + ", ".join(
        f"{name} {b} {'met' if res['summary'][b]['abs_rel_error']['goal_met'] else 'MISSED'}"
        for name, res in results.items() for b in backends))
    side = [[name, f"{v['ratio_measured_torch_over_onnxruntime']['median']:.2f}x",
             f"{v['ratio_measured_torch_over_onnxruntime']['min']:.2f}x",
             f"{v['ratio_measured_torch_over_onnxruntime']['max']:.2f}x",
             _rho(v["spearman_measured"])]
            for name, res in results.items()
            if (v := res["summary"].get("torch_vs_onnxruntime"))]
    if side:
        print()
        print(table(side, ["torch / onnxruntime (measured, per candidate)", "median", "min",
                           "max", "rho"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
