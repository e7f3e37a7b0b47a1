"""Your own data as one tensors file (``data.name: tensors``, ``data.root: FILE.pt``).

The file is a ``torch.save`` of plain tensors, read back with ``torch.load(weights_only=True)``
(no code runs when it loads)::

    {"train": {"x": float32 N x C x H x W, "y": int64 N},
     "test":  {...},           # optional: else data.test_size images (20%) are held out
     "val":   {...},           # optional: else data.val_size images are carved from train
     "classes": 10,            # optional: else the largest label + 1
     "format": "nas-prune-tensors", "version": 1}

Images are square, of one shape in every split; labels are class indices in [0, classes).
:func:`from_datasets` reads a user's ``Dataset``s or ``DataLoader``s into that form once,
checking every item, and :func:`save` writes it; :func:`load` checks a file (one line naming
what is wrong). :mod:`nas_prune.data` splits it, normalises it with the training split's
per-channel statistics and augments it as it does the decoded data sets.
"""

from __future__ import annotations

import hashlib
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

__all__ = ["FORMAT", "Tensors", "file_sha256", "from_datasets", "load", "save"]

FORMAT = "nas-prune-tensors"
VERSION = 1
SPLITS = ("train", "val", "test")
_KEYS = {*SPLITS, "classes", "format", "version"}
HOW = "write it with nas_prune.tensordata.save (docs: Your data)"


@dataclass(frozen=True)
class Tensors:
    """Images (float32 N x C x S x S) and labels (int64 N) per split, and the class count."""

    parts: dict[str, tuple[torch.Tensor, torch.Tensor]]
    classes: int

    @property
    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x, _ in self.parts.values())

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, size, classes)."""
        x = self.parts["train"][0]
        return int(x.shape[1]), int(x.shape[2]), self.classes

    def content_hash(self) -> str:
        """sha256 of every split's shapes, dtypes and values, and the class count."""
        h = hashlib.sha256(f"{FORMAT}/{VERSION}/{self.classes}".encode())
        for name in SPLITS:
            if name in self.parts:
                for t in self.parts[name]:
                    t = t.contiguous()
                    h.update(f"{name}/{t.dtype}/{list(t.shape)}".encode())
                    h.update(t.numpy().data)
        return h.hexdigest()


# ---- the user's Datasets and DataLoaders -------------------------------------------------------
def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"{obj.dtype} tensor of shape {list(obj.shape)}".replace("torch.", "")
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def _label(y: Any, where: str) -> int:
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point() \
            and not y.is_complex() and y.dtype is not torch.bool:
        return int(y.item())
    if isinstance(y, numbers.Integral) and not isinstance(y, bool):
        return int(y)
    raise UserError(f"{where}: the label is a {_describe(y)}; labels must be integer class "
                    f"indices (an int or an integer tensor)")


def _image(x: Any, where: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{where}: the image is a {_describe(x)}, not a tensor; give C x H x W "
                        f"float tensors (e.g. torchvision's transforms.ToTensor())")
    if not x.is_floating_point():
        raise UserError(f"{where}: the image is a {_describe(x)}; give float images (e.g. "
                        f"transforms.ToTensor(), or x.float() / 255)")
    return x


def _items(ds: Any, split: str) -> Iterable[tuple[str, Any]]:
    """(where, item) of a map-style Dataset (by index) or an iterable one."""
    from torch.utils.data import IterableDataset

    name = f"data[{split!r}]"
    if isinstance(ds, (Mapping, str, bytes)):
        raise UserError(f"{name}: a {_describe(ds)}; give a torch Dataset or DataLoader of "
                        f"(image, label) pairs (tensors x, y: TensorDataset(x, y))")
    if hasattr(ds, "__len__") and hasattr(ds, "__getitem__") \
            and not isinstance(ds, IterableDataset):
        for i in range(len(ds)):
            try:
                item = ds[i]
            except (IndexError, KeyError) as exc:
                raise UserError(f"{name}[{i}]: indexing it raised {type(exc).__name__} "
                                f"({exc}) below its length {len(ds)}; give a Dataset whose "
                                f"items 0..len-1 exist") from None
            yield f"{name}[{i}]", item
    elif isinstance(ds, Iterable):
        for i, item in enumerate(ds):
            yield f"{name} item {i}", item
    else:
        raise UserError(f"{name}: a {_describe(ds)}; give a torch Dataset or DataLoader of "
                        f"(image, label) pairs")


