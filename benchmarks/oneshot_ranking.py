"""Does one-shot screening rank candidates? Rank correlation of screening scores with accuracy.

Draws ``--candidates`` width vectors at the budget (as ``benchmarks/oneshot_speed.py``: the
search's own candidate space around uniform scaling), then

* trains the weight-sharing network (``search.screening`` of the config) and screens every
  candidate with it;
* trains the base network (full width, the config's recipe for ``seed_method.base_epochs``) and
  screens every candidate cut from it with its channels ordered by Li's L1-norm importance
  (EagleEye-style adaptive BatchNorm, :class:`nas_prune.oneshot.BaseNetCandidates`);
* trains every candidate from scratch at the top rung (``train_spec``, Scratch-B) on ``--seeds``
  evaluation seeds (``random_seed + FINAL_SEED_OFFSET + k``, the project's evaluation seeds:
  disjoint from the search seed that trains the shared and the base network);

and reports Spearman and Kendall (n = candidates) of each screening score with the mean
from-scratch validation accuracy and with each seed's, a bootstrap 95% interval of each
Spearman coefficient (candidates resampled), where the top 3 by screening score rank by mean
accuracy, and, with two seeds or more, the seed-to-seed correlation (seed A's accuracy against
seed B's over the same candidates): the ceiling any proxy can reach against one seed.

Checkpoints, so that a killed run resumes without training again: every finished from-scratch
training is appended to ``<out stem>.scratch.jsonl`` next to ``--out`` (a rerun skips those of
the same config, overrides, epochs, widths and seed); the shared network (``shared.pt``, the
oneshot module's checkpoint) and the base network (``base.pt``) are kept in ``--run-dir``.
Every number goes into ``--out``::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/oneshot_ranking.py \\
        --config evidence_vgg_small_25 --candidates 24 --seeds 2 \\
        --out benchmarks/results/oneshot_ranking_n24.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nas_prune._io import load_state_dict, read_json, save_state_dict, write_json
from nas_prune._meta import code_version, hardware, now
from nas_prune.config import load_config, to_dict
from nas_prune.data import load_data
from nas_prune.errors import UserError
from nas_prune.oneshot import (
    BaseNetCandidates,
    SharedNet,
    load_shared,
    save_shared,
    screen,
    screening_data,
    train_shared,
)
from nas_prune.scratch import train_spec
from nas_prune.seeding import FINAL_SEED_OFFSET
from nas_prune.stats import binomial_std
from nas_prune.surgery import filter_l1_scores
from nas_prune.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oneshot_speed import around_uniform, draw  # noqa: E402

RESAMPLES = 2000  # bootstrap resamples of the candidates
BOOT_SEED = 0  # the bootstrap's RNG seed (fixed: the same JSONL gives the same intervals)
TOP_K = 3


def _corr(xs: list[float], ys: list[float]) -> dict:
    """Spearman and Kendall; None where undefined (a constant sequence)."""
    import warnings

    from scipy.stats import kendalltau, spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: None below says so
        rho, tau = float(spearmanr(xs, ys).statistic), float(kendalltau(xs, ys).statistic)
    return {"n": len(xs), "spearman": None if np.isnan(rho) else rho,
            "kendall": None if np.isnan(tau) else tau}


def spearman_bootstrap(xs, ys, *, resamples: int = RESAMPLES, seed: int = BOOT_SEED,
                       level: float = 0.95) -> dict:
    """Percentile bootstrap interval of Spearman's coefficient, resampling the (x, y) pairs
    with replacement. A resample in which x or y is constant has no coefficient and is left
    out (``undefined`` counts them); with none defined the interval is None."""
    from scipy.stats import rankdata

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise ValueError(f"spearman_bootstrap: need two equal-length sequences of 3 or more, "
                         f"got {x.shape} and {y.shape}")
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    rx, ry = rankdata(x[idx], axis=1), rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    ok = den > 0
    rho = (rx * ry).sum(axis=1)[ok] / den[ok]
    a = (1 - level) / 2
    ci = [float(q) for q in np.quantile(rho, [a, 1 - a])] if len(rho) else None
    return {"ci95": ci, "resamples": resamples, "rng_seed": seed,
            "undefined": int((~ok).sum())}


def top_k_ranks(scores, acc, k: int = TOP_K) -> list[dict]:
    """The ``k`` candidates with the highest score (ties: the earlier candidate first), each
    with its rank among all candidates by ``acc`` (1 = most accurate; tied accuracies share
    their mean rank)."""
    from scipy.stats import rankdata

    rank = rankdata(-np.asarray(acc, dtype=float))
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    return [{"candidate": i, "score": float(scores[i]), "acc": float(acc[i]),
             "rank": float(rank[i])} for i in order]


def score_stats(scores, per_seed: list[list[float]]) -> dict:
    """One screening score against the mean accuracy over seeds and against each seed."""
    mean = np.mean(np.asarray(per_seed, dtype=float), axis=0).tolist()
    out = {**_corr(scores, mean), "spearman_bootstrap": spearman_bootstrap(scores, mean),
           f"top{TOP_K}_rank_by_mean_acc": top_k_ranks(scores, mean)}
    if len(per_seed) > 1:
        out["per_seed"] = [{**_corr(scores, s), "spearman_bootstrap": spearman_bootstrap(scores, s)}
                           for s in per_seed]
    return out


def seed_to_seed(per_seed: list[list[float]], seeds: list[int]) -> list[dict]:
    """Seed A's accuracy against seed B's over the candidates, for every pair of seeds."""
    return [{"seeds": [seeds[a], seeds[b]], **_corr(per_seed[a], per_seed[b]),
             "spearman_bootstrap": spearman_bootstrap(per_seed[a], per_seed[b])}
            for a in range(len(seeds)) for b in range(a + 1, len(seeds))]


def _row(label: str, c: dict) -> str:
    ci = c["spearman_bootstrap"]["ci95"]
    ci_s = f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "undefined"
    def f(v):
        return "undefined" if v is None else f"{v:+.2f}"

    return f"| {label} | {f(c['spearman'])} | {ci_s} | {f(c['kendall'])} |"


def markdown(result: dict) -> str:
    """The report's table of a finished ``--out`` JSON: each score against the mean and each
    seed, the seed-to-seed rows, and the ranks of each score's top 3 by mean accuracy."""
    sm, seeds = result["summary"], result.get("scratch_seeds", [result["seed"]])
    n = sm["shared_vs_scratch"]["n"]
    lines = [f"n = {n} candidates, {len(seeds)} seed(s) each", "",
             "| score against | Spearman | 95% bootstrap interval | Kendall |", "|---|---|---|---|"]
    names = {"shared_vs_scratch": "weight-sharing", "base_adaptive_bn_vs_scratch": "adaptive BN"}
    for key, name in names.items():
        c = sm[key]
        lines.append(_row(f"{name} vs mean of {len(seeds)} seed(s)", c))
        for s, cs in zip(seeds, c.get("per_seed", []), strict=False):
            lines.append(_row(f"{name} vs seed {s}", cs))
    for c in sm.get("seed_to_seed", []):
        lines.append(_row(f"**seed {c['seeds'][0]} vs seed {c['seeds'][1]} (the ceiling)**", c))
    lines.append("")
    for key, name in names.items():
        top = sm[key][f"top{TOP_K}_rank_by_mean_acc"]
        lines.append(f"{name} top {TOP_K}: ranks " + ", ".join(
            f"{t['rank']:g} (candidate {t['candidate']}, score {t['score']:.4f}, "
            f"acc {100 * t['acc']:.2f}%)" for t in top) + f" of {n}")
    return "\n".join(lines)


