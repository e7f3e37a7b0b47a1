"""Side-by-side table of the proposals written by reports/graph_seeds/run.sh.

    python reports/graph_seeds/table.py RUN_ROOT > reports/graph_seeds/proposals.md

For each space: one row per width group (base, then each method's proposed width), the FLOPs
and params ratios, and the times each method's log reports (base training, proposal).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from nas_prune import load_spec
from nas_prune.widths import SearchSpace, space_source, with_input

METHODS = ("uniform", "l1norm", "thinet", "regression", "slimming", "autopruner")
SPACES = ("resnet18_w16_data", "mobilenet_v2_half_data")


def _times(log: Path) -> tuple[str, str]:
    m = re.search(r"time: base training ([\d.]+)s, proposal ([\d.]+)s", log.read_text())
    return (m.group(1), m.group(2)) if m else ("-", "-")


def main(root: Path) -> None:
    for space in SPACES:
        found = {m: root / space / "proposals" / f"{m}-0.5.yaml" for m in METHODS}
        found = {m: p for m, p in found.items() if p.is_file()}
        if not found:
            continue
        specs = {m: load_spec(p) for m, p in found.items()}
        first = next(iter(specs.values()))
        raw = with_input(space_source(space)[1], first.input)
        base = SearchSpace.from_dict(raw, name=space).base_widths()
        print(f"### {space}\n")
        print("| group | base | " + " | ".join(specs) + " |")
        print("|---|---:|" + "---:|" * len(specs))
        for g in first.widths:
            print(f"| {g} | {base[g]} | "
                  + " | ".join(str(s.widths[g]) for s in specs.values()) + " |")
        print("| FLOPs / base | | " + " | ".join(
            f"{s.provenance['achieved_ratio']:.4f}" for s in specs.values()) + " |")
        print("| params / base | | " + " | ".join(
            f"{s.params / s.provenance['base_params']:.3f}" for s in specs.values()) + " |")
        accs = [((s.provenance.get("base") or {}).get("metrics") or {}).get("val_acc")
                for s in specs.values()]
        print("| base val acc | | " + " | ".join(f"{a:.4f}" if a is not None else "-"
                                                 for a in accs) + " |")
        times = [_times(root / f"{space}-{m}.log") for m in specs]
        print("| base training s | | " + " | ".join(t[0] for t in times) + " |")
        print("| proposal s | | " + " | ".join(t[1] for t in times) + " |\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/graph_seeds"))