class _Collector:
    """Images and labels of one split, checked as they come, under a memory limit."""

    def __init__(self, split: str, limit: float | None, held: int,
                 shape: tuple[int, ...] | None, expect: Mapping[str, int], space: str) -> None:
        self.split, self.limit, self.held = split, limit, held
        self.xs: list[torch.Tensor] = []
        self.ys: list[torch.Tensor] = []
        self.shape, self.expect, self.space = shape, expect, space

    def add(self, x: torch.Tensor, y: torch.Tensor, where: str) -> None:
        shape = tuple(int(v) for v in x.shape[1:])
        text = "x".join(map(str, shape))
        if self.shape is None:  # the first image: square, and the space's channels and size
            c, h, w = shape
            if h != w:
                raise UserError(f"{where}: the image is {text}; nas-prune takes square images "
                                f"(resize or crop them to {min(h, w)}x{min(h, w)})")
            want_c, want_s = self.expect.get("channels", c), self.expect.get("size", h)
            if (c, h) != (want_c, want_s):
                raise UserError(f"{where}: the image is {text} but {self.space} takes "
                                f"{want_c}x{want_s}x{want_s}; give images of that shape or a "
                                f"space with input: from_data")
            self.shape = shape
        elif shape != self.shape:
            first = "x".join(map(str, self.shape))
            raise UserError(f"{where}: the image is {text} but the first image of the data is "
                            f"{first}; give every image one shape")
        self.xs.append(x.detach().to("cpu", torch.float32))
        self.ys.append(y)
        self.held += x.numel() * 4
        if self.limit is not None and self.held > self.limit:
            raise UserError(f"data: the images reach {self.held / 1e9:.2f} GB of float32 at "
                            f"{where}, over the memory limit of {self.limit / 1e9:.2f} GB "
                            f"(data.memory_limit_gb); raise it or pass fewer images")

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.xs:
            raise UserError(f"data[{self.split!r}]: holds no images")
        return torch.cat(self.xs), torch.cat(self.ys)


def _collect(ds: Any, out: _Collector) -> _Collector:
    from torch.utils.data import DataLoader

    split = out.split
    if isinstance(ds, DataLoader):  # its batches, as it gives them
        for b, batch in enumerate(ds):
            where = f"data[{split!r}] batch {b}"
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise UserError(f"{where}: a {_describe(batch)}, not an (images, labels) pair; "
                                f"the DataLoader's Dataset must give (image, label) items")
            x, y = _image(batch[0], where), batch[1]
            if x.dim() != 4:
                raise UserError(f"{where}: the images are a {_describe(x)}; a batch of C x H x "
                                f"W images is B x C x H x W")
            if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
                raise UserError(f"{where}: the labels are a {_describe(y)}; give one integer "
                                f"label per image")
            _label(y[:1], where)  # the dtype
            out.add(x, y.to("cpu", torch.int64), where)
        return out
    for where, item in _items(ds, split):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise UserError(f"{where}: a {_describe(item)}, not an (image, label) pair; the "
                            f"Dataset must give (image tensor C x H x W float, integer label)")
        x = _image(item[0], where)
        if x.dim() != 3:
            raise UserError(f"{where}: the image is a {_describe(x)}; give C x H x W (one "
                            f"image, no batch dimension)")
        out.add(x.unsqueeze(0), torch.tensor([_label(item[1], where)]), where)
    return out


