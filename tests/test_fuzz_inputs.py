"""Fuzzed inputs: mutated architecture, space and config YAMLs through every command that reads
them (build, flops, train, propose, search).

Each valid file is mutated systematically: every field gets wrong types, negative, zero, huge and
non-finite numbers; every key is deleted; every mapping gets an unknown key and is replaced by a
list and by a scalar; the top level becomes a list, a scalar or nothing; the text is truncated.
The contract is the same for every mutation and command: exit status 0 (the mutation happens to
be valid) or 2 with exactly one line on stderr; never another status, never a traceback.

Nothing may train. Architecture and space mutations run with a config whose data set cannot be
loaded (CIFAR-10 from an empty folder, no download), which fails after every other check and
before any training; a config mutation runs through train/propose/search as it is only when
:func:`~nas_prune.config.load_config` rejects it, and with that unloadable data set otherwise.

Most calls are in-process (``nas_prune.cli.main``); a few are real subprocesses. Without
``-m slow`` each (file, command) pair runs a seeded sample that mutates every field at least once
plus every structural mutation; ``-m slow`` runs them all.
"""

from __future__ import annotations

import copy
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from nas_prune._yaml import write_yaml
from nas_prune.cli import main
from nas_prune.config import load_config, to_dict
from nas_prune.errors import UserError
from nas_prune.train import resolve_device
from nas_prune.widths import SearchSpace

from .conftest import TINY_VGG, tiny_overrides

# wrong types, and numbers that are negative, zero, fractional, huge and not finite
VALUES: list[Any] = ["abc", "", [1, 2], {"k": 1}, None, True, -1, 0, 1.5, 10 ** 12, -10 ** 12,
                     1e308, math.nan, math.inf]
SPACE_DOC = {**TINY_VGG, "max_multiplier": 1.0, "bounds": {"conv1": [2, 8]}}


@dataclass(frozen=True)
class Mutation:
    name: str
    field: str  # the dotted key it changes ("" for the whole file)
    make: Callable[[], bytes]  # the file's bytes (made on demand: sampling stays cheap)

    @property
    def data(self) -> bytes:
        return self.make()


def _dump(doc: Any) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False).encode()


def _later(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], bytes]:
    return lambda: _dump(fn(*args, **kwargs))


