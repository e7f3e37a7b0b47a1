"""Datasets as whole tensors on the training device, with batched on-device augmentation.

``fashion-mnist`` (the default) is read from the standard IDX ``.gz`` files: the configured root
first, then Debian's ``dataset-fashion-mnist`` package, then torchvision's download when allowed.
``cifar10``/``cifar100`` come through torchvision. ``synthetic`` is generated procedurally: every
class has a smooth random template; samples are shifted, rescaled, noisy copies, so the set is
learnable at any image size and needs no files.

``imagefolder`` (a folder of class folders) and ``torchvision:CLASS`` (any torchvision data set)
are decoded once into a uint8 cache (:mod:`nas_prune.imagecache`), resized to the search space's
input size, normalised with per-channel statistics of the training split; when their images
exceed ``data.memory_limit_gb`` they are streamed batch by batch from the memory-mapped cache.

``tensors`` is one file of float32 images and int64 labels (:mod:`nas_prune.tensordata`: a
user's ``Dataset``s read once by ``nas_prune.search(data=...)``, or written by hand), split,
normalised and augmented as the decoded sets are; it must fit under ``data.memory_limit_gb``.

Images are kept as uint8 where they come as such (4x less memory than float32) and normalised a
batch at a time on the device, where augmentation runs too. A validation split is carved from
the training set with a fixed seed; the test split is only for scoring a final model.
"""

from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .families import InputShape

log = logging.getLogger(__name__)

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "synthetic", "imagefolder", "tensors")
TORCHVISION = "torchvision:"  # data.name prefix: any torchvision.datasets class
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
    # image folders and torchvision data sets
    image_size: int | None = None  # null: the search space's input size
    channels: int | None = None  # null: from the data (1 when every image is grayscale, else 3)
    test_size: int | None = None  # data without a test split (one-folder layout, tensors): test images held out (null: 20%)
    cache_dir: str | None = None  # null: $NAS_PRUNE_CACHE or ~/.cache/nas-prune/datasets
    decode_workers: int | None = None  # null: every core
    skip_bad_images: bool = False  # false: an undecodable file is an error naming it
    memory_limit_gb: float | None = None  # null: half the free memory of the device
    # synthetic only
    synthetic_train: int = 2000
    synthetic_test: int = 500
    synthetic_channels: int = 1
    synthetic_size: int = 28
    synthetic_classes: int = 10

    @property
    def decoded(self) -> bool:
        """Image folders and torchvision data sets: decoded to the space's size, cached."""
        return self.name == "imagefolder" or self.name.startswith(TORCHVISION)


@dataclass(frozen=True)
class Split:
    """Images and labels of one split.

    ``x`` holds uint8 pixels normalised batch by batch with ``mean``/``std`` (or, with ``mean``
    None, float32 images already normalised). A *streamed* split keeps ``x`` as a memory-mapped
    CPU array and ``index`` as its rows; :meth:`images` reads a batch of rows and moves it to
    ``stream_to``. Every reader goes through :meth:`images`, so both give the same batches.
    """

    x: torch.Tensor | np.ndarray
    y: torch.Tensor  # int64 N, on the split's device
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    index: torch.Tensor | None = None  # streamed: rows of x (CPU int64)
    stream_to: str | None = None  # streamed: the device batches go to

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def streamed(self) -> bool:
        return self.index is not None

    @property
    def device(self) -> torch.device:
        return torch.device(self.stream_to) if self.streamed else self.x.device

    def to(self, device: torch.device | str) -> Split:
        if self.streamed:
            return replace(self, y=self.y.to(device), stream_to=str(torch.device(device)))
        return replace(self, x=self.x.to(device, non_blocking=True),
                       y=self.y.to(device, non_blocking=True))

    def subset(self, n: int | None, generator: torch.Generator | None = None) -> Split:
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=generator)[:n]
        return self.take(idx)

    def take(self, idx: torch.Tensor) -> Split:
        """The split of rows ``idx`` (same storage kind)."""
        if self.streamed:
            return replace(self, index=self.index[idx.cpu()], y=self.y[idx.to(self.y.device)])
        idx = idx.to(self.y.device)
        return replace(self, x=self.x[idx], y=self.y[idx])

    def images(self, idx: torch.Tensor | slice) -> torch.Tensor:
        """Rows ``idx`` as normalised float32 images on the split's device."""
        if self.streamed:
            rows = self.index[idx.cpu() if isinstance(idx, torch.Tensor) else idx]
            x = torch.from_numpy(np.ascontiguousarray(self.x[rows.numpy()]))
            x = x.to(self.device, non_blocking=True)
        else:
            x = self.x[idx]
        if self.mean is None:
            return x
        return _normalise(x, self.mean, self.std)


