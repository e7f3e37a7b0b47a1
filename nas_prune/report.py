"""The report of a search: plots and tables from a run directory's records.

:func:`write_report` reads the run-directory contract of :mod:`nas_prune.rundir` (file names,
:class:`~nas_prune.rundir.TrialRecord`, the states, the Pareto front) and nothing else:

* ``config.yaml`` (the resolved config) and ``search.json`` (command, backend, space, seed
  methods, budget, metric, base and target cost, start/finish, hardware, versions, study);
* ``proposals/<method>.yaml`` (with ``uniform.yaml``), ``best.yaml`` and ``pareto/*.yaml``
  (architecture YAMLs, :class:`~nas_prune.widths.ArchSpec`);
* ``trials.jsonl`` (else ``trials.csv``): one record per trial;
* ``final.json``: the winner, the seed proposals and uniform retrained on the evaluation seeds and
  scored on the test split: per row the per-seed ``runs`` (or the older ``seeds`` and
  ``test_acc`` lists), and at the top level the paired ``comparisons``, the ``seed_rule`` and the
  ``noise`` floor.

It writes ``report.md``, a self-contained ``report.html`` (images embedded as base64) and the PNGs
next to them, every file atomically (:func:`nas_prune._io.write_atomic`), ``report.md`` last: the
accuracy vs FLOPs plot with the Pareto front of the completed trials, the width profile (base vs
proposals vs winner per group), the search progress (best validation accuracy so far vs trial
number and vs wall time), the final table (mean ± sample std with n per row), the paired
differences of the winner against each seed proposal and uniform (mean with its 95% t-interval, in
points, and the verdict the interval supports), and a table of every trial with its state.
FLOPs are multiply-accumulates of conv and linear layers for one image.

Missing and damaged records. A missing file is normal (a study may be interrupted or still
running): the report says what is missing and goes on. A file that exists but cannot be read is
never treated as missing; the rule per file:

* the run directory itself: absent, or holding nothing a search writes -> :class:`UserError`
  naming the path;
* ``trials.jsonl`` corrupt -> the trials are rebuilt from ``trials.csv`` when that reads and holds
  records, and the report says so at the top of the page and in :attr:`Report.warnings` (the CSV
  lacks the JSONL-only fields, and may hold fewer trials: both counts are stated); when the CSV is
  absent, empty or corrupt too -> :class:`UserError` naming the file and the line. A corrupt
  ``trials.csv`` with no ``trials.jsonl`` -> :class:`UserError` naming the file and the line;
* ``search.json`` corrupt -> :class:`UserError`: it is the report's provenance (command, budget,
  hardware, versions), and a report without it would look complete while saying nothing of how
  its numbers were made;
* ``final.json`` corrupt or not of the expected shape -> :class:`UserError`: it holds the
  report's claim (the test table and the paired differences), and "not retrained yet" over a
  damaged file would be false;
* ``config.yaml`` that does not parse -> a warning: its text is shown as it is, nothing in the
  report is taken from it (the space name, its only use, comes from ``search.json``);
* an unreadable ``proposals/``, ``best.yaml`` or ``pareto/`` YAML -> a warning; it is left out of
  the plots and tables, which say where their widths come from. These are exports that
  ``nas-prune export`` rewrites from the trial records.

Nothing is written before every record has been read, so a failed report leaves no new file.

The page is built once as a list of blocks (headings, paragraphs, tables, images, code) that are
rendered to Markdown and to HTML, so the two always say the same thing. Plots use matplotlib's
object API (``Figure``), which renders with Agg and sets no global backend.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ._io import write_atomic
from ._yaml import read_yaml
from .errors import UserError
from .rundir import (
    BEST_YAML,
    CONFIG_YAML,
    FINAL_JSON,
    PARETO,
    PROPOSALS,
    REPORT_MD,
    SEARCH_JSON,
    STATES,
    TRIALS_CSV,
    TRIALS_JSONL,
    TrialRecord,
    completed,
    pareto_front,
    read_json,
    read_records,
    read_records_csv,
    require_run_dir,
    state_counts,
)
from .stats import fmt_mean_std, mean_std, paired_difference
from .widths import ArchSpec, SearchSpace

__all__ = ["FLOPS_NOTE", "Page", "Report", "RunRecords", "fmt_count", "fmt_mean_std", "mean_std",
           "save_figure", "write_report"]

FLOPS_NOTE = ("FLOPs are multiply-accumulates (MAC) of conv and linear layers for one image "
              "(Li et al.'s rule); papers that count 2 x MAC report twice these numbers.")
ROLE_STYLE = {"seed": ("D", "tab:orange"), "uniform": ("s", "tab:green")}
REPORT_HTML = "report.html"
IMAGES = ("accuracy_vs_flops.png", "width_profile.png", "search_progress.png")


# ---- numbers --------------------------------------------------------------------------------
def _latency(row: dict[str, Any]) -> str:
    """A final row's measured latency: median and interquartile range, in ms."""
    med, iqr = _num(row.get("latency_ms")), _num(row.get("latency_iqr_ms"))
    if med is None:
        return "-"
    return f"{med:.3f}" + (f" (IQR {iqr:.3f})" if iqr is not None else "")


