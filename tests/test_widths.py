"""Width-vector validation, the grid, and the architecture YAML round trip."""

from __future__ import annotations

import copy

import pytest
import yaml

from nas_prune import ArchSpec, build_model
from nas_prune.errors import UserError
from nas_prune.flops import count_module
from nas_prune.widths import SearchSpace


def test_validation_errors_name_the_group(tiny_vgg_space):
    s = tiny_vgg_space
    good = s.base_widths()
    assert s.validate(good) == good
    cases = [
        ({k: v for k, v in good.items() if k != "conv2"}, "widths.conv2: missing"),
        ({**good, "conv9": 4}, "widths.conv9: not a width group"),
        ({**good, "conv1": 4.5}, "widths.conv1: 4.5 is not a positive integer"),
        ({**good, "conv1": 0}, "widths.conv1: 0 is not a positive integer"),
        ({**good, "conv3": 64}, r"widths.conv3: 64 is outside the bounds \[2, 16\]"),
        ({**good, "conv2": 7}, "widths.conv2: 7 is not a multiple of the divisor 2"),
    ]
    for widths, message in cases:
        with pytest.raises(UserError, match=message):
            s.validate(widths)


def test_grid_and_snap():
    s = SearchSpace.from_dict({"family": "vgg", "args": {"cfg": "vgg_tiny"}, "divisor": 4,
                               "min_width": 4, "bounds": {"conv1": [4, 6]},
                               "input": {"channels": 1, "size": 8, "classes": 2}}, name="g")
    assert s.grid("conv1") == [4, 6]  # the max is always allowed
    assert s.grid("conv2") == [4, 8, 12, 16]
    assert s.snap({"conv1": 5.9, "conv2": 9.9, "conv3": 100}) == {"conv1": 6, "conv2": 8,
                                                                  "conv3": 16}
    assert s.snap_one("conv2", 4.1, up=True) == 8
    assert s.snap({"conv1": 1, "conv2": 1, "conv3": 1}) == s.min_widths()


def test_a_group_narrower_than_the_divisor_keeps_its_base_width():
    s = SearchSpace.from_dict({"family": "vgg", "args": {"cfg": "vgg_tiny"}, "divisor": 16,
                               "input": {"channels": 1, "size": 8, "classes": 2}}, name="g")
    base = s.base_widths()
    narrow = [g for g in s.group_names if base[g] < 16]
    assert narrow  # the tiny VGG has groups below 16 channels
    for g in s.group_names:
        lo, hi = s.bounds[g]
        assert lo <= base[g] <= hi  # the base network stays in the space
        if g in narrow:
            assert s.grid(g) == [base[g]]  # and such a group is never widened unasked
    s.validate(base)


def test_space_errors():
    base = {"family": "vgg", "args": {"cfg": "vgg_tiny"},
            "input": {"channels": 1, "size": 8, "classes": 2}}
    with pytest.raises(UserError, match="unknown key 'divisr'"):
        SearchSpace.from_dict({**base, "divisr": 2}, name="x")
    with pytest.raises(UserError, match="bounds.conv7: not a width group"):
        SearchSpace.from_dict({**base, "bounds": {"conv7": [1, 2]}}, name="x")
    with pytest.raises(UserError, match="not found; choose one of"):
        SearchSpace.load("no_such_space")


