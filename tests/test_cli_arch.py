"""The architecture commands (flops, build, spaces, train) and one-line user errors (exit 2)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from nas_prune import build_model
from nas_prune.cli import main

from .conftest import tiny_overrides


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_flops_json_of_space_and_arch(tmp_path, capsys, tiny_vgg_space):
    code, out, _ = run_cli(["flops", "vgg16_cifar", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["flops"] == 313_463_808 and data["params"] == 14_987_722
    arch = tiny_vgg_space.spec(tiny_vgg_space.min_widths()).save(tmp_path / "a.yaml")
    code, out, _ = run_cli(["flops", arch, "--json"], capsys)
    assert code == 0
    assert json.loads(out)["flops"] == tiny_vgg_space.cost(tiny_vgg_space.min_widths())


def test_flops_lists_the_width_groups(capsys):
    code, out, _ = run_cli(["flops", "resnet18_imagenet", "--groups", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and len(data["groups"]) == 12 and data["fixed"] == {}
    stage = next(g for g in data["groups"] if g["group"] == "layer2.0.conv2")
    assert stage["residual"] and "layer2.0.downsample.0" in stage["producers"]
    code, out, _ = run_cli(["flops", "vgg_small_fmnist", "--groups"], capsys)
    assert code == 0 and "6 width groups:" in out and "features.conv2" in out


def test_spaces_lists_every_space(capsys):
    code, out, _ = run_cli(["spaces", "--json"], capsys)
    names = {s["name"] for s in json.loads(out)["spaces"]}
    assert code == 0 and {"vgg16_cifar", "vgg19_cifar", "resnet56_cifar", "resnet110_cifar",
                          "vgg_small_fmnist"} <= names


@pytest.mark.slow  # the torch.export-based ONNX exporter (~5 s)
def test_build_and_onnx(tmp_path, capsys, tiny_resnet_space):
    pytest.importorskip("onnx")
    arch = tiny_resnet_space.spec(tiny_resnet_space.base_widths()).save(tmp_path / "r.yaml")
    code, out, _ = run_cli(["build", arch, "--onnx", tmp_path / "r.onnx"], capsys)
    assert code == 0 and "OK" in out and (tmp_path / "r.onnx").stat().st_size > 1000
    if importlib.util.find_spec("onnxruntime"):  # checked against the PyTorch model
        assert re.search(r"onnxruntime vs PyTorch .* max \|logit difference\| \S+ - OK", out)


@pytest.mark.parametrize("space", ["tiny_resnet_space", "tiny_vgg_space"])
def test_onnx_computes_what_the_model_computes(tmp_path, space, request):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from nas_prune.export import export_onnx

    sp = request.getfixturevalue(space)
    spec = sp.spec(sp.base_widths())
    torch.manual_seed(0)
    model = spec.build().eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding errors would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(path))
    s = spec.input
    x = torch.randn(5, s.channels, s.size, s.size)  # exported with batch 2: the batch is dynamic
    (got,) = ReferenceEvaluator(str(path)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = model(x)
    assert got.shape == tuple(want.shape)
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-5, rtol=1e-4)


def test_train_command_on_synthetic(tmp_path, capsys, tiny_space_file):
    sets = [x for s in tiny_overrides(tiny_space_file) for x in ("--set", s)]
    out_dir = tmp_path / "trained"
    code, out, err = run_cli(["train", tiny_space_file, *sets, "--set", "train.epochs=2",
                              "--out", out_dir, "--test"], capsys)
    assert code == 0, err
    assert "val acc" in out and (out_dir / "model.pt").is_file()
    spec = yaml.safe_load((out_dir / "model.yaml").read_text())
    assert spec["metrics"]["status"] == "ok" and spec["metrics"]["test_acc"] is not None
    assert (out_dir / "config.yaml").is_file()
    build_model(out_dir / "model.yaml")


@pytest.mark.parametrize("args, fragment", [
    (["--set", "search.n_trails=3"], "search.n_trails: unknown key"),
    (["--set", "train.lr=fast"], "train.lr: expected float"),
    (["--set", "data.name=imagenet"],
     "data.name: unknown dataset 'imagenet'; choose one of fashion-mnist"),
    (["--set", "train.lr=-1"], "train.lr: -1.0 is out of range; must be in (0, 100]"),
    (["--set", "train.label_smoothing=2"], "train.label_smoothing: 2.0 is out of range"),
    (["--set", "device=cuda:banana"], "device: 'cuda:banana' is not a device"),
    (["--device", "tpu"], "device: 'tpu' is not a device"),
    (["--epochs", "0"], "--epochs: 0 is out of range"),
])
def test_bad_config_is_one_line_exit_2(tmp_path, capsys, tiny_space_file, args, fragment):
    arch = tmp_path / "a.yaml"
    code, _, err = run_cli(["train", tiny_space_file, *args, "--out", arch.parent / "o"], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_outputs_that_cannot_be_written_fail_before_any_work(tmp_path, capsys, tiny_vgg_space,
                                                             tiny_space_file):
    arch = tiny_vgg_space.spec(tiny_vgg_space.min_widths()).save(tmp_path / "a.yaml")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    sets = [x for s in tiny_overrides(tiny_space_file) for x in ("--set", s)]
    code, _, err = run_cli(["train", arch, *sets, "--out", a_file], capsys)
    assert code == 2 and "--out" in err and "is not a folder" in err
    code, _, err = run_cli(["train", arch, *sets, "--out", a_file / "sub"], capsys)
    assert code == 2 and "is not a folder" in err
    code, _, err = run_cli(["build", arch, "--onnx", tmp_path], capsys)
    assert code == 2 and "--onnx" in err and "is a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "file", "tiny_vgg.yaml"]


def test_an_architecture_too_small_for_its_family_is_a_user_error(tmp_path, capsys):
    arch = tmp_path / "a.yaml"
    arch.write_text("family: vgg\nfamily_args: {cfg: vgg_small}\n"
                    "input: {channels: 1, size: 4, classes: 2}\n"
                    "widths: {conv1: 2, conv2: 2, conv3: 2, conv4: 2, conv5: 2, conv6: 2}\n")
    for command in ("flops", "build"):
        code, _, err = run_cli([command, arch], capsys)
        assert code == 2 and "cannot run on 1x4x4 images" in err
        assert len(err.strip().splitlines()) == 1


def test_malformed_yaml_config(tmp_path, capsys, tiny_space_file):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [0.1\n")
    code, _, err = run_cli(["train", tiny_space_file, "--config", bad], capsys)
    assert code == 2 and "not valid YAML" in err and "line" in err
    assert len(err.strip().splitlines()) == 1


def test_user_error_in_a_subprocess_has_no_traceback(tmp_path):
    bad = tmp_path / "arch.yaml"
    bad.write_text("family: vgg\ninput: {channels: 1, size: 8, classes: 2}\nwidths: {conv1: 3}\n")
    proc = subprocess.run([sys.executable, "-m", "nas_prune.cli", "build", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("nas-prune: error:") and "widths.conv2: missing" \
        in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a subprocess that traces every space (~9 s)
def test_a_closed_pipe_is_not_a_traceback():
    # `nas-prune spaces | head -1`: the reader leaves after one line; the table is longer than a
    # pipe buffer only with many spaces, so close the pipe before the command even starts writing
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    proc = subprocess.run([sys.executable, "-m", "nas_prune.cli", "spaces"], stdout=write_fd,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write_fd)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1
