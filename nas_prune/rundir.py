"""The run directory: its file names and its records, the one home of both.

A search writes one run directory (docs/searching.md, "The run directory"); every reader of it (the
search on ``--resume``, ``nas-prune export``, ``nas-prune report``, a Ray driver) goes through
this module, which imports no search backend. Both backends turn every finished trial into a
:class:`TrialRecord`; ``RUN/trials.csv`` and ``RUN/trials.jsonl`` hold one row per trial (the CSV
has exactly :data:`CSV_FIELDS`, with width vectors and validation curves as JSON strings; the
JSONL adds a few diagnostic fields).

States (:data:`STATES`): ``COMPLETE``; ``PRUNED`` (stopped early by the early-stopping rule);
``FAIL`` (diverged, out of memory, an exception, or interrupted, with the reason); ``REJECTED``
(the projection could not meet the budget: never trained).

Readers are strict: a record file that exists but cannot be read is a one-line
:class:`~nas_prune.errors.UserError` naming the file and the line, never silently an empty run.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ._io import read_json, write_atomic, write_json
from ._yaml import plain
from .errors import UserError

__all__ = ["CSV_FIELDS", "STATES", "TrialRecord", "best_record", "completed", "is_run_dir",
           "pareto_front", "ranked", "read_json", "read_records", "read_records_csv",
           "require_run_dir", "state_counts", "write_json", "write_records"]

STATES = ("COMPLETE", "PRUNED", "FAIL", "REJECTED")
CSV_FIELDS = ("number", "state", "role", "seed_method", "widths", "flops", "params",
              "flops_ratio", "val_acc", "best_val_acc", "val_curve", "epochs", "wall_time",
              "datetime_start", "datetime_complete", "reason", "backend")
# the files of a run directory
CONFIG_YAML = "config.yaml"  # the resolved config
SETUP_JSON = "setup.json"  # config + candidate space: what workers and Ray trials rebuild from
SEARCH_JSON = "search.json"  # command, backend, budget, costs, times, hardware, versions, study
TRIALS_CSV = "trials.csv"
TRIALS_JSONL = "trials.jsonl"
FINAL_JSON = "final.json"  # the final retraining on the evaluation seeds
BEST_YAML = "best.yaml"
BEST_PT = "best.pt"
STUDY_DB = "study.db"  # the default Optuna storage
PROPOSALS = "proposals"  # <method>.yaml and uniform.yaml
PARETO = "pareto"
TOP = "top"
FINAL_DIR = "final"  # one folder per retrained row and seed
BASES = "bases"  # cached base networks of the seed methods
ARTIFACTS = "artifacts"  # Optuna's file-system artifact store: each trial's architecture YAML
REPORT_MD = "report.md"


@dataclass
class TrialRecord:
    """One trial, whatever ran it. ``val_acc`` is the last epoch's validation accuracy."""

    number: int
    state: str
    role: str
    seed_method: str | None
    widths: dict[str, int] | None
    flops: int | None = None
    params: int | None = None
    flops_ratio: float | None = None
    val_acc: float | None = None
    best_val_acc: float | None = None
    val_curve: list[float] = field(default_factory=list)
    epochs: int = 0
    wall_time: float = 0.0
    datetime_start: str | None = None
    datetime_complete: str | None = None
    reason: str = ""
    backend: str = "optuna"
    # beyond the CSV contract (trials.jsonl only)
    epochs_planned: int = 0
    cost_ratio: float | None = None  # in the budget metric (equals flops_ratio for flops)
    scale: float | None = None  # the projection's common factor
    latency_ms: float | None = None  # budget metric latency: the direct measurement (median)
    latency_iqr_ms: float | None = None
    trial_params: dict[str, Any] = field(default_factory=dict)
    worker: str = ""
    node: str = ""  # the Ray node id that ran it (Ray backend)
    # multi-fidelity (search.rungs): the value of each rung reached, and every measurement
    # (rung, seed, epochs, val_acc, val_curve, status; from_trial when reused from a duplicate)
    rung_values: list[float] = field(default_factory=list)
    measurements: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_csv_row(cls, row: Mapping[str, str]) -> TrialRecord:
        """The inverse of :meth:`csv_row` (empty cells become ``None``)."""
        def num(key: str, kind=float):
            v = row.get(key)
            return None if v in (None, "") else kind(float(v)) if kind is int else kind(v)

        widths = row.get("widths") or ""
        return cls(number=int(row["number"]), state=str(row["state"]), role=row.get("role")
                   or "search", seed_method=row.get("seed_method") or None,
                   widths=json.loads(widths) if widths else None, flops=num("flops", int),
                   params=num("params", int), flops_ratio=num("flops_ratio"),
                   val_acc=num("val_acc"), best_val_acc=num("best_val_acc"),
                   val_curve=json.loads(row.get("val_curve") or "[]"),
                   epochs=num("epochs", int) or 0, wall_time=num("wall_time") or 0.0,
                   datetime_start=row.get("datetime_start") or None,
                   datetime_complete=row.get("datetime_complete") or None,
                   reason=row.get("reason") or "", backend=row.get("backend") or "")

    def csv_row(self) -> dict[str, Any]:
        d = self.to_dict()
        row = {k: d[k] for k in CSV_FIELDS}
        row["widths"] = json.dumps(self.widths) if self.widths is not None else ""
        row["val_curve"] = json.dumps(self.val_curve)
        return {k: ("" if v is None else v) for k, v in row.items()}


