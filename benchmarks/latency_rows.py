"""The final rows of a latency comparison measured again, all together, on this machine.

``nas-prune compare --metric latency`` measures each final row against the base network once,
at the end of a run that may have shared the machine. This reads its ``compare.json`` and
measures every distinct row with the base network in ``--processes`` fresh processes, each
measuring all of them interleaved round by round (:func:`nas_prune.latency.measure_many`), so
that rows are compared under the same conditions. Per row: the ratio to the base network in each
process (ratio of minima, :func:`nas_prune.latency.ratio_of`), their spread across processes
(max / min), and the base network's own median.

    python benchmarks/latency_rows.py RUN/compare.json --out reports/latency_evidence/rows.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from nas_prune._io import write_json
from nas_prune._meta import code_version, hardware, now


def measure(compare_json: Path, budget_index: int) -> dict:
    """One process: every distinct row and the base network, measured interleaved."""
    import torch

    from nas_prune.config import Config, from_dict
    from nas_prune.latency import Measurement, measure_many, ratio_of
    from nas_prune.widths import SearchSpace

    out = json.loads(compare_json.read_text())
    cfg = from_dict(Config, out["config"])
    space = SearchSpace.load(cfg.space)
    rows = out["results"][budget_index]["rows"]
    distinct: dict[str, dict[str, int]] = {}
    for r in rows:
        distinct.setdefault(json.dumps(r["widths"], sort_keys=True), r["widths"])
    torch.manual_seed(0)
    base = space.family.build(space.base_widths())
    nets = [base] + [space.family.build(dict(w)) for w in distinct.values()]
    times = measure_many(nets, space.family.input_shape, cfg.latency)
    ratios = {key: ratio_of(t, times[0], cfg.latency.busy_spread).to_dict()
              for key, t in zip(distinct, times[1:], strict=True)}
    return {"base_median_ms": Measurement.of(times[0]).median_ms, "ratios": ratios}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("compare_json", type=Path)
    p.add_argument("--budget-index", type=int, default=0)
    p.add_argument("--processes", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.compare_json, args.budget_index)))
        return 0
    t0 = time.perf_counter()
    load = os.getloadavg()
    runs = []
    for _ in range(args.processes):
        res = subprocess.run([sys.executable, __file__, str(args.compare_json), "--one",
                              "--budget-index", str(args.budget_index), "--out", "-"],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    data = json.loads(args.compare_json.read_text())
    res = data["results"][args.budget_index]
    rows = []
    for r in res["rows"]:
        key = json.dumps(r["widths"], sort_keys=True)
        vals = [run["ratios"][key]["ratio"] for run in runs]
        rows.append({"name": r["name"], "widths": r["widths"], "ratios": vals,
                     "median": statistics.median(vals),
                     "max_over_min": max(vals) / min(vals),
                     "busy": [run["ratios"][key]["busy"] for run in runs],
                     "in_run": r.get("latency_ratio"), "flops_ratio": r["flops_ratio"],
                     "params_ratio": r.get("params_ratio")})
    write_json(args.out, {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "finished": now(),
        "wall_s": round(time.perf_counter() - t0, 1), "load_average_at_start": load,
        "load_average_at_end": os.getloadavg(), "hardware": hardware("cpu"),
        "versions": code_version(), "budget": res["budget"],
        "latency": data["config"].get("latency"),
        "base_median_ms": [run["base_median_ms"] for run in runs], "rows": rows})
    for r in rows:
        print(f"{r['name']:<14} ratio {r['median']:.3f} (processes {min(r['ratios']):.3f}-"
              f"{max(r['ratios']):.3f}; in the run {r['in_run']})  FLOPs {r['flops_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