def _key(widths: dict, seed: int) -> str:
    return json.dumps([sorted(widths.items()), seed])


def _done(path: Path, stamp: dict) -> dict[str, dict]:
    """The finished trainings of ``path`` that match ``stamp`` (config, overrides, epochs)."""
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if all(rec.get(k) == v for k, v in stamp.items()):
                out[_key(rec["widths"], rec["seed"])] = rec
    return out


def _train_one(journal: Path, stamp: dict, w: dict, i: int, seed: int, space, cfg,
               epochs: int, by: str = "main") -> tuple[dict, bool]:
    """Candidate ``i`` trained from scratch on ``seed``, or its record from the journal (read
    again each time: a ``--scratch-only`` helper may have added it); True when trained now."""
    rec = _done(journal, stamp).get(_key(w, seed))
    if rec is not None:
        return rec, False
    t0 = time.perf_counter()
    result, _ = train_spec(space.spec(w), cfg, epochs=epochs, seed=seed)
    rec = {**stamp, "candidate": i, "widths": w, "seed": seed,
           "val_acc": result.val_acc_final, "epochs": result.epochs_run,
           "seconds": round(time.perf_counter() - t0, 1), "finished": now()}
    rec["by"] = by
    with journal.open("a+") as f:
        f.seek(0, 2)
        if f.tell():  # a line cut short by a kill must not swallow this one
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":
                f.write("\n")
        f.write(json.dumps(rec) + "\n")
    print(f"candidate {i} seed {seed}: val {rec['val_acc']:.4f} in {rec['seconds']:.0f} s",
          flush=True)
    return rec, True


