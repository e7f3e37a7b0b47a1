"""Shared fixtures: tiny spaces and synthetic data, so unit tests run in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nas_prune._yaml import write_yaml
from nas_prune.data import DataConfig, load_data
from nas_prune.widths import SearchSpace

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

TINY_VGG = {"family": "vgg", "args": {"cfg": "vgg_tiny", "head": "slimming"},
            "input": {"channels": 1, "size": 12, "classes": 4}, "divisor": 2, "min_width": 2,
            "dataset": "synthetic"}
TINY_RESNET = {"family": "resnet_cifar", "args": {"depth": 8, "shortcut": "A"},
               "input": {"channels": 1, "size": 12, "classes": 4}, "divisor": 2, "min_width": 2,
               "dataset": "synthetic"}


def tiny_data_config(**kw) -> DataConfig:
    base = dict(name="synthetic", val_size=100, synthetic_train=500, synthetic_test=200,
                synthetic_size=12, synthetic_channels=1, synthetic_classes=4)
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_vgg_space() -> SearchSpace:
    return SearchSpace.from_dict(TINY_VGG, name="tiny_vgg")


@pytest.fixture
def tiny_resnet_space() -> SearchSpace:
    return SearchSpace.from_dict(TINY_RESNET, name="tiny_resnet")


@pytest.fixture
def tiny_space_file(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "tiny_vgg.yaml", TINY_VGG)


@pytest.fixture(scope="session")
def tiny_data():
    return load_data(tiny_data_config())


def tiny_overrides(space_file: Path, run_dir: Path | None = None) -> list[str]:
    """--set overrides that make any command run on the tiny space and synthetic data."""
    out = [f"space={space_file}", "data.name=synthetic", "data.val_size=100",
           "data.synthetic_train=500", "data.synthetic_test=200", "data.synthetic_size=12",
           "data.synthetic_channels=1", "data.synthetic_classes=4", "train.epochs=1",
           "train.batch_size=50", "device=cpu",
           # no selection round in the tiny runs (the default of 3 finalists adds 3-4 trainings
           # to every search); the finalists' own tests ask for them
           "search.finalists=1"]
    if run_dir is not None:
        out.append(f"run_dir={run_dir}")
    return out


class TrainingStarted(AssertionError):
    """Raised by the ``no_training`` fixture when something builds an optimizer."""


@pytest.fixture
def no_training(monkeypatch):
    """Any training in the test is a failure: bad input must be rejected before it starts.

    Every training run builds its optimizer in :func:`nas_prune.train.make_optimizer`.
    """
    def refuse(*args, **kwargs):
        raise TrainingStarted("an optimizer was built: training started")

    monkeypatch.setattr(torch.optim, "SGD", refuse)


needs_fmnist = pytest.mark.skipif(not FMNIST.is_file(),
                                  reason="Fashion-MNIST not installed (apt-get install "
                                         "dataset-fashion-mnist)")
