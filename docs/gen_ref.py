"""The generated reference pages: every config key from the config's own rules, every command
from the CLI's own parsers.

The site's build hook (``docs/hooks.py``) calls :func:`pages` on every build, so the pages cannot
drift from the code. To read them without building the site::

    python docs/gen_ref.py OUT_DIR        # writes OUT_DIR/reference/config.md and cli.md

A key's meaning is the comment on its field's line in the source (``lr: float = 0.1  # ...``),
else its line in :data:`MEANING`, else the comment block right above the field.
:func:`missing_meanings` lists keys with neither (the docs tests fail on any).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import os
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

#: What a key means, for fields whose source carries no comment.
MEANING: dict[str, str] = {
    "space": "search space: a name in `search_spaces/` (`nas-prune spaces`) or a YAML path",
    "device": "where training runs: `auto` (CUDA when there is one), `cpu`, `cuda`, `cuda:N`, "
              "`mps`",
    "random_seed": "the search's seed (sampler, trial trainings); evaluation seeds are "
                   "`random_seed + 10000 + k`, selection seeds `random_seed + 5000 + k`",
    "run_dir": "the run directory: config, study, trials, exports, report",
    "data.name": "`fashion-mnist`, `cifar10`, `cifar100`, `synthetic`, `imagefolder`, "
                 "`tensors` (one `.pt` file of images and labels) or `torchvision:CLASS`",
    "data.root": "where the data set lives (an image folder's root; a tensors file; "
                 "torchvision's `root`)",
    "data.download": "let torchvision download a data set that is not on disk",
    "data.val_size": "validation images, carved from the training split with `split_seed`",
    "data.test_subset": "keep only this many test images",
    "data.split_seed": "seed of the train/validation (and one-folder test) split",
    "data.augment": "random crop and horizontal flip, on the training device",
    "data.synthetic_train": "synthetic data: training images (validation is carved from them)",
    "data.synthetic_test": "synthetic data: test images",
    "data.synthetic_channels": "synthetic data: channels per image",
    "data.synthetic_size": "synthetic data: image side in pixels",
    "data.synthetic_classes": "synthetic data: classes",
    "train.epochs": "base epochs of a training (Scratch-E); Scratch-B scales them",
    "train.batch_size": "training batch size",
    "train.lr": "peak learning rate of SGD",
    "train.momentum": "SGD momentum",
    "train.nesterov": "Nesterov momentum",
    "train.weight_decay": "weight decay (L2) of SGD",
    "train.schedule": "learning-rate schedule over the whole training",
    "train.gamma": "step schedule: the factor at each milestone",
    "train.warmup_epochs": "linear learning-rate warm-up, in epochs",
    "train.label_smoothing": "label smoothing of the cross-entropy loss",
    "train.budget": "`scratch-e`: the base epochs; `scratch-b`: epochs scaled by base / "
                    "candidate FLOPs (equal compute)",
    "train.max_budget_scale": "Scratch-B never trains more than this many times the base epochs",
    "train.eval_batch_size": "batch size of validation and test scoring",
    "search.multiplier_low": "a candidate's per-group multiplier around its start, lowest",
    "search.multiplier_high": "a candidate's per-group multiplier around its start, highest",
    "search.heartbeat_interval": "relational storages: seconds between a worker's heartbeats",
    "search.grace_period": "relational storages: a worker silent this many seconds is dead; its "
                           "trial is failed and enqueued again",
    "search.study_name": "the Optuna study's name (default: the run directory's name)",
    "search.final_seeds": "evaluation seeds every final row is retrained on, scored on test",
    "search.ray.gpus_per_trial": "GPUs per trial; fractions let trials share a GPU",
    "search.ray.cpus_per_trial": "CPUs per trial (also the trial's torch threads)",
    "search.ray.max_concurrent": "trials running at once",
    "search.ray.dashboard_host": "a local Ray's dashboard address",
    "search.ray.dashboard_port": "a local Ray's dashboard port",
    "latency.backend": "`torch` (eager) or `onnxruntime` (the ONNX graph, CPU provider)",
    "latency.batch_size": "images per timed forward pass",
    "latency.warmup": "untimed runs before the timed ones",
    "latency.repeats": "timed runs; the median and interquartile range are reported",
}

CLI_INTRO = """\
# CLI reference

Generated from the command line's own parsers (`nas_prune.cli.build_parser`) on every build of
this site. `nas-prune COMMAND --help` prints the same. Bad input is one line on stderr naming
the field and the fix, with exit status 2.
"""

CONFIG_INTRO = """\
# Config reference

