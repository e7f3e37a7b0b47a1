"""The documentation is tested: the site builds with warnings as errors, the generated reference
covers every config key and command-line option, every ``nas-prune`` command in the docs and the
README parses with today's CLI, and every block marked runnable runs on synthetic data.

A runnable block is a fenced ``bash`` or ``python`` block right after ``<!-- runnable -->`` (or
``<!-- runnable: slow -->`` for one that takes more than a few seconds). A bash block's commands
run in order, in this process (``nas_prune.cli.main``), in a scratch folder with ``configs/``,
``search_spaces/`` and ``reports/`` linked in; every command that takes ``--set`` gets the
overrides of a tiny space and synthetic data appended (the later ``--set`` wins). A python block
runs as ``__main__`` in the same scratch folder, and every config the Python API resolves
(``nas_prune.api.resolve``) gets the same overrides last.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nas_prune._yaml import write_yaml
from nas_prune.cli import build_parser, main

from .conftest import TINY_VGG, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
MARKER = re.compile(r"^<!--\s*runnable(?::\s*(slow))?\s*-->\s*$")
FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\S*)")


def _gen_ref():
    spec = importlib.util.spec_from_file_location("gen_ref", DOCS / "gen_ref.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_blocks(path: Path | str) -> list[tuple[str, list[str], str | None, int]]:
    """(info string, lines, runnable marker: None / "" / "slow", line number) of each fenced
    block at the top level of a Markdown file or text (a fence inside a longer fence is
    content)."""
    out = []
    lines = (path.read_text() if isinstance(path, Path) else path).splitlines()
    i = 0
    marker: str | None = None
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            fence, info, start = m.group(1), m.group(2), i
            body = []
            i += 1
            while i < len(lines) and not (lines[i].startswith(fence[0] * len(fence))
                                          and lines[i].strip(fence[0]) == ""):
                body.append(lines[i])
                i += 1
            out.append((info, body, marker, start + 1))
            marker = None
        else:
            mm = MARKER.match(lines[i].strip())
            if mm:
                marker = mm.group(1) or ""
            elif lines[i].strip():
                marker = None
        i += 1
    return out


def logical_lines(body: list[str]) -> list[str]:
    """A shell block's lines with ``\\`` continuations joined; blank and comment lines dropped."""
    out, current = [], ""
    for line in body:
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += line
        if current.strip() and not current.lstrip().startswith("#"):
            out.append(current)
        current = ""
    return out


def commands(body: list[str]) -> list[list[str]]:
    """The ``nas-prune`` commands of a shell block as argv lists without the program name
    (comments and a trailing ``&`` dropped; ``... && nas-prune X`` gives X); other lines are
    skipped."""
    out = []
    for line in logical_lines(body):
        if "nas-prune " not in line:
            continue
        argv = shlex.split(line[line.index("nas-prune ") + len("nas-prune "):], comments=True)
        out.append(argv[:-1] if argv and argv[-1] == "&" else argv)
    return out


SHELL = ("bash", "sh", "shell", "console")
ALL_COMMANDS = [(f"{p.relative_to(ROOT)}:{n}", argv)
                for p in [*PAGES, ROOT / "README.md"]
                for info, body, _, n in code_blocks(p) if info in SHELL
                for argv in commands(body)]
RUNNABLE = [(p, n, body, marker) for p in PAGES
            for info, body, marker, n in code_blocks(p) if marker is not None]
INFO = {(p, n): info for p in PAGES for info, _, _, n in code_blocks(p)}


def test_the_docs_have_runnable_blocks_and_commands():
    assert len(RUNNABLE) >= 8 and len(ALL_COMMANDS) >= 40
    for page, n, _, _ in RUNNABLE:
        info = code_blocks(page)[[b[3] for b in code_blocks(page)].index(n)][0]
        assert info in ("bash", "python"), \
            f"{page}:{n}: a runnable block must be a bash or python block"


@pytest.mark.parametrize("where, argv", ALL_COMMANDS, ids=[w for w, _ in ALL_COMMANDS])
def test_every_documented_command_parses(where, argv):
    """A command the docs or the README show is accepted by today's CLI (nothing runs)."""
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: nas-prune {shlex.join(argv)} does not parse (exit {exc.code})")


