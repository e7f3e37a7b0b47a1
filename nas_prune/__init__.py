"""nas-prune: channel pruning as neural architecture search.

Pruning criteria (seed methods) propose per-layer widths; a search trains candidates around them
from scratch under a FLOPs budget; the winner is exported as an architecture YAML.
"""

from __future__ import annotations

from ._meta import __version__
from .errors import UserError
from .widths import ArchSpec, SearchSpace, build_model, load_spec

__all__ = ["ArchSpec", "SearchSpace", "UserError", "__version__", "build_model", "load_spec"]
