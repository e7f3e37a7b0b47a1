"""The committed evidence winner from scratch against the same widths fine-tuned from a base.

The winner of ``reports/search_evidence/vgg_small_25`` (the ``seeds`` arm: ``vgg_small_fmnist``
at 25% of the FLOPs, evidence recipe: 10,000 training images, 3 base epochs, cosine, lr 0.05) is
trained on the evaluation seeds twice, with the tool's own final-table code
(:mod:`nas_prune.search.finalize`):

* **scratch**: :func:`retrain`, Scratch-B epochs (6 at 25% of the FLOPs), the row ``best``;
* **fine-tuned**: :func:`finetune_best`, the row ``best (fine-tuned)``: the full-width network
  trained from scratch for ``seed_method.base_epochs`` (3) on the same seed, cut to the widths by
  filter L1 norm and trained ``--finetune-epochs`` (6) with the recipe's whole schedule again.

Both rows on the same seeds, so the difference is paired; compute is in epochs of the full-width
network (the base network's training counted). Writes ``OUT.json`` (every per-seed value) and
``OUT.md``::

    python benchmarks/finetuned_row.py --seeds 5 --out benchmarks/results/finetuned_row
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "reports/search_evidence/vgg_small_25/b0.25/seeds/setup.json"
COMPARE = ROOT / "reports/search_evidence/vgg_small_25/compare.json"


def main(argv: list[str] | None = None) -> int:
    from nas_prune._meta import code_version, hardware
    from nas_prune.search.evaluate import SearchSetup
    from nas_prune.search.finalize import compute_base_epochs, finetune_best, retrain
    from nas_prune.seeding import final_seeds
    from nas_prune.stats import mean_std, paired_difference

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--finetune-epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="runs/finetuned_row", help="model files go here")
    p.add_argument("--out", default="benchmarks/results/finetuned_row")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    stored = SearchSetup.from_dict(json.loads(SETUP.read_text()), device="cpu")
    cfg = stored.cfg
    cfg = dataclasses.replace(cfg, search=dataclasses.replace(
        cfg.search, final_seeds=args.seeds, finetune_epochs=args.finetune_epochs))
    setup = dataclasses.replace(stored, cfg=cfg)
    winner = next(r for r in json.loads(COMPARE.read_text())["results"][0]["rows"]
                  if r["name"] == "arm:seeds")
    widths = dict(winner["widths"])
    ratio = setup.cost_attrs(widths)["flops_ratio"]
    work = Path(args.work)

    def say(name: str, seed: int, run: dict) -> None:
        print(f"{name} seed {seed}: test {run['test_acc']} val {run['val_acc']} "
              f"{run['epochs']} epochs {run['wall_time']:.1f}s", flush=True)

    t0 = time.perf_counter()
    tuned = finetune_best(setup, widths, out_dir=work / "best-finetuned", on_result=say)
    scratch = retrain(setup, widths, name="best", out_dir=work / "best", on_result=say)
    wall = time.perf_counter() - t0
    a = {r["seed"]: r["test_acc"] for r in tuned}
    b = {r["seed"]: r["test_acc"] for r in scratch}
    diff = paired_difference(a, b)
    rows = {}
    for name, runs in (("scratch", scratch), ("fine-tuned", tuned)):
        m, s, n = mean_std([r["test_acc"] for r in runs])
        rows[name] = {"runs": runs, "test_mean": m, "test_std": s, "n": n,
                      "compute_base_epochs": compute_base_epochs(runs, ratio)}
    out = {"command": "python benchmarks/finetuned_row.py " + " ".join(argv or sys.argv[1:]),
           "widths": widths, "flops_ratio": ratio, "seeds": final_seeds(cfg),
           "committed_scratch_test_acc": winner["test_acc"], "rows": rows,
           "difference_finetuned_minus_scratch": diff.to_dict(),
           "wall_time_s": round(wall, 1), "threads": args.threads,
           "hardware": hardware(torch.device("cpu")), "versions": code_version()}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2, default=str))
    lo, hi = diff.low, diff.high
    lines = [
        "# The evidence winner: from scratch vs fine-tuned from a base network",
        "",
        f"`{out['command']}` (commit {out['versions'].get('git') or '?'}), "
        f"{out['hardware']}, {args.threads} thread(s), wall {wall:.0f} s.",
        "",
        f"Widths {widths} ({ratio:.3f} of the base FLOPs), evaluation seeds {out['seeds']}.",
        "",
        "| row | test acc (mean +- std, n) | compute (full-width epochs) |",
        "|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {100 * r['test_mean']:.2f} +- {100 * r['test_std']:.2f} "
                     f"(n={r['n']}) | {r['compute_base_epochs']} |")
    lines += ["", f"Fine-tuned minus scratch, paired: {100 * diff.mean:+.2f} points, 95% interval "
              f"[{100 * lo:+.2f}, {100 * hi:+.2f}], n = {diff.n}: {diff.verdict}."
              if lo is not None else f"Fine-tuned minus scratch: n = {diff.n}, no interval."]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
