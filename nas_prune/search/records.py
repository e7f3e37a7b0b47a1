"""The run directory's records: one backend-independent row per trial, and search.json.

Both backends turn every finished trial into a :class:`TrialRecord`; ``RUN/trials.csv`` and
``RUN/trials.jsonl`` hold one row per trial (the CSV has exactly :data:`CSV_FIELDS`, with width
vectors and validation curves as JSON strings; the JSONL adds a few diagnostic fields). Reports and
``nas-prune export`` read these files, never a backend's internals.

States: ``COMPLETE``; ``PRUNED`` (stopped early by the early-stopping rule); ``FAIL`` (diverged,
out of memory, an exception, or interrupted, with the reason); ``REJECTED`` (the projection could
not meet the budget: never trained).
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

from .._yaml import plain

STATES = ("COMPLETE", "PRUNED", "FAIL", "REJECTED")
CSV_FIELDS = ("number", "state", "role", "seed_method", "widths", "flops", "params",
              "flops_ratio", "val_acc", "best_val_acc", "val_curve", "epochs", "wall_time",
              "datetime_start", "datetime_complete", "reason", "backend")
TRIALS_CSV = "trials.csv"
TRIALS_JSONL = "trials.jsonl"
SEARCH_JSON = "search.json"
FINAL_JSON = "final.json"


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
    trial_params: dict[str, Any] = field(default_factory=dict)
    worker: str = ""

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

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
    csv_path = _write_atomic(run_dir / TRIALS_CSV, buf.getvalue())
    jsonl = "".join(json.dumps(r.to_dict(), allow_nan=False, default=str) + "\n" for r in rows)
    return csv_path, _write_atomic(run_dir / TRIALS_JSONL, jsonl)


def read_records(run_dir: str | Path) -> list[TrialRecord]:
    """The records of RUN/trials.jsonl (empty when there is none yet)."""
    path = Path(run_dir) / TRIALS_JSONL
    if not path.is_file():
        return []
    return [TrialRecord.from_dict(json.loads(line)) for line in path.read_text().splitlines()
            if line.strip()]


def _write_atomic(path: Path, text: str) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_atomic(path, json.dumps(plain(data), indent=2, default=str) + "\n")


def read_json(path: str | Path) -> dict[str, Any] | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


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
