"""Image folders: a real ImageFolder written from Fashion-MNIST (PNG, plus JPEGs of another size),
decoded once into the cache, split, streamed, and every bad input a one-line error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_prune import imagecache
from nas_prune.cli import main
from nas_prune.data import DataConfig, batches, load_data
from nas_prune.errors import UserError

from .conftest import FMNIST, needs_fmnist

CLASSES = ("bag", "boot", "coat", "shirt")  # sorted: the label order ImageFolder gives too
PER_CLASS = 30


def _fmnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    from nas_prune.data import _read_idx

    x = _read_idx(FMNIST)[:n]
    y = _read_idx(FMNIST.with_name("train-labels-idx1-ubyte.gz"))[:n]
    return x, y


def write_folder(root: Path, *, per_class: int = PER_CLASS, jpegs: int = 2
                 ) -> dict[Path, np.ndarray]:
    """PNGs of real Fashion-MNIST images (28x28 grayscale), ``jpegs`` grayscale JPEGs of 40x34
    per class; returns every file's source pixels."""
    from PIL import Image

    x, _ = _fmnist(len(CLASSES) * (per_class + jpegs))
    out: dict[Path, np.ndarray] = {}
    i = 0
    for name in CLASSES:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            p = d / f"{k:04d}.png"
            Image.fromarray(x[i]).save(p)
            out[p] = x[i]
            i += 1
        for k in range(jpegs):
            img = Image.fromarray(x[i]).resize((40, 34), Image.BILINEAR)
            p = d / f"j{k:03d}.jpg"
            img.save(p, quality=95)
            out[p] = np.asarray(Image.open(p).convert("L"))
            i += 1
    return out


def folder_cfg(root: Path, cache: Path, **kw) -> DataConfig:
    base = dict(name="imagefolder", root=str(root), cache_dir=str(cache), val_size=20,
                test_size=24, image_size=28)
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture
def folder(tmp_path: Path):
    if not FMNIST.is_file():
        pytest.skip("Fashion-MNIST (Debian's dataset-fashion-mnist) is not installed")
    return tmp_path / "imgs", write_folder(tmp_path / "imgs"), tmp_path / "cache"


def _all_rows(split) -> np.ndarray:
    """A split's pixels back as uint8 (undo the normalisation)."""
    x = split.images(slice(None)).cpu()
    mean = torch.tensor(split.mean).view(1, -1, 1, 1)
    std = torch.tensor(split.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


# ---- pixels, cache ----------------------------------------------------------------------
@needs_fmnist
def test_pngs_load_as_their_source_pixels_and_jpegs_by_the_resize_rule(folder):
    import torchvision.transforms.functional as TF
    from PIL import Image

    root, sources, cache = folder
    cached = imagecache.load_folder(root, size=28, channels=None, cache_dir=str(cache))
    assert cached.built and cached.classes == CLASSES
    assert cached.images.shape == (len(sources), 1, 28, 28) and cached.images.dtype == np.uint8
    _, _, files = imagecache.folder_sources(root)
    for i, f in enumerate(files):
        assert CLASSES[cached.labels[i]] == f.path.parent.name
        if f.path.suffix == ".png":  # 28x28 at size 28: no resize, exact pixels
            assert np.array_equal(cached.images[i, 0], sources[f.path])
        else:  # torchvision's Resize(28) + CenterCrop(28) on the decoded image is the rule
            ref = TF.center_crop(TF.resize(Image.open(f.path).convert("L"), 28), 28)
            assert np.array_equal(cached.images[i, 0], np.asarray(ref))
    # at another size every image goes through the same rule
    big = imagecache.load_folder(root, size=32, channels=None, cache_dir=str(cache))
    for i, f in enumerate(files[:6]):
        ref = TF.center_crop(TF.resize(Image.open(f.path).convert("L"), 32), 32)
        assert np.array_equal(big.images[i, 0], np.asarray(ref))


@needs_fmnist
def test_channels_come_from_the_data_or_are_forced(folder, tmp_path):
    root, _, cache = folder
    assert imagecache.load_folder(root, size=28, channels=None,
                                  cache_dir=str(cache)).images.shape[1] == 1
    rgb = imagecache.load_folder(root, size=28, channels=3, cache_dir=str(cache))
    assert rgb.images.shape[1] == 3
    assert np.array_equal(rgb.images[0, 0], rgb.images[0, 2])  # gray as RGB: equal channels
    from PIL import Image

    colour = tmp_path / "colour"
    for c, name in enumerate(("a", "b")):
        (colour / name).mkdir(parents=True)
        for k in range(3):
            px = np.zeros((20, 20, 3), np.uint8)
            px[..., c] = 200
            Image.fromarray(px).save(colour / name / f"{k}.png")
    got = imagecache.load_folder(colour, size=16, channels=None, cache_dir=str(cache))
    assert got.images.shape == (6, 3, 16, 16) and got.images[0, 0].max() == 200


@needs_fmnist
def test_the_cache_is_built_once_and_a_second_load_reads_no_image(folder, monkeypatch):
    root, _, cache = folder
    first = imagecache.load_folder(root, size=28, channels=None, cache_dir=str(cache))
    import PIL.Image

    def refuse(*a, **k):
        raise AssertionError("an image file was opened on a cached load")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    second = imagecache.load_folder(root, size=28, channels=None, cache_dir=str(cache))
    assert not second.built and second.path == first.path
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))
    d = load_data(folder_cfg(root, cache))  # the whole data path, too
    assert len(d.train) + len(d.val) + len(d.test) == len(first.labels)


