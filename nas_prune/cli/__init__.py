"""The command line: the only place that reads argv and prints for humans.

Every command is one module with ``add_arguments(parser)`` and ``run(args) -> int``; the table
below is the registry. A :class:`~nas_prune.errors.UserError` becomes one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import UserError

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "search": ("_search", "search widths around seed proposals; export the best (main job)"),
    "propose": ("_propose", "propose a width vector with a seed method at a budget"),
    "methods": ("_propose", "list the seed methods"),
    "train": ("_arch", "train an architecture YAML from scratch on its data set"),
    "flops": ("_arch", "FLOPs (multiply-accumulates) and params of an architecture or space"),
    "build": ("_arch", "check an architecture YAML rebuilds; optional ONNX export"),
    "spaces": ("_arch", "list the search spaces and model families"),
    "compare": ("_compare", "the search vs its uniform-start control and random search at "
                "equal compute, paired final evaluation (budgets as a list)"),
    "worker": ("_search", "join an existing Optuna study and run its trials"),
    "export": ("_search", "write best.yaml / top-K / Pareto front again from a run directory"),
    "report": ("_report", "report.md/.html for a search run; or rethink runs side by side"),
    "rethink": ("_report", "Liu et al.'s comparison: unpruned, fine-tuned, Scratch-E, Scratch-B"),
}


def one_line(message: str) -> str:
    """A message as one line: its lines joined with '; ' (stderr gets exactly one line)."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


class _Parser(argparse.ArgumentParser):
    """Usage errors of every (sub)command: one line, no usage block, exit 2 (argparse's code)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas-prune", description="Channel pruning as architecture search: "
                     "pruning criteria propose widths, candidates are trained from scratch.")
    from .._meta import __version__

    parser.add_argument("--version", action="version", version=f"nas-prune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        mod = importlib.import_module(f"{__name__}.{module}")
        getattr(mod, f"add_{name}_arguments")(p)
        p.set_defaults(_run=getattr(mod, f"run_{name}"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 done, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already on stderr
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"nas-prune: error: {one_line(exc) or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas-prune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `nas-prune spaces | head -3`: the reader left; no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail
        return 1


if __name__ == "__main__":
    sys.exit(main())
