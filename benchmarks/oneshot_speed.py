"""Is one-shot screening cheap enough to matter? Screening N candidates against training one
candidate from scratch 3 times, side by side in one run.

Draws ``--candidates`` width vectors at the budget from the search's own candidate space (random
multipliers in [0.5, 1.5] per group around uniform scaling, projected onto the budget, as
``benchmarks/fidelity_ranking.py`` does), then in ``--rounds`` interleaved rounds (so a change of
the machine's load hits both sides alike) screens a share of them (:func:`nas_prune.oneshot.screen`:
build the candidate from the shared network, recalibrate BatchNorm on the fixed training batches,
score on the fixed validation subset) and trains one candidate (uniform scaling at the budget)
from scratch with the config's recipe at the top rung (``train_spec``, as a search trial: Scratch-B
epochs, validation every epoch). Also times ``--sandwich-steps`` steps of weight-sharing training
(the one-shot method's up-front cost, stated per epoch of the training split).

The screening time does not depend on the shared weights, so the shared network is untrained
here; its scores are not recorded. Run it pinned to one core::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/oneshot_speed.py \\
        --config evidence_vgg_small_25 --candidates 1000 \\
        --out benchmarks/results/oneshot_speed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

import torch

from nas_prune._io import write_json
from nas_prune._meta import code_version, hardware, now
from nas_prune.budget import check_budget, uniform_widths
from nas_prune.config import load_config, to_dict
from nas_prune.data import load_data
from nas_prune.errors import UserError
from nas_prune.oneshot import OneShotConfig, SharedNet, screen, screening_data, train_shared
from nas_prune.scratch import resolve_space, train_spec
from nas_prune.search.space import MULT, START, CandidateSpace
from nas_prune.widths import SearchSpace


def draw(cspace: CandidateSpace, start: dict[str, int], n: int, seed: int, *,
         measured: bool = True) -> list[dict]:
    """``start`` and ``n - 1`` distinct candidates around it. Under a latency budget
    ``measured`` decodes as a trial does (each candidate measured, kept within the band) and
    otherwise on the predicted latency alone, as the search's screening draws."""
    rng = random.Random(seed)
    out, seen = [start], {tuple(start.values())}
    decode = cspace.decode if measured else cspace.decode_predicted
    for _ in range(n * 50):
        if len(out) >= n:
            break
        params = {START: "uniform", **{f"{MULT}{g}": rng.uniform(0.5, 1.5)
                                       for g in cspace.groups}}
        c = decode(params)
        if c.widths is not None and tuple(c.widths.values()) not in seen:
            seen.add(tuple(c.widths.values()))
            out.append(c.widths)
    if len(out) < n:
        raise UserError(f"--candidates {n}: only {len(out)} distinct candidates land on the "
                        f"budget in {n * 50} draws; ask for fewer")
    return out


