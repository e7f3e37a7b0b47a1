"""Base networks for seed methods: the cache, --base-checkpoint loading and its errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nas_prune.data import load_data
from nas_prune.errors import UserError
from nas_prune.seeds import SEED_METHODS, SeedContext, get_method, propose, trained_base
from nas_prune.testing.seed_suite import tiny_data_config, tiny_space, tiny_train_config

LOADED_BY_PICKLE: list[str] = []


def _record(message: str) -> None:
    LOADED_BY_PICKLE.append(message)


class _RunsCodeWhenUnpickled:
    """Unpickling this calls a function: what ``weights_only=True`` exists to refuse."""

    def __reduce__(self):
        return (_record, ("code ran",))


@pytest.fixture(scope="module")
def ctx():
    data = load_data(tiny_data_config(train_images=128))
    return SeedContext(space=tiny_space("resnet_cifar"), data=data, train=tiny_train_config(),
                       device=torch.device("cpu"))


@pytest.fixture
def train_calls(monkeypatch):
    """Counts base trainings: trained_base asks the method for its training hooks (its
    regulariser) only when it trains, never when it loads a checkpoint or a cached base."""
    calls = []
    for cls in SEED_METHODS.values():

        def counting(self, model, space, _real=cls.base_hooks):
            calls.append(self.name)
            return _real(self, model, space)

        monkeypatch.setattr(cls, "base_hooks", counting)
    return calls


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_second_call_comes_from_the_cache_without_training(ctx, tmp_path, train_calls):
    method = get_method("l1norm")
    first, source1, seconds1, info1 = trained_base(method, ctx, epochs=1, cache_dir=tmp_path,
                                                   progress=False)
    assert source1 == "trained" and len(train_calls) == 1 and seconds1 > 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("base-plain-")  # weights + metadata

    again, source2, seconds2, info2 = trained_base(get_method("autopruner"), ctx, epochs=1,
                                                   cache_dir=tmp_path, progress=False)
    assert source2 == "cached" and seconds2 == 0.0 and len(train_calls) == 1  # base_key "plain"
    assert same_weights(first, again) and info2 == info1


def test_the_cache_key_separates_regularisers_epochs_and_seeds(ctx, tmp_path, train_calls):
    trained_base(get_method("uniform"), ctx, epochs=1, cache_dir=tmp_path, progress=False)
    slim, source, _, _ = trained_base(get_method("slimming"), ctx, epochs=1, cache_dir=tmp_path,
                                      progress=False)
    assert source == "trained" and len(train_calls) == 2
    _, source, _, _ = trained_base(get_method("slimming"), ctx, epochs=2, cache_dir=tmp_path,
                                   progress=False)
    assert source == "trained" and len(train_calls) == 3
    other_seed = dataclasses.replace(ctx, seed=1)
    _, source, _, _ = trained_base(get_method("slimming"), other_seed, epochs=1,
                                   cache_dir=tmp_path, progress=False)
    assert source == "trained" and len(train_calls) == 4
    cached, source, _, _ = trained_base(get_method("slimming"), ctx, epochs=1,
                                        cache_dir=tmp_path, progress=False)
    assert source == "cached" and len(train_calls) == 4 and same_weights(slim, cached)


def test_propose_reports_cached_base(ctx, tmp_path, train_calls):
    first = propose(get_method("slimming"), ctx, 0.5, base_epochs=1, cache_dir=tmp_path,
                    progress=False)
    second = propose(get_method("slimming"), ctx, 0.5, base_epochs=1, cache_dir=tmp_path,
                     progress=False)
    assert (first.base_source, second.base_source) == ("trained", "cached")
    assert second.base_train_s == 0.0 and len(train_calls) == 1
    assert first.proposal.widths == second.proposal.widths


def test_checkpoint_is_loaded_instead_of_training(ctx, tmp_path, train_calls):
    method = get_method("l1norm")
    donor = method.base_model(ctx.space)
    with torch.no_grad():
        for p in donor.parameters():
            p.add_(0.01)  # not what a fresh build gives
    path = tmp_path / "base.pt"
    torch.save(donor.state_dict(), path)
    model, source, seconds, _ = trained_base(method, ctx, epochs=1, checkpoint=path)
    assert (source, seconds, len(train_calls)) == ("checkpoint", 0.0, 0)
    assert same_weights(model, donor) and not model.training
    # a training-script checkpoint {"state_dict": ...} is accepted too
    torch.save({"state_dict": donor.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    model, _, _, _ = trained_base(method, ctx, epochs=1, checkpoint=tmp_path / "wrapped.pt")
    assert same_weights(model, donor)


def test_checkpoint_is_read_with_weights_only(ctx, tmp_path):
    path = tmp_path / "pickle.pt"
    torch.save({"state_dict": _RunsCodeWhenUnpickled()}, path)
    LOADED_BY_PICKLE.clear()
    with pytest.raises(UserError, match="not a loadable state dict"):
        trained_base(get_method("l1norm"), ctx, epochs=1, checkpoint=path)
    assert LOADED_BY_PICKLE == []  # the pickled call never ran


@pytest.mark.parametrize("case", ["other_widths", "other_family", "missing", "not_torch"])
def test_wrong_checkpoint_is_a_user_error(ctx, tmp_path, case):
    path = tmp_path / "bad.pt"
    if case == "other_widths":
        widths = {g: max(2, w // 2) for g, w in ctx.space.base_widths().items()}
        torch.save(ctx.space.family.build(widths).state_dict(), path)
        match = "does not fit the base network"
    elif case == "other_family":
        torch.save(tiny_space("vgg").family.build(tiny_space("vgg").base_widths()).state_dict(),
                   path)
        match = "does not fit the base network"
    elif case == "missing":
        match = "no such file"
    else:
        path.write_text("not a checkpoint\n")
        match = "not a loadable state dict"
    with pytest.raises(UserError, match=match):
        trained_base(get_method("slimming"), ctx, epochs=1, checkpoint=path)