def _num(v: Any) -> float | None:
    """A finite float from a JSON value (None, bools, strings and non-finite -> None)."""
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def fmt_count(v: Any) -> str:
    """A count with a K/M/G suffix (``"1.25M"``); ``"-"`` when missing."""
    f = _num(v)
    if f is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(f) >= div:
            return f"{f / div:.3g}{unit}" if abs(f) / div < 100 else f"{f / div:.1f}{unit}"
    return f"{f:.0f}"


def _axis_unit(values: Sequence[float]) -> tuple[float, str]:
    """A divisor and its name for an axis of counts (thousands, millions, billions)."""
    top = max((abs(v) for v in values), default=0.0)
    for name, div in (("billions", 1e9), ("millions", 1e6), ("thousands", 1e3)):
        if top >= div:
            return div, name
    return 1.0, ""


def _pct(v: Any) -> str:
    f = _num(v)
    return "-" if f is None else f"{100 * f:.2f}"


def _points(v: Any, *, sign: bool = True) -> str:
    """A difference of two accuracies (fractions) in percentage points."""
    f = _num(v)
    return "-" if f is None else f"{100 * f:+.2f}" if sign else f"{100 * f:.2f}"


def _when(v: str | None) -> datetime | None:
    if not v:
        return None
    try:
        return datetime.fromisoformat(v.strip())
    except ValueError:
        return None


# ---- reading the run directory -------------------------------------------------------------
_NUMBERS = ("flops", "params", "flops_ratio", "val_acc", "best_val_acc", "epochs", "wall_time")
_TEXTS = ("state", "role", "seed_method", "reason", "backend", "datetime_start",
          "datetime_complete")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_record(r: TrialRecord, path: Path) -> None:
    """A record whose fields have the contract's types, else a UserError naming the trial."""
    def bad(name: str, value: Any, want: str) -> UserError:
        return UserError(f"{path.name} ({path}): trial {r.number!r}: {name} is "
                         f"{type(value).__name__}, not {want}; restore the file")

    if not isinstance(r.number, int) or isinstance(r.number, bool):
        raise bad("number", r.number, "an integer")
    for name in _NUMBERS:
        v = getattr(r, name)
        if v is not None and not _is_num(v):
            raise bad(name, v, "a number")
    for name in _TEXTS:
        v = getattr(r, name)
        if v is not None and not isinstance(v, str):
            raise bad(name, v, "a string")
    if r.widths is not None and not (isinstance(r.widths, dict) and all(
            isinstance(w, int) and not isinstance(w, bool) for w in r.widths.values())):
        raise bad("widths", r.widths, "an object of integer widths")
    if not isinstance(r.val_curve, list) or not all(_is_num(v) for v in r.val_curve):
        raise bad("val_curve", r.val_curve, "a list of numbers")


def _read_trials(run_dir: Path, notes: list[str], warnings: list[str]) -> list[TrialRecord]:
    """The trial records, sorted by number (the last record of a number wins)."""
    jsonl, csv_path = run_dir / TRIALS_JSONL, run_dir / TRIALS_CSV
    source = jsonl
    if jsonl.is_file():
        try:
            records = read_records(run_dir)
        except UserError as exc:
            if not csv_path.is_file():
                raise UserError(f"{exc}; there is no {TRIALS_CSV} to rebuild the trials "
                                f"from") from None
            try:
                records = read_records_csv(run_dir)
            except UserError as csv_exc:
                raise UserError(f"{exc}; {TRIALS_CSV} cannot replace it either: "
                                f"{csv_exc}") from None
            lines = sum(1 for ln in jsonl.read_text(errors="replace").splitlines() if ln.strip())
            if not records:
                raise UserError(f"{exc}; {TRIALS_CSV} holds no trial to rebuild them "
                                f"from") from None
            source = csv_path
            warnings.append(
                f"{exc}. The {len(records)} trials in this report were rebuilt from "
                f"{TRIALS_CSV} instead ({TRIALS_JSONL} has {lines} non-empty lines"
                + (f", so up to {lines - len(records)} trial(s) may be missing" if
                   lines > len(records) else "")
                + "); the JSONL-only fields (planned epochs, cost ratio, scale, trial "
                  "parameters, worker) are not in the CSV.")
    elif csv_path.is_file():
        records = read_records_csv(run_dir)
        source = csv_path
        notes.append(f"{TRIALS_JSONL} not found: the trials come from {TRIALS_CSV}.")
    else:
        notes.append(f"no {TRIALS_JSONL} or {TRIALS_CSV}: no trial has been recorded yet.")
        return []
    by_number: dict[int, TrialRecord] = {}
    for r in records:
        _check_record(r, source)
        by_number[r.number] = r
    if len(by_number) < len(records):
        notes.append(f"{source.name}: {len(records) - len(by_number)} record(s) repeat a trial "
                     f"number; the last record of each number is shown.")
    return [by_number[k] for k in sorted(by_number)]


