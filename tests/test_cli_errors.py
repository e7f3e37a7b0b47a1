"""Bad input to every subcommand: exit status 2, one line on stderr, no traceback, nothing written.

Each case runs in-process (``nas_prune.cli.main``, fast) and as a real subprocess
(``python -m nas_prune.cli``; two cases always, every case under ``-m slow``). Every case must
fail before anything trains: the tiny space and synthetic data keep even a mistake cheap, and the
snapshot of the working folder must be unchanged afterwards (the commands run inside it, so
default outputs such as ``runs/`` would land there). ``--set`` wins over the flags, so a case that
means to change ``run_dir`` or ``device`` must not rely on a flag the shared ``--set`` options
override (they set ``run_dir`` and leave ``device`` alone).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from nas_prune._yaml import write_yaml
from nas_prune.cli import COMMANDS, main
from nas_prune.widths import SearchSpace

from .conftest import TINY_VGG, tiny_overrides


@dataclass
class Env:
    root: Path
    space: Path  # a valid search space YAML
    arch: Path  # a valid architecture YAML
    missing: Path  # a path that does not exist
    malformed: Path  # YAML with a syntax error
    binary: Path  # not text at all
    listing: Path  # YAML whose top level is a list
    folder: Path  # an empty folder
    a_file: Path  # a plain file
    sets: list[str]  # --set options for the tiny space and data (no device)

    @property
    def run(self) -> Path:
        return self.root / "run"


def make_env(root: Path) -> Env:
    root.mkdir(parents=True, exist_ok=True)
    space = write_yaml(root / "tiny_vgg.yaml", TINY_VGG)
    tiny = SearchSpace.from_dict(TINY_VGG, name="tiny_vgg")
    arch = tiny.spec(tiny.min_widths()).save(root / "arch.yaml")
    (root / "malformed.yaml").write_text("train:\n  lr: [0.1\n")
    (root / "binary.yaml").write_bytes(bytes(range(256)) * 8)
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "folder").mkdir()
    (root / "a_file").write_text("not a folder\n")
    sets = [x for s in tiny_overrides(space, root / "run") if s != "device=cpu"
            for x in ("--set", s)]
    return Env(root, space, arch, root / "missing.yaml", root / "malformed.yaml",
               root / "binary.yaml", root / "list.yaml", root / "folder", root / "a_file", sets)


@dataclass
class Case:
    id: str
    argv: Callable[[Env], list]
    fragment: str  # expected in the error line
    needs_no_cuda: bool = False  # valid (it would train) where CUDA exists


CASES = [
    # search
    Case("search-bad-int", lambda e: ["search", "--n-trials", "abc"], "invalid int value"),
    Case("search-unknown-flag", lambda e: ["search", "--bogus"], "unrecognized arguments"),
    Case("search-bad-backend", lambda e: ["search", "--backend", "nope"], "invalid choice"),
    Case("search-bad-sampler", lambda e: ["search", "--sampler", "grid"], "invalid choice"),
    Case("search-unknown-seed-method",
         lambda e: ["search", *e.sets, "--seed-method", "nope"], "seed_method.name: 'nope'"),
    Case("search-missing-config", lambda e: ["search", *e.sets, "--config", e.missing],
         "no such file"),
    Case("search-malformed-config", lambda e: ["search", *e.sets, "--config", e.malformed],
         "not valid YAML"),
    Case("search-list-config", lambda e: ["search", *e.sets, "--config", e.listing],
         "expected a YAML mapping"),
    Case("search-binary-config", lambda e: ["search", *e.sets, "--config", e.binary],
         "not valid YAML"),
    Case("search-budget-above-1", lambda e: ["search", *e.sets, "--budget", "2"],
         "seed_method.budget: 2.0 is out of range"),
    Case("search-zero-trials", lambda e: ["search", *e.sets, "--n-trials", "0"],
         "search.n_trials: 0 is out of range"),
    Case("search-tolerance", lambda e: ["search", *e.sets, "--set", "search.tolerance=0"],
         "search.tolerance"),
    Case("search-multipliers",
         lambda e: ["search", *e.sets, "--set", "search.multiplier_high=0.5"],
         "search.multiplier_high"),
    Case("search-negative-lr", lambda e: ["search", *e.sets, "--set", "train.lr=-1"],
         "train.lr: -1.0"),
    Case("search-bad-device", lambda e: ["search", *e.sets, "--device", "cuda:banana"],
         "device: 'cuda:banana' is not a device"),
    Case("search-tpu", lambda e: ["search", *e.sets, "--device", "tpu"], "device: 'tpu'"),
    Case("search-cuda-without-cuda", lambda e: ["search", *e.sets, "--device", "cuda"],
         "CUDA is not available", needs_no_cuda=True),
    Case("search-final-seeds", lambda e: ["search", *e.sets, "--final-seeds", "0"],
         "search.final_seeds: 0"),
    Case("search-ray-cpus", lambda e: ["search", *e.sets, "--cpus-per-trial", "0"],
         "search.ray.cpus_per_trial: 0.0"),
    Case("search-unknown-space", lambda e: ["search", *e.sets, "--set", "space=nope"],
         "search space 'nope': not found"),
    Case("search-budget-below-space",
         lambda e: ["search", *e.sets, "--budget", "0.0001"], "below the smallest network"),
    Case("search-run-dir-is-a-file",
         lambda e: ["search", *e.sets, "--set", f"run_dir={e.a_file}"], "a_file"),
    # propose
    Case("propose-bad-float", lambda e: ["propose", "--budget", "half"],
         "--budget: 'half' is neither a ratio in (0, 1] nor a time"),
    Case("propose-bad-metric", lambda e: ["propose", "--metric", "macs"], "invalid choice"),
    Case("propose-unknown-method", lambda e: ["propose", *e.sets, "-m", "nope"],
         "seed_method.name: 'nope'"),
    Case("propose-two-methods", lambda e: ["propose", *e.sets, "-m", "l1norm,thinet"],
         "is not one seed method"),
    Case("propose-zero-budget", lambda e: ["propose", *e.sets, "-m", "thinet", "--budget", "0"],
         "seed_method.budget: 0.0"),
    Case("propose-zero-base-epochs",
         lambda e: ["propose", *e.sets, "-m", "thinet", "--base-epochs", "0"],
         "seed_method.base_epochs: 0"),
    Case("propose-missing-checkpoint",
         lambda e: ["propose", *e.sets, "-m", "thinet", "--base-checkpoint", e.missing],
         "no such file"),
    Case("propose-unknown-space",
         lambda e: ["propose", *e.sets, "-m", "thinet", "--set", "space=nope"],
         "search space 'nope': not found"),
    Case("propose-out-is-a-folder",
         lambda e: ["propose", *e.sets, "-m", "thinet", "--out", e.folder], "is a folder"),
    Case("propose-budget-below-space",
         lambda e: ["propose", *e.sets, "-m", "thinet", "--budget", "0.0001"],
         "below the smallest network"),
    Case("propose-data-does-not-fit",
         lambda e: ["propose", *e.sets, "-m", "thinet", "--set", "data.synthetic_size=16"],
         "but space tiny_vgg expects"),
    Case("propose-unknown-option",
         lambda e: ["propose", *e.sets, "-m", "thinet", "--set",
                    "seed_method.options.thinet.nope=1"], "unknown option"),
    # methods, spaces
    Case("methods-unknown-flag", lambda e: ["methods", "--bogus"], "unrecognized arguments"),
    Case("methods-extra-argument", lambda e: ["methods", "thinet"], "unrecognized arguments"),
    Case("spaces-unknown-flag", lambda e: ["spaces", "--bogus"], "unrecognized arguments"),
    # train
    Case("train-missing-arg", lambda e: ["train"], "the following arguments are required"),
    Case("train-bad-epochs-type", lambda e: ["train", e.arch, "--epochs", "two"],
         "invalid int value"),
    Case("train-zero-epochs", lambda e: ["train", e.arch, *e.sets, "--epochs", "0"],
         "--epochs: 0"),
    Case("train-missing-file", lambda e: ["train", e.missing, *e.sets], "no such file"),
    Case("train-malformed-arch", lambda e: ["train", e.malformed, *e.sets], "not valid YAML"),
    Case("train-list-arch", lambda e: ["train", e.listing, *e.sets], "expected a YAML mapping"),
    Case("train-binary-arch", lambda e: ["train", e.binary, *e.sets], "not valid YAML"),
    Case("train-label-smoothing",
         lambda e: ["train", e.arch, *e.sets, "--set", "train.label_smoothing=2"],
         "train.label_smoothing: 2.0"),
    Case("train-momentum", lambda e: ["train", e.arch, *e.sets, "--set", "train.momentum=-1"],
         "train.momentum: -1.0"),
    Case("train-weight-decay",
         lambda e: ["train", e.arch, *e.sets, "--set", "train.weight_decay=-1"],
         "train.weight_decay: -1.0"),
    Case("train-batch-size", lambda e: ["train", e.arch, *e.sets, "--set", "train.batch_size=0"],
         "train.batch_size: 0"),
    Case("train-warmup", lambda e: ["train", e.arch, *e.sets, "--set", "train.warmup_epochs=-1"],
         "train.warmup_epochs: -1.0"),
    Case("train-train-subset",
         lambda e: ["train", e.arch, *e.sets, "--set", "data.train_subset=0"],
         "data.train_subset: 0"),
    Case("train-val-size", lambda e: ["train", e.arch, *e.sets, "--set", "data.val_size=500"],
         "data.val_size: 500"),
    Case("train-unknown-dataset",
         lambda e: ["train", e.arch, *e.sets, "--set", "data.name=imagenet"],
         "data.name: unknown dataset 'imagenet'"),
    Case("train-unknown-key", lambda e: ["train", e.arch, *e.sets, "--set", "train.lr_max=1"],
         "train.lr_max: unknown key"),
    Case("train-bad-device", lambda e: ["train", e.arch, *e.sets, "--device", "tpu"],
         "device: 'tpu'"),
    Case("train-cuda-99", lambda e: ["train", e.arch, *e.sets, "--device", "cuda:99"], "cuda"),
    Case("train-negative-seed", lambda e: ["train", e.arch, *e.sets, "--seed", "-1"],
         "random_seed: -1"),
    Case("train-out-is-a-file", lambda e: ["train", e.arch, *e.sets, "--out", e.a_file],
         "is not a folder"),
    Case("train-data-does-not-fit",
         lambda e: ["train", e.arch, *e.sets, "--set", "data.synthetic_classes=5"],
         "but space tiny_vgg expects"),
    # flops
    Case("flops-missing-arg", lambda e: ["flops"], "the following arguments are required"),
    Case("flops-missing-file", lambda e: ["flops", e.missing], "no such file"),
    Case("flops-unknown-space", lambda e: ["flops", "no_such_space"], "not found"),
    Case("flops-unknown-latency-backend", lambda e: ["flops", e.arch, "--latency", "tpu"],
         "latency.backend: 'tpu'; choose one of torch, onnxruntime"),
    Case("flops-latency-threads", lambda e: ["flops", e.arch, "--latency", "torch",
                                             "--threads", "0"], "--threads: 0 is out of range"),
    Case("flops-malformed", lambda e: ["flops", e.malformed], "not valid YAML"),
    Case("flops-list", lambda e: ["flops", e.listing], "expected a YAML mapping"),
    Case("flops-folder", lambda e: ["flops", e.folder], "no such file"),
    Case("flops-binary", lambda e: ["flops", e.binary], "not valid YAML"),
    # build
    Case("build-missing-file", lambda e: ["build", e.missing], "no such file"),
    Case("build-a-space-is-not-an-arch", lambda e: ["build", e.space], "unknown key 'args'"),
    Case("build-missing-weights", lambda e: ["build", e.arch, "--weights", e.missing],
         "no such file"),
    Case("build-weights-not-a-state-dict", lambda e: ["build", e.arch, "--weights", e.a_file],
         "not a loadable state dict"),
    Case("build-onnx-to-a-folder", lambda e: ["build", e.arch, "--onnx", e.folder],
         "is a folder"),
    # worker
    Case("worker-missing-storage", lambda e: ["worker"], "required: --storage"),
    Case("worker-bad-int", lambda e: ["worker", "--storage", "x", "--n-trials", "many"],
         "invalid int value"),
    Case("worker-bad-storage", lambda e: ["worker", "--storage", "bogus://x"],
         "not a storage Optuna can open"),
    Case("worker-no-database",
         lambda e: ["worker", "--storage", f"sqlite:///{e.root}/nope/study.db"], "does not exist"),
    Case("worker-zero-trials",
         lambda e: ["worker", "--storage", "bogus://x", "--n-trials", "0"], "--n-trials"),
    # export
    Case("export-missing-arg", lambda e: ["export"], "the following arguments are required"),
    Case("export-missing-run", lambda e: ["export", e.root / "nope"], "no such directory"),
    Case("export-not-a-run", lambda e: ["export", e.folder], "not a nas-prune run directory"),
    Case("export-a-file", lambda e: ["export", e.a_file], "no such directory"),
    Case("export-zero-top", lambda e: ["export", e.folder, "--top", "0"], "--top"),
    Case("export-top-and-pareto", lambda e: ["export", e.folder, "--top", "1", "--pareto"],
         "not allowed with"),
    # report
    Case("report-missing-arg", lambda e: ["report"], "the following arguments are required"),
    Case("report-missing-run", lambda e: ["report", e.root / "nope"], "no such directory"),
    Case("report-not-a-run", lambda e: ["report", e.folder], "not a nas-prune run directory"),
    Case("report-two-search-runs", lambda e: ["report", e.folder, e.folder], "one run directory"),
    # rethink
    Case("rethink-missing-args", lambda e: ["rethink"], "the following arguments are required"),
    Case("rethink-bad-cut-by",
         lambda e: ["rethink", "--seed-method", "uniform", "--budget", "0.5", "--cut-by", "x"],
         "invalid choice"),
    Case("rethink-unknown-method",
         lambda e: ["rethink", "--seed-method", "nope", "--budget", "0.5", *e.sets,
                    "--run-dir", e.root / "rt"], "unknown method 'nope'"),
    Case("rethink-budget-above-1",
         lambda e: ["rethink", "--seed-method", "uniform", "--budget", "1.5", *e.sets,
                    "--run-dir", e.root / "rt"], "budget"),
    Case("rethink-zero-seeds",
         lambda e: ["rethink", "--seed-method", "uniform", "--budget", "0.5", "--seeds", "0",
                    *e.sets, "--run-dir", e.root / "rt"], "--seeds"),
    Case("rethink-negative-lr",
         lambda e: ["rethink", "--seed-method", "uniform", "--budget", "0.5", "--finetune-lr",
                    "-1", *e.sets, "--run-dir", e.root / "rt"], "--finetune-lr"),
    Case("rethink-zero-base-epochs",
         lambda e: ["rethink", "--seed-method", "uniform", "--budget", "0.5", "--base-epochs",
                    "0", *e.sets, "--run-dir", e.root / "rt"], "--base-epochs"),
    Case("rethink-bad-config",
         lambda e: ["rethink", "--seed-method", "uniform", "--budget", "0.5", *e.sets,
                    "--set", "train.gamma=0", "--run-dir", e.root / "rt"], "train.gamma: 0.0"),
    Case("rethink-unknown-space",
         lambda e: ["rethink", "--seed-method", "uniform", "--budget", "0.5", *e.sets,
                    "--set", "space=nope", "--run-dir", e.root / "rt"], "not found"),
    # compare
    Case("compare-bad-budget", lambda e: ["compare", *e.sets, "--budget", "0.5,2"],
         "every budget must be a ratio in (0, 1)"),
    Case("compare-budget-not-a-number", lambda e: ["compare", *e.sets, "--budget", "half"],
         "--budget: 'half'"),
    Case("compare-unknown-arm", lambda e: ["compare", *e.sets, "--arms", "seeds,bogus"],
         "--arms: bogus"),
    Case("compare-bad-rungs", lambda e: ["compare", *e.sets, "--rungs", "1,x"], "--rungs"),
    Case("compare-budget-below-space", lambda e: ["compare", *e.sets, "--budget", "0.5,0.0001"],
         "below the smallest network"),
    Case("compare-unknown-flag", lambda e: ["compare", "--bogus"], "unrecognized arguments"),
    Case("compare-resume-missing", lambda e: ["compare", *e.sets, "--resume", "--run-dir",
                                              e.root / "nope"], "does not exist"),
    # no command
    Case("no-command", lambda e: [], "the following arguments are required: COMMAND"),
    Case("unknown-command", lambda e: ["prune"], "invalid choice: 'prune'"),
]
# Subprocess runs outside -m slow: a usage error of a subcommand and a config value error (each
# a fresh interpreter importing torch: 2-4 s on a shared 2-core machine).
FAST_SUBPROCESS = {"search-bad-int", "train-label-smoothing"}


def test_every_subcommand_has_cases():
    dummy = Env(*[Path("/nonexistent")] * 9, sets=[])
    covered = {argv[0] for argv in (c.argv(dummy) for c in CASES) if argv}
    assert set(COMMANDS) <= covered, f"no bad-input case for {sorted(set(COMMANDS) - covered)}"


def _params(subprocess_too: bool):
    out = []
    for c in CASES:
        marks = []
        if c.needs_no_cuda:
            marks.append(pytest.mark.skipif(torch.cuda.is_available(),
                                            reason="valid where CUDA exists"))
        if subprocess_too and c.id not in FAST_SUBPROCESS:
            marks.append(pytest.mark.slow)
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _check(case: Case, env: Env, before: set[str], code, out: str, err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit status {code}; stderr: {err[-2000:]}"
    assert "Traceback" not in err and "Traceback" not in out, err[-2000:]
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err[-2000:]}"
    assert lines[0].startswith("nas-prune") and ": error: " in lines[0], lines[0]
    assert case.fragment in lines[0], f"{case.fragment!r} not in {lines[0]!r}"
    assert _snapshot(env.root) == before, f"written: {sorted(_snapshot(env.root) - before)}"


@pytest.mark.parametrize("case", _params(subprocess_too=False))
def test_bad_input_in_process(case: Case, tmp_path: Path, capsys, monkeypatch, no_training):
    env = make_env(tmp_path / "work")
    monkeypatch.chdir(env.root)
    before = _snapshot(env.root)
    code = main([str(a) for a in case.argv(env)])
    captured = capsys.readouterr()
    _check(case, env, before, code, captured.out, captured.err)


@pytest.mark.parametrize("case", _params(subprocess_too=True))
def test_bad_input_in_a_subprocess(case: Case, tmp_path: Path):
    env = make_env(tmp_path / "work")
    before = _snapshot(env.root)
    repo = Path(__file__).resolve().parents[1]
    pythonpath = os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "nas_prune.cli", *map(str, case.argv(env))],
                          cwd=env.root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": pythonpath}, check=False)
    _check(case, env, before, proc.returncode, proc.stdout, proc.stderr)
