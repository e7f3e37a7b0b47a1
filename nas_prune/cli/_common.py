"""Options and printing shared by several commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from .._io import check_output  # noqa: F401  (re-exported for the commands)
from ..config import Config, load_config
from ..errors import UserError
from ..train import resolve_device


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="config YAML or a name in configs/ (default: default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set search.n_trials=4 (repeatable)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default: config's device)")
    p.add_argument("--seed", type=int, help="random seed (default: config's random_seed)")


def resolve_config(args: argparse.Namespace, **extra: Any) -> Config:
    """The config file <- ``extra`` <- ``--set``, validated, its device present on this machine.

    Every command that resolves a config trains here, so a device this machine lacks (``cuda``
    without CUDA, ``cuda:3`` with one GPU) fails now, before anything is trained or written.
    """
    extra.setdefault("device", getattr(args, "device", None))
    extra.setdefault("random_seed", getattr(args, "seed", None))
    cfg = load_config(args.config, args.overrides, **extra)
    resolve_device(cfg.device)
    return cfg


BUDGET_HELP = ("a ratio of the base cost in (0, 1], e.g. 0.5; with --metric latency also a time, "
               "e.g. 3.5ms or 800us")


def split_budget(text: str | None) -> tuple[float | None, int | None]:
    """``--budget``: (ratio, None), (None, nanoseconds) for a time, or (None, None)."""
    if text is None:
        return None, None
    from ..latency import parse_budget

    return parse_budget(text, "latency")


def apply_time_budget(cfg: Config, nanoseconds: int | None) -> Config:
    """A time ``--budget`` as the ratio of the base network's predicted latency."""
    if nanoseconds is None:
        return cfg
    if cfg.seed_method.metric != "latency":
        raise UserError(f"--budget: {nanoseconds / 1e6:g}ms is a time; a "
                        f"{cfg.seed_method.metric} budget is a ratio in (0, 1] (use --metric "
                        f"latency for a time budget)")
    from ..scratch import time_budget

    return time_budget(cfg, nanoseconds)


def device_of(cfg: Config) -> torch.device:
    return resolve_device(cfg.device)


def table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def warn(message: str) -> None:
    """A warning for the person at the terminal, on stderr: one line, the run goes on."""
    print(f"nas-prune: warning: {message}", file=sys.stderr)
