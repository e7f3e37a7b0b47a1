"""The image-folder data layer, side by side: decode once into the cache vs decode every epoch.

Writes a real ``ImageFolder`` of PNG files from Fashion-MNIST (``--images`` of them, one
sub-folder per class; reused when already written with the same count) and measures, all in one
run and ``--repeats`` times, in images/s:

* **first load**: :func:`nas_prune.imagecache.load_folder` into a fresh cache folder (probe,
  decode with Pillow in a thread pool, resize, write ``images.npy``); a new folder each repeat;
* **cached load**: the same call again (reads ``meta.json`` and memory-maps ``images.npy``, after
  listing and stat-ing every file for the cache key); the same plus a pass over every pixel (so
  the memory-mapped read is counted); and a whole :func:`nas_prune.data.load_data` held in memory
  (cache, split, per-channel statistics, copies to tensors);
* **torchvision**: ``datasets.ImageFolder`` + ``DataLoader`` (Resize + CenterCrop + Grayscale(1)
  + PILToTensor, batch 256) for one full epoch with 0 and 2 workers: what a pipeline without the
  cache pays every epoch (worker start-up included; the folder scan is timed apart).

and the medians and the paired ratios (cached / first load, cached / one ImageFolder epoch, per
repeat, median stated). Then it trains the same small network (``search_spaces/vgg_small_data``,
input from the folder) for one epoch on ``--train-images`` images held in memory
(``memory_limit_gb`` null) and streamed from the memory-mapped cache (``memory_limit_gb`` 0),
alternating the two arms ``--repeats`` times, same seed, and reports the images/s medians and the
ratio streamed / in memory. Both arms see the same batches, so their validation accuracies must be
identical: the benchmark asserts it.

Every file read is warm in the page cache (the folder was just written or read); absolute
numbers depend on the hardware and its load, both recorded in ``--out``.

    python benchmarks/data_cache.py                              # 20,000 PNGs, 3 repeats
    python benchmarks/data_cache.py --images 600 --train-images 300 --repeats 1 \\
        --out /tmp/dc_smoke.json                                 # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from nas_prune import imagecache
from nas_prune._io import write_json
from nas_prune._meta import code_version, hardware, now
from nas_prune.cli._common import table
from nas_prune.data import DEBIAN_FMNIST, FMNIST_FILES, DataConfig, _read_idx, batches, load_data
from nas_prune.train import TrainConfig, train
from nas_prune.widths import SearchSpace, space_source, with_input

FOLDER_MARK = "written.json"  # at the folder's root: not a class folder, ignored by both readers


# ---- the image folder ----------------------------------------------------------------------
def fashion_mnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` Fashion-MNIST images (train, then t10k) as (N, 28, 28) uint8, labels."""
    xs, ys = [], []
    for split in ("train", "test"):
        images, labels = FMNIST_FILES[split]
        xs.append(_read_idx(DEBIAN_FMNIST / images))
        ys.append(_read_idx(DEBIAN_FMNIST / labels))
    x, y = np.concatenate(xs), np.concatenate(ys)
    if n > len(y):
        raise SystemExit(f"--images {n}: Fashion-MNIST has {len(y)} images")
    return x[:n], y[:n].astype(np.int64)


def write_folder(root: Path, n: int) -> dict:
    """``root/<class>/<index>.png`` for the first ``n`` images; reused when complete."""
    mark = root / FOLDER_MARK
    if mark.is_file():
        try:
            info = json.loads(mark.read_text())
        except (OSError, json.JSONDecodeError):
            info = {}
        found = sum(1 for _ in root.glob("*/*.png"))
        if info.get("images") == n and found == n:
            return {**info, "reused": True}
    from PIL import Image

    if root.exists():
        shutil.rmtree(root)
    x, y = fashion_mnist(n)
    for c in np.unique(y):
        (root / str(int(c))).mkdir(parents=True, exist_ok=True)

    def save(i: int) -> None:
        Image.fromarray(x[i], mode="L").save(root / str(int(y[i])) / f"{i:06d}.png")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(save, range(n), chunksize=256))
    info = {"images": n, "classes": int(len(np.unique(y))), "source": str(DEBIAN_FMNIST),
            "pixels": [28, 28], "mode": "L", "write_s": round(time.perf_counter() - t0, 3),
            "bytes": sum(p.stat().st_size for p in root.glob("*/*.png"))}
    mark.write_text(json.dumps(info) + "\n")
    return {**info, "reused": False}


