"""Training replaced by a look-up: results tables of width benchmarks (``train.source: table:PATH``).

A results table is a JSON mapping from an allocation key to what training that allocation gave,
in the format of the Channel-Bench-Macro benchmark (Su et al. 2021)::

    {"4432214": {"acc": [93.67, 93.35, 93.30], "mean": 93.44, "std": 0.20,
                 "flops": 794495488, "params": 6208394}, ...}

Digit k of a key is one width group, in the space's group order, at k/4 of its base width
(``round(k * base / 4)`` channels); ``acc`` holds the test accuracy (percent) of independent
trainings from scratch, one per *table seed*; ``flops`` are multiply-accumulates of conv and
linear layers, as :mod:`nas_prune.flops` counts them.

Which table seed a training on seed ``s`` returns follows from the seed rule of
:mod:`nas_prune.seeding` (offsets from ``random_seed``), so repeated and paired seeds
behave as real trainings do:

* the **last** table seed is held out: only the evaluation seeds of the final table
  (``random_seed + FINAL_SEED_OFFSET + k``) read it, and there is one of them;
* search trials (offset ``r``) read the other table seeds in turn: ``r mod v`` (``v`` of them);
* the finalist round's selection seeds (offset ``SELECTION_SEED_OFFSET + k``) read
  ``(k + 1) mod v``: with two visible table seeds, a search trial and its selection re-run are
  two different trainings, as they are in reality.

So no search trial and no finalist round ever sees the accuracy the final table reports. A
table allocation that is not on the space's grid, or whose FLOPs differ from this tool's count by
more than :data:`FLOPS_TOLERANCE`, is a one-line error naming the file and the first mismatch.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .widths import SearchSpace

__all__ = ["DATA", "FLOPS_TOLERANCE", "TABLE_PREFIX", "ResultsTable", "check_source",
           "table_path"]

DATA = "data"
TABLE_PREFIX = "table:"
FLOPS_TOLERANCE = 0.01  # relative difference of a table's FLOPs from this tool's count
LEVELS = 4  # digit k of a key: k / LEVELS of the group's base width


def check_source(value: Any, key: str = "train.source") -> None:
    """``data`` or ``table:PATH``; a one-line error otherwise (the file is read later)."""
    if value == DATA:
        return
    if isinstance(value, str) and value.startswith(TABLE_PREFIX) \
            and value[len(TABLE_PREFIX):].strip():
        return
    raise UserError(f"{key}: {value!r}; choose 'data' (train for real) or 'table:PATH' "
                    f"(look accuracies up in a results table JSON)")


def table_path(source: str) -> Path | None:
    """The table file of a ``train.source`` (None for ``data``)."""
    check_source(source)
    return None if source == DATA else Path(source[len(TABLE_PREFIX):].strip())


def widths_of_key(key: str, space: SearchSpace) -> dict[str, int]:
    """The width vector of an allocation key (digit k: ``round(k * base / 4)`` channels)."""
    base = space.base_widths()
    return {g: int(round(int(d) * base[g] / LEVELS)) for g, d in zip(space.group_names, key,
                                                                     strict=True)}


def key_of(widths: Mapping[str, int], space: SearchSpace) -> str | None:
    """The allocation key of a width vector (None when a width is not k/4 of its base)."""
    base = space.base_widths()
    digits = []
    for g in space.group_names:
        k = next((k for k in range(1, LEVELS + 1) if round(k * base[g] / LEVELS) == widths[g]),
                 None)
        if k is None:
            return None
        digits.append(str(k))
    return "".join(digits)


@dataclass(frozen=True)
class Entry:
    acc: tuple[float, ...]  # percent, one per table seed
    flops: int
    params: int | None


def _fail(path: Path, what: str) -> UserError:
    return UserError(f"train.source: table {path}: {what}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class ResultsTable:
    """A results table read from ``path``; :meth:`load` caches it per file and version."""

    def __init__(self, path: Path, entries: dict[str, Entry]) -> None:
        self.path = path
        self.entries = entries
        self.n_seeds = len(next(iter(entries.values())).acc)

    @classmethod
    def load(cls, path: str | Path) -> ResultsTable:
        path = Path(path)
        try:
            st = os.stat(path)
        except OSError:
            raise _fail(path, "no such file; check the path after table:") from None
        return _load(str(path), st.st_mtime_ns, st.st_size)

    # ---- seeds --------------------------------------------------------------------------
    @property
    def held_out(self) -> int:
        """The table seed only the final evaluation reads (the last)."""
        return self.n_seeds - 1

    def seed_index(self, seed: int, random_seed: int) -> int:
        """The table seed a training on ``seed`` reads (see the module docstring)."""
        from .seeding import FINAL_SEED_OFFSET, SELECTION_SEED_OFFSET

        visible = self.n_seeds - 1
        offset = int(seed) - int(random_seed)
        if offset >= FINAL_SEED_OFFSET:
            k = offset - FINAL_SEED_OFFSET
            if k >= 1:
                raise UserError(f"search.final_seeds: evaluation seed {k + 1} asked for, but "
                                f"table {self.path} holds out one seed (the last of its "
                                f"{self.n_seeds}); set search.final_seeds to 1")
            return self.held_out
        if offset >= SELECTION_SEED_OFFSET:
            return (offset - SELECTION_SEED_OFFSET + 1) % visible
        return offset % visible

    # ---- look-up ------------------------------------------------------------------------
    def entry(self, widths: Mapping[str, int], space: SearchSpace) -> Entry:
        key = key_of(widths, space)
        if key is None or key not in self.entries:
            raise UserError(f"table {self.path}: no allocation for widths "
                            f"{dict(widths)} (key {key or 'none: not k/4 of the base'})")
        return self.entries[key]

    def accuracy(self, widths: Mapping[str, int], space: SearchSpace, index: int) -> float:
        """Accuracy (a fraction, as the trainer reports it) of ``widths`` on table seed
        ``index``."""
        return self.entry(widths, space).acc[index] / 100.0

    # ---- checks -------------------------------------------------------------------------
    def check(self, space: SearchSpace, tolerance: float = FLOPS_TOLERANCE) -> None:
        """Every key names an on-grid allocation of ``space`` whose FLOPs this tool counts
        within ``tolerance``; the first mismatch is a one-line error naming the file."""
        _check(self, space.name, json.dumps(space.family.arguments(), sort_keys=True),
               space, tolerance)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> ResultsTable:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(p, f"cannot be read ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise _fail(p, f"is not JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not data:
        raise _fail(p, "expected a non-empty mapping from allocation key to "
                       "{acc: [...], flops: N, params: N}")
    entries: dict[str, Entry] = {}
    n = None
    for key, e in data.items():
        where = f"entry {key!r}"
        if not isinstance(e, dict):
            raise _fail(p, f"{where}: expected a mapping with acc, flops and params")
        acc = e.get("acc")
        if not (isinstance(acc, list) and len(acc) >= 2 and all(_number(a) for a in acc)):
            raise _fail(p, f"{where}.acc: expected a list of at least 2 accuracies (one per "
                           f"training seed), got {acc!r}")
        if any(not 0 <= a <= 100 for a in acc):
            raise _fail(p, f"{where}.acc: {acc!r}; accuracies are percent, in [0, 100]")
        if n is None:
            n = len(acc)
        elif len(acc) != n:
            raise _fail(p, f"{where}.acc: {len(acc)} accuracies where the first entry has {n}")
        flops, params = e.get("flops"), e.get("params")
        if isinstance(flops, bool) or not isinstance(flops, int) or flops <= 0:
            raise _fail(p, f"{where}.flops: {flops!r} is not a positive integer")
        if params is not None and (isinstance(params, bool) or not isinstance(params, int)):
            raise _fail(p, f"{where}.params: {params!r} is not an integer")
        entries[str(key)] = Entry(tuple(float(a) for a in acc), int(flops), params)
    return ResultsTable(p, entries)


_CHECKED: set[tuple] = set()


def _check(table: ResultsTable, name: str, args: str, space: SearchSpace,
           tolerance: float) -> None:
    marker = (str(table.path), id(table), name, args, tolerance)
    if marker in _CHECKED:
        return
    groups = space.group_names
    for key, e in table.entries.items():
        if len(key) != len(groups) or any(d not in "1234" for d in key):
            raise _fail(table.path, f"key {key!r} is not {len(groups)} digits 1-4 (one per "
                                    f"width group of space {name}: {', '.join(groups)})")
        widths = widths_of_key(key, space)
        for g, w in widths.items():
            if not space.on_grid(g, w):
                raise _fail(table.path, f"key {key!r}: {g}={w} is not on the grid of space "
                                        f"{name} ({space.grid(g)})")
        flops, _ = space.count(widths)
        if abs(e.flops - flops) > tolerance * flops:
            raise _fail(table.path, f"key {key!r}: {e.flops:,} FLOPs but space {name} counts "
                                    f"{flops:,} for widths {widths} (more than {tolerance:.0%} "
                                    f"apart); the table belongs to another network")
    _CHECKED.add(marker)


def lookup_train(spec: Any, cfg: Any, *, epochs: int, seed: int, evaluate_test: bool,
                 on_epoch: Callable[[int, float, float], bool] | None) -> Any:
    """A :class:`~nas_prune.train.TrainResult` read from the table of ``cfg.train.source``:
    the accuracy of ``spec``'s allocation on the table seed of ``seed`` as its validation (and
    test) accuracy after its last epoch; ``on_epoch`` sees that one value."""
    from .train import TrainResult

    t0 = time.perf_counter()
    table = ResultsTable.load(table_path(cfg.train.source))
    space = SearchSpace.full(spec.family_obj(), name=spec.space or "table")
    acc = table.accuracy(spec.widths, space, table.seed_index(seed, cfg.random_seed))
    result = TrainResult(status="ok", epochs_planned=int(epochs), epochs_run=int(epochs),
                         val_acc=[acc], val_acc_final=acc)
    if on_epoch is not None:
        on_epoch(int(epochs) - 1, acc, float("nan"))
    if evaluate_test:
        result.test_acc = acc
    result.wall_time = time.perf_counter() - t0
    return result


def check_table(cfg: Any, space: SearchSpace) -> ResultsTable | None:
    """Before a search on a table starts: the table read and checked against ``space``, and
    the settings a table cannot serve refused, each in one line. None for ``train.source:
    data``."""
    path = table_path(cfg.train.source)
    if path is None:
        return None
    table = ResultsTable.load(path)
    table.check(space)
    wide = space.widened_groups()
    if wide:
        raise UserError(f"search space {space.name}: widens {', '.join(wide)} above the base "
                        f"(max_multiplier or bounds), but table {path} holds allocations up to "
                        f"the base widths only; keep the bounds within the base or train for "
                        f"real (train.source: data)")
    from .seeds import SEED_METHODS, parse_methods

    for name in parse_methods(cfg.seed_method.name):
        if SEED_METHODS[name].needs_base:
            raise UserError(f"seed_method.name: {name} needs a trained base network, which a "
                            f"results table (train.source: table:...) does not have; use "
                            f"uniform or random")
    if cfg.search.final_seeds > 1:
        raise UserError(f"search.final_seeds: {cfg.search.final_seeds}, but table {path} holds "
                        f"out one training seed for the final evaluation; set it to 1")
    visible = table.n_seeds - 1
    for i, r in enumerate(cfg.search.rungs):
        if r.seeds > visible:
            raise UserError(f"search.rungs[{i}].seeds: {r.seeds}, but table {path} has "
                            f"{visible} training seed(s) a search may see; lower it")
    return table
