"""Training throughput: nas-prune's trainer vs a plain PyTorch loop, side by side in one run.

The baseline is the loop most code bases use: a ``torch.utils.data.DataLoader`` over a data set
that applies torchvision transforms per sample (random crop with padding, horizontal flip,
normalise), then a standard SGD step. nas-prune keeps the whole data set on the device as one
tensor and augments whole batches there. Both train the same model with the same batch size and
the same number of images; the ratio of images/s is printed. Run on CPU here, and on CUDA where
there is one (``--device cuda``; bf16 autocast and channels_last apply to nas-prune's trainer only,
as they are part of it; pass ``--no-amp`` to compare like for like).

    python benchmarks/train_throughput.py                       # Fashion-MNIST, vgg_small, CPU
    python benchmarks/train_throughput.py --space vgg16_cifar --data synthetic --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from nas_prune.data import AUGMENT, STATS, DataConfig, load_data
from nas_prune.train import TrainConfig, train
from nas_prune.widths import SearchSpace


class _PerSampleDataset(Dataset):
    """uint8 images with per-sample torchvision transforms (the usual pipeline)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def _uint8_images(n: int, data: str, shape) -> tuple[torch.Tensor, torch.Tensor]:
    if data == "fashion-mnist":
        from nas_prune.data import DEBIAN_FMNIST, FMNIST_FILES, _idx_pair

        x, y = _idx_pair(DEBIAN_FMNIST, *FMNIST_FILES["train"])
        return x[:n], y[:n]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, shape.channels, shape.size, shape.size), dtype=torch.uint8,
                      generator=g)
    return x, torch.randint(0, shape.classes, (n,), generator=g)


def baseline(space: SearchSpace, data: str, n: int, batch_size: int, device: torch.device,
             workers: int, lr: float) -> float:
    shape = space.family.input_shape
    x, y = _uint8_images(n, data, shape)
    pad, flip = AUGMENT.get(data, (2, False))
    mean, std = STATS.get(data, ((0.5,) * shape.channels, (0.25,) * shape.channels))
    steps = [v2.RandomCrop(shape.size, padding=pad)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    loader = DataLoader(_PerSampleDataset(x, y, v2.Compose(steps)), batch_size=batch_size,
                        shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = space.family.build(space.base_widths()).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    seen = 0
    t0 = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(yb)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - t0)


def ours(space: SearchSpace, data: str, n: int, batch_size: int, device: torch.device,
         amp: bool, lr: float) -> float:
    shape = space.family.input_shape
    cfg = DataConfig(name=data, val_size=0 if data != "synthetic" else 10, train_subset=n,
                     synthetic_train=n + 10, synthetic_test=10,
                     synthetic_channels=shape.channels, synthetic_size=shape.size,
                     synthetic_classes=shape.classes)
    splits = load_data(cfg, device=device)
    torch.manual_seed(0)
    model = space.family.build(space.base_widths())
    tc = TrainConfig(epochs=1, batch_size=batch_size, lr=lr, amp=amp, channels_last=amp)
    return train(model, splits, tc, seed=0, device=device, validate=False,
                 progress=False).images_per_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="vgg_small_fmnist")
    p.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "synthetic"])
    p.add_argument("--images", type=int, default=4096, help="images per measured epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                   help="DataLoader worker counts to try for the baseline")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-amp", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    space = SearchSpace.load(args.space)
    lr = 0.01
    # warm-up (allocator, cuDNN autotuning, thread pools)
    ours(space, args.data, 2 * args.batch_size, args.batch_size, device, not args.no_amp, lr)
    rows = []
    for _ in range(args.repeats):
        rows.append(("nas-prune trainer", ours(space, args.data, args.images, args.batch_size,
                                               device, not args.no_amp, lr)))
        for w in args.workers:
            rows.append((f"DataLoader, {w} workers", baseline(space, args.data, args.images,
                                                               args.batch_size, device, w, lr)))
    best: dict[str, float] = {}
    for name, ips in rows:
        best[name] = max(best.get(name, 0.0), ips)
    print(f"space {args.space}, data {args.data}, device {device}, batch {args.batch_size}, "
          f"{args.images} images per run, best of {args.repeats}, "
          f"torch threads {torch.get_num_threads()}")
    for name, ips in best.items():
        print(f"  {name:28s} {ips:10.1f} images/s")
    ours_ips = best["nas-prune trainer"]
    for name, ips in best.items():
        if name != "nas-prune trainer":
            print(f"  ratio nas-prune / {name}: {ours_ips / ips:.2f}x")


if __name__ == "__main__":
    main()
