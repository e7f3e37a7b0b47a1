"""What the Ray backend's driver, its trainable and its study searcher share, without Ray.

:func:`setup_of` decodes the JSON a Ray trial receives into a :class:`SearchSetup` (cached per
process: a reused worker decodes it once); :func:`record_from_result` turns a Ray trial's last
reported result into a :class:`~nas_prune.rundir.TrialRecord`. Both
:mod:`~nas_prune.search.ray_backend` and :mod:`~nas_prune.search._ray_study` import this module,
and it imports neither, so the two import each other no more.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from ..rundir import TrialRecord
from .evaluate import SearchSetup


@functools.lru_cache(maxsize=2)
def setup_of(setup_json: str) -> SearchSetup:
    return SearchSetup.from_dict(json.loads(setup_json))


def record_from_result(number: int, params: dict[str, Any], result: dict[str, Any], *,
                       setup: SearchSetup, error: str | None = None,
                       start: str | None = None, end: str | None = None) -> TrialRecord:
    """A record from a Ray trial's last reported result (and its error, if it raised)."""
    role, method = setup.cspace.role_of(params)
    state = str(result.get("state", ""))
    widths = result.get("widths")
    widths = json.loads(widths) if isinstance(widths, str) else widths
    curve = result.get("val_curve")
    curve = json.loads(curve) if isinstance(curve, str) else list(curve or [])
    reason = str(result.get("reason") or "")
    epochs = int(result.get("epochs") or result.get("epoch") or 0)
    planned = int(result.get("epochs_planned") or 0)
    if error is not None:
        state, reason = "FAIL", error
    elif state == "RUNNING" and "rung" in result:  # stopped by the scheduler at a rung
        state = "PRUNED"
        reason = (f"early stopping after rung {int(result['rung'])} of "
                  f"{int(result.get('n_rungs') or 0)}")
    elif state == "RUNNING":  # the scheduler stopped it after an intermediate report
        state = "PRUNED"
        reason = f"early stopping after epoch {epochs} of {planned}"
        curve = [float(result["val_acc"])] if "val_acc" in result else []
    elif state not in ("COMPLETE", "FAIL", "REJECTED", "PRUNED"):
        state, reason = "FAIL", reason or "interrupted: no result reported"
    val_acc = result.get("val_acc") if state in ("COMPLETE", "PRUNED") else None
    return TrialRecord(
        number=number, state=state, role=role, seed_method=method,
        widths=widths, flops=result.get("flops"), params=result.get("params"),
        flops_ratio=result.get("flops_ratio"), val_acc=val_acc,
        best_val_acc=result.get("best_val_acc", val_acc), val_curve=curve, epochs=epochs,
        wall_time=float(result.get("wall_time") or result.get("time_total_s") or 0.0),
        datetime_start=start, datetime_complete=end, reason=reason, backend="ray",
        epochs_planned=planned, cost_ratio=result.get("cost_ratio"), scale=result.get("scale"),
        latency_ms=result.get("latency_ms"), latency_iqr_ms=result.get("latency_iqr_ms"),
        trial_params=dict(params), worker=str(result.get("worker") or ""),
        node=str(result.get("node") or ""),
        rung_values=_json_list(result.get("rung_values")),
        measurements=_json_list(result.get("measurements")))


def _json_list(value: Any) -> list:
    value = json.loads(value) if isinstance(value, str) else value
    return list(value) if isinstance(value, list) else []
