"""Several seed methods' rethink runs side by side (``nas-prune report RUN [RUN ...]``).

Everything is read back from the runs' ``rethink.json`` (:func:`read_record`), so a summary can be
rebuilt from committed runs alone, including runs written before the ``Fine-tuned (rewind)`` row
existed (their rewind cells are ``-``). One line per method: each row's test accuracy, the pruned
FLOPs ratio, and Scratch-B minus each fine-tuning row paired by seed with its 95% t-interval and
the verdict the interval supports (:func:`nas_prune.stats.paired_difference`); a grouped bar
plot; runs whose dataset, space, budget, seeds, epochs or recipe differ are named in a note.

The row names and colours live here because both this summary and :mod:`nas_prune.rethink` (which
writes the records) use them; this module imports nothing from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._io import read_json, write_atomic
from .errors import UserError
from .report import FLOPS_NOTE, Page, save_figure
from .stats import PairedDifference, fmt_mean_std, mean_std, paired_difference

__all__ = ["COMPARABLE", "GAPS", "LIU_ROWS", "REWIND", "ROWS", "ROW_COLORS", "accuracy_axis",
           "fmt_gap", "paired_gap", "read_record", "row_of", "rows_present", "schedule_text",
           "summary_table", "verdict_text", "write_summary"]

#: Liu et al.'s four rows: every rethink record has them
LIU_ROWS = ("Unpruned", "Fine-tuned", "Scratch-E", "Scratch-B")
#: the fair fine-tuning control: the cut weights trained with learning-rate rewinding
REWIND = "Fine-tuned (rewind)"
#: every row a record can hold, in table order
ROWS = ("Unpruned", "Fine-tuned", REWIND, "Scratch-E", "Scratch-B")
ROW_COLORS = {"Unpruned": "tab:gray", "Fine-tuned": "tab:purple", REWIND: "tab:pink",
              "Scratch-E": "tab:blue", "Scratch-B": "tab:green"}
#: the paired differences that test Liu et al.'s conclusion: (row, minus row)
GAPS = (("Scratch-B", "Fine-tuned"), ("Scratch-B", REWIND))

#: record fields that must agree for methods to share one table; a difference is named in a
#: note (the method's own base epochs and its Scratch-B epochs may differ legitimately)
COMPARABLE = (("dataset",), ("space",), ("budget",), ("metric",), ("seeds",),
              ("epochs", "unpruned"), ("epochs", "finetune"), ("finetune",),
              ("config", "data"), ("config", "train"))


# ---- reading a record ------------------------------------------------------------------------
def read_record(run_dir: str | Path) -> dict[str, Any]:
    """``rethink.json`` of a rethink run directory (a one-line :class:`UserError` otherwise).

    A record needs Liu et al.'s four rows; the rewind row is optional (older runs, ``--no-rewind``).
    """
    path = Path(run_dir) / "rethink.json"
    record = read_json(path)
    if record is None:
        raise UserError(f"{run_dir}: no rethink.json; give a directory 'nas-prune rethink' wrote")
    rows = record.get("rows")
    names = {r.get("row") for r in rows if isinstance(r, dict)} if isinstance(rows, list) else set()
    if not set(LIU_ROWS) <= names or not names <= set(ROWS):
        raise UserError(f"{path}: not a rethink record (needs the rows {', '.join(LIU_ROWS)}); "
                        f"run 'nas-prune rethink' again")
    return record


def rows_present(records: list[dict[str, Any]]) -> list[str]:
    """The rows (in table order) that at least one record holds."""
    names = {r["row"] for rec in records for r in rec["rows"]}
    return [row for row in ROWS if row in names]


def row_of(record: dict[str, Any], row: str) -> dict[str, Any] | None:
    return next((r for r in record["rows"] if r["row"] == row), None)


def paired_gap(record: dict[str, Any], row: str, minus: str) -> PairedDifference:
    """``row - minus`` test accuracy over the seeds both rows have (same seed paired), with
    its 95% t-interval and verdict; n = 0 when the record lacks either row."""
    by_seed: dict[str, dict[int, float]] = {row: {}, minus: {}}
    for run in record.get("runs", []):
        if run.get("row") in by_seed and run.get("test_acc") is not None:
            by_seed[run["row"]][run["seed"]] = run["test_acc"]
    return paired_difference(by_seed[row], by_seed[minus])


# ---- text ------------------------------------------------------------------------------------
def fmt_gap(d: PairedDifference) -> str:
    """``"+5.61 ± 0.75 [+3.75, +7.47] (n=3)"``: mean ± sample std of the per-seed differences
    and the 95% t-interval, in accuracy points."""
    if d.mean is None:
        return "-"
    text = f"{100 * d.mean:+.2f}"
    if d.std is None:
        return text + f" (n={d.n}, one seed: no interval)"
    return text + f" ± {100 * d.std:.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}] (n={d.n})"


def verdict_text(d: PairedDifference) -> str:
    """The verdict the interval supports; an unresolved one says how many seeds would resolve
    a difference of the observed size (when that can be estimated)."""
    if d.mean is None:
        return "-"
    if d.verdict in ("better", "worse"):
        return d.verdict
    k = d.seeds_to_resolve()
    return d.verdict + (f" (about {k} seeds would resolve a gap this size)" if k else "")


def schedule_text(schedule: dict[str, Any] | None) -> str:
    """A recorded learning-rate schedule in words: ``"lr 0.1, cosine, no warm-up"``."""
    if not schedule:
        return "-"
    lr = f"lr {schedule['lr']:g}"
    if schedule["schedule"] == "constant":
        return f"constant {lr}"
    text = f"{lr}, {schedule['schedule']}"
    if schedule["schedule"] == "step":
        marks = ", ".join(f"{m:.0%}" for m in schedule.get("milestones", []))
        text += f" x{schedule['gamma']:g} at {marks}" if marks else " (no milestones)"
    warmup = schedule.get("warmup_epochs") or 0
    return text + (f", {warmup:g} warm-up epoch(s)" if warmup else ", no warm-up")


def _gap_headers(row: str, minus: str) -> list[str]:
    return [f"{row} - {minus} (points, ± std [95% CI])", f"{row} vs {minus}"]


def summary_table(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and one line per method: each row's accuracy, the pruned FLOPs ratio, then for
    each gap of :data:`GAPS` whose rows exist the paired difference and its verdict.

    Rows no record holds are left out; a record without a row shows ``-`` there."""
    rows = rows_present(records)
    gaps = [(a, b) for a, b in GAPS if a in rows and b in rows]
    headers = ["method", *rows, "pruned FLOPs"] + \
        [h for a, b in gaps for h in _gap_headers(a, b)] + ["wall (min)"]
    out = []
    for rec in records:
        line = [rec["seed_method"]]
        for row in rows:
            r = row_of(rec, row)
            line.append(fmt_mean_std(r["test_acc"]) if r else "-")
        line.append(_ratio_span([p["flops_ratio"] for p in rec.get("pruned", [])]))
        for a, b in gaps:
            d = paired_gap(rec, a, b)
            line += [fmt_gap(d), verdict_text(d)]
        out.append(line + [f"{rec.get('wall_time', 0) / 60:.1f}"])
    return headers, out


