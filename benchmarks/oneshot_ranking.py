"""Does one-shot screening rank candidates? A small first measurement, not the evidence.

Draws ``--candidates`` width vectors at the budget (as ``benchmarks/oneshot_speed.py``: the
search's own candidate space around uniform scaling), then

* trains the weight-sharing network (``search.screening`` of the config) and screens every
  candidate with it;
* trains the base network (full width, the config's recipe for ``seed_method.base_epochs``) and
  screens every candidate cut from it with its channels ordered by Li's L1-norm importance
  (EagleEye-style adaptive BatchNorm, :class:`nas_prune.oneshot.BaseNetCandidates`);
* trains every candidate from scratch once at the top rung (``train_spec``, Scratch-B), on one
  seed;

and reports Spearman and Kendall of each screening score with the from-scratch validation
accuracy (n = candidates). One seed per candidate: the seed-to-seed ceiling is not measured
here. Every number goes into ``--out``::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/oneshot_ranking.py \\
        --config evidence_vgg_small_25 --candidates 8 \\
        --out benchmarks/results/oneshot_ranking.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from nas_prune._io import write_json
from nas_prune._meta import code_version, hardware, now
from nas_prune.config import load_config, to_dict
from nas_prune.data import load_data
from nas_prune.oneshot import (
    BaseNetCandidates,
    SharedNet,
    screen,
    screening_data,
    train_shared,
)
from nas_prune.scratch import train_spec
from nas_prune.stats import binomial_std
from nas_prune.surgery import filter_l1_scores
from nas_prune.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oneshot_speed import around_uniform, draw  # noqa: E402


def _corr(xs: list[float], ys: list[float]) -> dict:
    from scipy.stats import kendalltau, spearmanr

    return {"n": len(xs), "spearman": float(spearmanr(xs, ys).statistic),
            "kendall": float(kendalltau(xs, ys).statistic)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="evidence_vgg_small_25")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--set", nargs="*", default=[], help="config overrides (a smoke run)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.config, ["device=cpu", *args.set])
    sc = cfg.search.screening
    space, start, cspace = around_uniform(cfg)
    name = space.name
    budget, metric = cfg.seed_method.budget, cfg.seed_method.metric
    data = load_data(cfg.data, device="cpu")
    cands = draw(cspace, start, args.candidates, cfg.random_seed)
    sdata = screening_data(data, sc, seed=cfg.random_seed)
    t_all = time.perf_counter()

    shared = SharedNet(space, seed=cfg.random_seed)
    rec = train_shared(shared, data, cfg.train, sc, seed=cfg.random_seed)
    shared.model.eval()
    print(f"shared network: {rec['wall_time']:.0f} s, {rec['cost_base_trainings']:.2f} base "
          f"trainings", flush=True)
    t0 = time.perf_counter()
    shared_scores = [screen(shared.extract(w), sdata) for w in cands]
    shared_screen_s = time.perf_counter() - t0

    torch.manual_seed(cfg.random_seed)
    base = space.family.build(space.max_widths())
    base_res = train(base, data, cfg.train, epochs=cfg.seed_method.base_epochs,
                     seed=cfg.random_seed)
    base.eval()
    print(f"base network: {base_res.wall_time:.0f} s, val {base_res.val_acc_final:.4f}",
          flush=True)
    cut = BaseNetCandidates(space, base, filter_l1_scores(base, space.family))
    t0 = time.perf_counter()
    base_scores = [screen(cut.extract(w), sdata) for w in cands]
    base_screen_s = time.perf_counter() - t0

    top_epochs = cfg.search.rungs[-1].epochs if cfg.search.rungs else cfg.train.epochs
    runs = []
    for i, w in enumerate(cands):
        t0 = time.perf_counter()
        result, _ = train_spec(space.spec(w), cfg, epochs=top_epochs, seed=cfg.random_seed)
        runs.append({"widths": w, "val_acc": result.val_acc_final, "epochs": result.epochs_run,
                     "seconds": round(time.perf_counter() - t0, 1),
                     "shared_score": shared_scores[i], "base_score": base_scores[i]})
        print(f"candidate {i}: val {result.val_acc_final:.4f}, shared {shared_scores[i]:.3f}, "
              f"base {base_scores[i]:.3f}", flush=True)
    val = [r["val_acc"] for r in runs]
    summary = {
        "shared_vs_scratch": _corr(shared_scores, val),
        "base_adaptive_bn_vs_scratch": _corr(base_scores, val),
        "scratch_val_range": [min(val), max(val)],
        "binomial_std_scratch_val": binomial_std(sum(val) / len(val), len(data.val)),
        "binomial_std_screen": binomial_std(sum(val) / len(val), sdata.val_y.numel()),
        "shared_training": {k: rec[k] for k in ("wall_time", "cost_base_trainings",
                                                "train_loss")},
        "shared_screen_s": round(shared_screen_s, 2), "base_screen_s": round(base_screen_s, 2),
        "base_training_s": round(base_res.wall_time, 1), "base_val_acc": base_res.val_acc_final,
    }
    write_json(args.out, {
        "command": " ".join(["OMP_NUM_THREADS=1 taskset -c 1 python",
                             f"benchmarks/{Path(__file__).name}", *(argv or sys.argv[1:])]),
        "finished": now(), "wall_s": round(time.perf_counter() - t_all, 1),
        "hardware": hardware("cpu"),
        "pinned": "one core (taskset -c 1), OMP_NUM_THREADS=1; the 2-core machine was shared "
                  "with other jobs",
        "versions": code_version(), "config": args.config, "space": name,
        "budget": {"metric": metric, "ratio": budget}, "screening": to_dict(sc),
        "train": to_dict(cfg.train), "top_rung_base_epochs": top_epochs,
        "seed": cfg.random_seed, "summary": summary, "candidates": runs,
    })
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