@needs_fmnist
def test_a_changed_file_invalidates_the_cache(folder):
    from PIL import Image

    root, sources, cache = folder
    first = imagecache.load_folder(root, size=28, channels=None, cache_dir=str(cache))
    target = root / "coat" / "0003.png"
    new = 255 - sources[target]
    Image.fromarray(new).save(target)
    os.utime(target, ns=(os.stat(target).st_atime_ns, os.stat(target).st_mtime_ns + 10 ** 9))
    second = imagecache.load_folder(root, size=28, channels=None, cache_dir=str(cache))
    assert second.built and second.path != first.path
    _, _, files = imagecache.folder_sources(root)
    i = [f.path for f in files].index(target)
    assert np.array_equal(second.images[i, 0], new)


@needs_fmnist
@pytest.mark.parametrize("damage", ["truncate", "version", "no-meta"])
def test_a_damaged_or_foreign_cache_entry_is_rebuilt_not_trusted(folder, damage):
    root, _, cache = folder
    first = imagecache.load_folder(root, size=28, channels=None, cache_dir=str(cache))
    reference = np.array(first.images)
    images, meta = first.path / "images.npy", first.path / "meta.json"
    if damage == "truncate":
        images.write_bytes(images.read_bytes()[:1000])
    elif damage == "version":
        m = json.loads(meta.read_text())
        m["version"] = -1
        meta.write_text(json.dumps(m))
    else:
        meta.unlink()
    again = imagecache.load_folder(root, size=28, channels=None, cache_dir=str(cache))
    assert again.built and np.array_equal(np.asarray(again.images), reference)


# ---- splits, statistics, streaming --------------------------------------------------------
@needs_fmnist
def test_one_folder_is_split_with_the_split_seed_and_stats_come_from_training(folder):
    root, _, cache = folder
    cfg = folder_cfg(root, cache)
    a, b = load_data(cfg), load_data(cfg)
    n = len(CLASSES) * (PER_CLASS + 2)
    assert (len(a.train), len(a.val), len(a.test)) == (n - 44, 20, 24)
    assert torch.equal(a.test.y, b.test.y) and torch.equal(a.train.x, b.train.x)
    c = load_data(folder_cfg(root, cache, split_seed=1))
    assert not torch.equal(a.test.x, c.test.x)
    assert a.input_shape.to_dict() == {"channels": 1, "size": 28, "classes": 4}
    assert a.classes == CLASSES
    train = a.train.x.double() / 255
    assert a.train.mean[0] == pytest.approx(float(train.mean()), abs=1e-6)
    assert a.train.std[0] == pytest.approx(float(train.std(unbiased=False)), abs=1e-6)
    prov = a.provenance()
    assert prov["classes"] == list(CLASSES) and prov["source"]["layout"] == "single"