def _ratio_span(ratios: list[float]) -> str:
    if not ratios:
        return "-"
    lo, hi = min(ratios), max(ratios)
    return f"{lo:.1%}" if lo == hi else f"{lo:.1%}-{hi:.1%}"


def _differences(records: list[dict[str, Any]]) -> list[str]:
    def get(record: dict[str, Any], path: tuple[str, ...]) -> Any:
        for key in path:
            record = record.get(key) if isinstance(record, dict) else None
        return record

    notes = []
    for path in COMPARABLE:
        values = [get(r, path) for r in records]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            name = ".".join(path)
            if all(isinstance(v, dict) for v in values):  # name the sub-keys that differ
                keys = sorted({k for v in values for k in v
                               if len({json.dumps(w.get(k), default=str) for w in values}) > 1})
                name += " (" + ", ".join(keys) + ")"
                shown = "; ".join(f"{r['seed_method']}: " + ", ".join(
                    f"{k}={v.get(k)}" for k in keys) for r, v in zip(records, values, strict=True))
            else:
                shown = "; ".join(f"{r['seed_method']}: {v}"
                                  for r, v in zip(records, values, strict=True))
            notes.append(f"The runs differ in {name!r} ({shown}), so their rows are not "
                         f"directly comparable.")
    return notes


