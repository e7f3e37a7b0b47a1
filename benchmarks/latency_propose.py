"""Does a latency proposal repeat, and what happens to it on a busy machine?

Runs ``nas-prune propose --seed-method uniform --metric latency --budget B`` as a new user would,
each in a fresh process, ``--runs`` times for each budget (``--budgets``), with one latency table
folder shared by all runs of a condition (fresh at its start, so the first run measures and
calibrates, the later ones read). Two conditions: ``quiet`` (nothing else started), and
``busy``: a training job of its own (a two-thread conv net forward/backward loop on every core,
as another user's training would) runs for the whole condition. Per run: exit status, the widths,
the measured ratio with its quartiles, the band, busy or not, where the calibration came from, and
the error line when it failed.

    python benchmarks/latency_propose.py --out benchmarks/results/latency_propose.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nas_prune._io import write_json
from nas_prune._meta import code_version, hardware, now

LOAD = """
import sys, time, torch
torch.set_num_threads(2)
m = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(),
                        torch.nn.Conv2d(64, 64, 3, padding=1))
opt = torch.optim.SGD(m.parameters(), lr=0.01)
x = torch.randn(64, 3, 32, 32)
while True:
    opt.zero_grad(); m(x).sum().backward(); opt.step()
"""


def one_run(budget: str, table_dir: Path, work: Path, extra: list[str]) -> dict:
    out = work / f"p{budget}.yaml"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "nas_prune.cli", "propose", "--seed-method", "uniform",
           "--metric", "latency", "--budget", budget, "--out", str(out), "--run-dir",
           str(work / "r"), "--set", f"latency.table_dir={table_dir}", *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    rec = {"budget": float(budget), "exit": p.returncode, "wall_s": round(time.perf_counter()
                                                                          - t0, 1)}
    errors = [line for line in p.stderr.splitlines() if "error" in line or "warning" in line
              or "busy" in line]
    rec["stderr"] = errors
    if p.returncode == 0:
        spec = yaml.safe_load(out.read_text())
        lat = spec["provenance"]["latency"]
        rec.update({"widths": spec["widths"], "ratio": lat["measured"]["ratio"],
                    "low": lat["measured"]["low"], "high": lat["measured"]["high"],
                    "band": lat["band"], "within_band": lat["within_band"], "busy": lat["busy"],
                    "spread": lat["spread"], "calibration": lat["calibration"],
                    "source": lat["source"], "corrections": lat["corrections"]})
    return rec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default="0.4,0.5,0.6,0.7")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--conditions", default="quiet,busy")
    p.add_argument("--set", action="append", default=[], help="extra --set for propose")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/latency_propose.json"))
    args = p.parse_args()
    extra = [x for s in args.set for x in ("--set", s)]
    t_start = time.perf_counter()
    results = {}
    for cond in args.conditions.split(","):
        load = subprocess.Popen([sys.executable, "-c", LOAD]) if cond == "busy" else None
        try:
            with tempfile.TemporaryDirectory(prefix="nas-prune-lat-") as tmp:
                work = Path(tmp)
                runs = []
                for i in range(args.runs):
                    for b in args.budgets.split(","):
                        rec = one_run(b, work / "table", work, extra)
                        rec["run"] = i
                        runs.append(rec)
                        print(cond, json.dumps({k: rec.get(k) for k in (
                            "budget", "exit", "ratio", "band", "busy", "calibration",
                            "source", "corrections")}), rec["stderr"][-1:], flush=True)
                results[cond] = runs
        finally:
            if load is not None:
                load.kill()
    summary = {}
    for cond, runs in results.items():
        for b in args.budgets.split(","):
            rs = [r for r in runs if r["budget"] == float(b)]
            ok = [r for r in rs if r["exit"] == 0]
            widths = {json.dumps(r["widths"], sort_keys=True) for r in ok}
            summary[f"{cond} {b}"] = {
                "succeeded": len(ok), "of": len(rs), "distinct_widths": len(widths),
                "busy_runs": sum(bool(r.get("busy")) for r in ok),
                "ratios": [r["ratio"] for r in ok],
                "failures": [r["stderr"][-1] if r["stderr"] else f"exit {r['exit']}"
                             for r in rs if r["exit"] != 0]}
    write_json(args.out, {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                          "finished": now(), "wall_s": round(time.perf_counter() - t_start, 1),
                          "hardware": hardware("cpu"), "versions": code_version(),
                          "load_average_end": os.getloadavg(), "summary": summary,
                          "runs": results})
    for k, v in summary.items():
        print(f"{k}: {v['succeeded']}/{v['of']} succeeded, {v['distinct_widths']} distinct "
              f"widths, {v['busy_runs']} busy, ratios {v['ratios']}, failures {v['failures']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
