"""Time every seed method's proposal on a CIFAR-shaped VGG-16, and ThiNet's greedy two ways.

Part 1 times ``method.propose`` of each registered seed method on ``search_spaces/vgg16_cifar``
(3x32x32 inputs, 13 width groups, 3.13e8 MAC FLOPs) with synthetic data on the CPU. Base training
is excluded: every method gets an untrained base network with random weights (its own
``base_model``, built under the seed), so the numbers are the cost of the criterion alone (an
AutoPruner proposal still trains its gates, on the small synthetic training set). Data-driven
methods look at ``--samples`` images; l1norm's sensitivity analysis at ``--val-images``.

Part 2 runs ThiNet's channel selection on the same random contribution matrix (``--thinet-n``
samples x ``--thinet-c`` channels, ``--thinet-remove`` removals) with the vectorised
:func:`~nas_prune.seeds.thinet.thinet_select` and the loop reference
:func:`~nas_prune.seeds.thinet.thinet_select_reference`, checks they pick the same channels and
prints the speed ratio.

Prints tables; asserts nothing. Example (a few minutes on two CPU cores):

    OMP_NUM_THREADS=1 python benchmarks/seed_methods.py --samples 32 --val-images 32
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from nas_prune.data import DataConfig, load_data
from nas_prune.errors import UserError
from nas_prune.seeds import SEED_METHODS, SeedContext, get_method
from nas_prune.seeds.thinet import thinet_select, thinet_select_reference
from nas_prune.train import TrainConfig
from nas_prune.widths import SearchSpace


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="vgg16_cifar", help="search space (default vgg16_cifar)")
    p.add_argument("--methods", default=",".join(SEED_METHODS),
                   help="comma-separated seed methods (default: every registered one)")
    p.add_argument("--budget", type=float, default=0.5, help="FLOPs ratio to propose for")
    p.add_argument("--samples", type=int, default=32,
                   help="images the data-driven methods (thinet, regression) look at")
    p.add_argument("--val-images", type=int, default=32,
                   help="validation images per l1norm sensitivity evaluation")
    p.add_argument("--train-images", type=int, default=256, help="synthetic training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--thinet-n", type=int, default=2000, help="ThiNet benchmark: samples")
    p.add_argument("--thinet-c", type=int, default=256, help="ThiNet benchmark: channels")
    p.add_argument("--thinet-remove", type=int, default=None,
                   help="ThiNet benchmark: channels to remove (default C/2)")
    p.add_argument("--repeat", type=int, default=3,
                   help="repetitions of the vectorised selection (best time is shown)")
    return p.parse_args()


def table(rows: list[list[str]], headers: list[str]) -> str:
    cells = [headers, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def time_proposals(args: argparse.Namespace) -> None:
    space = SearchSpace.load(args.space)
    shape = space.family.input_shape
    data = load_data(DataConfig(name="synthetic", val_size=args.val_images,
                                synthetic_train=args.train_images + args.val_images,
                                synthetic_test=16, synthetic_channels=shape.channels,
                                synthetic_size=shape.size, synthetic_classes=shape.classes,
                                augment=False))
    train_cfg = TrainConfig(epochs=1, batch_size=64, amp=False, channels_last=False,
                            eval_batch_size=256)
    ctx = SeedContext(space=space, data=data, train=train_cfg, device=torch.device("cpu"),
                      seed=args.seed, samples=args.samples)
    options = {"l1norm": {"val_images": args.val_images}}
    base = space.base_widths()
    rows = []
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        method = get_method(name, options.get(name))
        torch.manual_seed(args.seed)
        model = method.base_model(space).eval() if method.needs_base else None
        t0 = time.perf_counter()
        try:
            prop = method.propose(model, ctx, args.budget)
        except UserError as exc:
            rows.append([name, "-", "-", "-", f"{type(exc).__name__}: {exc}"[:70]])
            continue
        seconds = time.perf_counter() - t0
        keep = [prop.widths[g] / base[g] for g in base]
        rows.append([name, f"{seconds:.2f}", f"{prop.ratio:.4f}",
                     f"{min(keep):.2f}..{max(keep):.2f}", str(prop.knob)[:70]])
    print(f"Proposal time on {args.space} ({len(base)} groups, {space.base_cost() / 1e6:.1f}M "
          f"MAC FLOPs), untrained base, synthetic {shape.channels}x{shape.size}x{shape.size}, "
          f"budget {args.budget}, samples {args.samples}, val images {args.val_images}, CPU, "
          f"{torch.get_num_threads()} thread(s)")
    print(table(rows, ["method", "propose_s", "achieved", "keep_ratio", "knob"]))


def time_thinet(args: argparse.Namespace) -> None:
    n, c = args.thinet_n, args.thinet_c
    n_remove = c // 2 if args.thinet_remove is None else args.thinet_remove
    g = torch.Generator().manual_seed(args.seed)
    # correlated channels, as real contributions are: a shared low-rank part plus noise
    contrib = (torch.randn(n, 8, generator=g) @ torch.randn(8, c, generator=g)
               + torch.randn(n, c, generator=g))
    best = float("inf")
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        fast = thinet_select(contrib, n_remove)
        best = min(best, time.perf_counter() - t0)
    t0 = time.perf_counter()
    slow = thinet_select_reference(contrib, n_remove)
    ref_s = time.perf_counter() - t0
    same = torch.equal(fast, slow)
    print(f"\nThiNet greedy selection, N={n} samples x C={c} channels, {n_remove} removals")
    print(table([["vectorised (Gram matrix)", f"{best:.4f}"],
                 ["reference (Python loops)", f"{ref_s:.2f}"]], ["implementation", "seconds"]))
    print(f"speed-up {ref_s / best:.0f}x; same channels in the same order: {same}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}")
    time_proposals(args)
    time_thinet(args)


if __name__ == "__main__":
    main()