# ---- timed measures ------------------------------------------------------------------------
def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def checksum(images: np.ndarray) -> int:
    return int(np.asarray(images).sum(dtype=np.uint64))


def imagefolder_epoch(root: Path, size: int, workers: int, batch: int) -> tuple[float, float, int]:
    """(scan seconds, epoch seconds, images) of torchvision's ImageFolder + DataLoader."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                             transforms.Grayscale(1), transforms.PILToTensor()])
    scan, ds = timed(lambda: datasets.ImageFolder(str(root), transform=tf))
    loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers)

    def epoch() -> int:
        seen = 0
        for xb, _ in loader:
            seen += int(xb.shape[0])
        return seen

    t, seen = timed(epoch)
    return scan, t, seen


def torchvision_agrees(root: Path, cached: imagecache.CachedImages, size: int,
                       count: int = 64) -> int:
    """Largest pixel difference between the cache and torchvision's transform on ``count``
    images spread over the folder (same file order: both sort classes and files)."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                             transforms.Grayscale(1), transforms.PILToTensor()])
    ds = datasets.ImageFolder(str(root), transform=tf)
    assert len(ds) == len(cached.labels), (len(ds), len(cached.labels))
    worst = 0
    for i in np.linspace(0, len(ds) - 1, min(count, len(ds))).astype(int):
        x, label = ds[int(i)]
        assert label == int(cached.labels[i]), f"label of image {i} differs"
        diff = np.abs(x.numpy().astype(np.int16) - cached.images[i].astype(np.int16)).max()
        worst = max(worst, int(diff))
    return worst


# ---- training: in memory vs streamed -------------------------------------------------------
def train_arm(cfg: DataConfig, space_name: str, size: int, tc: TrainConfig, seed: int) -> dict:
    load_s, data = timed(lambda: load_data(cfg, device="cpu", size=size))
    name, raw = space_source(space_name)
    space = SearchSpace.from_dict(with_input(raw, data.input_shape), name=name)
    torch.manual_seed(seed)
    model = space.family.build(space.base_widths())
    batches_s, seen = timed(lambda: sum(int(y.shape[0]) for _, y in batches(
        data.train, tc.batch_size, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(seed))))
    result = train(model, data, tc, epochs=1, seed=seed, device="cpu", progress=False)
    return {"streamed": data.train.streamed, "load_data_s": load_s,
            "batches_only_s": batches_s, "batches_only_images_per_s": seen / batches_s,
            "train_wall_s": result.wall_time, "images_per_s": result.images_per_s,
            "train_loss": result.train_loss, "val_acc_final": result.val_acc_final,
            "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
            "source": data.source}