@dataclass(frozen=True)
class Splits:
    name: str
    train: Split
    val: Split
    test: Split
    input_shape: InputShape
    crop_padding: int = 0
    hflip: bool = False
    classes: tuple[str, ...] = ()
    source: dict | None = None  # where decoded data came from: cache entry, layout, streaming

    def to(self, device: torch.device | str) -> Splits:
        return replace(self, train=self.train.to(device), val=self.val.to(device),
                       test=self.test.to(device))

    @property
    def device(self) -> torch.device:
        return self.train.device

    def provenance(self) -> dict:
        """What an architecture trained on this data records about it."""
        out: dict = {"name": self.name, "shape": self.input_shape.to_dict(),
                     "sizes": {"train": len(self.train), "val": len(self.val),
                               "test": len(self.test)}}
        if self.classes:
            out["classes"] = list(self.classes)
        if self.source:
            out["source"] = dict(self.source)
        return out


# ---- loading -------------------------------------------------------------------------------
def check_name(name: str, key: str = "data.name") -> None:
    """A one-line error unless ``name`` is a built-in data set or ``torchvision:CLASS``."""
    if name in DATASETS:
        return
    if name.startswith(TORCHVISION) and name[len(TORCHVISION):].isidentifier():
        return
    raise UserError(f"{key}: unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or "
                    f"torchvision:CLASS (e.g. torchvision:MNIST)")


def load_data(cfg: DataConfig, *, device: torch.device | str = "cpu",
              size: int | None = None) -> Splits:
    """Load, split and move a data set to ``device`` once.

    ``size`` is the image size of decoded data (image folders, torchvision data sets) when
    ``data.image_size`` is null: the search space's input size.
    """
    check_name(cfg.name)
    for key in ("train_subset", "test_subset"):
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise UserError(f"data.{key}: {value!r} is out of range; must be >= 1 (or null)")
    if cfg.decoded:
        return _load_decoded(cfg, device, cfg.image_size or size)
    if cfg.name == "tensors":
        return _load_tensors(cfg, device)
    if cfg.name == "synthetic":
        train_x, train_y, test_x, test_y = _synthetic(cfg)
        mean = train_x.mean(dim=(0, 2, 3)).tolist()
        std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
        train_x, test_x = _normalise(train_x, mean, std), _normalise(test_x, mean, std)
        mean = std = None
    else:
        loader = _fashion_mnist if cfg.name == "fashion-mnist" else _cifar
        (train_x, train_y), (test_x, test_y) = loader(cfg)
        mean, std = STATS[cfg.name]
    n = train_y.shape[0]
    _check_val_size(cfg, n)
    g = torch.Generator().manual_seed(cfg.split_seed)
    perm = torch.randperm(n, generator=g)
    val_idx, train_idx = perm[: cfg.val_size], perm[cfg.val_size:]
    train = Split(train_x[train_idx], train_y[train_idx], mean, std).subset(cfg.train_subset, g)
    val = Split(train_x[val_idx], train_y[val_idx], mean, std)
    test = Split(test_x, test_y, mean, std).subset(cfg.test_subset, g)
    classes = int(max(train_y.max(), test_y.max()) + 1) if cfg.name != "synthetic" \
        else cfg.synthetic_classes
    shape = InputShape(int(train_x.shape[1]), int(train_x.shape[2]), classes)
    pad, flip = AUGMENT[cfg.name] if cfg.augment else (0, False)
    return Splits(cfg.name, train, val, test, shape, pad, flip).to(device)


def _check_val_size(cfg: DataConfig, n: int) -> None:
    if not 0 <= cfg.val_size < n:
        raise UserError(f"data.val_size: {cfg.val_size} must be between 0 and the {n} "
                        f"training images")