def around_uniform(cfg) -> tuple[SearchSpace, dict[str, int], CandidateSpace]:
    """The config's space, uniform at its budget, and the candidate space around uniform.

    Under a latency budget (``seed_method.metric: latency``) the space carries the config's
    latency model and the candidate space measures and corrects as the search does."""
    _, _, space = resolve_space(cfg)
    budget, metric = cfg.seed_method.budget, cfg.seed_method.metric
    start = uniform_widths(space, budget, metric)
    cspace = CandidateSpace(space, starts={"uniform": start}, metric=metric,
                            target=check_budget(space, budget, metric),
                            tolerance=cfg.search.tolerance,
                            latency=dataclasses.asdict(cfg.latency) if metric == "latency"
                            else None)
    return space, start, cspace


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="evidence_vgg_small_25")
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--trainings", type=int, default=3)
    p.add_argument("--recal-batches", type=int, default=None, help="default: the config's")
    p.add_argument("--recal-batch-size", type=int, default=None)
    p.add_argument("--val-images", type=int, default=None)
    p.add_argument("--sandwich-steps", type=int, default=10)
    p.add_argument("--set", nargs="*", default=[], help="config overrides (a smoke run)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.config, ["device=cpu", *args.set])
    sc = cfg.search.screening
    sc = OneShotConfig(**{**to_dict(sc), **{k: v for k, v in (
        ("recal_batches", args.recal_batches), ("recal_batch_size", args.recal_batch_size),
        ("val_images", args.val_images)) if v is not None}})
    space, start, cspace = around_uniform(cfg)
    name, target = space.name, cspace.target
    budget, metric = cfg.seed_method.budget, cfg.seed_method.metric
    data = load_data(cfg.data, device="cpu")
    t0 = time.perf_counter()
    cands = draw(cspace, start, args.candidates, cfg.random_seed, measured=False)
    draw_s = time.perf_counter() - t0
    shared = SharedNet(space, seed=cfg.random_seed)
    t0 = time.perf_counter()
    sdata = screening_data(data, sc, seed=cfg.random_seed)
    prep_s = time.perf_counter() - t0
    top_epochs = cfg.search.rungs[-1].epochs if cfg.search.rungs else cfg.train.epochs
    spec = space.spec(start)
    screen_s, train_runs = [], []
    per_round = -(-len(cands) // args.trainings)
    for r in range(args.trainings):
        t0 = time.perf_counter()
        for w in cands[r * per_round:(r + 1) * per_round]:
            screen(shared.extract(w), sdata)
        screen_s.append(time.perf_counter() - t0)
        print(f"round {r}: screened {len(cands[r * per_round:(r + 1) * per_round])} in "
              f"{screen_s[-1]:.1f} s", flush=True)
        t0 = time.perf_counter()
        result, _ = train_spec(spec, cfg, epochs=top_epochs, seed=cfg.random_seed + r)
        train_runs.append({"seed": cfg.random_seed + r, "epochs": result.epochs_run,
                           "val_acc": result.val_acc_final,
                           "seconds": round(time.perf_counter() - t0, 2)})
        print(f"round {r}: trained from scratch in {train_runs[-1]['seconds']} s "
              f"(val {result.val_acc_final:.4f})", flush=True)
    # the up-front cost: a few steps of sandwich-rule training, per step and per epoch
    n_sub = args.sandwich_steps * cfg.train.batch_size
    sub = dataclasses.replace(data, train=data.train.subset(n_sub, torch.Generator()
                                                            .manual_seed(0)))
    rec = train_shared(shared, sub, cfg.train, OneShotConfig(**{**to_dict(sc), "epochs": 1}),
                       seed=cfg.random_seed)
    step_s = rec["wall_time"] / max(1, rec["steps"])
    steps_per_epoch = len(data.train) // cfg.train.batch_size
    total_screen = sum(screen_s) + draw_s + prep_s
    total_train = sum(r["seconds"] for r in train_runs)
    summary = {
        "candidates": len(cands), "trainings": len(train_runs),
        "screen_seconds": round(sum(screen_s), 2),
        "draw_seconds": round(draw_s, 2), "screening_data_seconds": round(prep_s, 2),
        "screen_seconds_per_candidate": round(sum(screen_s) / len(cands), 4),
        "train_seconds": [r["seconds"] for r in train_runs],
        "train_seconds_total": round(total_train, 2),
        "ratio_trainings_over_screening": round(total_train / total_screen, 3),
        "goal_met": total_screen < total_train,
        "sandwich_seconds_per_step": round(step_s, 3),
        "sandwich_steps_per_epoch": steps_per_epoch,
        "sandwich_seconds_per_epoch_estimate": round(step_s * steps_per_epoch, 1),
        # one sandwich epoch in trainings of the base network (train.epochs epochs at the base
        # widths), by FLOPs
        "sandwich_cost_base_trainings_per_epoch": round(rec["cost_base_trainings"], 3),
    }
    write_json(args.out, {
        "command": " ".join(["OMP_NUM_THREADS=1 taskset -c 1 python",
                             f"benchmarks/{Path(__file__).name}", *(argv or sys.argv[1:])]),
        "finished": now(), "hardware": hardware("cpu"), "threads": torch.get_num_threads(),
        "pinned": "one core (taskset -c 1), OMP_NUM_THREADS=1; the 2-core machine was shared "
                  "with other jobs",
        "versions": code_version(), "config": args.config, "space": name,
        "budget": {"metric": metric, "ratio": budget, "target": target},
        "screening": to_dict(sc), "train": to_dict(cfg.train),
        "data": {"train": len(data.train), "val": len(data.val)},
        "top_rung_base_epochs": top_epochs, "trained_candidate": start,
        "summary": summary, "screen_seconds_per_round": [round(s, 2) for s in screen_s],
        "train_runs": train_runs, "widths": cands,
    })
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
