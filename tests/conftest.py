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


# Tests that took 15 s or more each in a run of the whole suite beside two other jobs on this
# 2-core machine (`pytest -m "not slow" --durations=80`, 2026-12-06; alone they take less):
# marked slow here so that the default run, which CI runs, stays well under its time limit.
# They run with `python -m pytest -m slow` (docs/development.md). A name ending in '[' stands
# for the parametrised cases it starts (their ids hold spaces).
HEAVY = (
    "test_cli_propose.py::test_propose_writes_an_architecture_that_rebuilds",  # 24 s
    "test_family_conformance.py::test_onnx_equals_pytorch[mobilenet_v2_half_data-0]",  # 30 s
    "test_family_conformance.py::test_onnx_equals_pytorch[mobilenet_v2_small-0]",  # 33 s
    "test_family_conformance.py::test_onnx_equals_pytorch[resnet110_cifar-0]",  # 41 s
    "test_family_conformance.py::test_onnx_equals_pytorch[resnet50_small-0]",  # 23 s
    "test_family_conformance.py::test_onnx_equals_pytorch[resnet56_cifar-0]",  # 19 s
    "test_final_evaluation.py::test_a_search_evaluates_on_fresh_paired_seeds_and_keeps_every_value",  # 78 s
    "test_report.py::test_damaged_records_worked_around_are_warned_about",  # 18 s
    "test_rethink.py::test_rethink_on_a_graph_derived_mobilenet",  # 162 s
    "test_rethink.py::test_rethink_on_an_option_a_resnet",  # 107 s
    "test_rethink.py::test_rethink_writes_every_row",  # 93 s
    "test_search_optuna.py::test_finalists_pick_the_winner_by_mean_validation_over_the_final_seeds[third finalist]",  # 15 s
    "test_search_optuna.py::test_finalists_pick_the_winner_by_mean_validation_over_the_final_seeds[uniform]",  # 82 s
    "test_search_optuna.py::test_the_study_opens_in_optuna_dashboard",  # 17 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[autopruner-graph_mobilenet-0.3-flops]",  # 19 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[autopruner-graph_mobilenet-0.5-params]",  # 41 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[l1norm-graph_mobilenet-0.3-flops]",  # 60 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[l1norm-graph_mobilenet-0.5-params]",  # 60 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[l1norm-graph_resnet-0.3-flops]",  # 51 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[l1norm-graph_resnet-0.5-params]",  # 51 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[l1norm-resnet_cifar-0.3-flops]",  # 23 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[l1norm-resnet_cifar-0.5-params]",  # 26 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[l1norm-vgg-0.3-flops]",  # 24 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[l1norm-vgg-0.5-params]",  # 22 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[regression-vgg-0.3-flops]",  # 21 s
    "test_seed_conformance.py::test_budget_met_within_one_percent[regression-vgg-0.5-params]",  # 24 s
    "test_seed_conformance.py::test_one_finite_score_per_channel[autopruner-vgg]",  # 15 s
    "test_seed_conformance.py::test_same_seed_same_proposal_and_base_untouched[autopruner-graph_mobilenet]",  # 40 s
    "test_seed_conformance.py::test_same_seed_same_proposal_and_base_untouched[autopruner-graph_resnet]",  # 36 s
    "test_seed_conformance.py::test_same_seed_same_proposal_and_base_untouched[autopruner-resnet_cifar]",  # 22 s
    "test_seed_conformance.py::test_same_seed_same_proposal_and_base_untouched[autopruner-vgg]",  # 26 s
    "test_seed_conformance.py::test_same_seed_same_proposal_and_base_untouched[l1norm-resnet_cifar]",  # 18 s
    "test_seed_conformance.py::test_same_seed_same_proposal_and_base_untouched[l1norm-vgg]",  # 24 s
    "test_seeds_l1_thinet_regression.py::test_proposal_properties[l1norm-sensitivity-resnet_cifar]",  # 16 s
    "test_seeds_l1_thinet_regression.py::test_proposal_properties[regression-vgg]",  # 41 s
    "test_seeds_slimming_autopruner.py::test_autopruner_gates_end_binary_with_open_fraction_near_r[resnet_cifar-args1]",  # 274 s
    "test_seeds_slimming_autopruner.py::test_autopruner_gates_end_binary_with_open_fraction_near_r[vgg-args0]",  # 125 s
    "test_seeds_slimming_autopruner.py::test_autopruner_proposal_reports_gates_and_meets_budget",  # 100 s
    "test_seeds_slimming_autopruner.py::test_slimming_base_training_shrinks_gammas",  # 20 s
    "test_storages.py::test_each_trial_architecture_is_an_optuna_artifact",  # 75 s
    "test_train.py::test_on_epoch_stops_early",  # 21 s
    "test_train.py::test_same_seed_same_result",  # 57 s
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        nodeid = item.nodeid.removeprefix("tests/")
        if any(nodeid == h or (h.endswith("[") and nodeid.startswith(h)) for h in HEAVY):
            item.add_marker(pytest.mark.slow)