# ---- report --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000, help="PNG files in the folder")
    p.add_argument("--size", type=int, default=32, help="image size decoded to (Resize+Crop)")
    p.add_argument("--work", type=Path,
                   default=Path(tempfile.gettempdir()) / "nas-prune-data-cache-bench",
                   help="work folder: the image folder and the caches (reused across runs)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                   help="DataLoader worker counts for the ImageFolder epoch")
    p.add_argument("--loader-batch", type=int, default=256)
    p.add_argument("--decode-workers", type=int, default=None,
                   help="load_folder's decode threads (default: every core)")
    p.add_argument("--space", default="vgg_small_data")
    p.add_argument("--train-images", type=int, default=5000)
    p.add_argument("--val-size", type=int, default=2000,
                   help="validation images (lowered to fit a small folder)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/data_cache.json"))
    args = p.parse_args(argv)
    if args.repeats < 1 or args.images < 20:
        p.error("--repeats must be >= 1 and --images >= 20")
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    work = args.work.expanduser()
    root = work / f"fashion-mnist-png-{args.images}"
    caches = work / "caches"
    shutil.rmtree(caches, ignore_errors=True)
    folder = write_folder(root, args.images)
    n = args.images
    how = "reused" if folder["reused"] else f"written in {folder['write_s']:.1f} s"
    print(f"image folder {root}: {n} PNGs ({how})", flush=True)

    # ---- part 1: first load, cached load, ImageFolder epochs, interleaved per repeat ----
    raw: dict[str, list[float]] = {"first_load": [], "cached_call": [], "cached_touch": [],
                                   "load_data_memory": []}
    scans: dict[str, list[float]] = {}
    for w in args.workers:
        raw[f"imagefolder_w{w}"], scans[f"imagefolder_w{w}"] = [], []
    keep = caches / "kept"  # the cache entry of the cached-load measures
    sums, agree = set(), None
    for r in range(args.repeats):
        fresh = caches / f"first-{r}"
        t, first = timed(lambda d=fresh: imagecache.load_folder(
            root, size=args.size, channels=None, cache_dir=str(d),
            workers=args.decode_workers))
        assert first.built and len(first.labels) == n, (first.built, len(first.labels))
        raw["first_load"].append(t)
        sums.add(checksum(first.images))
        if r == 0:
            shutil.copytree(fresh, keep)  # the same entry, read back by the cached measures
            agree = torchvision_agrees(root, first, args.size)
        del first
        shutil.rmtree(fresh)
        t, cached = timed(lambda: imagecache.load_folder(
            root, size=args.size, channels=None, cache_dir=str(keep),
            workers=args.decode_workers))
        assert not cached.built, "the second load decoded again: the cache was not used"
        raw["cached_call"].append(t)
        t, total = timed(lambda: checksum(imagecache.load_folder(
            root, size=args.size, channels=None, cache_dir=str(keep),
            workers=args.decode_workers).images))
        raw["cached_touch"].append(t)
        sums.add(total)
        cfg = DataConfig(name="imagefolder", root=str(root), image_size=args.size,
                         cache_dir=str(keep), val_size=0, memory_limit_gb=None, augment=False)
        t, data = timed(lambda c=cfg: load_data(c, device="cpu", size=args.size))
        assert not data.train.streamed
        raw["load_data_memory"].append(t)
        del data, cached
        for w in args.workers:
            scan, t, seen = imagefolder_epoch(root, args.size, w, args.loader_batch)
            assert seen == n, (seen, n)
            raw[f"imagefolder_w{w}"].append(t)
            scans[f"imagefolder_w{w}"].append(scan)
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(
            f"{k} {n / v[-1]:.0f}/s" for k, v in raw.items()), flush=True)
    assert len(sums) == 1, f"first and cached loads differ in content: checksums {sums}"
    ips = {k: [n / t for t in v] for k, v in raw.items()}
    median_ips = {k: statistics.median(v) for k, v in ips.items()}
    cached_keys = ("cached_call", "cached_touch", "load_data_memory")
    base_keys = ("first_load", *(f"imagefolder_w{w}" for w in args.workers))
    ratios = {}
    for c in cached_keys:
        for b in base_keys:
            per = [tb / tc for tb, tc in zip(raw[b], raw[c], strict=True)]
            ratios[f"{c} / {b}"] = {"median": statistics.median(per), "per_repeat": per}

    # ---- part 2: training, in memory vs streamed, alternating ----
    test = int(round(0.2 * n))
    pool = n - test - args.train_images
    val = min(args.val_size, pool)
    if val < 1:
        raise SystemExit(f"--train-images {args.train_images}: the folder's {n - test} "
                         f"training images leave none for validation; write more --images")
    tc = TrainConfig(epochs=1, batch_size=args.batch_size)
    arms = {"memory": None, "streamed": 0.0}
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    for r in range(args.repeats):
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]
        for arm in order:
            cfg = DataConfig(name="imagefolder", root=str(root), image_size=args.size,
                             cache_dir=str(keep), val_size=val, train_subset=args.train_images,
                             memory_limit_gb=arms[arm])
            res = train_arm(cfg, args.space, args.size, tc, args.seed)
            assert res["streamed"] == (arm == "streamed"), (arm, res["streamed"])
            runs[arm].append(res)
            print(f"repeat {r + 1}/{args.repeats}: train {arm:8s} {res['images_per_s']:.1f} "
                  f"images/s, val acc {res['val_acc_final']:.4f}", flush=True)
    for i, (m, s) in enumerate(zip(runs["memory"], runs["streamed"], strict=True)):
        assert m["val_acc_final"] == s["val_acc_final"], \
            (f"repeat {i + 1}: in-memory and streamed training differ in validation accuracy "
             f"({m['val_acc_final']} vs {s['val_acc_final']}) though their batches are the same")
    all_runs = [run for rs in runs.values() for run in rs]
    same_loss = len({tuple(run["train_loss"]) for run in all_runs}) == 1
    same_acc = len({run["val_acc_final"] for run in all_runs}) == 1
    train_median = {a: statistics.median(run["images_per_s"] for run in rs)
                    for a, rs in runs.items()}
    batches_median = {a: statistics.median(run["batches_only_images_per_s"] for run in rs)
                      for a, rs in runs.items()}
    per = [s["images_per_s"] / m["images_per_s"]
           for m, s in zip(runs["memory"], runs["streamed"], strict=True)]
    per_batches = [s["batches_only_images_per_s"] / m["batches_only_images_per_s"]
                   for m, s in zip(runs["memory"], runs["streamed"], strict=True)]

    out = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None
                                                       else sys.argv[1:])]),
        "finished": now(), "wall_s": round(time.perf_counter() - t_start, 1),
        "hardware": hardware("cpu"), "versions": code_version(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "note": "every file read was warm in the page cache; ImageFolder epochs include "
                "DataLoader worker start-up, not the folder scan (imagefolder_scan_s)",
        "folder": {"root": str(root), **folder}, "size": args.size, "repeats": args.repeats,
        "decode_workers": args.decode_workers or os.cpu_count(),
        "loader_batch": args.loader_batch,
        "cache_vs_torchvision_max_pixel_diff": agree,
        "load": {"images": n, "seconds": raw, "images_per_s": ips, "median_images_per_s":
                 median_ips, "imagefolder_scan_s": scans, "ratios": ratios},
        "train": {"space": args.space, "epochs": 1, "batch_size": args.batch_size,
                  "lr": tc.lr, "seed": args.seed, "train_images": args.train_images,
                  "val_size": val, "runs": runs,
                  "median_images_per_s": train_median,
                  "ratio_streamed_over_memory": {"median": statistics.median(per),
                                                 "per_repeat": per},
                  "batches_only_median_images_per_s": batches_median,
                  "batches_only_ratio_streamed_over_memory": {
                      "median": statistics.median(per_batches), "per_repeat": per_batches},
                  "val_acc_identical_per_repeat": True,  # asserted
                  "val_acc_identical_all_runs": same_acc,
                  "train_loss_identical_all_runs": same_loss,
                  "val_acc_final": runs["memory"][0]["val_acc_final"]},
    }
    write_json(args.out, out)
    shutil.rmtree(caches, ignore_errors=True)

    hw = out["hardware"]
    print(f"\n{n} PNGs of Fashion-MNIST at {args.size} px, median of {args.repeats}; "
          f"{hw['cpu']} x{hw['cpu_count']}, torch threads {hw['torch_threads']}, "
          f"load {load_start[0]:.1f}")
    rows = [[k, f"{statistics.median(raw[k]):.3f}", f"{median_ips[k]:,.0f}"] for k in raw]
    print(table(rows, ["load", "median s", "images/s"]))
    print()
    print(table([[k, f"{v['median']:.1f}x"] for k, v in ratios.items()],
                ["ratio of images/s (paired per repeat)", "median"]))
    print(f"cache vs torchvision transform: max pixel difference {agree}")
    print()
    rows = [[a, f"{train_median[a]:.1f}", f"{batches_median[a]:,.0f}"] for a in runs]
    rows.append(["streamed / memory", f"{statistics.median(per):.3f}x",
                 f"{statistics.median(per_batches):.3f}x"])
    print(table(rows, [f"train 1 epoch, {args.train_images} images, {args.space}",
                       "images/s", "batches only/s"]))
    print(f"validation accuracy identical in both arms: {out['train']['val_acc_final']:.4f} "
          f"(val {val} images; all runs alike: accuracy {same_acc}, loss {same_loss})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
