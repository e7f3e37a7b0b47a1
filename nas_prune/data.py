"""Datasets as whole tensors on the training device, with batched on-device augmentation.

``fashion-mnist`` (the default) is read from the standard IDX ``.gz`` files: the configured root
first, then Debian's ``dataset-fashion-mnist`` package, then torchvision's download when allowed.
``cifar10``/``cifar100`` come through torchvision. ``synthetic`` is generated procedurally: every
class has a smooth random template; samples are shifted, rescaled, noisy copies, so the set is
learnable at any image size and needs no files.

A validation split is carved from the training set with a fixed seed; the test split is only for
scoring a final model.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .families import InputShape

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "synthetic")
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
STATS = {  # per-channel mean, std of the training set
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
AUGMENT = {  # crop padding, horizontal flip
    "fashion-mnist": (2, True),
    "cifar10": (4, True),
    "cifar100": (4, True),
    "synthetic": (2, False),
}


@dataclass(frozen=True)
class DataConfig:
    """Which data set, where it lives, and how it is split."""

    name: str = "fashion-mnist"
    root: str | None = None
    download: bool = False
    val_size: int = 5000
    train_subset: int | None = None  # keep only this many training images (after carving val)
    test_subset: int | None = None
    split_seed: int = 0
    augment: bool = True
    # synthetic only
    synthetic_train: int = 2000
    synthetic_test: int = 500
    synthetic_channels: int = 1
    synthetic_size: int = 28
    synthetic_classes: int = 10


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # float32 N,C,H,W, normalised
    y: torch.Tensor  # int64 N

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device, non_blocking=True), self.y.to(device, non_blocking=True))

    def subset(self, n: int | None, generator: torch.Generator | None = None) -> Split:
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=generator)[:n].to(self.y.device)
        return Split(self.x[idx], self.y[idx])


@dataclass(frozen=True)
class Splits:
    name: str
    train: Split
    val: Split
    test: Split
    input_shape: InputShape
    crop_padding: int = 0
    hflip: bool = False

    def to(self, device: torch.device | str) -> Splits:
        return replace(self, train=self.train.to(device), val=self.val.to(device),
                       test=self.test.to(device))

    @property
    def device(self) -> torch.device:
        return self.train.x.device


# ---- loading -------------------------------------------------------------------------------
def load_data(cfg: DataConfig, *, device: torch.device | str = "cpu") -> Splits:
    """Load, normalise, split and move a data set to ``device`` once."""
    if cfg.name not in DATASETS:
        raise UserError(f"data.name: unknown dataset {cfg.name!r}; choose one of "
                        f"{', '.join(DATASETS)}")
    for key in ("train_subset", "test_subset"):
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise UserError(f"data.{key}: {value!r} is out of range; must be >= 1 (or null)")
    if cfg.name == "synthetic":
        train_x, train_y, test_x, test_y = _synthetic(cfg)
        mean = train_x.mean(dim=(0, 2, 3)).tolist()
        std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    else:
        loader = _fashion_mnist if cfg.name == "fashion-mnist" else _cifar
        (train_x, train_y), (test_x, test_y) = loader(cfg)
        mean, std = STATS[cfg.name]
    train_x, test_x = _normalise(train_x, mean, std), _normalise(test_x, mean, std)
    n = train_y.shape[0]
    if not 0 <= cfg.val_size < n:
        raise UserError(f"data.val_size: {cfg.val_size} must be between 0 and the {n} "
                        f"training images")
    g = torch.Generator().manual_seed(cfg.split_seed)
    perm = torch.randperm(n, generator=g)
    val_idx, train_idx = perm[: cfg.val_size], perm[cfg.val_size:]
    train = Split(train_x[train_idx], train_y[train_idx]).subset(cfg.train_subset, g)
    val = Split(train_x[val_idx], train_y[val_idx])
    test = Split(test_x, test_y).subset(cfg.test_subset, g)
    classes = int(max(train_y.max(), test_y.max()) + 1) if cfg.name != "synthetic" \
        else cfg.synthetic_classes
    shape = InputShape(int(train_x.shape[1]), int(train_x.shape[2]), classes)
    pad, flip = AUGMENT[cfg.name] if cfg.augment else (0, False)
    return Splits(cfg.name, train, val, test, shape, pad, flip).to(device)


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x.float() / 255.0 if x.dtype == torch.uint8 else x.float()) - m) / s


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_dirs(root: str | None) -> list[Path]:
    """Where Fashion-MNIST's IDX files are looked for, in order."""
    dirs = []
    if root:
        r = Path(root).expanduser()
        dirs += [r, r / "fashion-mnist", r / "FashionMNIST" / "raw"]
    dirs.append(DEBIAN_FMNIST)
    return dirs