def write_records(run_dir: str | Path, records: Iterable[TrialRecord]) -> tuple[Path, Path]:
    """Rewrite RUN/trials.csv and RUN/trials.jsonl (atomically), sorted by trial number."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted(records, key=lambda r: r.number)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r.csv_row())
    csv_path = write_atomic(run_dir / TRIALS_CSV, buf.getvalue())
    jsonl = "".join(json.dumps(r.to_dict(), allow_nan=False, default=str) + "\n" for r in rows)
    return csv_path, write_atomic(run_dir / TRIALS_JSONL, jsonl)


def read_records(run_dir: str | Path) -> list[TrialRecord]:
    """The records of RUN/trials.jsonl (empty when there is none yet).

    A line that is not a JSON record (a file cut off or edited by hand) is a :class:`UserError`
    naming the file and the line.
    """
    path = Path(run_dir) / TRIALS_JSONL
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            out.append(TrialRecord.from_dict(data))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{TRIALS_JSONL} ({path}) line {i}: not a trial record "
                            f"({type(exc).__name__}); restore the file, or delete it and run "
                            f"'nas-prune export' to rebuild it from the study") from None
    return out


def read_records_csv(run_dir: str | Path) -> list[TrialRecord]:
    """The records of RUN/trials.csv (the CSV contract; JSON-only fields take defaults)."""
    path = Path(run_dir) / TRIALS_CSV
    if not path.is_file():
        return []
    out = []
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f), 2):
            try:
                out.append(TrialRecord.from_csv_row(row))
            except (ValueError, TypeError, KeyError) as exc:
                raise UserError(f"{TRIALS_CSV} ({path}) line {i}: not a trial record "
                                f"({type(exc).__name__}); restore or delete the file") from None
    return out


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds anything a nas-prune search writes (even one killed early)."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in (
        CONFIG_YAML, SETUP_JSON, SEARCH_JSON, TRIALS_JSONL, STUDY_DB, PROPOSALS, BASES))


def require_run_dir(path: str | Path, *, flag: str = "--run-dir") -> Path:
    """``path`` if it is a run directory, else a one-line error naming it."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{flag} {path}: no such directory; check the path (a search writes "
                        f"its run directory there)")
    if not is_run_dir(path):
        raise UserError(f"{flag} {path}: not a nas-prune run directory (no {CONFIG_YAML}, "
                        f"{SEARCH_JSON} or {STUDY_DB}); check the path")
    return path


# ---- choosing from records -----------------------------------------------------------------
def completed(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.state == "COMPLETE" and r.val_acc is not None
            and math.isfinite(r.val_acc) and r.widths]


def ranked(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Completed trials, best first: validation accuracy, then fewer FLOPs, then earlier."""
    return sorted(completed(records), key=lambda r: (-r.val_acc, r.flops or 0, r.number))


def pareto_front(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Completed trials no other beats in both accuracy (higher) and FLOPs (lower); by FLOPs."""
    done = completed(records)
    front = []
    for r in done:
        dominated = any(
            o.val_acc >= r.val_acc and o.flops <= r.flops
            and (o.val_acc > r.val_acc or o.flops < r.flops) for o in done)
        if not dominated:
            front.append(r)
    unique: dict[tuple, TrialRecord] = {}
    for r in sorted(front, key=lambda r: (r.flops, -r.val_acc, r.number)):
        unique.setdefault((r.flops, r.val_acc, json.dumps(r.widths, sort_keys=True)), r)
    return list(unique.values())


def best_record(records: Iterable[TrialRecord], *, objective: str = "single",
                max_cost_ratio: float | None = None) -> tuple[TrialRecord | None, str]:
    """The winner and the rule that chose it.

    Single objective: the most accurate completed trial (all of them meet the budget). Multi
    objective: the most accurate Pareto trial whose cost ratio is within ``max_cost_ratio``
    (the budget plus its tolerance); when none is, the most accurate Pareto trial.
    """
    records = list(records)
    if objective != "multi":
        order = ranked(records)
        return (order[0] if order else None), "highest validation accuracy"
    front = pareto_front(records)
    if max_cost_ratio is not None:
        fitting = [r for r in front if r.cost_ratio is not None
                   and r.cost_ratio <= max_cost_ratio]
        if fitting:
            return (max(fitting, key=lambda r: (r.val_acc, -r.flops)),
                    "highest validation accuracy on the Pareto front within the budget")
    if front:
        return (max(front, key=lambda r: (r.val_acc, -r.flops)),
                "highest validation accuracy on the Pareto front (none within the budget)")
    return None, "no completed trial"


def state_counts(records: Iterable[TrialRecord]) -> dict[str, int]:
    out = {s: 0 for s in STATES}
    for r in records:
        out[r.state] = out.get(r.state, 0) + 1
    return out
