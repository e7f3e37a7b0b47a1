"""The search backends by name: the registry behind ``search.backend`` and ``--backend``.

One file per backend (:mod:`.optuna_backend`, :mod:`.ray_backend`, which imports Ray only when it
runs), one line each below, and its name in :data:`nas_prune.config.SEARCH_BACKENDS` (the config
lists the names it accepts and imports nothing from the search). The interface is
:class:`~nas_prune.search._backend.SearchBackend`.
"""

from __future__ import annotations

from ..config import SEARCH_BACKENDS
from ..errors import UserError
from ._backend import SearchBackend
from .optuna_backend import OptunaBackend
from .ray_backend import RayBackend

BACKENDS: dict[str, type[SearchBackend]] = {}


def _register(cls: type[SearchBackend]) -> None:
    if cls.name in BACKENDS:
        raise ValueError(f"search backend {cls.name!r} registered twice")
    if cls.name not in SEARCH_BACKENDS:  # the config accepts only the names it lists
        raise ValueError(f"search backend {cls.name!r} is not listed in "
                         f"nas_prune.config.SEARCH_BACKENDS; add it there")
    BACKENDS[cls.name] = cls


for _cls in (OptunaBackend, RayBackend):
    _register(_cls)


def get_backend(name: str) -> SearchBackend:
    if name not in BACKENDS:
        raise UserError(f"search.backend: {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]()


__all__ = ["BACKENDS", "get_backend"]
