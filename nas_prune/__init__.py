"""nas-prune: channel pruning as neural architecture search.

Pruning criteria (seed methods) propose per-layer widths; a search trains candidates around them
from scratch under a FLOPs budget; the winner is exported as an architecture YAML.
``nas_prune.search(...)``, ``nas_prune.propose(...)`` and ``nas_prune.compare(...)`` are the
commands from Python (:mod:`nas_prune.api`).
"""

from __future__ import annotations

from typing import Any

from ._meta import __version__
from .errors import UserError
from .widths import ArchSpec, SearchSpace, build_model, load_spec

__all__ = ["ArchSpec", "SearchSpace", "UserError", "__version__", "build_model", "compare",
           "load_spec", "propose", "search"]

# The Python API (nas_prune.api), loaded on first use so that ``import nas_prune`` stays light:
# ``nas_prune.search(...)`` (the subpackage nas_prune.search is callable), ``propose``, ``compare``.
_API = ("propose", "compare", "api")


def __getattr__(name: str) -> Any:
    import importlib

    if name == "search":
        return importlib.import_module("nas_prune.search")
    if name in _API:
        api = importlib.import_module("nas_prune.api")
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'nas_prune' has no attribute {name!r}")