def test_yaml_round_trip_rebuilds_exactly(tmp_path, tiny_resnet_space):
    s = tiny_resnet_space
    widths = {g: max(2, w // 2) for g, w in s.base_widths().items()}
    widths = s.snap(widths)
    spec = s.spec(widths, metrics={"val_acc": 0.5}, provenance={"seed_method": "uniform"})
    path = spec.save(tmp_path / "arch.yaml")
    data = yaml.safe_load(path.read_text())
    assert data["widths"] == widths and data["format_version"] == 1
    assert data["provenance"]["code"]["nas_prune"]
    assert set(data["layers"]) >= {"conv1", "layer1.0.conv1", "layer1.0.conv2"}
    again = ArchSpec.load(path)
    assert again.widths == widths and again.metrics == {"val_acc": 0.5}
    model = build_model(path)
    assert count_module(model, again.input) == (data["flops"], data["params"])
    for layer, ch in data["layers"].items():
        assert model.get_submodule(layer).out_channels == ch


def test_edited_yaml_is_caught(tmp_path, tiny_vgg_space):
    spec = tiny_vgg_space.spec(tiny_vgg_space.base_widths())
    data = spec.to_dict()
    data["flops"] += 1
    with pytest.raises(UserError, match="flops: records"):
        ArchSpec.from_dict(data)
    data = spec.to_dict()
    data["widths"]["conv1"] = 3
    del data["flops"], data["params"]
    with pytest.raises(UserError, match="layers: does not match"):
        ArchSpec.from_dict(data)
    data = spec.to_dict()
    data["color"] = "red"
    with pytest.raises(UserError, match="unknown key 'color'"):
        ArchSpec.from_dict(data)
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: vgg\nwidths: {conv1: 3\n")
    with pytest.raises(UserError, match="not valid YAML"):
        ArchSpec.load(bad)


BASE_SPACE = {"family": "vgg", "args": {"cfg": "vgg_tiny"},
              "input": {"channels": 1, "size": 8, "classes": 2}}


@pytest.mark.parametrize("change, fragment", [
    ({"divisor": "abc"}, "divisor: 'abc' is not an integer"),
    ({"divisor": 0}, r"divisor: 0 is out of range; must be in \[1, 65536\]"),
    ({"min_width": -1}, "min_width: -1 is out of range"),
    ({"min_width": 2.5}, "min_width: 2.5 is not an integer"),
    ({"max_multiplier": "big"}, "max_multiplier: 'big' is not a number"),
    ({"max_multiplier": float("nan")}, "max_multiplier: nan is not a number"),
    ({"max_multiplier": 0.5}, r"max_multiplier: 0.5 is out of range; must be in \[1, 4\]"),
    ({"max_multiplier": 4.5}, r"max_multiplier: 4.5 is out of range; must be in \[1, 4\]"),
    ({"max_multiplier": True}, "max_multiplier: True is not a number"),
    ({"bounds": [1, 2]}, "bounds: expected a mapping"),
    ({"bounds": {"conv1": ["a", 4]}}, r"bounds.conv1\[0\]: 'a' is not an integer"),
    ({"bounds": {"conv1": [1, 10 ** 9]}}, r"bounds.conv1\[1\]: 1000000000 is out of range"),
    ({"args": ["vgg_tiny"]}, "args: expected a mapping of family arguments"),
    ({"args": {"cfg": ["vgg_tiny"]}}, "args.cfg: .* is not a plain value"),
    ({"args": {"cfg": "vgg_tiny", "bn_gamma": "x"}}, "args: bad arguments for family 'vgg'"),
    ({"args": {"cfg": "vgg_tiny", "colour": 1}}, "bad arguments for family 'vgg'"),
    ({"args": {"cfg": "vgg_tiny", "bn_gamma": 1e308}}, "args.bn_gamma: 1e[+]308 is out of range"),
    ({"args": {"cfg": "vgg_tiny", "bn_gamma": float("nan")}}, "args.bn_gamma: nan is out of"),
    ({"family": 7}, "family: 7 is not a family name"),
    ({"family": "alexnet"}, "unknown family 'alexnet'"),
    ({"input": {"channels": 1, "size": 0, "classes": 2}}, "input.size: 0 is out of range"),
    ({"input": {"channels": "1", "size": 8, "classes": 2}}, "input.channels: '1' is not an int"),
    ({"input": {"channels": 1, "size": 10 ** 6, "classes": 2}}, "input.size: 1000000 is out"),
    ({"input": [1, 8, 2]}, "input: expected a mapping with channels, size and classes"),
    ({"input": {"channels": 1, "size": 1, "classes": 2}}, "cannot run on 1x1x1 images"),
    ({"dataset": 5}, "dataset: 5 is not a string"),
])
def test_space_values_are_checked(change, fragment):
    with pytest.raises(UserError, match=fragment) as info:
        SearchSpace.from_dict({**BASE_SPACE, **change}, name="x")
    assert len(str(info.value).splitlines()) == 1
    with pytest.raises(UserError, match="expected a mapping"):
        SearchSpace.from_dict([1, 2], name="x")


def test_architecture_values_are_checked(tiny_vgg_space):
    good = tiny_vgg_space.spec(tiny_vgg_space.base_widths()).to_dict()

    def edited(**change):
        data = {**copy.deepcopy(good), **change}
        for key in ("flops", "params", "layers"):  # so that the widths' own checks answer
            if key not in change:
                data.pop(key)
        return data

    cases = [
        (edited(widths={**good["widths"], "conv1": 10 ** 6}),
         r"widths.conv1: 1000000 channels is out of range; must be in \[1, 65536\]"),
        (edited(widths={"conv1": 8, "conv2": 65536, "conv3": 65536}),
         "parameters is more than the"),
        (edited(family_args=["vgg_tiny"]), "family_args: expected a mapping"),
        (edited(flops="many"), "flops: records 'many'"),
        (edited(params=True), "params: records True"),
        (edited(layers=[1, 2]), "layers: expected a mapping"),
        (edited(metrics="good"), "metrics: expected a mapping"),
        (edited(provenance=[1]), "provenance: expected a mapping"),
        (edited(space=3), "space: 3 is not a space name"),
        (edited(format_version="1"), "format_version: '1' is not supported"),
        (edited(input={"channels": 1, "size": 1, "classes": 4}), "cannot run on 1x1x1"),
    ]
    for data, fragment in cases:
        with pytest.raises(UserError, match=fragment) as info:
            ArchSpec.from_dict(data)
        assert len(str(info.value).splitlines()) == 1
    for bad in ([good], "vgg", None):
        with pytest.raises(UserError, match="expected a mapping"):
            ArchSpec.from_dict(bad)


def test_max_multiplier_widens_every_group_and_keeps_the_base_as_reference(tiny_data):
    """max_multiplier 1.5: each group's maximum is 1.5x its base on the divisor's grid; a
    widened vector validates, counts exactly, builds and trains; the base stays the base."""
    from nas_prune.flops import _traced
    from nas_prune.train import TrainConfig, train

    from .conftest import TINY_VGG

    plain = SearchSpace.from_dict(TINY_VGG, name="plain")
    wide = SearchSpace.from_dict({**TINY_VGG, "max_multiplier": 1.5}, name="wide")
    assert wide.base_widths() == plain.base_widths()
    for g, base in wide.base_widths().items():
        assert plain.bounds[g][1] == base
        assert wide.bounds[g][1] == max(base, int(base * 1.5) // 2 * 2) > base
    assert wide.widened_groups() == wide.group_names and plain.widened_groups() == []
    widths = wide.validate(wide.max_widths())
    assert widths != wide.base_widths()
    assert wide.count(widths) == _traced(wide.family, widths)
    assert wide.cost(widths) > wide.cost(wide.base_widths())
    with pytest.raises(UserError, match="outside the bounds"):
        plain.validate(widths)
    model = wide.family.build(widths)
    r = train(model, tiny_data, TrainConfig(epochs=1, batch_size=64), seed=0, progress=False)
    assert r.status == "ok" and r.epochs_run == 1