def _epochs_note(first: dict[str, Any]) -> str:
    ep = first["epochs"]
    text = (f"Epochs (of {first['seed_method']}'s run): Unpruned and Scratch-E {ep['unpruned']}, "
            f"fine-tuning {ep['finetune']} at a constant lr {first['finetune']['lr']:g}, Scratch-B "
            f"{', '.join(str(e) for e in ep['scratch_b'])}")
    rewind = first.get("rewind")
    if rewind:
        text += (f"; {REWIND}: {rewind['epochs']} epochs = {rewind['steps']} SGD steps (as many "
                 f"as Scratch-E) at the base schedule, {schedule_text(rewind['lr_schedule'])}")
    return text + "."


def write_summary(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Put several rethink runs side by side: ``rethink-summary.md``, ``.html`` and ``.png`` in
    ``out_dir`` (every number read from the runs' ``rethink.json``). Returns the Markdown path."""
    records = [read_record(d) for d in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = records[0]
    page = Page(f"Rethinking the value of pruning: {len(records)} seed method(s) at "
                f"{first['budget']:g} of the base {first['metric']}")
    page.p(f"Liu et al. (ICLR 2019) for each method on {first['dataset']} (space "
           f"{first['space']}): test accuracy in % as mean ± sample std (n) over seeds "
           f"{first['seeds']}. Each gap is Scratch-B minus a fine-tuning row per seed (the same "
           f"seed's base network, proposal and data order): mean ± sample std of the per-seed "
           f"differences in points and the 95% t-interval (n - 1 degrees of freedom). "
           f"'better' means the interval lies above 0, 'worse' below; otherwise the difference "
           f"is not resolved at that n.")
    headers, rows = summary_table(records)
    page.table(headers, rows)
    missing = [rec["seed_method"] for rec in records if row_of(rec, REWIND) is None]
    notes = _differences(records) + [_epochs_note(first), FLOPS_NOTE]
    if missing and len(missing) < len(records):
        notes.append(f"No {REWIND} row in the run(s) of {', '.join(missing)} (run before the "
                     f"row existed, or with --no-rewind).")
    notes += [f"{rec['seed_method']}: {rec['command'] or '-'} (run {Path(d)})"
              for rec, d in zip(records, run_dirs, strict=True)]
    page.bullets(notes)
    plot = _summary_plot(records, out / "rethink-summary.png")
    page.image(plot, "Test accuracy per method and row, mean with sample-std error bars; dots "
                     "are single seeds")
    md = write_atomic(out / "rethink-summary.md", page.markdown())
    write_atomic(md.with_suffix(".html"), page.html())
    return md


# ---- plots -----------------------------------------------------------------------------------
def _summary_plot(records: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.figure import Figure

    rows = rows_present(records)
    fig = Figure(figsize=(max(6.5, 0.4 * len(rows) * len(records) + 2), 4.4),
                 layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(rows)
    values = []
    for k, row in enumerate(rows):
        for i, rec in enumerate(records):
            r = row_of(rec, row)
            if r is None:
                continue
            accs = [100 * a for a in r["test_acc"] if a is not None]
            mean, std, _ = mean_std(accs)
            x = i + (k - (len(rows) - 1) / 2) * width
            if mean is not None:
                ax.bar(x, mean, width, yerr=std or 0.0, capsize=3, color=ROW_COLORS[row],
                       edgecolor="black", alpha=0.85, label=row)
                values += accs + [mean - (std or 0.0)]
            ax.scatter([x] * len(accs), accs, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels([r["seed_method"] for r in records])
    accuracy_axis(ax, values)
    first = records[0]
    ax.set_title(f"Liu et al.'s comparison at {first['budget']:g} of the base {first['metric']} "
                 f"({first['dataset']}, {first['space']})")
    ax.grid(axis="y", alpha=0.3)
    _dedup_legend(ax, ncols=len(rows))
    return save_figure(fig, path)


def _dedup_legend(ax, ncols: int) -> None:
    """One legend entry per row (a row missing from the first record is labelled later)."""
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, label in zip(handles, labels, strict=True):
        seen.setdefault(label, h)
    ax.legend(list(seen.values()), list(seen), fontsize=8, ncols=ncols, loc="upper center",
              bbox_to_anchor=(0.5, -0.08))


def accuracy_axis(ax, values: list[float]) -> None:
    """Y range around ``values`` (accuracies in %, padded, within 0-100); the label says when
    the axis does not start at 0."""
    if values:
        lo, hi = min(values), max(values)
        pad = max(1.0, 0.25 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    truncated = ax.get_ylim()[0] > 0
    ax.set_ylabel("test accuracy (%)" + (" - axis does not start at 0" if truncated else ""))