def _final_error(path: Path, where: str, what: str) -> UserError:
    return UserError(f"{FINAL_JSON} ({path}): {where} {what}; restore the file, or delete it "
                     f"and run the search again with --resume to redo the final step")


def _check_final(final: dict[str, Any], path: Path) -> None:
    """``final.json`` of the shape the report reads, else a UserError naming the key."""
    rows = final.get("rows", [])
    if not isinstance(rows, list):
        raise _final_error(path, "rows", "is not a list")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            raise _final_error(path, f"rows[{i}]", "is not an object with a name")
        widths = r.get("widths")
        if widths is not None and not (isinstance(widths, dict) and all(
                isinstance(w, int) and not isinstance(w, bool) for w in widths.values())):
            raise _final_error(path, f"rows[{i}].widths", "is not an object of integer widths")
        for key in ("runs", "seeds", "test_acc"):
            value = r.get(key)
            if value is not None and not isinstance(value, list) and \
                    not (key == "test_acc" and _is_num(value)):
                raise _final_error(path, f"rows[{i}].{key}", "is not a list")
        if any(not isinstance(run, dict) for run in r.get("runs") or []):
            raise _final_error(path, f"rows[{i}].runs", "holds a value that is not an object")
    comps = final.get("comparisons")
    if comps is not None and (not isinstance(comps, list)
                              or any(not isinstance(c, dict) for c in comps)):
        raise _final_error(path, "comparisons", "is not a list of objects")
    for key, kind, name in (("noise", dict, "an object"), ("seed_rule", str, "a string")):
        if final.get(key) is not None and not isinstance(final[key], kind):
            raise _final_error(path, key, f"is not {name}")


