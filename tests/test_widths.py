"""Width-vector validation, the grid, and the architecture YAML round trip."""

from __future__ import annotations

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
