"""YAML in and out: safe loading with one-line errors, and a readable dump."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


def read_yaml(path: str | Path, *, what: str = "file") -> dict[str, Any]:
    """Load a YAML mapping with ``yaml.safe_load``; bad input is a one-line :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file; check the path")
    try:
        data = yaml.safe_load(path.read_bytes())  # binary garbage is a YAMLError, not a crash
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise UserError(f"{what} {path}: not valid YAML ({problem}{where}); fix the "
                        f"syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path}: expected a YAML mapping at the top level, "
                        f"got {type(data).__name__}")
    return data


def plain(obj: Any) -> Any:
    """Plain YAML/JSON-safe values: numpy/torch scalars, tuples, paths and str subclasses."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (bool, int, float)) or obj is None:
        return obj
    if isinstance(obj, (str, Path)):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(plain(data), sort_keys=False, default_flow_style=None, width=100)


def write_yaml(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dump_yaml(data))
    tmp.replace(path)
    return path