def from_datasets(data: Any, *, expect: Mapping[str, int] | None = None,
                  space: str = "the search space",
                  memory_limit: float | None = None) -> Tensors:
    """The user's data, read once: ``data`` is ``{"train": ..., "test": ..., "val": ...}``
    (test and val optional) of torch ``Dataset``s of ``(image, label)`` items or
    ``DataLoader``s of such batches. Every item is checked (a float C x H x W tensor and an
    integer label; anything else is a one-line error naming what was found and where).

    ``expect``: the space's fixed input (``channels``, ``size``, ``classes``), checked against
    the data; ``classes``, when given, is the class count (labels must be below it).
    ``memory_limit``: bytes of float32 images the data may take.
    """
    if not isinstance(data, Mapping):
        raise UserError(f"data: a {_describe(data)}; give a dict {{'train': ..., 'test': ...}} "
                        f"of torch Datasets or DataLoaders ('val' and 'test' optional)")
    unknown = [k for k in data if k not in SPLITS]
    if unknown or "train" not in data:
        raise UserError(f"data: keys {', '.join(map(repr, data))}; give 'train' and, "
                        f"optionally, 'val' and 'test'")
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    expect = dict(expect or {})
    held, shape = 0, None
    for split in SPLITS:
        if data.get(split) is None:
            continue
        got = _collect(data[split], _Collector(split, memory_limit, held, shape, expect, space))
        held, shape = got.held, got.shape
        parts[split] = got.tensors()
    top = max(int(y.max()) for _, y in parts.values())
    low = min(int(y.min()) for _, y in parts.values())
    classes = expect.get("classes", top + 1)
    if low < 0 or top >= classes:
        bad = low if low < 0 else top
        has = f" ({space} has {classes} classes)" if "classes" in expect else ""
        raise UserError(f"data: label {bad} is outside [0, {classes}){has}; labels are class "
                        f"indices from 0")
    if classes < 2:
        raise UserError("data: every label is 0; a classifier needs at least two classes")
    return Tensors(parts, int(classes))


# ---- the file ------------------------------------------------------------------------------
def save(tensors: Tensors, path: str | Path) -> Path:
    """Write ``tensors`` to ``path`` (through a temporary file: never half written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"format": FORMAT, "version": VERSION,
                               "classes": tensors.classes}
    for name, (x, y) in tensors.parts.items():
        payload[name] = {"x": x.contiguous(), "y": y.contiguous()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load(root: str | Path) -> Tensors:
    """A tensors file, checked: one line naming the key and what is wrong."""
    path = Path(root).expanduser()
    where = f"data.root: {path}"
    if not path.is_file():
        raise UserError(f"{where}: no such file; point data.root at a tensors file (.pt) or "
                        f"{HOW}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise UserError(f"{where}: cannot be read as a tensors file ({type(exc).__name__}: "
                        f"{(text[0] if text else '')[:160]}); {HOW}") from None
    if not isinstance(raw, Mapping):
        raise UserError(f"{where}: holds a {_describe(raw)}, not a mapping of splits; {HOW}")
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; the keys are train, val, test, "
                        f"classes, format, version")
    if raw.get("format", FORMAT) != FORMAT or raw.get("version", VERSION) != VERSION:
        raise UserError(f"{where}: format {raw.get('format')!r} version "
                        f"{raw.get('version')!r}; this nas-prune reads {FORMAT!r} version "
                        f"{VERSION}")
    if "train" not in raw:
        raise UserError(f"{where}: no 'train' split; {HOW}")
    parts = {name: _split(raw[name], f"{where}: {name}") for name in SPLITS if name in raw}
    first = parts["train"][0].shape[1:]
    for name, (x, _) in parts.items():
        if x.shape[1:] != first:
            raise UserError(f"{where}: {name}.x has images of shape {list(x.shape[1:])} but "
                            f"train.x {list(first)}; give every split one shape")
    if first[1] != first[2]:
        raise UserError(f"{where}: images are {'x'.join(map(str, first))}; nas-prune takes "
                        f"square images")
    top = max(int(y.max()) for _, y in parts.values())
    low = min(int(y.min()) for _, y in parts.values())
    classes = raw.get("classes", top + 1)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise UserError(f"{where}: classes {classes!r}; give the number of classes (>= 2)")
    if low < 0 or top >= classes:
        raise UserError(f"{where}: label {low if low < 0 else top} is outside [0, {classes}); "
                        f"labels are class indices from 0")
    return Tensors(parts, classes)


def _split(value: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(value, Mapping) or set(value) != {"x", "y"}:
        keys = ", ".join(map(str, value)) if isinstance(value, Mapping) else _describe(value)
        raise UserError(f"{where}: {keys}; a split is {{'x': images, 'y': labels}}")
    x, y = value["x"], value["y"]
    if not (isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.dim() == 4
            and x.shape[0] > 0):
        raise UserError(f"{where}.x: a {_describe(x)}; give float32 images N x C x H x W")
    if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.shape == x.shape[:1]):
        raise UserError(f"{where}.y: a {_describe(y)}; give int64 labels, one per image "
                        f"({x.shape[0]})")
    if not torch.isfinite(x).all():
        raise UserError(f"{where}.x: holds NaN or infinite values")
    return x, y