def _base_net(space, data, cfg, path: Path):
    """The trained base network and its record: loaded from ``path`` or trained and saved."""
    rec_path = path.with_suffix(".json")
    torch.manual_seed(cfg.random_seed)
    base = space.family.build(space.max_widths())
    if path.is_file() and rec_path.is_file():
        base.load_state_dict(load_state_dict(path, what="base network"))
        rec = {**json.loads(rec_path.read_text()), "loaded": True}
        print(f"base network: loaded from {path}", flush=True)
    else:
        res = train(base, data, cfg.train, epochs=cfg.seed_method.base_epochs,
                    seed=cfg.random_seed)
        save_state_dict(base, path)
        rec = {"wall_time": res.wall_time, "val_acc_final": res.val_acc_final}
        write_json(rec_path, rec)
        rec["loaded"] = False
        print(f"base network: {res.wall_time:.0f} s, val {res.val_acc_final:.4f}", flush=True)
    base.eval()
    return base, rec


def _shared_net(space, data, cfg, sc, path: Path):
    if path.is_file():
        shared, rec = load_shared(space, path)
        print(f"shared network: loaded from {path}", flush=True)
        return shared, {**rec, "loaded": True}
    shared = SharedNet(space, seed=cfg.random_seed)
    rec = train_shared(shared, data, cfg.train, sc, seed=cfg.random_seed)
    save_shared(shared, path, rec)
    print(f"shared network: {rec['wall_time']:.0f} s, {rec['cost_base_trainings']:.2f} base "
          f"trainings", flush=True)
    return shared, {**rec, "loaded": False}


