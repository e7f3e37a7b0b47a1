"""Image data sets decoded once into a uint8 cache: image folders and torchvision data sets.

An **image folder** is torchvision's ``ImageFolder`` layout, one sub-folder per class, either
split by the user (``ROOT/train/`` plus optional ``ROOT/val/`` and ``ROOT/test/``) or one folder
of class folders that :func:`nas_prune.data.load_data` splits with the fixed split seed. PNG and
JPEG files (any size, grayscale or colour) are decoded with Pillow in a thread pool (Pillow
releases the GIL while it decodes and resizes, so threads scale without pickling images between
processes), resized so the shorter side is the target size (bilinear, antialiased) and
centre-cropped to a square: torchvision's ``Resize(size)`` + ``CenterCrop(size)`` on PIL images.

The decoded images go into one cache entry, ``CACHE/<key>/`` with ``images.npy`` (N, C, S, S
uint8), ``labels.npy``, ``parts.npy`` (0 train, 1 val, 2 test) and ``meta.json`` (written last:
an entry without it is incomplete). The key is a hash of the format version, every file's path,
size and modification time, its label and part, and the resize settings, so a changed, added or
removed file or another size makes a new entry; an entry whose files do not match its
``meta.json`` (truncated, from another version) is rebuilt, never trusted. A second load reads
``meta.json`` and memory-maps ``images.npy``: no image file is opened.

A **torchvision data set** (``torchvision:MNIST``, ``torchvision:SVHN``...) is read through its
torchvision class (downloaded only with ``data.download``), its train and test splits converted
to the same uint8 entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._io import write_atomic
from .errors import UserError

__all__ = ["CACHE_VERSION", "IMAGE_EXTENSIONS", "CachedImages", "Source", "cache_root",
           "folder_sources", "load_folder", "load_torchvision", "resize_crop"]

log = logging.getLogger(__name__)

CACHE_VERSION = 1
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Source:
    """One image file: its path, class index and part (0 train, 1 val, 2 test), and the size
    and modification time the cache key is made of."""

    path: Path
    label: int
    part: int
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class CachedImages:
    """A cache entry, memory-mapped: images (N, C, S, S) uint8, labels, parts, class names."""

    images: np.ndarray
    labels: np.ndarray
    parts: np.ndarray
    classes: tuple[str, ...]
    path: Path
    layout: str  # "split" (train/ val/ test/ folders), "single" (one folder) or "torchvision"
    built: bool  # decoded in this call (False: read from the cache)
    skipped: tuple[str, ...] = ()

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes)


def cache_root(cache_dir: str | None) -> Path:
    """``data.cache_dir``, else ``$NAS_PRUNE_CACHE``, else ``$XDG_CACHE_HOME/nas-prune`` or
    ``~/.cache/nas-prune``; the data sets live in its ``datasets/`` folder."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("NAS_PRUNE_CACHE"):
        return Path(os.environ["NAS_PRUNE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "nas-prune" / "datasets"


# ---- folders -------------------------------------------------------------------------------
def _class_dirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.name)


def _images_in(folder: Path) -> list[tuple[Path, int, int]]:
    """(path, size, mtime_ns) of the image files under ``folder`` (hidden entries skipped),
    sorted: one ``os.scandir`` pass and one stat per file (a cached load is mostly this)."""
    out: list[tuple[Path, int, int]] = []
    stack = [str(folder)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and \
                        entry.is_file():
                    st = entry.stat()
                    out.append((Path(entry.path), st.st_size, st.st_mtime_ns))
    return sorted(out)


def folder_sources(root: str | Path) -> tuple[str, tuple[str, ...], list[Source]]:
    """(layout, class names, files) of an image folder; every layout error is one line."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"data.root: {root} does not exist; point it at a folder with one "
                        f"sub-folder of images per class (or train/, val/, test/ folders)")
    if not root.is_dir():
        raise UserError(f"data.root: {root} is a file; point it at a folder of class folders")
    if (root / "train").is_dir():
        layout, folders = "split", {i: root / p for i, p in enumerate(PARTS)
                                    if (root / p).is_dir()}
    else:
        layout, folders = "single", {0: root}
    classes = [d.name for d in _class_dirs(folders[0])]
    where = folders[0]
    if not classes:
        raise UserError(f"data.root: {where} has no class folders; put each class's images in "
                        f"a sub-folder named after the class")
    if len(classes) < 2:
        raise UserError(f"data.root: {where} has one class folder ({classes[0]}); a classifier "
                        f"needs at least two")
    sources: list[Source] = []
    for part, folder in folders.items():
        names = [d.name for d in _class_dirs(folder)]
        extra = sorted(set(names) - set(classes))
        if extra:
            raise UserError(f"data.root: {folder} has classes that {where} lacks "
                            f"({', '.join(extra[:5])}); give every class training images or "
                            f"remove them")
        for name in names:
            files = _images_in(folder / name)
            if not files and part == 0:
                raise UserError(f"data.root: class folder {folder / name} has no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); add some or remove the "
                                f"folder")
            label = classes.index(name)
            sources += [Source(p, label, part, size, mtime) for p, size, mtime in files]
    return layout, tuple(classes), sources


def resize_crop(img, size: int, channels: int) -> np.ndarray:
    """A PIL image as (C, size, size) uint8: shorter side resized to ``size`` (bilinear,
    antialiased), centre-cropped, converted to ``channels`` (1: L, 3: RGB)."""
    from PIL import Image

    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    if (w, h) != (size, size):
        if w <= h:
            nw, nh = size, max(size, int(size * h / w))
        else:
            nw, nh = max(size, int(size * w / h)), size
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _probe_channels(paths: Sequence[Path], workers: int | None) -> int:
    """1 when every file is grayscale, else 3 (reads the headers only, in parallel)."""
    from PIL import Image

    def colour(p: Path) -> bool:
        try:
            with Image.open(p) as img:
                return img.mode not in GRAY_MODES and not (
                    img.mode == "P" and img.palette is not None and img.palette.mode == "L")
        except Exception:  # noqa: BLE001 - a bad file is reported by the decode pass
            return False

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return 3 if any(pool.map(colour, paths, chunksize=256)) else 1


def _key(parts: Sequence[object]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def load_folder(root: str | Path, *, size: int, channels: int | None, cache_dir: str | None,
                workers: int | None = None, skip_bad: bool = False) -> CachedImages:
    """An image folder through the cache: decoded once, memory-mapped afterwards."""
    layout, classes, sources = folder_sources(root)
    base = Path(root).expanduser()
    stats = [(str(s.path.relative_to(base)), s.size, s.mtime_ns, s.label, s.part)
             for s in sources]
    key = _key([CACHE_VERSION, "folder", str(base.resolve()), size, channels or "auto",
                "resize-shorter-bilinear-centercrop", skip_bad, classes, *stats])
    entry = cache_root(cache_dir) / f"folder-{key}"
    cached = _read_entry(entry, layout)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    if channels is None:
        channels = _probe_channels([s.path for s in sources], workers)

    from PIL import Image

    # decoded rows go straight into a memory-mapped file in a staging folder (a folder of any
    # size is never held in memory whole); the folder becomes the entry only when complete
    staging = entry.with_name(f".{entry.name}.building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        out = np.lib.format.open_memmap(staging / "images.npy", mode="w+", dtype=np.uint8,
                                        shape=(len(sources), channels, size, size))

        def decode(i: int) -> bool:
            try:
                with Image.open(sources[i].path) as img:
                    img.load()
                    out[i] = resize_crop(img, size, channels)
                return True
            except Exception:  # noqa: BLE001 - PIL raises many types for a damaged file
                return False

        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            ok = np.fromiter(pool.map(decode, range(len(sources)), chunksize=64), bool,
                             len(sources))
        bad = [str(sources[i].path) for i in np.flatnonzero(~ok)]
        if bad and not skip_bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise UserError(f"data.root: cannot decode {bad[0]}{more} (unreadable or corrupt "
                            f"image); replace or remove them, or set data.skip_bad_images=true "
                            f"to skip them")
        keep = np.flatnonzero(ok)
        if not any(sources[i].part == 0 for i in keep):
            raise UserError(f"data.root: no training image of {root} could be decoded; check "
                            f"the files")
        if bad:  # compact the good rows into a new file, a chunk at a time
            kept = np.lib.format.open_memmap(staging / "kept.npy", mode="w+", dtype=np.uint8,
                                             shape=(len(keep), *out.shape[1:]))
            for j in range(0, len(keep), 4096):
                kept[j: j + 4096] = out[keep[j: j + 4096]]
            kept.flush()
            del kept
            (staging / "kept.npy").replace(staging / "images.npy")
        else:
            out.flush()
        del out
        labels = np.array([sources[i].label for i in keep], dtype=np.int64)
        parts = np.array([sources[i].part for i in keep], dtype=np.int8)
        _write_entry(staging, entry, labels, parts, classes, layout,
                     {"root": str(Path(root).expanduser().resolve()), "size": size,
                      "channels": channels, "skipped": bad,
                      "decode_seconds": round(time.perf_counter() - t0, 3)})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.warning("data: decoded %d images of %s in %.1fs into the cache %s%s", len(keep), root,
                time.perf_counter() - t0, entry,
                f" ({len(bad)} unreadable files skipped)" if bad else "")
    out = _read_entry(entry, layout)
    assert out is not None
    return CachedImages(out.images, out.labels, out.parts, out.classes, out.path, out.layout,
                        True, tuple(bad))


# ---- torchvision data sets -----------------------------------------------------------------
def load_torchvision(name: str, *, root: str | None, download: bool, size: int | None,
                     channels: int | None, cache_dir: str | None) -> CachedImages:
    """``torchvision:NAME``: its train and test splits as one cache entry."""
    from torchvision import datasets

    folder = str(Path(root or "data").expanduser())
    key = _key([CACHE_VERSION, "torchvision", name, str(Path(folder).resolve()), size, channels])
    entry = cache_root(cache_dir) / f"tv-{name.lower()}-{key}"
    cached = _read_entry(entry, "torchvision")
    if cached is not None:  # torchvision is not touched again
        return cached
    cls = getattr(datasets, name, None)
    if not isinstance(cls, type):
        raise UserError(f"data.name: torchvision has no data set {name!r}; use a class of "
                        f"torchvision.datasets, e.g. torchvision:MNIST or torchvision:SVHN")
    splits = []
    for part, kwargs in ((0, _split_kwargs(cls, True)), (2, _split_kwargs(cls, False))):
        try:
            ds = cls(folder, download=download, **kwargs)
        except Exception as exc:  # noqa: BLE001 - missing files and network errors vary
            raise UserError(f"data.root: torchvision {name} not found in {folder} "
                            f"({type(exc).__name__}); set data.download=true or point data.root "
                            f"at a folder holding it") from None
        splits.append((part, ds))
    t0 = time.perf_counter()
    images, labels, parts = [], [], []
    for part, ds in splits:
        x, y = _tensor_of(ds, size, channels)
        images.append(x), labels.append(y), parts.append(np.full(len(y), part, np.int8))
    classes = tuple(str(c) for c in getattr(splits[0][1], "classes", [])) or \
        tuple(str(i) for i in range(int(max(lab.max() for lab in labels)) + 1))
    staging = entry.with_name(f".{entry.name}.building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        np.save(staging / "images.npy", np.concatenate(images))
        _write_entry(staging, entry, np.concatenate(labels), np.concatenate(parts), classes,
                     "torchvision", {"dataset": name, "root": folder})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.warning("data: converted torchvision %s in %.1fs into the cache %s", name,
                time.perf_counter() - t0, entry)
    out = _read_entry(entry, "torchvision")
    assert out is not None
    return out


def _split_kwargs(cls: type, train: bool) -> dict:
    import inspect

    params = inspect.signature(cls).parameters
    if "train" in params:
        return {"train": train}
    if "split" in params:
        return {"split": "train" if train else "test"}
    raise UserError(f"data.name: torchvision:{cls.__name__} has neither a train nor a split "
                    f"argument; use data.name=imagefolder on its files instead")


def _tensor_of(ds, size: int | None, channels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, S, S) uint8 and labels of a torchvision data set, through :func:`resize_crop`
    unless its raw ``data`` array already has the size and channels asked for."""
    from PIL import Image

    data = getattr(ds, "data", None)
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = getattr(ds, "labels", None)
    if data is not None and targets is not None:
        arr = np.asarray(data)
        if arr.ndim == 3:
            arr = arr[:, None]
        elif arr.ndim == 4 and arr.shape[-1] in (1, 3):
            arr = arr.transpose(0, 3, 1, 2)
        if arr.dtype == np.uint8 and arr.shape[2] == arr.shape[3] and \
                (size is None or arr.shape[2] == size) and \
                (channels is None or arr.shape[1] == channels):
            return np.ascontiguousarray(arr), np.asarray(targets, dtype=np.int64)
    out, labels = [], []
    for i in range(len(ds)):
        img, label = ds[i]
        if not isinstance(img, Image.Image):
            raise UserError("data.name: this torchvision data set does not give PIL images; use "
                            "data.name=imagefolder on its files instead")
        c = channels or (1 if img.mode in ("L", "1") else 3)
        out.append(resize_crop(img, size or min(img.size), c))
        labels.append(int(label))
    return np.stack(out), np.asarray(labels, dtype=np.int64)


# ---- the entry on disk ---------------------------------------------------------------------
def _write_entry(staging: Path, entry: Path, labels: np.ndarray, parts: np.ndarray,
                 classes: Sequence[str], layout: str, extra: dict) -> None:
    """Complete a staging folder that holds ``images.npy`` (labels, parts, then ``meta.json``)
    and rename it to ``entry``: a crash at any point leaves no entry that looks valid."""
    shape = np.load(staging / "images.npy", mmap_mode="r").shape
    np.save(staging / "labels.npy", labels)
    np.save(staging / "parts.npy", parts)
    meta = {"version": CACHE_VERSION, "layout": layout, "classes": list(classes),
            "shape": list(shape), "count": int(labels.shape[0]),
            "images_bytes": (staging / "images.npy").stat().st_size, **extra}
    write_atomic(staging / "meta.json", json.dumps(meta, indent=1) + "\n")
    if entry.exists():
        shutil.rmtree(entry)
    staging.replace(entry)


def _read_entry(entry: Path, layout: str) -> CachedImages | None:
    """The entry memory-mapped, or None (and the folder removed) when it is missing, from
    another version or damaged."""
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != CACHE_VERSION:
            raise ValueError("version")
        if (entry / "images.npy").stat().st_size != meta["images_bytes"]:
            raise ValueError("size")
        images = np.load(entry / "images.npy", mmap_mode="r")
        labels = np.load(entry / "labels.npy")
        parts = np.load(entry / "parts.npy")
        if list(images.shape) != meta["shape"] or len(labels) != meta["count"] or \
                len(parts) != meta["count"] or images.dtype != np.uint8:
            raise ValueError("shape")
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        log.warning("data: the cache %s is damaged or from another version (%s); rebuilding it",
                    entry, exc)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return CachedImages(images, labels, parts, tuple(meta["classes"]), entry,
                        meta.get("layout", layout), False, tuple(meta.get("skipped", ())))