Generated from the config's own dataclasses and rules (`nas_prune.config.Config`,
`nas_prune.config.RULES`) on every build of this site. Every key can be set in a config YAML
(`nas-prune search --config my.yaml`) or on the command line (`--set key.sub=value`, the value
parsed as YAML). An unknown key, a wrong type or a value out of range is a one-line error naming
the key, before anything trains. The defaults below are the dataclasses' own; the quick start's
`configs/default.yaml` overrides some of them (see [Configs and search spaces](../configs.md)).
"""


def _comments(cls: type) -> dict[str, tuple[str, str]]:
    """Field name -> ("line", its trailing comment) or ("above", the comment block above it)."""
    out: dict[str, tuple[str, str]] = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return out
    above: list[str] = []
    line_comment: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            line_comment[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(tok.start[0])
    names = {f.name for f in dataclasses.fields(cls)}
    for i, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        name = stripped.split(":", 1)[0].strip() if ":" in stripped else ""
        if i in code_lines and name in names:
            if i in line_comment:
                out[name] = ("line", line_comment[i])
            elif above:
                out[name] = ("above", " ".join(above))
            above = []
        elif i in line_comment and i not in code_lines:
            above.append(line_comment[i])
        else:
            above = []
    return out


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping of {_type_name(args[1])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"list of {{{', '.join(f.name for f in dataclasses.fields(tp))}}}"
    return getattr(tp, "__name__", str(tp))


def _yaml_value(value: Any) -> str:
    import yaml

    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, tuple):
        value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
    text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _accepts(rule: Any, tp: Any) -> str:
    from nas_prune import config as C

    if rule is None:
        return "true or false" if tp is bool else ""
    if isinstance(rule, C.Range):
        return rule.describe()
    if isinstance(rule, C.OneOf):
        return "one of " + ", ".join(f"`{c}`" for c in rule.choices)
    if isinstance(rule, C.NonEmpty):
        return f"not empty: {rule.what}"
    return _rst(inspect.getdoc(type(rule)) or "")


def _rst(doc: str) -> str:
    """A docstring's first paragraph as Markdown: ``x`` and :role:`x` become `x`."""
    import re

    text = doc.split("\n\n")[0].replace("\n", " ")
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def config_rows() -> list[dict[str, str]]:
    """One row per config key: key, type, default, accepts, meaning (empty when unknown)."""
    from nas_prune import config as C

    defaults = C.Config()
    comments: dict[str, tuple[str, str]] = {}

    def walk(cls: type, where: str) -> None:
        hints = typing.get_type_hints(cls)
        for name, found in _comments(cls).items():
            comments[f"{where}{name}"] = found
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{where}{f.name}.")

    walk(C.Config, "")
    rows = []
    for key, tp in C.leaf_fields().items():
        value: Any = defaults
        for part in key.split("."):
            value = getattr(value, part)
        rows.append({"key": key, "type": _type_name(tp), "default": _yaml_value(value),
                     "accepts": _accepts(C.RULES.get(key), tp),
                     "meaning": _meaning(key, comments.get(key))})
    return rows


def _meaning(key: str, found: tuple[str, str] | None) -> str:
    if found is not None and found[0] == "line":
        return found[1]
    return MEANING.get(key) or (found[1] if found else "")


def missing_meanings() -> list[str]:
    return [r["key"] for r in config_rows() if not r["meaning"]]


def _section_doc(key: str) -> str:
    from nas_prune import config as C

    cls: Any = C.Config
    for part in key.split("."):
        cls = typing.get_type_hints(cls)[part]
    doc = cls.__dict__.get("__doc__") or ""
    return "" if doc.startswith(f"{cls.__name__}(") else _rst(inspect.cleandoc(doc))


def config_reference() -> str:
    rows = config_rows()
    sections: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        sections.setdefault(r["key"].rsplit(".", 1)[0] if "." in r["key"] else "", []).append(r)
    out = [CONFIG_INTRO]
    for section, items in sections.items():
        out.append(f"\n## `{section}`\n" if section else "\n## Top level\n")
        if section:
            doc = _section_doc(section)
            if doc:
                out.append(f"{doc}\n")
        out.append("| key | type | default | accepts | meaning |")
        out.append("|---|---|---|---|---|")
        for r in items:
            out.append(f"| `{r['key']}` | {_md(r['type'])} | `{_md(r['default'])}` | "
                       f"{_md(r['accepts'])} | {_md(r['meaning'])} |")
    return "\n".join(out) + "\n"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return f"`{names}`"
    metavar = action.metavar or (("{" + ",".join(map(str, action.choices)) + "}")
                                 if action.choices else action.dest.upper())
    return f"`{names} {metavar}`"


def cli_reference() -> str:
    from nas_prune.cli import COMMANDS, build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps usage lines to the terminal's width
    try:
        parser = build_parser()
        out = [CLI_INTRO, "```text", parser.format_usage().strip(), "```", ""]
        out += ["| command | what it does |", "|---|---|"]
        out += [f"| [`{name}`](#{name}) | {_md(help_)} |" for name, (_, help_) in COMMANDS.items()]
        for name, sub in _subparsers(parser).items():
            out += ["", f"## `{name}` {{#{name}}}", "", sub.description or "", "",
                    "```text", sub.format_usage().strip(), "```", "",
                    "| argument | default | meaning |", "|---|---|---|"]
            for action in sub._actions:
                if isinstance(action, argparse._HelpAction):
                    continue
                default = action.default
                shown = "" if default in (None, False, [], argparse.SUPPRESS) or \
                    action.required else f"`{default}`"
                text = (action.help or "") % {"default": default} if action.help else ""
                if action.required and action.option_strings:
                    text = "required. " + text
                out.append(f"| {_md(_flag(action))} | {_md(shown)} | {_md(text)} |")
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(out) + "\n"


def pages() -> dict[str, str]:
    """Site path -> Markdown of every generated page."""
    return {"reference/config.md": config_reference(), "reference/cli.md": cli_reference()}


def main(argv: list[str] | None = None) -> int:
    out = Path((argv if argv is not None else sys.argv[1:] or ["."])[0])
    for rel, text in pages().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
