"""A user's function by its import path (``package.module:function``): a model factory
(``args.model`` of the graph family) or a training function (``train.function``).

A config or YAML names the function by its path, and this module imports it, refusing the
standard library (a YAML that names a function runs it). A function given in Python (the API's
``model=`` and ``train_fn=``) is *registered* in this process under its ``module:qualname``
(:func:`register`): :func:`resolve` returns it without importing, and :func:`importable` says
whether another process (``nas-prune worker``, Ray's trial processes) could import it by the
path, as a function defined in a script or notebook (``__main__``) or inside another function
(``<locals>``) cannot.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from .errors import UserError

__all__ = ["check_path", "first_line", "import_path", "importable", "path_of", "register", "registered",
           "resolve"]

#: Functions given in Python, by the path the config records (this process only).
_REGISTERED: dict[str, Callable[..., Any]] = {}


def check_path(value: Any, key: str, example: str) -> None:
    """``package.module:name`` (one-line error naming ``key`` otherwise; nothing imported)."""
    mod, sep, name = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not (sep and mod.strip() and name.strip()) or " " in value:
        raise UserError(f"{key}: {value!r}; give the import path of a function as "
                        f"'package.module:function' (e.g. {example})")


def path_of(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a function."""
    module = getattr(fn, "__module__", None) or "__main__"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}:{name}"


def register(fn: Any, key: str, protocol: str) -> str:
    """Register a function given in Python as ``key`` (``train_fn``, ``model``); returns the
    path the config records. Not callable, or without a name (a ``functools.partial``, a
    callable object): a one-line error; ``protocol`` says what to pass instead."""
    if not callable(fn):
        raise UserError(f"{key}: a {type(fn).__name__} is not callable; pass a function "
                        f"{protocol}")
    if not hasattr(fn, "__qualname__"):
        raise UserError(f"{key}: a {type(fn).__name__} has no name to record in the config; "
                        f"pass a function ({protocol}) and give it its settings inside, not a "
                        f"functools.partial or a callable object")
    path = path_of(fn)
    _REGISTERED[path] = fn
    return path


def registered(path: str) -> Callable[..., Any] | None:
    """The function registered under ``path`` in this process, if any."""
    return _REGISTERED.get(path)


def import_path(path: str, where: str, what: str) -> Any:
    """The object at ``package.module:name`` (a dotted name inside the module allowed),
    imported; ``where`` starts the one-line error, ``what`` is what the path should name
    (``a model factory``). Standard-library modules are refused."""
    mod, _, name = path.partition(":")
    if mod.split(".")[0] in sys.stdlib_module_names:
        raise UserError(f"{where}: {mod} is a standard-library module, not {what}; name a "
                        f"function of your package")
    try:
        obj: Any = importlib.import_module(mod)
    except Exception as exc:
        raise UserError(f"{where}: cannot import {mod} ({type(exc).__name__}: "
                        f"{first_line(exc)}); check the module path and PYTHONPATH") from None
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UserError(f"{where}: {mod} has no function {name!r}; check the name after "
                            f"the colon")
    return obj


def resolve(path: str, where: str, what: str) -> Any:
    """The function of ``path``: the one registered in this process, else imported."""
    fn = _REGISTERED.get(path)
    return fn if fn is not None else import_path(path, where, what)


def importable(path: str) -> bool:
    """Whether another process could import ``path``: not a function of ``__main__`` (a script
    or notebook) nor one that does not import here (``<locals>``, ``<lambda>``)."""
    if path.partition(":")[0] == "__main__":
        return False
    try:
        return import_path(path, "", "") is not None
    except UserError:
        return False


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (at most ``limit`` characters)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:limit]