def _candidates(path: Path, cspace, start: dict, args, cfg) -> list[dict]:
    """The drawn candidates, kept in ``path``: under a latency budget a draw depends on measured
    latencies, so a resumed run must reuse the first draw to find its finished trainings (and
    a ``--scratch-only`` helper never draws: it trains the running benchmark's candidates)."""
    stamp = {"config": args.config, "set": list(args.set), "candidates": args.candidates,
             "seed": cfg.random_seed}
    kept = read_json(path, what="candidates file")
    if kept is not None and kept.get("stamp") == stamp:
        print(f"candidates: loaded from {path}", flush=True)
        return kept["candidates"]
    if args.scratch_only:
        raise UserError(f"--scratch-only: {path} holds no candidates of these arguments; start "
                        f"the benchmark first and the helper once it has drawn them")
    t0 = time.perf_counter()
    cands = draw(cspace, start, args.candidates, cfg.random_seed)
    write_json(path, {"stamp": stamp, "candidates": cands,
                      "draw_s": round(time.perf_counter() - t0, 1)})
    return cands


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="evidence_vgg_small_25")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--seeds", type=int, default=1,
                   help="from-scratch trainings per candidate (evaluation seeds)")
    p.add_argument("--set", nargs="*", default=[], help="config overrides (a smoke run)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--table", action="store_true",
                   help="print the report's table of a finished --out and exit (no training)")
    p.add_argument("--scratch-only", action="store_true",
                   help="a helper beside a running benchmark of the same arguments: trains the "
                        "from-scratch candidates missing from the journal, last one first, and "
                        "exits (no screening, no --out); the running one skips what it finds")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="where shared.pt and base.pt are kept (default: runs/oneshot_ranking/"
                        "<out stem>)")
    args = p.parse_args(argv)
    if args.table:
        result = read_json(args.out, what="--out")
        if result is None:
            raise UserError(f"--out {args.out}: no such file; run the benchmark first")
        print(markdown(result))
        return 0
    if args.seeds < 1 or args.candidates < 3:
        raise UserError(f"--seeds {args.seeds} --candidates {args.candidates}: need at least "
                        f"1 seed and 3 candidates")
    torch.set_num_threads(1)
    cfg = load_config(args.config, ["device=cpu", *args.set])
    sc = cfg.search.screening
    space, start, cspace = around_uniform(cfg)
    name = space.name
    budget, metric = cfg.seed_method.budget, cfg.seed_method.metric
    data = load_data(cfg.data, device="cpu")
    run_dir = args.run_dir or Path("runs/oneshot_ranking") / args.out.stem
    cands = _candidates(run_dir / "candidates.json", cspace, start, args, cfg)
    sdata = screening_data(data, sc, seed=cfg.random_seed)
    journal = args.out.with_name(args.out.stem + ".scratch.jsonl")
    seeds = [cfg.random_seed + FINAL_SEED_OFFSET + k for k in range(args.seeds)]
    t_all = time.perf_counter()
    top_epochs = cfg.search.rungs[-1].epochs if cfg.search.rungs else cfg.train.epochs
    stamp = {"config": args.config, "set": list(args.set), "base_epochs": top_epochs}
    journal.parent.mkdir(parents=True, exist_ok=True)
    if args.scratch_only:
        for i in reversed(range(len(cands))):
            for s in seeds:
                _train_one(journal, stamp, cands[i], i, s, space, cfg, top_epochs, by="helper")
        return 0
    keys = {_key(w, s) for w in cands for s in seeds}  # this run's trainings
    at_start = keys & set(_done(journal, stamp))  # a resumed run's (not an older run's)

    shared, rec = _shared_net(space, data, cfg, sc, run_dir / "shared.pt")
    shared.model.eval()
    t0 = time.perf_counter()
    shared_scores = [screen(shared.extract(w), sdata) for w in cands]
    shared_screen_s = time.perf_counter() - t0

    base, base_rec = _base_net(space, data, cfg, run_dir / "base.pt")
    cut = BaseNetCandidates(space, base, filter_l1_scores(base, space.family))
    t0 = time.perf_counter()
    base_scores = [screen(cut.extract(w), sdata) for w in cands]
    base_screen_s = time.perf_counter() - t0

    base_flops, base_cost = space.base_cost("flops"), space.base_cost(metric)
    runs, n_new, t_new = [], 0, 0.0
    for i, w in enumerate(cands):
        per = []
        for s in seeds:
            rec_s, trained = _train_one(journal, stamp, w, i, s, space, cfg, top_epochs)
            if trained:
                n_new, t_new = n_new + 1, t_new + rec_s["seconds"]
                left = (len(cands) - i) * len(seeds) - len(per) - 1
                print(f"  about {left * t_new / n_new / 60:.0f} min left (at most {left} "
                      f"trainings)", flush=True)
            per.append(rec_s)
        accs = [r["val_acc"] for r in per]
        runs.append({"widths": w, "flops_ratio": round(space.cost(w, "flops") / base_flops, 4),
                     # latency: the space's prediction; the draw measured every candidate but
                     # the first (uniform, fitted on the prediction) within tolerance
                     ("latency_ratio_predicted" if metric == "latency" else f"{metric}_ratio"):
                         round(space.cost(w, metric) / base_cost, 4),
                     "val_acc": float(np.mean(accs)), "val_accs": accs,
                     "seeds": seeds, "epochs": per[0]["epochs"],
                     "seconds": round(sum(r["seconds"] for r in per), 1),
                     "shared_score": shared_scores[i], "base_score": base_scores[i]})
        print(f"candidate {i}: val {runs[-1]['val_acc']:.4f}, shared {shared_scores[i]:.3f}, "
              f"base {base_scores[i]:.3f}", flush=True)
    per_seed = [[r["val_accs"][k] for r in runs] for k in range(len(seeds))]
    val = [r["val_acc"] for r in runs]
    summary = {
        "shared_vs_scratch": score_stats(shared_scores, per_seed),
        "base_adaptive_bn_vs_scratch": score_stats(base_scores, per_seed),
        "seed_to_seed": seed_to_seed(per_seed, seeds),
        "scratch_val_range": [min(val), max(val)],
        "binomial_std_scratch_val": binomial_std(sum(val) / len(val), len(data.val)),
        "binomial_std_screen": binomial_std(sum(val) / len(val), sdata.val_y.numel()),
        "shared_training": {k: rec[k] for k in ("wall_time", "cost_base_trainings",
                                                "train_loss", "loaded")},
        "shared_screen_s": round(shared_screen_s, 2), "base_screen_s": round(base_screen_s, 2),
        "base_training_s": round(base_rec["wall_time"], 1),
        "base_val_acc": base_rec["val_acc_final"], "base_loaded": base_rec["loaded"],
    }
    write_json(args.out, {
        "command": " ".join(["python", f"benchmarks/{Path(__file__).name}",
                             *(argv or sys.argv[1:])]),
        "finished": now(), "wall_s": round(time.perf_counter() - t_all, 1),
        "hardware": hardware("cpu"),
        # what this process ran on (a --scratch-only helper beside it is not seen here)
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "versions": code_version(), "config": args.config, "space": name,
        "budget": {"metric": metric, "ratio": budget}, "screening": to_dict(sc),
        "train": to_dict(cfg.train), "top_rung_base_epochs": top_epochs,
        "seed": cfg.random_seed, "scratch_seeds": seeds, "scratch_journal": journal.name,
        "resumed_trainings": len(at_start),
        "helper_trainings": sum(1 for k, r in _done(journal, stamp).items()
                                if k in keys - at_start and r.get("by") == "helper"),
        "summary": summary, "candidates": runs,
    })
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