def _load_decoded(cfg: DataConfig, device: torch.device | str, size: int | None) -> Splits:
    """Image folders and torchvision data sets: through the cache, split, in memory when they
    fit under the memory limit, else streamed from the memory-mapped cache."""
    from . import imagecache

    if size is None:
        raise UserError("data.image_size: not set and no search space to take it from; set "
                        "data.image_size (e.g. 32)")
    if cfg.name == "imagefolder":
        if not cfg.root:
            raise UserError("data.root: not set; point it at a folder with one sub-folder of "
                            "images per class (or train/, val/, test/ folders)")
        cached = imagecache.load_folder(cfg.root, size=size, channels=cfg.channels,
                                        cache_dir=cfg.cache_dir, workers=cfg.decode_workers,
                                        skip_bad=cfg.skip_bad_images)
    else:
        cached = imagecache.load_torchvision(cfg.name[len(TORCHVISION):], root=cfg.root,
                                             download=cfg.download, size=size,
                                             channels=cfg.channels, cache_dir=cfg.cache_dir)
    parts = torch.from_numpy(cached.parts.astype(np.int64))
    labels = torch.from_numpy(cached.labels)
    g = torch.Generator().manual_seed(cfg.split_seed)
    train_rows = torch.nonzero(parts == 0).flatten()
    test_rows = torch.nonzero(parts == 2).flatten()
    if cached.layout == "single":  # hold the test split out first, with the split seed
        test_idx, train_idx = _held_out(len(train_rows), cfg, g)
        test_rows, train_rows = train_rows[test_idx], train_rows[train_idx]
    elif cfg.test_size is not None:
        raise UserError("data.test_size: applies to a one-folder layout; this folder has its own "
                        "train/ (and test/) folders; remove data.test_size")
    if not len(test_rows):
        raise UserError(f"data.root: {cfg.root} has train/ but no test/ images; add a test/ "
                        f"folder or use one folder of class folders (split by data.test_size)")
    val_rows = torch.nonzero(parts == 1).flatten()
    if not len(val_rows):  # carve the validation split from training, as for built-in sets
        _check_val_size(cfg, len(train_rows))
        perm = train_rows[torch.randperm(len(train_rows), generator=g)]
        val_rows, train_rows = perm[: cfg.val_size], perm[cfg.val_size:]
    train_rows = _subset_rows(train_rows, cfg.train_subset, g)
    test_rows = _subset_rows(test_rows, cfg.test_subset, g)
    mean, std = _channel_stats(cached.images, train_rows)
    limit = memory_limit(cfg, device)
    streamed = cached.nbytes > limit
    rows = {"train": train_rows, "val": val_rows, "test": test_rows}
    if streamed:
        log.warning("data: %s is %.1f MB of uint8 images, over the memory limit of %.1f MB on "
                    "%s (data.memory_limit_gb); streaming batches from the memory-mapped cache "
                    "%s", cfg.root or cfg.name, cached.nbytes / 1e6, limit / 1e6, device,
                    cached.path)
        splits = {k: Split(cached.images, labels[r], mean, std, index=r, stream_to="cpu")
                  for k, r in rows.items()}
    else:
        # fancy indexing copies the rows out of the memory map: one copy per split, writable
        splits = {k: Split(torch.from_numpy(cached.images[r.numpy()]), labels[r], mean, std)
                  for k, r in rows.items()}
    c, s = int(cached.images.shape[1]), int(cached.images.shape[2])
    shape = InputShape(c, s, len(cached.classes))
    source = {"cache": str(cached.path), "layout": cached.layout, "streamed": streamed,
              "mean": list(mean), "std": list(std), "skipped_files": len(cached.skipped)}
    if cfg.root:
        source["root"] = str(Path(cfg.root).expanduser())
    pad = max(1, s // 8) if cfg.augment else 0  # 4 at 32 pixels, as CIFAR's
    return Splits(cfg.name, splits["train"], splits["val"], splits["test"], shape, pad,
                  cfg.augment, cached.classes, source).to(device)


def _held_out(n: int, cfg: DataConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(test rows, the rest) of ``n`` images without a test split: ``data.test_size`` (20%)."""
    n_test = cfg.test_size if cfg.test_size is not None else int(round(0.2 * n))
    if not 0 < n_test < n:
        raise UserError(f"data.test_size: {n_test} must be between 1 and {n - 1} (the {n} "
                        f"images without a test split, less one)")
    perm = torch.randperm(n, generator=g)
    return perm[:n_test].sort().values, perm[n_test:].sort().values


def _load_tensors(cfg: DataConfig, device: torch.device | str) -> Splits:
    """A tensors file (:mod:`nas_prune.tensordata`): test held out and validation carved with
    the split seed where the file has none, normalised with the training split's statistics."""
    from . import tensordata

    if not cfg.root:
        raise UserError("data.root: not set; point it at a tensors file (.pt) of images and "
                        "labels (docs: Your data)")
    path = Path(cfg.root).expanduser()
    data = tensordata.load(path)
    limit = memory_limit(cfg, device)
    if data.nbytes > limit:
        raise UserError(f"data.root: {path} holds {data.nbytes / 1e9:.2f} GB of float32 images, "
                        f"over the memory limit of {limit / 1e9:.2f} GB on {device} "
                        f"(data.memory_limit_gb); raise it or use fewer images")
    g = torch.Generator().manual_seed(cfg.split_seed)
    x, y = data.parts["train"]
    if "test" in data.parts:
        if cfg.test_size is not None:
            raise UserError(f"data.test_size: {path} has its own test split; remove "
                            f"data.test_size")
        test = Split(*data.parts["test"])
    else:
        test_rows, rest = _held_out(len(y), cfg, g)
        test, x, y = Split(x[test_rows], y[test_rows]), x[rest], y[rest]
    if "val" in data.parts:
        val = Split(*data.parts["val"])
    else:
        _check_val_size(cfg, len(y))
        perm = torch.randperm(len(y), generator=g)
        val_rows, rest = perm[: cfg.val_size], perm[cfg.val_size:]
        val, x, y = Split(x[val_rows], y[val_rows]), x[rest], y[rest]
    train = Split(x, y).subset(cfg.train_subset, g)
    test = test.subset(cfg.test_subset, g)
    mean = tuple(float(m) for m in train.x.mean(dim=(0, 2, 3)))
    std = tuple(float(s) for s in train.x.std(dim=(0, 2, 3)).clamp_min(1e-3))
    train, val, test = (replace(s, mean=mean, std=std) for s in (train, val, test))
    c, size, classes = data.shape
    source = {"file": str(path), "sha256": tensordata.file_sha256(path),
              "splits_given": [k for k in ("train", "val", "test") if k in data.parts],
              "mean": list(mean), "std": list(std)}
    pad = max(1, size // 8) if cfg.augment else 0  # as the decoded sets
    return Splits(cfg.name, train, val, test, InputShape(c, size, classes), pad, cfg.augment,
                  (), source).to(device)


def _subset_rows(rows: torch.Tensor, n: int | None, g: torch.Generator) -> torch.Tensor:
    if n is None or n >= len(rows):
        return rows
    return rows[torch.randperm(len(rows), generator=g)[:n]]


def _channel_stats(images: np.ndarray, rows: torch.Tensor, chunk: int = 4096
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (of pixels / 255) over the training rows only, in chunks."""
    c = images.shape[1]
    total = np.zeros(c)
    sq = np.zeros(c)
    count = 0
    order = np.sort(rows.numpy())
    for i in range(0, len(order), chunk):
        x = images[order[i: i + chunk]].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        sq += (x * x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(sq / max(count, 1) - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)


def memory_limit(cfg: DataConfig, device: torch.device | str) -> float:
    """Bytes of uint8 images that may be held on ``device``: ``data.memory_limit_gb``, else
    half its free memory (CUDA: ``torch.cuda.mem_get_info``; CPU: MemAvailable)."""
    if cfg.memory_limit_gb is not None:
        return cfg.memory_limit_gb * 1e9
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return 0.5 * free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return 0.5 * int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


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
    """Yield normalised (x, y) batches of a split on its device; shuffled with ``generator``."""
    n = len(split)
    if shuffle:
        order = torch.randperm(n, device=split.y.device, generator=generator)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        if shuffle:
            idx = order[i: i + batch_size]
            yield split.images(idx), split.y[idx]
        else:
            yield split.images(slice(i, i + batch_size)), split.y[i: i + batch_size]
