"""``nas-prune methods`` and ``nas-prune propose`` (in-process, plus one subprocess call).

The propose runs use a small vgg space written into tmp_path: ``vgg_small`` on 1x8x8 synthetic
images (six width groups), not ``vgg_tiny``, whose three coarse groups often leave no single grid
step that lands within 1% of a budget (see :mod:`nas_prune.testing.seed_suite`).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nas_prune import ArchSpec, build_model
from nas_prune._yaml import write_yaml
from nas_prune.cli import main
from nas_prune.seeds import SEED_METHODS
from nas_prune.widths import SearchSpace

SPACE = {"family": "vgg", "args": {"cfg": "vgg_small", "head": "slimming"},
         "input": {"channels": 1, "size": 8, "classes": 4}, "divisor": 2, "min_width": 2}


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def space_file(tmp_path):
    return write_yaml(tmp_path / "small_vgg.yaml", SPACE)


def overrides(space_file, run_dir) -> list[str]:
    sets = [f"space={space_file}", "data.name=synthetic", "data.val_size=32",
            "data.synthetic_train=192", "data.synthetic_test=32", "data.synthetic_size=8",
            "data.synthetic_channels=1", "data.synthetic_classes=4", "train.epochs=1",
            "train.batch_size=32", "seed_method.samples=16",
            "seed_method.options.l1norm.val_images=32", f"run_dir={run_dir}"]
    return [x for s in sets for x in ("--set", s)]


def test_methods_lists_every_method(capsys):
    code, out, _ = run_cli(["methods"], capsys)
    assert code == 0
    for name, cls in SEED_METHODS.items():
        assert name in out and cls.paper in out
    assert "limitations:" in out
    code, out, _ = run_cli(["methods", "--json"], capsys)
    listed = {m["name"]: m for m in json.loads(out)["methods"]}
    assert code == 0 and set(listed) == set(SEED_METHODS)
    assert listed["thinet"]["paper"] == SEED_METHODS["thinet"].paper


def test_propose_writes_an_architecture_that_rebuilds(tmp_path, capsys, space_file):
    run_dir = tmp_path / "run"
    budget = 0.5
    code, out, err = run_cli(["propose", "--seed-method", "thinet", "--budget", budget,
                              "--base-epochs", 1, "--device", "cpu", "--seed", 3,
                              *overrides(space_file, run_dir)], capsys)
    assert code == 0, err
    path = run_dir / "proposals" / "thinet-0.5.yaml"
    assert path.is_file() and str(path) in out
    assert "multiply-accumulates" in out and "keep_ratio" in out

    spec = ArchSpec.load(path)
    space = SearchSpace.load(space_file)
    base_flops = space.base_cost("flops")
    assert abs(spec.flops - budget * base_flops) <= 0.01 * budget * base_flops
    model = build_model(path)
    assert sum(p.numel() for p in model.parameters()) == spec.params
    assert spec.widths == space.validate(spec.widths)
    prov = spec.provenance
    assert prov["seed_method"] == "thinet" and prov["seed"] == 3
    assert prov["base"]["source"] == "trained" and prov["base_flops"] == base_flops
    assert prov["config"]["seed_method"]["name"] == "thinet"

    # the other architecture commands accept it
    assert run_cli(["flops", path, "--json"], capsys)[0] == 0
    code, out, _ = run_cli(["build", path], capsys)
    assert code == 0 and "OK" in out

    # a second method with the same (plain) base reuses the cached base network
    other = tmp_path / "l1.yaml"
    code, out, err = run_cli(["propose", "-m", "l1norm", "--budget", 0.4, "--metric", "params",
                              "--base-epochs", 1, "--device", "cpu", "--seed", 3, "--out", other,
                              *overrides(space_file, run_dir)], capsys)
    assert code == 0, err
    spec = ArchSpec.load(other)
    base_params = space.base_cost("params")
    assert abs(spec.params - 0.4 * base_params) <= 0.01 * 0.4 * base_params
    assert spec.provenance["base"]["source"] == "cached"
    assert spec.provenance["budget_metric"] == "params"
    assert "sensitivity" in spec.provenance["diagnostics"]


@pytest.mark.parametrize("args, fragment", [
    (["--seed-method", "nope"], "seed method"),
    (["--seed-method", "thinet", "--budget", "1.5"], "budget"),
    (["--seed-method", "thinet", "--budget", "0.00001"], "budget"),
    (["--seed-method", "thinet", "--budget", "0"], "seed_method.budget: 0.0 is out of range"),
    (["--seed-method", "thinet", "--base-epochs", "0"], "seed_method.base_epochs: 0 is out"),
    (["--seed-method", "l1norm,thinet"], "is not one seed method"),
    (["--seed-method", "thinet", "--set", "train.momentum=1.5"], "train.momentum: 1.5"),
    (["--seed-method", "thinet", "--set", "seed_method.options.thinet.nope=1"],
     "seed_method.options.thinet: unknown option"),
    (["--seed-method", "thinet", "--set", "seed_method.options.nope={}"],
     "seed_method.options.nope: not a seed method"),
])
def test_propose_user_errors_are_one_line(tmp_path, capsys, space_file, args, fragment):
    code, out, err = run_cli(["propose", *args, "--device", "cpu",
                              *overrides(space_file, tmp_path / "run")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas-prune: error:") and fragment in lines[0]
    assert not (tmp_path / "run" / "bases").exists()  # nothing trained before the error


def test_outputs_that_cannot_be_written_fail_before_training(tmp_path, capsys, space_file):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    folder = tmp_path / "folder"
    folder.mkdir()
    for extra, fragment in [(["--out", folder], "--out"), (["--set", f"run_dir={a_file}"],
                                                           "run_dir")]:
        code, _, err = run_cli(["propose", "-m", "thinet", "--device", "cpu",
                                *overrides(space_file, tmp_path / "run"), *extra], capsys)
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder", "small_vgg.yaml"]


@pytest.mark.slow
def test_unknown_method_exit_status_in_a_subprocess(tmp_path, space_file):
    proc = subprocess.run([sys.executable, "-m", "nas_prune.cli", "propose", "--seed-method",
                           "nope", "--device", "cpu", *overrides(space_file, tmp_path / "run")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope" in proc.stderr