@needs_fmnist
def test_train_val_test_folders_are_used_as_given(tmp_path):
    for part, n in (("train", 12), ("val", 4), ("test", 5)):
        write_folder(tmp_path / "ds" / part, per_class=n, jpegs=0)
    d = load_data(folder_cfg(tmp_path / "ds", tmp_path / "cache", test_size=None))
    assert (len(d.train), len(d.val), len(d.test)) == (48, 16, 20)
    assert d.source["layout"] == "split"
    # no val/: carved from train/ with data.val_size
    import shutil

    shutil.rmtree(tmp_path / "ds" / "val")
    d = load_data(folder_cfg(tmp_path / "ds", tmp_path / "cache", test_size=None, val_size=8))
    assert (len(d.train), len(d.val), len(d.test)) == (40, 8, 20)


@needs_fmnist
def test_streamed_batches_equal_in_memory_batches_and_train_the_same(folder):
    from nas_prune.train import TrainConfig, train
    from nas_prune.widths import SearchSpace

    from .conftest import TINY_VGG

    root, _, cache = folder
    mem = load_data(folder_cfg(root, cache, image_size=12))
    streamed = load_data(folder_cfg(root, cache, image_size=12, memory_limit_gb=0))
    assert streamed.train.streamed and not mem.train.streamed and streamed.source["streamed"]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for (x1, y1), (x2, y2) in zip(batches(mem.train, 16, shuffle=True, generator=g1),
                                  batches(streamed.train, 16, shuffle=True, generator=g2),
                                  strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    space = SearchSpace.from_dict(TINY_VGG, name="t")
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.05)
    results = []
    for data in (mem, streamed):
        torch.manual_seed(0)
        model = space.spec(space.base_widths()).build()
        results.append((train(model, data, cfg, seed=0, progress=False).val_acc_final,
                        [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


def test_the_memory_limit_defaults_to_half_the_free_memory():
    from nas_prune.data import memory_limit

    assert memory_limit(DataConfig(memory_limit_gb=2.5), "cpu") == 2.5e9
    limit = memory_limit(DataConfig(), "cpu")
    assert 1e6 < limit < 1e13


# ---- bad input ------------------------------------------------------------------------------
def _folder_errors(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    from PIL import Image

    px = np.zeros((8, 8), np.uint8)
    tmp_path.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp_path / "nope", "does not exist")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no classes\n")
    cases["no-classes"] = (tmp_path / "empty", "has no class folders")
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.fromarray(px).save(tmp_path / "one" / "cat" / "a.png")
    cases["one-class"] = (tmp_path / "one", "one class folder (cat)")
    for c in ("a", "b"):
        (tmp_path / "hollow" / c).mkdir(parents=True)
    Image.fromarray(px).save(tmp_path / "hollow" / "a" / "0.png")
    cases["empty-class"] = (tmp_path / "hollow", "class folder")
    for c in ("a", "b"):
        (tmp_path / "bad" / c).mkdir(parents=True)
        Image.fromarray(px).save(tmp_path / "bad" / c / "0.png")
    (tmp_path / "bad" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    cases["corrupt"] = (tmp_path / "bad", "broken.png")
    for part, names in (("train", ("a", "b")), ("val", ("a", "zebra")), ("test", ("a", "b"))):
        for c in names:
            (tmp_path / "split" / part / c).mkdir(parents=True)
            Image.fromarray(px).save(tmp_path / "split" / part / c / "0.png")
    cases["val-extra-class"] = (tmp_path / "split", "zebra")
    (tmp_path / "plainfile").write_text("x")
    cases["root-is-a-file"] = (tmp_path / "plainfile", "is a file")
    return cases


def test_every_bad_folder_is_a_one_line_error_naming_it(tmp_path):
    for name, (root, fragment) in _folder_errors(tmp_path / "cases").items():
        cache = tmp_path / f"cache-{name}"
        with pytest.raises(UserError) as err:
            load_data(folder_cfg(root, cache, val_size=1, test_size=1, image_size=8))
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith("data.root:"), (name, msg)
        assert fragment in msg, (name, msg)
        assert not cache.exists() or not any(cache.iterdir()), f"{name}: cache written"


def test_corrupt_images_can_be_skipped_and_are_counted(tmp_path):
    root, _ = _folder_errors(tmp_path / "cases")["corrupt"]
    d = load_data(folder_cfg(root, tmp_path / "cache", val_size=0, test_size=1, image_size=8,
                             skip_bad_images=True))
    assert len(d.train) + len(d.test) == 2 and d.source["skipped_files"] == 1


@pytest.mark.parametrize("sets, fragment", [
    (["data.name=torchvision:NoSuchSet"], "torchvision has no data set 'NoSuchSet'"),
    (["data.name=imagefolder"], "data.root: not set"),
    (["data.name=imagefolder", "data.channels=2"], "data.channels: 2"),
    (["data.name=imagefolder", "data.image_size=4"], "data.image_size: 4 is out of range"),
])
def test_bad_data_settings_on_the_command_line(tmp_path, capsys, sets, fragment):
    argv = ["propose", "--set", "space=vgg_small_data", "--run-dir", str(tmp_path / "run"),
            "--device", "cpu", "--set", f"data.cache_dir={tmp_path / 'c'}"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "run").exists()


# ---- end to end -----------------------------------------------------------------------------
@pytest.mark.slow
@needs_fmnist
def test_propose_train_and_search_run_on_a_folder(tmp_path, capsys):
    root = tmp_path / "imgs"
    write_folder(root, per_class=40, jpegs=2)
    sets = [f"data.root={root}", "data.name=imagefolder", f"data.cache_dir={tmp_path / 'c'}",
            "data.val_size=24", "data.test_size=24", "train.epochs=1", "train.batch_size=32",
            "seed_method.base_epochs=1", "seed_method.samples=40", "device=cpu"]
    opts = [x for s in sets for x in ("--set", s)]
    prop = tmp_path / "prop.yaml"
    assert main(["propose", "--set", "space=vgg_small_data", "--seed-method", "l1norm",
                 "--budget", "0.5", "--out", str(prop), "--run-dir", str(tmp_path / "p"),
                 *opts]) == 0
    from nas_prune._yaml import read_yaml

    arch = read_yaml(prop)
    assert arch["input"] == {"channels": 1, "size": 32, "classes": 4}
    assert main(["train", str(prop), "--out", str(tmp_path / "t"), "--test", *opts]) == 0
    trained = read_yaml(tmp_path / "t" / "model.yaml")
    assert trained["provenance"]["data"]["classes"] == list(CLASSES)
    run = tmp_path / "run"
    assert main(["search", "--set", "space=vgg_small_data", "--seed-method", "slimming",
                 "--n-trials", "3", "--run-dir", str(run), *opts]) == 0
    best = read_yaml(run / "best.yaml")
    assert best["input"]["classes"] == 4
    info = json.loads((run / "search.json").read_text())
    assert info["data"]["classes"] == list(CLASSES) and info["data"]["source"]["layout"] == \
        "single"
    assert main(["build", str(run / "best.yaml")]) == 0


# ---- torchvision data sets ------------------------------------------------------------------
@pytest.mark.slow  # unpacks and converts the 70,000 Fashion-MNIST images (~5 s)
@needs_fmnist
def test_a_torchvision_data_set_by_name_goes_through_the_cache(tmp_path, monkeypatch):
    import gzip
    import shutil

    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FMNIST.parent.glob("*.gz"):  # torchvision reads the unpacked IDX files
        with gzip.open(f) as src, open(raw / f.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    cfg = DataConfig(name="torchvision:FashionMNIST", root=str(tmp_path / "tv"),
                     cache_dir=str(tmp_path / "c"), val_size=5000, image_size=28)
    d = load_data(cfg)
    ref = load_data(DataConfig(val_size=5000))  # the project's own IDX reader
    assert (len(d.train), len(d.val), len(d.test)) == (55000, 5000, 10000)
    assert torch.equal(d.test.x, ref.test.x) and torch.equal(d.test.y, ref.test.y)
    assert d.classes[0] == "T-shirt/top" and d.input_shape.classes == 10
    from torchvision import datasets

    def refuse(*a, **k):
        raise AssertionError("torchvision was read again on a cached load")

    monkeypatch.setattr(datasets, "FashionMNIST", refuse)
    again = load_data(cfg)
    assert torch.equal(again.train.x, d.train.x)


def test_a_torchvision_data_set_of_pil_images_is_resized_by_the_same_rule():
    from PIL import Image

    class Tiny:  # the interface of a torchvision data set without a raw array
        classes = ["a", "b"]

        def __len__(self):
            return 4

        def __getitem__(self, i):
            px = np.full((30, 20), 40 * i, np.uint8)
            return Image.fromarray(px), i % 2

    x, y = imagecache._tensor_of(Tiny(), 16, None)
    assert x.shape == (4, 1, 16, 16) and x.dtype == np.uint8 and list(y) == [0, 1, 0, 1]
    assert int(x[3].max()) == 120
