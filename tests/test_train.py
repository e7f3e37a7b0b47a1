"""The from-scratch trainer: it learns, is deterministic, stops early and reports divergence."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from nas_prune.data import DataConfig, load_data
from nas_prune.errors import UserError
from nas_prune.train import TrainConfig, TrainHooks, budget_epochs, lr_lambda, train

from .conftest import needs_fmnist

FAST = TrainConfig(epochs=6, batch_size=25, lr=0.2, warmup_epochs=0.3)


@pytest.mark.slow  # six epochs (~5 s on a shared 2-core machine)
def test_learns_synthetic_set(tiny_vgg_space, tiny_data):
    torch.manual_seed(0)
    model = tiny_vgg_space.family.build(tiny_vgg_space.base_widths())
    r = train(model, tiny_data, FAST, seed=0, evaluate_test=True, progress=False)
    assert r.status == "ok" and r.epochs_run == 6
    assert r.val_acc_final > 0.9 and r.test_acc > 0.9  # chance is 0.25
    assert r.train_loss[-1] < r.train_loss[0]
    assert r.images_per_s > 0 and len(r.val_acc) == 6


def test_same_seed_same_result(tiny_resnet_space, tiny_data):
    def run(seed):
        torch.manual_seed(seed)
        m = tiny_resnet_space.family.build(tiny_resnet_space.base_widths())
        train(m, tiny_data, TrainConfig(epochs=1, batch_size=50, lr=0.05), seed=seed,
              progress=False)
        return torch.cat([p.flatten() for p in m.parameters()])

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_on_epoch_stops_early(tiny_vgg_space, tiny_data):
    model = tiny_vgg_space.family.build(tiny_vgg_space.base_widths())
    seen = []
    r = train(model, tiny_data, FAST, seed=0, progress=False,
              on_epoch=lambda e, acc, loss: seen.append((e, acc)) or e == 1)
    assert r.status == "stopped" and r.epochs_run == 2 and [e for e, _ in seen] == [0, 1]


class _NaNLoss(TrainHooks):
    def extra_loss(self, model, step):
        return torch.tensor(float("nan")) if step == 2 else None


def test_nan_loss_is_a_diverged_result_not_an_exception(tiny_vgg_space, tiny_data):
    model = tiny_vgg_space.family.build(tiny_vgg_space.base_widths())
    r = train(model, tiny_data, FAST, seed=0, hooks=_NaNLoss(), evaluate_test=True,
              progress=False)
    assert r.status == "diverged" and "non-finite" in r.reason and r.epochs_run == 1
    assert r.test_acc is None


def test_budget_rules():
    e = TrainConfig(epochs=160, budget="scratch-e")
    b = TrainConfig(epochs=160, budget="scratch-b")
    assert budget_epochs(e, base_flops=100, flops=50) == 160
    assert budget_epochs(b, base_flops=100, flops=50) == 320
    assert budget_epochs(b, base_flops=100, flops=80) == 200
    assert budget_epochs(b, base_flops=100, flops=10) == 320  # capped at 2x
    assert budget_epochs(b, base_flops=100, flops=100) == 160


def test_schedules():
    step = lr_lambda(TrainConfig(schedule="step", milestones=(0.5, 0.75)), 100, 10)
    assert [step(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = lr_lambda(TrainConfig(schedule="cosine", warmup_epochs=1), 100, 10)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cos(99) < 0.01


@pytest.mark.parametrize("kwargs, fragment", [
    ({"epochs": 0}, "train.epochs: 0 is out of range; must be >= 1"),
    ({"batch_size": -3}, "train.batch_size: -3 is out of range"),
    ({"eval_batch_size": 0}, "train.eval_batch_size: 0 is out of range"),
    ({"schedule": "linear"}, "train.schedule: 'linear'; choose one of cosine, step"),
    ({"budget": "scratch-c"}, "train.budget: 'scratch-c'; choose one of"),
])
def test_train_config_checks_itself(kwargs, fragment):
    with pytest.raises(UserError) as info:
        TrainConfig(**kwargs)
    assert fragment in str(info.value)


def test_an_empty_training_split_fails_before_training(tiny_vgg_space, tiny_data):
    empty = dataclasses.replace(tiny_data, train=tiny_data.train.subset(0))
    assert len(empty.train) == 0
    model = tiny_vgg_space.family.build(tiny_vgg_space.base_widths())
    with pytest.raises(UserError, match="the training split is empty"):
        train(model, empty, FAST, progress=False)


@pytest.mark.parametrize("device, fragment", [
    ("cuda:banana", "device: 'cuda:banana' is not a device"),
    ("tpu", "device: 'tpu' is not a device"),
    ("meta", "device: 'meta' is not supported"),
])
def test_train_rejects_unusable_devices(tiny_vgg_space, tiny_data, device, fragment):
    model = tiny_vgg_space.family.build(tiny_vgg_space.base_widths())
    with pytest.raises(UserError, match=fragment):
        train(model, tiny_data, FAST, device=device, progress=False)


@pytest.mark.slow
@needs_fmnist
def test_real_fashion_mnist_subset_beats_chance():
    from nas_prune.widths import SearchSpace

    data = load_data(DataConfig(val_size=1000, train_subset=3000, test_subset=2000))
    space = SearchSpace.load("vgg_small_fmnist")
    widths = space.snap({g: w / 4 for g, w in space.base_widths().items()})
    torch.manual_seed(0)
    model = space.family.build(widths)
    r = train(model, data, TrainConfig(epochs=2, batch_size=32, lr=0.05), seed=0,
              evaluate_test=True, progress=False)
    assert r.status == "ok" and r.test_acc > 0.6  # chance is 0.1
