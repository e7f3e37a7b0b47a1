"""The search backends by name: the registry behind ``search.backend`` and ``--backend``.

One file per backend (:mod:`.optuna_backend`, :mod:`.ray_backend`, which imports Ray only when it
runs), one line each below; the interface is :class:`~nas_prune.search._backend.SearchBackend`.
"""

from __future__ import annotations

from ..errors import UserError
from ._backend import SearchBackend
from .optuna_backend import OptunaBackend
from .ray_backend import RayBackend

BACKENDS: dict[str, type[SearchBackend]] = {}


def _register(cls: type[SearchBackend]) -> None:
    if cls.name in BACKENDS:
        raise ValueError(f"search backend {cls.name!r} registered twice")
    BACKENDS[cls.name] = cls


for _cls in (OptunaBackend, RayBackend):
    _register(_cls)


def get_backend(name: str) -> SearchBackend:
    if name not in BACKENDS:
        raise UserError(f"search.backend: {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]()


__all__ = ["BACKENDS", "get_backend"]
