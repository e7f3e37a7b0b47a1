"""Our FLOPs and parameter counts against a Channel-Bench-Macro results table, allocation by
allocation.

For every key of the table (digit k of group g: ``round(k * base_g / 4)`` channels) the width
vector is built in the search space (``search_spaces/cbm_resnet.yaml`` by default), counted by
:mod:`nas_prune.flops` (multiply-accumulates of conv and linear layers; all parameters, BatchNorm
included) and compared with the table's ``flops`` and ``params``. Prints how many allocations
match exactly, the largest relative differences, and whether the difference is a constant factor
or offset; ``--out`` keeps the summary as JSON.

    python benchmarks/channel_bench_check.py \\
        --table ../shared/data/channel-bench-macro/Results_ResNet.json --space cbm_resnet

The table is read from a path and never copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nas_prune._io import write_json
from nas_prune._meta import code_version, now
from nas_prune.table import ResultsTable, widths_of_key
from nas_prune.widths import SearchSpace

DEFAULT_TABLE = "../shared/data/channel-bench-macro/Results_ResNet.json"


def compare(table: ResultsTable, space: SearchSpace) -> dict:
    out: dict = {}
    for metric in ("flops", "params"):
        exact, worst, diffs, ratios = 0, (0.0, None), set(), set()
        n = 0
        for key, e in table.entries.items():
            ours = space.count(widths_of_key(key, space))[0 if metric == "flops" else 1]
            theirs = getattr(e, metric)
            if theirs is None:
                continue
            n += 1
            exact += ours == theirs
            rel = abs(theirs - ours) / ours
            if rel > worst[0] or worst[1] is None:
                worst = (rel, key)
            diffs.add(theirs - ours)
            ratios.add(round(theirs / ours, 9))
        out[metric] = {"allocations": n, "exact": exact, "max_rel_diff": worst[0],
                       "worst_key": worst[1],
                       "constant_offset": next(iter(diffs)) if len(diffs) == 1 else None,
                       "constant_factor": next(iter(ratios)) if len(ratios) == 1 else None}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=DEFAULT_TABLE, help="results table JSON")
    ap.add_argument("--space", default="cbm_resnet", help="search space name or YAML")
    ap.add_argument("--out", help="write the summary here (JSON)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    table = ResultsTable.load(args.table)
    space = SearchSpace.load(args.space)
    res = compare(table, space)
    for metric, r in res.items():
        print(f"{metric}: {r['exact']:,} of {r['allocations']:,} allocations equal; largest "
              f"relative difference {r['max_rel_diff']:.2e} (key {r['worst_key']}); constant "
              f"offset {r['constant_offset']}, constant factor {r['constant_factor']}")
    summary = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
               "table": str(args.table), "space": space.name, "when": now(),
               "code": code_version(), "wall_s": round(time.perf_counter() - t0, 2),
               "convention": "FLOPs: multiply-accumulates of conv and linear layers, one "
                             "32x32 image; params: all parameters, BatchNorm included",
               **res}
    if args.out:
        write_json(args.out, summary)
    print(json.dumps({"wall_s": summary["wall_s"]}))
    return 0 if all(r["exact"] == r["allocations"] for r in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