def _raw(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _paths(doc: Any, path: tuple = ()):
    """(path, node) of every node below the top level."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) \
        if isinstance(doc, list) else ()
    for key, value in items:
        yield path + (key,), value
        yield from _paths(value, path + (key,))


def _replace(doc: Any, path: tuple, value: Any = None, *, delete: bool = False) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def mutations(doc: dict) -> list[Mutation]:
    out: list[Mutation] = []
    for path, node in list(_paths(doc)):
        field = ".".join(map(str, path))
        for value in VALUES:
            if value is not node and not (type(value) is type(node) and value == node):
                out.append(Mutation(f"{field}={value!r}", field,
                                    _later(_replace, doc, path, value)))
        if isinstance(path[-1], str):
            out.append(Mutation(f"del {field}", field, _later(_replace, doc, path, delete=True)))
        if isinstance(node, dict):
            out.append(Mutation(f"{field}+extra", field,
                                _later(_replace, doc, path, {**node, "zz_extra": 1})))
            out.append(Mutation(f"{field}=list", field,
                                _later(_replace, doc, path, list(node.values()))))
    text = _dump(doc)
    out += [Mutation("+extra", "", _raw(_dump({**doc, "zz_extra": 1}))),
            Mutation("top=list", "", _raw(_dump(list(doc.items())))),
            Mutation("top=scalar", "", _raw(b"just a string\n")),
            Mutation("top=number", "", _raw(b"42\n")),
            Mutation("empty", "", _raw(b"")),
            Mutation("null", "", _raw(b"null\n")),
            Mutation("tabs", "", _raw(b"\tfamily: vgg\n")),
            *[Mutation(f"truncated {k}/4", "", _raw(text[: len(text) * k // 4]))
              for k in (1, 2, 3)]]
    return out


def sample(muts: list[Mutation], seed: int = 1234) -> list[Mutation]:
    """One mutation per field (seeded), and every whole-file mutation."""
    rng = random.Random(seed)
    by_field: dict[str, list[Mutation]] = {}
    for m in muts:
        by_field.setdefault(m.field, []).append(m)
    out = list(by_field.pop("", []))
    for field in sorted(by_field):
        out.append(rng.choice(by_field[field]))
    return out


class Inputs:
    """The valid files, the shared --set options and the config that cannot load its data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.space = write_yaml(root / "space.yaml", SPACE_DOC)
        tiny = SearchSpace.from_dict(SPACE_DOC, name="space")
        self.arch = tiny.spec(tiny.min_widths()).save(root / "arch.yaml")
        self.sets = [x for s in tiny_overrides(self.space) for x in ("--set", s)]
        empty = root / "no-data"
        empty.mkdir(exist_ok=True)
        self.no_data = ["--set", "data.name=cifar10", "--set", f"data.root={empty}",
                        "--set", "data.download=false"]
        self.config = write_yaml(root / "config.yaml", to_dict(load_config(
            None, [*tiny_overrides(self.space, root / "run"), "search.n_trials=3"])))
        self.n = 0

    def docs(self) -> dict[str, dict]:
        return {"arch": yaml.safe_load(self.arch.read_text()), "space": SPACE_DOC,
                "config": yaml.safe_load(self.config.read_text())}

    def fresh(self, name: str) -> Path:
        self.n += 1
        return self.root / f"{name}-{self.n}"

    def write(self, m: Mutation, kind: str) -> Path:
        path = self.fresh(kind).with_suffix(".yaml")
        path.write_bytes(m.data)
        return path

    def argv(self, kind: str, command: str, path: Path) -> list[str]:
        """The command line that feeds ``path`` (a mutated file of ``kind``) to ``command``."""
        if kind == "arch":
            extra = [*self.sets, *self.no_data, "--out", str(self.fresh("out"))] \
                if command == "train" else []
            return [command, str(path), *extra]
        if kind == "space":
            if command == "flops":
                return ["flops", str(path)]
            extra = ["-m", "l1norm"] if command == "propose" else \
                ["--run-dir", str(self.fresh("run"))]
            return [command, *extra, *self.sets, *self.no_data, "--set", f"space={path}"]
        # no other option: the command resolves exactly what load_config(path) resolves (a
        # search picks a fresh run-N folder when its run_dir holds an earlier one)
        safe = self.no_data if _config_is_valid(path) else []
        extra = [str(self.arch)] if command == "train" else []
        return [command, *extra, "--config", str(path), *safe]


def _config_is_valid(path: Path) -> bool:
    try:
        resolve_device(load_config(path).device)
    except UserError:
        return False
    return True


def run_in_process(argv: list[str], capsys) -> str | None:
    """None when the contract holds, else what went wrong."""
    try:
        code = main(argv)
    except BaseException as exc:  # noqa: B036 - SystemExit and KeyboardInterrupt are failures too
        capsys.readouterr()
        return f"raised {type(exc).__name__}: {str(exc)[:200]}"
    captured = capsys.readouterr()
    return _verdict(code, captured.out, captured.err)


def _verdict(code: Any, out: str, err: str) -> str | None:
    lines = [line for line in err.splitlines() if line.strip()]
    if "Traceback" in err or "Traceback" in out:
        return f"traceback (exit {code}): {err[-300:]}"
    if code == 0:
        return None
    if code != 2:
        return f"exit status {code}: {err[-300:]}"
    if len(lines) != 1 or ": error: " not in lines[0]:
        return f"exit 2 with {len(lines)} stderr lines: {err[-300:]}"
    return None


PAIRS = [("arch", "flops"), ("arch", "build"), ("arch", "train"),
         ("space", "flops"), ("space", "propose"), ("space", "search"),
         ("config", "train"), ("config", "propose"), ("config", "search")]


def _fuzz(kind: str, command: str, everything: bool, tmp_path: Path, capsys) -> None:
    inputs = Inputs(tmp_path / "in")
    muts = mutations(inputs.docs()[kind])
    if not everything:
        muts = sample(muts)
    failures = []
    for m in muts:
        path = inputs.write(m, kind)
        problem = run_in_process(inputs.argv(kind, command, path), capsys)
        if problem:
            failures.append(f"{kind} {m.name} | {command}: {problem}")
    assert not failures, f"{len(failures)} of {len(muts)} broke the contract:\n" + \
        "\n".join(failures[:25])


@pytest.mark.parametrize("kind, command", PAIRS, ids=[f"{k}-{c}" for k, c in PAIRS])
def test_a_sample_of_mutations_keeps_the_contract(kind, command, tmp_path, capsys, monkeypatch,
                                                  no_training):
    monkeypatch.chdir(tmp_path)
    _fuzz(kind, command, False, tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("kind, command", PAIRS, ids=[f"{k}-{c}" for k, c in PAIRS])
def test_every_mutation_keeps_the_contract(kind, command, tmp_path, capsys, monkeypatch,
                                           no_training):
    monkeypatch.chdir(tmp_path)
    _fuzz(kind, command, True, tmp_path, capsys)


def test_the_sample_covers_every_field(tmp_path):
    inputs = Inputs(tmp_path / "in")
    for kind, doc in inputs.docs().items():
        fields = {".".join(map(str, p)) for p, _ in _paths(doc)}
        assert fields <= {m.field for m in sample(mutations(doc))}, kind
    config_fields = {".".join(map(str, p)) for p, node in _paths(inputs.docs()["config"])
                     if not isinstance(node, dict) or not node}
    from nas_prune.config import leaf_fields

    assert set(leaf_fields()) <= config_fields  # the fuzzed config spells out every field


def test_valid_mutations_do_occur(tmp_path, capsys):
    """The fuzzer is not only feeding rejects: some arch mutations are valid and build."""
    inputs = Inputs(tmp_path / "in")
    ok = 0
    for m in sample(mutations(inputs.docs()["arch"])):
        path = inputs.write(m, "arch")
        if main(["flops", str(path)]) == 0:
            ok += 1
        capsys.readouterr()
    assert ok > 0


BINARY = bytes(range(256)) * 8


@pytest.mark.parametrize("kind, command", [("arch", "flops"), ("arch", "build"),
                                           ("space", "propose"), ("config", "train")])
def test_binary_garbage(kind, command, tmp_path, capsys, monkeypatch, no_training):
    monkeypatch.chdir(tmp_path)
    inputs = Inputs(tmp_path / "in")
    path = inputs.write(Mutation("binary", "", _raw(BINARY)), kind)
    assert run_in_process(inputs.argv(kind, command, path), capsys) is None


SUBPROCESS_CASES = [("arch", "build", "truncated 2/4"), ("arch", "flops", "widths.conv1=1e+308"),
                    ("config", "search", "train.lr='abc'"), ("config", "train", "top=list"),
                    ("space", "propose", "+extra"), ("config", "propose", "search.ray=list")]


@pytest.mark.slow
@pytest.mark.parametrize("kind, command, name", SUBPROCESS_CASES,
                         ids=[f"{k}-{c}-{n}" for k, c, n in SUBPROCESS_CASES])
def test_in_a_subprocess(kind, command, name, tmp_path):
    inputs = Inputs(tmp_path / "in")
    (m,) = [m for m in mutations(inputs.docs()[kind]) if m.name == name]
    argv = inputs.argv(kind, command, inputs.write(m, kind))
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "nas_prune.cli", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 2
    assert _verdict(proc.returncode, proc.stdout, proc.stderr) is None, proc.stderr[-2000:]
