"""One-shot screening (nas_prune.oneshot): sandwich training, BatchNorm recalibration, the
screening score, base-network candidates and the checkpoint. The shared network's exactness
against the candidates it slices is in the family conformance suite."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_prune.errors import UserError
from nas_prune.oneshot import (
    BaseNetCandidates,
    OneShotConfig,
    SharedNet,
    load_shared,
    planned_sandwich_cost,
    recalibrate_bn,
    save_shared,
    screen,
    screening_data,
    train_shared,
)
from nas_prune.surgery import filter_l1_scores
from nas_prune.testing.family_suite import leading_copy
from nas_prune.train import TrainConfig
from nas_prune.widths import SearchSpace

from .conftest import TINY_RESNET, TINY_VGG

TINY_TRAIN = TrainConfig(epochs=1, batch_size=100, lr=0.05)
ONE = OneShotConfig(epochs=1, random_widths=1, recal_batches=2, recal_batch_size=50,
                    val_images=60)


def test_sandwich_trains_widest_and_narrowest_every_step(tiny_vgg_space, tiny_data):
    shared = SharedNet(tiny_vgg_space, seed=0)
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    seen: list[list[dict[str, int]]] = []
    rec = train_shared(shared, tiny_data, TINY_TRAIN, ONE, seed=0,
                       on_step=lambda step, ws: seen.append(ws))
    steps = (len(tiny_data.train) // 100) * ONE.epochs
    assert rec["steps"] == steps == len(seen)
    widest, narrowest = tiny_vgg_space.max_widths(), tiny_vgg_space.min_widths()
    for ws in seen:
        assert ws[0] == widest and ws[1] == narrowest and len(ws) == 2 + ONE.random_widths
        for w in ws:
            assert tiny_vgg_space.validate(w) == w
    # every step trains the widest network: all of its parameters moved
    for name, p in shared.model.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"{name} did not train"
    # cost: more than one widest-network epoch, less than (2 + N) of them, in base trainings
    assert 1.0 < rec["cost_base_trainings"] < 2 + ONE.random_widths
    # predicted exactly before training (what compare deducts from the oneshot arm's trials)
    assert planned_sandwich_cost(tiny_vgg_space, n_train=len(tiny_data.train), train=TINY_TRAIN,
                                 oneshot=ONE, seed=0) == rec["cost_base_trainings"]
    assert all(torch.isfinite(torch.tensor(rec["train_loss"])))


def test_recalibration_changes_bn_statistics_and_nothing_else(tiny_resnet_space, tiny_data):
    shared = SharedNet(tiny_resnet_space, seed=1)
    w = tiny_resnet_space.min_widths()
    cand = shared.extract(w)
    before = {k: v.clone() for k, v in cand.state_dict().items()}
    sdata = screening_data(tiny_data, ONE, seed=0)
    recalibrate_bn(cand, sdata.recal)
    assert not cand.training
    bn_keys = {f"{n}.{leaf}" for n, m in cand.named_modules() if isinstance(m, nn.BatchNorm2d)
               for leaf in ("running_mean", "running_var", "num_batches_tracked")}
    for k, v in cand.state_dict().items():
        if k in bn_keys:
            if not k.endswith("num_batches_tracked"):
                assert not torch.equal(v, before[k]), f"{k} not recalibrated"
        else:
            assert torch.equal(v, before[k]), f"{k} changed"
    for m in cand.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.momentum == 0.1 and int(m.num_batches_tracked) == ONE.recal_batches
    # the statistics are the cumulative average of the batches' own statistics
    first = cand.get_submodule("bn1")
    means = []
    for x in sdata.recal:
        h = nn.functional.conv2d(x, cand.get_submodule("conv1").weight, padding=1)
        means.append(h.mean((0, 2, 3)))
    assert torch.allclose(first.running_mean, torch.stack(means).mean(0), atol=1e-5)
    # and the shared network is untouched
    again = SharedNet(tiny_resnet_space, seed=1)
    for (k, a), b in zip(shared.model.state_dict().items(), again.model.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k


def test_screening_score_is_fixed_and_in_range(tiny_vgg_space, tiny_data):
    shared = SharedNet(tiny_vgg_space, seed=0)
    sdata = screening_data(tiny_data, ONE, seed=0)
    assert len(sdata.recal) == 2 and sdata.val_x.shape[0] == 60
    w = tiny_vgg_space.base_widths()
    a = screen(shared.extract(w), sdata)
    b = screen(shared.extract(w), sdata)
    assert a == b and 0.0 <= a <= 1.0


def test_base_network_candidates_keep_the_important_channels(tiny_vgg_space, tiny_data):
    base = tiny_vgg_space.family.build(tiny_vgg_space.max_widths())
    scores = filter_l1_scores(base, tiny_vgg_space.family)
    cands = BaseNetCandidates(tiny_vgg_space, base, scores)
    w = tiny_vgg_space.min_widths()
    cut = cands.extract(w)
    top = scores["conv1"].argsort(descending=True)[: w["conv1"]].sort().values
    assert torch.equal(cut.get_submodule("features.bn1").weight,
                       base.get_submodule("features.bn1").weight[top])
    sdata = screening_data(tiny_data, ONE, seed=0)
    assert 0.0 <= screen(cut, sdata) <= 1.0


def test_checkpoint_round_trip_and_refusals(tiny_vgg_space, tmp_path):
    shared = SharedNet(tiny_vgg_space, seed=3)
    path = save_shared(shared, tmp_path / "shared.pt", {"epochs": 1})
    again, rec = load_shared(tiny_vgg_space, path)
    assert rec == {"epochs": 1}
    w = tiny_vgg_space.min_widths()
    x = torch.randn(2, 1, 12, 12)
    shared.model.eval()
    again.model.eval()
    assert torch.equal(shared.forward(w, x), again.forward(w, x))
    other = SearchSpace.from_dict(TINY_RESNET, name="tiny_resnet")
    with pytest.raises(UserError, match="space 'tiny_vgg'.*not of space 'tiny_resnet'"):
        load_shared(other, path)
    ck = torch.load(path, weights_only=True)
    ck["nas_prune"] = "0.0.1"
    torch.save(ck, path)
    with pytest.raises(UserError, match=r"another code version \(format 1, nas-prune 0.0.1\)"):
        load_shared(tiny_vgg_space, path)


def test_leading_copy_is_a_candidate(tiny_resnet_space):
    shared = SharedNet(tiny_resnet_space, seed=0)
    w = tiny_resnet_space.min_widths()
    cand = leading_copy(shared.model, tiny_resnet_space, w)
    assert {k: tuple(v.shape) for k, v in cand.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in tiny_resnet_space.family.build(w).state_dict().items()}


@pytest.mark.parametrize("key, value", [("epochs", 0), ("recal_batches", 0),
                                        ("val_images", 0), ("random_widths", -1)])
def test_out_of_range_settings_name_the_key(key, value):
    with pytest.raises(UserError, match=f"search.screening.{key}: {value} is out of range"):
        OneShotConfig(**{key: value})


def test_a_family_that_cannot_slice_is_named(monkeypatch):
    space = SearchSpace.from_dict(TINY_VGG, name="tiny_vgg")
    real, widest = space.family.build, space.max_widths()

    def build(widths):  # a narrower network grows a layer the widest one does not have
        net = real(widths)
        if dict(widths) != widest:
            net.extra = nn.Linear(2, 2)
        return net

    monkeypatch.setattr(space.family, "build", build)
    with pytest.raises(UserError, match=r"family vgg: cannot slice .*\(extra.weight: \(2, 2\) "
                                        r"from missing\)"):
        SharedNet(space)