def _read_spec(path: Path, name: str, warnings: list[str], use: str) -> ArchSpec | None:
    try:
        return ArchSpec.load(path)
    except (UserError, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        warnings.append(f"{name}: unreadable ({exc}); {use}.")
        return None


def _mapping(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


@dataclass
class RunRecords:
    """Everything the report reads, with notes on what was missing and warnings on what was
    damaged (see the module docstring for the rule per file)."""

    run_dir: Path
    search: dict[str, Any] = field(default_factory=dict)
    config_text: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    proposals: dict[str, ArchSpec] = field(default_factory=dict)
    best: ArchSpec | None = None
    pareto: dict[str, ArchSpec] = field(default_factory=dict)
    trials: list[TrialRecord] = field(default_factory=list)
    final: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecords:
        run_dir = require_run_dir(run_dir, flag="RUN")
        rec = cls(run_dir=run_dir)
        notes, warnings = rec.notes, rec.warnings
        rec.search = read_json(run_dir / SEARCH_JSON) or {}
        if not rec.search:
            notes.append(f"{SEARCH_JSON} not found: command, hardware and versions are unknown.")
        cfg_path = run_dir / CONFIG_YAML
        if cfg_path.is_file():
            rec.config_text = cfg_path.read_text(errors="replace")
            try:
                rec.config = read_yaml(cfg_path, what=CONFIG_YAML)
            except (UserError, UnicodeDecodeError) as exc:
                warnings.append(f"{exc}; its text is shown under Configuration as it is, and "
                                f"nothing in this report is taken from it.")
        for p in sorted((run_dir / PROPOSALS).glob("*.yaml")):
            spec = _read_spec(p, f"{PROPOSALS}/{p.name}", warnings,
                              "left out of the width profile")
            if spec is not None:
                rec.proposals[p.stem] = spec
        if (run_dir / BEST_YAML).is_file():
            rec.best = _read_spec(run_dir / BEST_YAML, BEST_YAML, warnings,
                                  "the winner's widths come from elsewhere (said below)")
        for p in sorted((run_dir / PARETO).glob("*.yaml")):
            spec = _read_spec(p, f"{PARETO}/{p.name}", warnings, "left out of the Pareto list")
            if spec is not None:
                rec.pareto[p.stem] = spec
        rec.trials = _read_trials(run_dir, notes, warnings)
        rec.final = read_json(run_dir / FINAL_JSON)
        if rec.final is not None:
            _check_final(rec.final, run_dir / FINAL_JSON)
        return rec

    # -- derived ---------------------------------------------------------------------------
    def family_spec(self) -> ArchSpec | None:
        """Any architecture of the run (they share the family), for base widths and groups."""
        for spec in (self.best, *self.proposals.values(), *self.pareto.values()):
            if spec is not None:
                return spec
        return None

    def base_widths(self) -> tuple[dict[str, int], set[str]]:
        """The base width vector and the residual groups (empty when the family is unknown)."""
        spec = self.family_spec()
        family = None
        if spec is not None:
            family = spec.family_obj()
        else:
            name = self.search.get("space") or self.config.get("space")
            if isinstance(name, str):
                try:
                    family = SearchSpace.load(name).family
                except UserError:
                    family = None
        if family is None:
            return {}, set()
        return family.base_widths(), {g.name for g in family.groups() if g.residual}

    def final_rows(self) -> list[dict[str, Any]]:
        return list((self.final or {}).get("rows") or [])

    def winner_widths(self) -> tuple[dict[str, int] | None, str]:
        """The winner's widths and where they come from."""
        for row in self.final_rows():
            if row.get("name") == "best" and row.get("widths"):
                return dict(row["widths"]), FINAL_JSON
        if self.best is not None:
            return dict(self.best.widths), BEST_YAML
        done = completed(self.trials)
        if done:
            top = max(done, key=lambda t: (t.val_acc, -t.number))
            return dict(top.widths), f"best completed trial so far (#{top.number})"
        return None, "none"


# ---- figures --------------------------------------------------------------------------------
def save_figure(fig, path: Path) -> Path:
    """Save a matplotlib ``Figure`` as PNG (Agg, 120 dpi), atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return write_atomic(path, buf.getvalue())


def _figure(width: float = 7.0, height: float = 4.5):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _plotted(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The completed trials with an accuracy and FLOPs: the points of the accuracy plot."""
    return [t for t in completed(records) if t.flops is not None]


def _plot_accuracy_vs_flops(rec: RunRecords, winner: dict[str, int] | None,
                            winner_from: str, path: Path) -> Path | None:
    done = _plotted(rec.trials)
    if not done:
        return None
    div, unit = _axis_unit([t.flops for t in done])
    fig = _figure()
    ax = fig.add_subplot()
    search = [t for t in done if t.role not in ROLE_STYLE]
    if search:
        ax.scatter([t.flops / div for t in search], [100 * t.val_acc for t in search], s=22,
                   color="tab:blue", alpha=0.6, label=f"search trials ({len(search)})")
    for role, (marker, color) in ROLE_STYLE.items():
        for t in (t for t in done if t.role == role):
            label = f"seed: {t.seed_method}" if role == "seed" and t.seed_method else role
            ax.scatter([t.flops / div], [100 * t.val_acc], s=70, marker=marker, color=color,
                       edgecolor="black", zorder=4, label=label)
    front = pareto_front(done)
    ax.step([t.flops / div for t in front], [100 * t.val_acc for t in front], where="post",
            color="tab:red", linewidth=1.2, alpha=0.8, label="Pareto front (trials)")
    if winner:
        hit = [t for t in done if t.widths == winner]
        if hit:
            t = max(hit, key=lambda t: t.val_acc)
            ax.scatter([t.flops / div], [100 * t.val_acc], s=320, marker="o", facecolors="none",
                       edgecolors="crimson", linewidths=2, zorder=5,
                       label=f"winner ({winner_from})")
    target = _num(rec.search.get("target_cost"))
    if target and rec.search.get("metric", "flops") == "flops":
        ax.axvline(target / div, color="gray", linestyle="--", linewidth=1,
                   label="FLOPs budget")
    ax.set_xlabel(f"FLOPs ({unit + ' of ' if unit else ''}multiply-accumulates per image)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Accuracy vs FLOPs of the completed trials")
    ax.grid(alpha=0.3)
    _dedup_legend(ax)
    return save_figure(fig, path)


def _dedup_legend(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels, strict=True):
        seen.setdefault(lab, h)
    if seen:
        ax.legend(seen.values(), seen.keys(), fontsize=8, loc="best")


def _plot_width_profile(rec: RunRecords, winner: dict[str, int] | None, winner_from: str,
                        path: Path) -> Path | None:
    base, residual = rec.base_widths()
    if not base:
        return None
    series: list[tuple[str, dict[str, int]]] = [("base", base)]
    series += [(f"proposal: {name}", dict(spec.widths)) for name, spec in rec.proposals.items()]
    if winner:
        series.append((f"winner ({winner_from})", winner))
    groups = list(base)
    fig = _figure(min(18.0, max(7.0, 0.12 * len(groups) * len(series) + 3)), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for k, (label, widths) in enumerate(series):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
        ax.bar(xs, [widths.get(g, 0) for g in groups], width=width, label=label,
               edgecolor="black", linewidth=0.3)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{g} (res)" if g in residual else g for g in groups], rotation=60,
                       ha="right", fontsize=8)
    ax.set_xlabel("width group" + (" ('res': residual group, coupled by shortcut additions)"
                                   if residual else ""))
    ax.set_ylabel("channels")
    ax.set_title("Width profile per group")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _plot_progress(rec: RunRecords, path: Path) -> Path | None:
    done = completed(rec.trials)
    if not done:
        return None
    from matplotlib.ticker import MaxNLocator

    fig = _figure(10.0, 4.0)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter([t.number for t in done], [100 * t.val_acc for t in done], s=14, alpha=0.5,
                color="tab:blue", label="completed trial")
    best, xs, ys = -math.inf, [], []
    for t in done:
        best = max(best, t.val_acc)
        xs.append(t.number)
        ys.append(100 * best)
    ax1.step(xs, ys, where="post", color="tab:red", label="best so far")
    ax1.set_xlabel("trial number")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_ylabel("validation accuracy (%)")
    ax1.set_title("Best validation accuracy vs trial")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    done_ids = {id(t) for t in done}
    timed = [(m, t) for m, t in _elapsed_minutes(rec.trials) if id(t) in done_ids]
    if timed:
        best, xs, ys = -math.inf, [], []
        for minutes, t in timed:
            best = max(best, t.val_acc)
            xs.append(minutes)
            ys.append(100 * best)
        ax2.step(xs, ys, where="post", color="tab:red", marker="o", markersize=3)
        ax2.set_xlabel("wall time since the first trial started (minutes)")
    else:
        ax2.text(0.5, 0.5, "no trial timestamps or wall times", ha="center", va="center",
                 transform=ax2.transAxes)
    ax2.set_ylabel("best validation accuracy so far (%)")
    ax2.set_title("Best validation accuracy vs wall time")
    ax2.grid(alpha=0.3)
    return save_figure(fig, path)


def _elapsed_minutes(trials: list[TrialRecord]) -> list[tuple[float, TrialRecord]]:
    """(minutes from the first start to each trial's completion, trial), by completion time.

    From the recorded timestamps; without them, the cumulative sum of the trials' wall times in
    trial order (a sequential-worker estimate).
    """
    stamped = [(_when(t.datetime_complete), t) for t in trials]
    stamped = [(c, t) for c, t in stamped if c is not None]
    starts = [s for s in (_when(t.datetime_start) for t in trials) if s is not None]
    if stamped and starts:
        t0 = min(starts)
        try:
            out = [((c - t0).total_seconds() / 60.0, t) for c, t in stamped]
        except TypeError:  # naive and aware timestamps mixed
            out = []
        if out:
            return sorted(out, key=lambda p: p[0])
    if any((t.wall_time or 0) > 0 for t in trials):
        total, out = 0.0, []
        for t in trials:
            total += t.wall_time or 0.0
            out.append((total / 60.0, t))
        return out
    return []


# ---- the page -------------------------------------------------------------------------------
class Page:
    """Blocks rendered to Markdown and to self-contained HTML."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[tuple[str, Any]] = []

    def h2(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", items))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (headers, rows)))

    def image(self, path: Path | None, alt: str) -> None:
        if path is not None:
            self.blocks.append(("img", (path, alt)))

    def code(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, data in self.blocks:
            if kind == "h2":
                out += [f"## {data}", ""]
            elif kind == "p":
                out += [data, ""]
            elif kind == "ul":
                out += [f"- {item}" for item in data] + [""]
            elif kind == "table":
                headers, rows = data
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "|".join("---" for _ in headers) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
                out.append("")
            elif kind == "img":
                path, alt = data
                out += [f"![{alt}]({path.name})", ""]
            elif kind == "pre":
                out += ["```yaml", data.rstrip(), "```", ""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, data in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{html.escape(data)}</h2>")
            elif kind == "p":
                body.append(f"<p>{html.escape(data)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in data)
                            + "</ul>")
            elif kind == "table":
                headers, rows = data
                head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
                trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r)
                              + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                path, alt = data
                b64 = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(alt)}" '
                            f'src="data:image/png;base64,{b64}"><figcaption>'
                            f"{html.escape(alt)}</figcaption></figure>")
            elif kind == "pre":
                body.append(f"<pre>{html.escape(data)}</pre>")
        style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
                 "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;"
                 "font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
                 "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
                 "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow-x:auto}"
                 "figcaption{color:#555;font-size:0.85em}")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{style}</style></head>"
                f"<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _md_cell(c: Any) -> str:
    return str(c).replace("|", "\\|").replace("\n", " ")


# ---- sections -------------------------------------------------------------------------------
def _header(rec: RunRecords, page: Page) -> None:
    s = rec.search
    finished = s.get("finished")
    status = ("finished " + str(finished)) if finished else \
        ("started " + str(s.get("started")) + "; not finished (interrupted or still running)"
         if s.get("started") else "unknown")
    hw, versions = _mapping(s.get("hardware")), _mapping(s.get("versions"))
    methods = s.get("seed_methods")
    methods = ", ".join(map(str, methods)) if isinstance(methods, list) and methods else "unknown"
    metric = s.get("metric", "flops")
    page.bullets([
        f"run directory: {rec.run_dir}",
        f"command: {s.get('command', 'unknown')}",
        f"status: {status}",
        f"backend: {s.get('backend', 'unknown')}; study: {s.get('study_name', '-')} "
        f"({s.get('storage', '-')})",
        f"space: {s.get('space', rec.config.get('space', 'unknown'))}; seed methods: {methods}",
        f"budget: {s.get('budget', '?')} of the base {metric}; base FLOPs "
        f"{fmt_count(s.get('base_flops'))}, base params {fmt_count(s.get('base_params'))}, target "
        f"{metric} {fmt_count(s.get('target_cost'))}",
        "hardware: " + (", ".join(f"{k} {v}" for k, v in hw.items() if v) or "unknown"),
        "versions: " + (", ".join(f"{k} {v}" for k, v in versions.items() if v) or "unknown"),
    ])
    page.p(FLOPS_NOTE)


def _per_seed(row: Mapping[str, Any], metric: str = "test_acc") -> dict[int, float | None] | None:
    """``{seed: value}`` of a final row (its ``runs``, else its ``seeds`` and ``test_acc``
    lists); None when the seeds are not recorded."""
    runs = row.get("runs")
    if runs:
        return {r["seed"]: r.get(metric) for r in runs if isinstance(r.get("seed"), int)}
    seeds, values = row.get("seeds"), row.get(metric)
    if isinstance(seeds, list) and isinstance(values, list) and len(seeds) == len(values):
        return dict(zip(seeds, values, strict=True))
    return None


def _values(row: Mapping[str, Any], metric: str) -> list[Any]:
    """The per-seed values of a final row, for its mean ± std."""
    if row.get("runs"):
        return [r.get(metric) for r in row["runs"]]
    values = row.get(metric)
    return values if isinstance(values, list) else [values]


def _computed_comparisons(rows: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """The winner minus each seed proposal and uniform, paired by seed, from the rows."""
    best = next((r for r in rows if r["name"] == "best"), None)
    if best is None:
        return []
    a = _per_seed(best)
    out = []
    for r in rows:
        if r is best or not (r["name"].startswith("seed:") or r["name"] == "uniform"):
            continue
        b = _per_seed(r)
        if a is None or b is None:
            notes.append(f"best − {r['name']}: the rows do not record their seeds, so the "
                         f"difference cannot be paired.")
            continue
        d = paired_difference(a, b)
        out.append({"a": "best", "b": r["name"], "metric": "test_acc", **d.to_dict(),
                    "seeds_to_resolve": d.seeds_to_resolve(),
                    "same_widths": bool(best.get("widths")) and best.get("widths") ==
                    r.get("widths")})
    return out


def _comparison_row(c: Mapping[str, Any]) -> list[Any]:
    ci = c.get("ci95")
    low, high = (ci + [None, None])[:2] if isinstance(ci, list) else (None, None)
    interval = "- (n < 2)" if _num(low) is None or _num(high) is None else \
        f"[{_points(low)}, {_points(high)}]"
    verdict = str(c.get("verdict", "-"))
    k = c.get("seeds_to_resolve")
    if isinstance(k, int) and verdict.startswith("not resolved"):
        verdict += f" (about {k} seeds would resolve a difference this size)"
    if c.get("same_widths"):
        verdict += " (same widths: the same trainings)"
    return [f"{c.get('a', '?')} − {c.get('b', '?')}", c.get("metric", "test_acc"),
            _points(c.get("mean")), _points(c.get("std"), sign=False), interval,
            c.get("n", "-"), verdict]


def _noise_sentence(noise: Mapping[str, Any]) -> str | None:
    parts = []
    for split, name in (("val", "validation"), ("test", "test")):
        n_img, sd = noise.get(f"{split}_images"), _num(noise.get(f"binomial_std_{split}"))
        if sd is not None:
            on = f" on the {n_img:,} {name} images" if isinstance(n_img, int) else f" ({name})"
            parts.append(f"{100 * sd:.2f} points{on}")
    known = {"val_images", "test_images", "binomial_std_val", "binomial_std_test",
             "seed_std_test"}
    out = []
    if parts:
        out.append("Noise floor: one accuracy measured on N images has a binomial std of "
                   "sqrt(p (1 - p) / N): " + ", ".join(parts) + ".")
    seed_sd = _num(noise.get("seed_std_test"))
    if seed_sd is not None:
        out.append(f"The seed-to-seed std of the test accuracy is {100 * seed_sd:.2f} points.")
    other = [f"{k} = {v}" for k, v in noise.items() if k not in known]
    if other:
        out.append("Also recorded: " + ", ".join(other) + ".")
    if not out:
        return None
    return " ".join(out) + " Differences below the combined floor are noise."


def _final_section(rec: RunRecords, page: Page) -> None:
    page.h2("Final comparison (test split)")
    final, rows = rec.final, rec.final_rows()
    if final is None:
        page.p(f"{FINAL_JSON} not found: the winner has not been retrained and tested yet "
               "(the study was interrupted or is still running).")
        return
    if not rows:
        page.p(f"{FINAL_JSON} lists no rows: nothing was retrained on the test split.")
        return
    n = final.get("n_seeds", "?")
    epochs = f" for {final['base_epochs']} base epochs" if final.get("base_epochs") else ""
    rule = f" The winner: {final['best_rule']}." if final.get("best_rule") else ""
    page.p(f"Each architecture retrained from scratch over {n} seed(s){epochs} and scored on the "
           f"test split; accuracy in % as mean ± sample std (n), from the per-seed values in "
           f"{FINAL_JSON}.{rule}")
    if final.get("seed_rule"):
        page.p(f"Seeds: {final['seed_rule'].rstrip('.')}.")
    tuned = final.get("finetune")
    if isinstance(tuned, dict) and tuned.get("rule"):
        cost = ", ".join(f"{r['name']} {r['compute_base_epochs']:.2f}" for r in rows
                         if _num(r.get("compute_base_epochs")) is not None)
        page.p(f"Except the row 'best (fine-tuned)': {tuned['rule']}. Training compute per run "
               f"in epochs of the full-width network (the base network's training counted): "
               f"{cost}.")
    weights = final.get("best_weights")
    if isinstance(weights, dict) and weights.get("why"):
        page.p(f"best.pt holds {weights['why']}.")
    table, failed = [], []
    latency = any(_num(r.get("latency_ms")) is not None for r in rows)
    for r in rows:
        trial = r.get("trial")
        table.append([r["name"], trial if isinstance(trial, int) else "-",
                      fmt_count(r.get("flops")), fmt_count(r.get("params")),
                      "-" if _num(r.get("flops_ratio")) is None else f"{r['flops_ratio']:.3f}",
                      *([_latency(r)] if latency else []),
                      fmt_mean_std(_values(r, "val_acc")) if r.get("runs")
                      else _pct(r.get("val_acc")),
                      fmt_mean_std(_values(r, "test_acc"))])
        failed += [f"{r['name']} seed {run.get('seed', '?')}: {run.get('status')}"
                   + (f" ({run['reason']})" if run.get("reason") else "")
                   for run in r.get("runs") or [] if run.get("status", "ok") != "ok"]
    page.table(["architecture", "trial", "FLOPs (MAC)", "params", "FLOPs ratio",
                *(["latency ms (median, IQR)"] if latency else []),
                "val acc (%)", "test acc (%)"], table)
    if failed:
        page.p("Final runs that did not finish normally (left out of the means):")
        page.bullets(failed)

    page.h2("Paired differences (95% t-interval)")
    comps = final.get("comparisons")
    if comps is None:
        comps = _computed_comparisons(rows, rec.notes)
        source = (f"computed by this report from the rows' per-seed test accuracies ("
                  f"{FINAL_JSON} predates its own comparisons)")
    else:
        source = f"as recorded in {FINAL_JSON}"
    if comps:
        page.p("Differences in percentage points, paired seed by seed (a minus b on the same "
               "evaluation seeds): mean, sample std, 95% t-interval with n - 1 degrees of "
               "freedom, n; 'better' or 'worse' only when the interval excludes 0; " + source
               + ".")
        page.table(["difference", "metric", "mean (points)", "std (points)",
                    "95% interval (points)", "n", "verdict"],
                   [_comparison_row(c) for c in comps])
    else:
        page.p("No paired difference: there is no winner row or no seed proposal or uniform "
               "row to compare it with.")
    noise = _noise_sentence(final.get("noise") or {})
    if noise:
        page.p(noise)


def _trials_section(rec: RunRecords, page: Page) -> None:
    page.h2("Every trial")
    if not rec.trials:
        page.p("No trial recorded yet.")
        return
    counts = state_counts(rec.trials)
    known = {k: v for k, v in counts.items() if k in STATES and v}
    other = len(rec.trials) - sum(known.values())
    page.p(f"{len(rec.trials)} trials: " + ", ".join(f"{v} {k.lower()}" for k, v in
                                                    known.items())
           + (f", {other} other" if other else "")
           + ". PRUNED = stopped early by the early-stopping rule; FAIL = diverged, out of "
             "memory, an exception or interrupted; REJECTED = the budget projection failed "
             "(never trained).")
    rows = []
    for t in rec.trials:
        rows.append([t.number, t.state, t.role, t.seed_method or "-", fmt_count(t.flops),
                     "-" if t.flops_ratio is None else f"{t.flops_ratio:.3f}", _pct(t.val_acc),
                     _pct(t.best_val_acc), "-" if t.epochs is None else f"{t.epochs:g}",
                     "-" if t.wall_time is None else f"{t.wall_time:.1f}",
                     t.reason if t.state != "COMPLETE" else ""])
    page.table(["#", "state", "role", "seed method", "FLOPs (MAC)", "FLOPs ratio",
                "val acc (%)", "best val (%)", "epochs", "wall (s)", "reason"], rows)


# ---- the report -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote, and the warnings about damaged records it worked around
    (also on the page). Path-like: it stands for ``report.md`` where a path is expected."""

    markdown: Path
    html: Path
    images: tuple[Path, ...]
    warnings: tuple[str, ...]

    def __fspath__(self) -> str:
        return str(self.markdown)

    def __str__(self) -> str:
        return str(self.markdown)


def write_report(run_dir: str | Path) -> Report:
    """Write ``report.md``, ``report.html`` and the PNGs into ``run_dir``.

    Works on whatever part of the contract exists and says what is missing; damaged records
    follow the rules of the module docstring (a :class:`UserError` before anything is written,
    or a warning on the page and in :attr:`Report.warnings`).
    """
    rec = RunRecords.read(run_dir)
    out = rec.run_dir
    winner, winner_from = rec.winner_widths()
    page = Page(f"nas-prune report: {out.resolve().name}")
    _header(rec, page)
    if rec.warnings:
        page.h2("Damaged records")
        page.p("Some records could not be read; this report worked around them as follows.")
        page.bullets(rec.warnings)

    page.h2("Accuracy vs FLOPs")
    acc_png = _plot_accuracy_vs_flops(rec, winner, winner_from, out / IMAGES[0])
    if acc_png is None:
        page.p("No completed trial with FLOPs and accuracy yet.")
    page.image(acc_png, "Validation accuracy vs FLOPs of every completed trial; seed proposals, "
                        "uniform and the winner marked; the Pareto front of the trials.")
    if rec.pareto:
        page.p(f"Exported Pareto architectures ({PARETO}/): " + ", ".join(
            f"{name} ({fmt_count(s.flops)} FLOPs, val {_pct(s.metrics.get('val_acc'))}%)"
            for name, s in rec.pareto.items()))

    page.h2("Width profile")
    width_png = _plot_width_profile(rec, winner, winner_from, out / IMAGES[1])
    if width_png is None:
        page.p("No architecture YAML to read the family's width groups from.")
    page.image(width_png, "Channels per width group: base network, seed proposals, winner.")
    if winner:
        page.p(f"Winner ({winner_from}): " + ", ".join(f"{g}={w}" for g, w in winner.items()))

    page.h2("Search progress")
    prog_png = _plot_progress(rec, out / IMAGES[2])
    if prog_png is None:
        page.p("No completed trial yet.")
    page.image(prog_png, "Best validation accuracy so far vs trial number and vs wall time.")

    _final_section(rec, page)
    _trials_section(rec, page)

    if rec.notes:
        page.h2("Notes on the records")
        page.bullets(rec.notes)
    page.h2("Configuration")
    if rec.config_text is not None:
        page.code(rec.config_text)
    else:
        page.p(f"{CONFIG_YAML} not found.")

    html_path = write_atomic(out / REPORT_HTML, page.html())
    md = write_atomic(out / REPORT_MD, page.markdown())
    images = tuple(p for p in (acc_png, width_png, prog_png) if p is not None)
    return Report(markdown=md, html=html_path, images=images, warnings=tuple(rec.warnings))