def _fashion_mnist(cfg: DataConfig):
    for d in fashion_mnist_dirs(cfg.root):
        if all((d / f).is_file() for pair in FMNIST_FILES.values() for f in pair):
            return tuple(_idx_pair(d, *FMNIST_FILES[s]) for s in ("train", "test"))
    if cfg.download:
        root = Path(cfg.root or "data").expanduser()
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
        except Exception as exc:  # network errors come in many types
            raise UserError(f"data.download: downloading Fashion-MNIST to {root} failed "
                            f"({type(exc).__name__}); install Debian's dataset-fashion-mnist "
                            f"or put the IDX .gz files in data.root") from None
        return _fashion_mnist(replace(cfg, root=str(root), download=False))
    searched = ", ".join(str(d) for d in fashion_mnist_dirs(cfg.root))
    raise UserError(f"data.root: Fashion-MNIST IDX files not found in {searched}; run "
                    f"'apt-get install dataset-fashion-mnist', set data.root to a folder "
                    f"with the .gz files, or set data.download=true")


def _idx_pair(d: Path, images: str, labels: str):
    x = torch.from_numpy(_read_idx(d / images).copy()).unsqueeze(1)
    y = torch.from_numpy(_read_idx(d / labels).astype(np.int64))
    return x, y


def _cifar(cfg: DataConfig):
    from torchvision import datasets

    cls = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    root = str(Path(cfg.root or "data").expanduser())
    out = []
    for train in (True, False):
        try:
            ds = cls(root, train=train, download=cfg.download)
        except RuntimeError:
            raise UserError(f"data.root: {cfg.name} not found in {root}; set data.download=true "
                            f"or point data.root at a folder holding it") from None
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        out.append((x, torch.tensor(ds.targets, dtype=torch.int64)))
    return tuple(out)


def _synthetic(cfg: DataConfig):
    """Class templates (smooth random patterns) plus shift, contrast and noise."""
    g = torch.Generator().manual_seed(1234 + cfg.split_seed)
    c, s, k = cfg.synthetic_channels, cfg.synthetic_size, cfg.synthetic_classes
    coarse = torch.randn(k, c, max(2, s // 4), max(2, s // 4), generator=g)
    templates = F.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)

    def sample(n: int):
        y = torch.randint(0, k, (n,), generator=g)
        x = templates[y] * (0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=g))
        shifts = torch.randint(-2, 3, (n, 2), generator=g)
        x = _shift(x, shifts)
        x = x + 0.6 * torch.randn(n, c, s, s, generator=g)
        return x, y

    return (*sample(cfg.synthetic_train), *sample(cfg.synthetic_test))


def _shift(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    rows = (torch.arange(h).view(1, h) - shifts[:, :1]).clamp(0, h - 1)
    cols = (torch.arange(w).view(1, w) - shifts[:, 1:]).clamp(0, w - 1)
    idx = torch.arange(n).view(n, 1, 1)
    return x.permute(0, 2, 3, 1)[idx, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


# ---- batches -------------------------------------------------------------------------------
def augment(x: torch.Tensor, *, padding: int, hflip: bool,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole batch on its device."""
    n, c, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device, generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device, generator=generator)
        rows = (torch.arange(h, device=x.device).view(1, h) + dy).view(n, 1, h, 1)
        cols = (torch.arange(w, device=x.device).view(1, w) + dx).view(n, 1, 1, w)
        bidx = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        cidx = torch.arange(c, device=x.device).view(1, c, 1, 1)
        x = padded[bidx, cidx, rows, cols]
    if hflip:
        flip = torch.rand(n, device=x.device, generator=generator) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    return x


def batches(split: Split, batch_size: int, *, shuffle: bool, drop_last: bool = False,
            generator: torch.Generator | None = None):
    """Yield (x, y) slices of an on-device split; shuffled with ``generator`` when asked."""
    n = len(split)
    if shuffle:
        order = torch.randperm(n, device=split.y.device, generator=generator)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        if shuffle:
            idx = order[i: i + batch_size]
            yield split.x[idx], split.y[idx]
        else:
            yield split.x[i: i + batch_size], split.y[i: i + batch_size]
