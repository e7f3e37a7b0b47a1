"""Data sets: splits, on-device augmentation, Fashion-MNIST discovery and its error."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nas_prune import data as data_mod
from nas_prune.data import DataConfig, Split, augment, batches, load_data
from nas_prune.errors import UserError

from .conftest import needs_fmnist, tiny_data_config


def test_synthetic_splits_are_disjoint_and_seeded():
    a = load_data(tiny_data_config())
    b = load_data(tiny_data_config())
    assert a.input_shape.to_dict() == {"channels": 1, "size": 12, "classes": 4}
    assert len(a.train) == 400 and len(a.val) == 100 and len(a.test) == 200
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    # no validation image is also a training image
    flat_train = {tuple(r.tolist()) for r in a.train.x.flatten(1)[:, :8]}
    assert not any(tuple(r.tolist()) in flat_train for r in a.val.x.flatten(1)[:, :8])
    c = load_data(tiny_data_config(split_seed=1))
    assert not torch.equal(a.val.x, c.val.x)


def test_subset_and_bad_val_size():
    d = load_data(tiny_data_config(train_subset=50, test_subset=20))
    assert len(d.train) == 50 and len(d.test) == 20
    with pytest.raises(UserError, match="data.val_size"):
        load_data(tiny_data_config(val_size=10_000))
    with pytest.raises(UserError, match="data.name: unknown dataset 'imagenet'"):
        load_data(DataConfig(name="imagenet"))
    for key in ("train_subset", "test_subset"):
        with pytest.raises(UserError, match=f"data.{key}: 0 is out of range"):
            load_data(tiny_data_config(**{key: 0}))


def test_augment_crops_and_flips_on_device():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    g = torch.Generator().manual_seed(0)
    out = augment(x, padding=1, hflip=False, generator=g)
    assert out.shape == x.shape
    # every crop is a shifted window of the zero-padded image
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):
        assert any(torch.equal(out[i, 0], padded[i, 0, dy:dy + 4, dx:dx + 4])
                   for dy in range(3) for dx in range(3))
    flipped = augment(x, padding=0, hflip=True, generator=torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    assert torch.equal(augment(x, padding=0, hflip=False), x)


def test_batches_cover_the_split_once():
    s = Split(torch.arange(10).float().view(10, 1, 1, 1), torch.arange(10))
    seen = torch.cat([y for _, y in batches(s, 3, shuffle=True,
                                            generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))
    assert sum(len(y) for _, y in batches(s, 3, shuffle=False, drop_last=True)) == 9


def test_missing_fashion_mnist_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod, "DEBIAN_FMNIST", tmp_path / "nowhere")
    with pytest.raises(UserError) as err:
        load_data(DataConfig(root=str(tmp_path)))
    msg = str(err.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg


@pytest.mark.slow  # reads and normalises all 70,000 images twice (~5 s)
@needs_fmnist
def test_fashion_mnist_from_idx_files(tmp_path):
    d = load_data(DataConfig(val_size=5000))
    assert len(d.train) == 55000 and len(d.val) == 5000 and len(d.test) == 10000
    assert d.input_shape.to_dict() == {"channels": 1, "size": 28, "classes": 10}
    assert d.train.x.dtype == torch.uint8  # kept as pixels, normalised a batch at a time
    x = d.train.images(slice(None))
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    # the configured root comes first: a copy of the files there is used
    import shutil

    for f in data_mod.DEBIAN_FMNIST.iterdir():
        shutil.copy(f, tmp_path / f.name)
    d2 = load_data(dataclasses.replace(DataConfig(), root=str(tmp_path), train_subset=100))
    assert len(d2.train) == 100
