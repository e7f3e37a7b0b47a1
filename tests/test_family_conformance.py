"""Every registered family and every shipped search space through the family conformance suite
(:mod:`nas_prune.testing.family_suite`): train step, cost model, YAML, ONNX and surgery at random
widths inside the space's bounds, and the one-shot weight-sharing network against the candidate
it slices. A new family or space is covered with no edit here."""

from __future__ import annotations

import pytest

from nas_prune.families import FAMILIES
from nas_prune.testing import family_suite as suite
from nas_prune.widths import available_spaces, space_source

SPACES = available_spaces()
#: spaces over a GFLOP at their base (ImageNet-sized): one width vector, marked slow
HEAVY = {"resnet18_imagenet", "resnet50_imagenet", "mobilenet_v2_imagenet"}


def _cases(seeds: tuple[int, ...]):
    for name in SPACES:
        heavy = name in HEAVY
        for seed in seeds[:1] if heavy else seeds:
            yield pytest.param(name, seed, id=f"{name}-{seed}",
                               marks=[pytest.mark.slow] if heavy else [])


@pytest.fixture(scope="module")
def spaces():
    return {}


def _space(cache: dict, name: str):
    if name not in cache:
        cache[name] = suite.load_space(name)
    return cache[name]


def test_every_family_has_a_shipped_space():
    used = {space_source(name)[1]["family"] for name in SPACES}
    missing = sorted(set(FAMILIES) - used)
    assert not missing, f"families without a shipped space (ship one to test them): {missing}"


@pytest.mark.parametrize("name, seed", list(_cases((0, 1))))
def test_trains_at_random_widths(spaces, name, seed):
    s = _space(spaces, name)
    suite.check_trains(s, suite.random_widths(s, seed, cap=1.5), seed)


@pytest.mark.parametrize("name, seed", list(_cases((0, 1))))
def test_cost_model_equals_a_trace(spaces, name, seed):
    s = _space(spaces, name)
    suite.check_cost(s, suite.random_widths(s, seed, cap=1.5))


@pytest.mark.parametrize("name, seed", list(_cases((0,))))
def test_yaml_round_trip(spaces, name, seed, tmp_path):
    s = _space(spaces, name)
    suite.check_yaml(s, suite.random_widths(s, seed, cap=1.5), tmp_path)


@pytest.mark.parametrize("name, seed", list(_cases((0,))))
def test_onnx_equals_pytorch(spaces, name, seed, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    s = _space(spaces, name)
    suite.check_onnx(s, suite.random_widths(s, seed), tmp_path, seed)


@pytest.mark.parametrize("name, seed", list(_cases((0, 1))))
def test_surgery_is_exact(spaces, name, seed):
    s = _space(spaces, name)
    suite.check_surgery(s, suite.random_widths(s, seed), seed)


@pytest.mark.parametrize("name, seed", list(_cases((0,))))
def test_shared_network_equals_the_leading_candidate(spaces, name, seed):
    s = _space(spaces, name)
    suite.check_shared(s, suite.random_widths(s, seed, cap=1.5), seed)
