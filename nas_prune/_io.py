"""Files in and out, each kind in one place: atomic text writes, JSON, state dicts.

Every writer goes through :func:`write_atomic` (a temporary file beside the target, then
``os.replace``), so an interrupted run never leaves half a file where a reader expects a whole
one. Readers of the run directory's own files raise a one-line :class:`UserError` that names the
file when it exists but cannot be read; they return ``None`` only when it is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._yaml import plain
from .errors import UserError


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return write_atomic(path, json.dumps(plain(data), indent=2, default=str) + "\n")


def read_json(path: str | Path, *, what: str | None = None) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when the file does not exist.

    A file that exists but is not a JSON object is a :class:`UserError` naming it: a reader must
    never go on as if a corrupted record were simply missing.
    """
    path = Path(path)
    if not path.is_file():
        return None
    name = what or path.name
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{name} ({path}): not valid JSON ({exc.__class__.__name__} near "
                        f"{getattr(exc, 'lineno', '?')}:{getattr(exc, 'colno', '?')}); restore "
                        f"or delete the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{name} ({path}): expected a JSON object, got "
                        f"{type(data).__name__}; restore or delete the file")
    return data


def save_state_dict(model, path: str | Path) -> Path:
    """The model's state dict on the CPU, written atomically with ``torch.save``."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return write_atomic(path, buf.getvalue())


def load_state_dict(path: str | Path, *, what: str = "weights") -> dict[str, Any]:
    """A state dict loaded with ``weights_only=True``; a missing or unreadable file is a
    one-line :class:`UserError` naming ``what``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file; check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors vary by torch version
        raise UserError(f"{what} {path}: not a loadable state dict ({type(exc).__name__}); "
                        f"save it with torch.save(model.state_dict())") from None
    if not isinstance(state, dict):
        raise UserError(f"{what} {path}: holds a {type(state).__name__}, not a state dict")
    return state


def check_output(path: str | Path, flag: str, *, folder: bool) -> Path:
    """Fail before any work when an output path cannot be written as a file (or a folder)."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: exists and is not a folder; choose another path")
    if not folder and path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; give a file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {path}: {parent} is not a folder; choose another path")
            break
    return path