def _takes_set(argv: list[str]) -> bool:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[argv[0]]
    return any("--set" in a.option_strings for a in sub._actions)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    for name in ("configs", "search_spaces", "reports"):
        (tmp_path / name).symlink_to(ROOT / name)
    write_yaml(tmp_path / "tiny_vgg.yaml", TINY_VGG)
    return tmp_path


def _run_python(body: list[str], cwd: Path, monkeypatch) -> None:
    """Run a python block as ``__main__`` in ``cwd``, its configs made tiny."""
    import nas_prune.api

    real = nas_prune.api.resolve
    tiny = tiny_overrides(cwd / "tiny_vgg.yaml")

    def resolve(config=None, overrides=None, *, train_fn=None):
        return real(real(config, overrides, train_fn=train_fn), tiny)

    monkeypatch.setattr(nas_prune.api, "resolve", resolve)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("NAS_PRUNE_CACHE", str(cwd / "cache"))
    exec(compile("\n".join(body), "<docs block>", "exec"), {"__name__": "__main__"})


def _run_block(body: list[str], cwd: Path, monkeypatch, capsys, info: str = "bash") -> None:
    """Run the block's commands in this process (``nas_prune.cli.main``), in order, in ``cwd``."""
    if info == "python":
        return _run_python(body, cwd, monkeypatch)
    lines = logical_lines(body)
    assert lines and all(x.startswith("nas-prune ") for x in lines), \
        "every line of a runnable block must be a nas-prune command"
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("NAS_PRUNE_CACHE", str(cwd / "cache"))
    for argv in commands(body):
        if _takes_set(argv):
            argv = argv + [x for kv in tiny_overrides(cwd / "tiny_vgg.yaml") for x in ("--set", kv)]
        status = main(argv)
        out = capsys.readouterr()
        assert status == 0, (f"nas-prune {shlex.join(argv)} exited {status}:\n"
                             f"{out.out[-2000:]}\n{out.err[-2000:]}")


FAST = [(p, n, b) for p, n, b, m in RUNNABLE if m == ""]
SLOW = [(p, n, b) for p, n, b, m in RUNNABLE if m == "slow"]


@pytest.mark.parametrize("page, line, body", FAST,
                         ids=[f"{p.relative_to(DOCS)}:{n}" for p, n, _ in FAST])
def test_runnable_block(page, line, body, scratch, monkeypatch, capsys):
    _run_block(body, scratch, monkeypatch, capsys, INFO[(page, line)])


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("page, line, body", SLOW,
                         ids=[f"{p.relative_to(DOCS)}:{n}" for p, n, _ in SLOW])
def test_runnable_block_slow(page, line, body, scratch, monkeypatch, capsys):
    _run_block(body, scratch, monkeypatch, capsys, INFO[(page, line)])


def test_the_reference_covers_every_key_and_option():
    from nas_prune.config import leaf_fields

    gen = _gen_ref()
    assert not gen.missing_meanings(), (
        f"config keys without a meaning: {gen.missing_meanings()}; add a comment on the field or "
        f"a line in docs/gen_ref.py MEANING")
    pages = gen.pages()
    for key in leaf_fields():
        assert f"| `{key}` |" in pages["reference/config.md"], key
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subs.items():
        assert f"## `{name}`" in pages["reference/cli.md"], name
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in pages["reference/cli.md"], f"{name} {flag}"


@pytest.mark.timeout(300)  # not slow: CI builds the site on every run
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (pip install -e '.[docs]')")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for page in ("index.html", "reference/config/index.html", "reference/cli/index.html",
                 "reports/search_evidence/vgg_small_25/compare.png"):
        assert (tmp_path / "site" / page).is_file(), page


def test_the_readme_is_short_and_its_quick_start_is_two_commands():
    """The quick start is exactly two commands (set up and run the main job; set up and run the
    tests), and .ci/run runs the README's test command."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme) < 8000, f"README.md has {len(readme)} characters; keep it under 8,000"
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    first = next(body for info, body, _, _ in code_blocks(section) if info == "bash")
    assert len(logical_lines(first)) == 2, first
    main_job, tests = logical_lines(first)
    assert "nas-prune search" in main_job and "pytest" in tests
    ci = [line.strip().replace("pip install -q ", "pip install ")  # CI's pip is quiet
          for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests.strip() in ci, ".ci/run must run the README's test command (keep the two in step)"

