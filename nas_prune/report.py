"""The report of a search: plots and tables from a run directory's records.

:func:`write_report` reads only the run-directory contract that a search writes, and tolerates
missing files (a study may be interrupted or still running):

* ``config.yaml`` (resolved config) and ``search.json`` (command, backend, space, seed methods,
  budget, metric, base and target cost, start/finish, hardware, versions, study name, storage);
* ``proposals/<method>.yaml`` (seed proposals and ``uniform.yaml``), ``best.yaml`` and
  ``pareto/*.yaml`` (architecture YAMLs, :class:`~nas_prune.widths.ArchSpec`);
* ``trials.jsonl`` (or, failing that, ``trials.csv``): one record per trial with number, state,
  role, seed method, widths, FLOPs, params, FLOPs ratio, validation accuracies and curve, epochs,
  wall time, start/complete times, reason and backend;
* ``final.json``: the winner, the seed proposals and uniform retrained and scored on the test
  split over ``n_seeds`` seeds.

It writes ``report.md``, a self-contained ``report.html`` (images embedded as base64) and the PNGs
next to them: accuracy vs FLOPs with the Pareto front (max accuracy, min FLOPs, computed from the
completed trials), the width profile (base vs proposals vs winner per width group), the search
progress (best validation accuracy so far vs trial number and vs wall time), the final table and a
table of every trial. FLOPs are multiply-accumulates of conv and linear layers for one image.

The page is built once as a list of blocks (headings, paragraphs, tables, images, code) that are
rendered to Markdown and to HTML, so the two always say the same thing. Plots use matplotlib's
object API (``Figure``), which renders with Agg and sets no global backend.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ._yaml import read_yaml
from .errors import UserError
from .widths import ArchSpec, SearchSpace

__all__ = ["FLOPS_NOTE", "Page", "fmt_count", "fmt_mean_std", "mean_std", "pareto_front", "read_trials",
           "save_figure", "write_report"]

FLOPS_NOTE = ("FLOPs are multiply-accumulates (MAC) of conv and linear layers for one image "
              "(Li et al.'s rule); papers that count 2 x MAC report twice these numbers.")
STATES = ("COMPLETE", "PRUNED", "FAIL", "REJECTED")
ROLE_STYLE = {"seed": ("D", "tab:orange"), "uniform": ("s", "tab:green")}


# ---- numbers --------------------------------------------------------------------------------
def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (n - 1; None for n < 2) and n of the non-missing values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def fmt_mean_std(values: Sequence[float | None], *, scale: float = 100.0, digits: int = 2) -> str:
    """``"91.23 ± 0.45 (n=3)"``; accuracies are fractions shown as percent by default."""
    m, s, n = mean_std(values)
    if m is None:
        return "-"
    if s is None:
        return f"{m * scale:.{digits}f} (n={n}, no std)"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f} (n={n})"


def _num(v: Any) -> float | None:
    """A float from JSON/CSV values ('' and None -> None)."""
    if v is None or v == "" or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


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


def _when(v: Any) -> datetime | None:
    if not v or not isinstance(v, str):
        return None
    try:
        return datetime.fromisoformat(v.strip())
    except ValueError:
        return None


# ---- reading the run directory -------------------------------------------------------------
@dataclass
class Trial:
    number: int
    state: str
    role: str
    seed_method: str | None
    widths: dict[str, int]
    flops: float | None
    params: float | None
    flops_ratio: float | None
    val_acc: float | None
    best_val_acc: float | None
    val_curve: list[float]
    epochs: float | None
    wall_time: float | None
    start: datetime | None
    complete: datetime | None
    reason: str
    backend: str

    @property
    def acc(self) -> float | None:
        """The score the search ranks by: final validation accuracy (else the best seen)."""
        return self.val_acc if self.val_acc is not None else self.best_val_acc


def _json_field(v: Any, default: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v) if v.strip() else default
        except json.JSONDecodeError:
            return default
    return default if v is None else v


def _trial(rec: dict[str, Any]) -> Trial | None:
    number = _num(rec.get("number"))
    if number is None:
        return None
    widths = _json_field(rec.get("widths"), {})
    curve = _json_field(rec.get("val_curve"), [])
    return Trial(
        number=int(number), state=str(rec.get("state") or "?").upper(),
        role=str(rec.get("role") or "search"), seed_method=rec.get("seed_method") or None,
        widths={str(k): int(v) for k, v in widths.items()} if isinstance(widths, dict) else {},
        flops=_num(rec.get("flops")), params=_num(rec.get("params")),
        flops_ratio=_num(rec.get("flops_ratio")), val_acc=_num(rec.get("val_acc")),
        best_val_acc=_num(rec.get("best_val_acc")),
        val_curve=[float(x) for x in curve if _num(x) is not None] if isinstance(curve, list)
        else [],
        epochs=_num(rec.get("epochs")), wall_time=_num(rec.get("wall_time")),
        start=_when(rec.get("datetime_start")), complete=_when(rec.get("datetime_complete")),
        reason=str(rec.get("reason") or ""), backend=str(rec.get("backend") or ""))


def read_trials(run_dir: str | Path) -> tuple[list[Trial], list[str]]:
    """Trials from ``trials.jsonl`` (else ``trials.csv``), the last record per number wins.

    Returns the trials sorted by number and notes about what could not be read (a line cut off
    by an interrupted write is skipped, not fatal).
    """
    run_dir = Path(run_dir)
    notes: list[str] = []
    records: list[dict[str, Any]] = []
    jsonl, csv_path = run_dir / "trials.jsonl", run_dir / "trials.csv"
    if jsonl.is_file():
        for i, line in enumerate(jsonl.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                notes.append(f"trials.jsonl line {i}: not valid JSON (cut off?); skipped")
                continue
            if isinstance(rec, dict):
                records.append(rec)
    elif csv_path.is_file():
        with csv_path.open(newline="") as f:
            records = list(csv.DictReader(f))
    else:
        notes.append("no trials.jsonl or trials.csv: no trial has been recorded yet")
    by_number: dict[int, Trial] = {}
    for rec in records:
        t = _trial(rec)
        if t is None:
            notes.append("a trial record without a number was skipped")
            continue
        by_number[t.number] = t
    return [by_number[k] for k in sorted(by_number)], notes


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        notes.append(f"{path.name}: not valid JSON; ignored")
        return None
    if not isinstance(data, dict):
        notes.append(f"{path.name}: expected a JSON object; ignored")
        return None
    return data


def _read_spec(path: Path, name: str, notes: list[str]) -> ArchSpec | None:
    try:
        return ArchSpec.load(path)
    except UserError as exc:
        notes.append(f"{name}: unreadable ({exc}); ignored")
        return None


@dataclass
class RunRecords:
    """Everything the report reads, with notes on what was missing or unreadable."""

    run_dir: Path
    search: dict[str, Any] = field(default_factory=dict)
    config_text: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    proposals: dict[str, ArchSpec] = field(default_factory=dict)
    best: ArchSpec | None = None
    pareto: dict[str, ArchSpec] = field(default_factory=dict)
    trials: list[Trial] = field(default_factory=list)
    final: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecords:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise UserError(f"run directory {run_dir}: not found; give the folder a search wrote")
        rec = cls(run_dir=run_dir)
        notes = rec.notes
        rec.search = _read_json(run_dir / "search.json", notes) or {}
        if not rec.search:
            notes.append("search.json missing: command, hardware and versions are unknown")
        cfg_path = run_dir / "config.yaml"
        if cfg_path.is_file():
            rec.config_text = cfg_path.read_text()
            try:
                rec.config = read_yaml(cfg_path, what="config")
            except UserError as exc:
                notes.append(str(exc))
        for p in sorted((run_dir / "proposals").glob("*.yaml")):
            spec = _read_spec(p, f"proposals/{p.name}", notes)
            if spec is not None:
                rec.proposals[p.stem] = spec
        if (run_dir / "best.yaml").is_file():
            rec.best = _read_spec(run_dir / "best.yaml", "best.yaml", notes)
        for p in sorted((run_dir / "pareto").glob("*.yaml")):
            spec = _read_spec(p, f"pareto/{p.name}", notes)
            if spec is not None:
                rec.pareto[p.stem] = spec
        rec.trials, trial_notes = read_trials(run_dir)
        notes.extend(trial_notes)
        rec.final = _read_json(run_dir / "final.json", notes)
        found = [rec.search, rec.config_text, rec.proposals, rec.best, rec.trials, rec.final]
        if not any(found):
            raise UserError(f"run directory {run_dir}: no search records (search.json, "
                            f"trials.jsonl, proposals/, final.json); is this a run directory?")
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

    def winner_widths(self) -> tuple[dict[str, int] | None, str]:
        """The winner's widths and where they come from."""
        for row in (self.final or {}).get("rows", []) or []:
            if isinstance(row, dict) and row.get("name") == "best" and row.get("widths"):
                return {str(k): int(v) for k, v in row["widths"].items()}, "final.json"
        if self.best is not None:
            return dict(self.best.widths), "best.yaml"
        done = [t for t in self.trials if t.state == "COMPLETE" and t.acc is not None]
        if done:
            top = max(done, key=lambda t: (t.acc, -t.number))
            return dict(top.widths), f"best completed trial so far (#{top.number})"
        return None, "none"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (FLOPs, accuracy) points no other point beats on both: min FLOPs, max accuracy.

    Sorted by FLOPs; a point enters when it is more accurate than every cheaper (or equally
    expensive) point.
    """
    front: list[tuple[float, float]] = []
    best = -math.inf
    for f, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            front.append((f, a))
            best = a
    return front


# ---- figures --------------------------------------------------------------------------------
def save_figure(fig, path: Path) -> Path:
    """Save a matplotlib ``Figure`` as PNG (Agg, 120 dpi)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def _figure(width: float = 7.0, height: float = 4.5):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _plot_accuracy_vs_flops(rec: RunRecords, winner: dict[str, int] | None,
                            winner_from: str, path: Path) -> Path | None:
    done = [t for t in rec.trials if t.state == "COMPLETE" and t.acc is not None
            and t.flops is not None]
    if not done:
        return None
    div, unit = _axis_unit([t.flops for t in done])
    fig = _figure()
    ax = fig.add_subplot()
    search = [t for t in done if t.role not in ROLE_STYLE]
    if search:
        ax.scatter([t.flops / div for t in search], [100 * t.acc for t in search], s=22,
                   color="tab:blue", alpha=0.6, label=f"search trials ({len(search)})")
    for role, (marker, color) in ROLE_STYLE.items():
        for t in (t for t in done if t.role == role):
            label = f"seed: {t.seed_method}" if role == "seed" and t.seed_method else role
            ax.scatter([t.flops / div], [100 * t.acc], s=70, marker=marker, color=color,
                       edgecolor="black", zorder=4, label=label)
    front = pareto_front([(t.flops, t.acc) for t in done])
    ax.step([f / div for f, _ in front], [100 * a for _, a in front], where="post",
            color="tab:red", linewidth=1.2, alpha=0.8, label="Pareto front (trials)")
    if winner:
        hit = [t for t in done if t.widths == winner]
        if hit:
            t = max(hit, key=lambda t: t.acc)
            ax.scatter([t.flops / div], [100 * t.acc], s=320, marker="o", facecolors="none",
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
    done = [t for t in rec.trials if t.state == "COMPLETE" and t.acc is not None]
    if not done:
        return None
    from matplotlib.ticker import MaxNLocator

    fig = _figure(10.0, 4.0)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter([t.number for t in done], [100 * t.acc for t in done], s=14, alpha=0.5,
                color="tab:blue", label="completed trial")
    best, xs, ys = -math.inf, [], []
    for t in done:
        best = max(best, t.acc)
        xs.append(t.number)
        ys.append(100 * best)
    ax1.step(xs, ys, where="post", color="tab:red", label="best so far")
    ax1.set_xlabel("trial number")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_ylabel("validation accuracy (%)")
    ax1.set_title("Best validation accuracy vs trial")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    timed = _elapsed_minutes(rec.trials)
    if timed:
        best, xs, ys = -math.inf, [], []
        for minutes, t in timed:
            if t.state != "COMPLETE" or t.acc is None:
                continue
            best = max(best, t.acc)
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


def _elapsed_minutes(trials: list[Trial]) -> list[tuple[float, Trial]]:
    """(minutes from the first start to each trial's completion, trial), by completion time.

    From the recorded timestamps; without them, the cumulative sum of the trials' wall times in
    trial order (a sequential-worker estimate).
    """
    stamped = [t for t in trials if t.complete is not None]
    starts = [t.start for t in trials if t.start is not None]
    if stamped and starts:
        t0 = min(starts)
        try:
            out = [((t.complete - t0).total_seconds() / 60.0, t) for t in stamped]
        except TypeError:  # naive and aware timestamps mixed
            out = []
        if out:
            return sorted(out, key=lambda p: p[0])
    if any(t.wall_time is not None for t in trials):
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


def _header(rec: RunRecords, page: Page) -> None:
    s = rec.search
    finished = s.get("finished")
    status = ("finished " + str(finished)) if finished else \
        ("started " + str(s.get("started")) + "; not finished (interrupted or still running)"
         if s.get("started") else "unknown")
    hw = s.get("hardware") or {}
    versions = s.get("versions") or {}
    page.bullets([
        f"run directory: {rec.run_dir}",
        f"command: {s.get('command', 'unknown')}",
        f"status: {status}",
        f"backend: {s.get('backend', 'unknown')}; study: {s.get('study_name', '-')} "
        f"({s.get('storage', '-')})",
        f"space: {s.get('space', rec.config.get('space', 'unknown'))}; seed methods: "
        f"{', '.join(s.get('seed_methods') or []) or 'unknown'}",
        f"budget: {s.get('budget', '?')} of the base {s.get('metric', 'flops')}; base FLOPs "
        f"{fmt_count(s.get('base_flops'))}, base params {fmt_count(s.get('base_params'))}, target "
        f"{s.get('metric', 'flops')} {fmt_count(s.get('target_cost'))}",
        "hardware: " + (", ".join(f"{k} {v}" for k, v in hw.items() if v) or "unknown"),
        "versions: " + (", ".join(f"{k} {v}" for k, v in versions.items() if v) or "unknown"),
    ])
    page.p(FLOPS_NOTE)


def _final_section(rec: RunRecords, page: Page) -> None:
    page.h2("Final comparison (test split)")
    rows = (rec.final or {}).get("rows") if rec.final else None
    if not rows:
        page.p("final.json not found: the winner has not been retrained and tested yet "
               "(the study was interrupted or is still running).")
        return
    n = rec.final.get("n_seeds", "?")
    epochs = f" for {rec.final['base_epochs']} base epochs" if rec.final.get("base_epochs") \
        else ""
    rule = f" The winner: {rec.final['best_rule']}." if rec.final.get("best_rule") else ""
    page.p(f"Each architecture retrained from scratch over {n} seed(s){epochs} and scored on the "
           f"test split; accuracy in % as mean ± sample std (n).{rule}")
    table = []
    for r in rows:
        if not isinstance(r, dict):
            continue
        tests = r.get("test_acc") or []
        tests = tests if isinstance(tests, list) else [tests]
        table.append([r.get("name", "?"), fmt_count(r.get("flops")), fmt_count(r.get("params")),
                      "-" if _num(r.get("flops_ratio")) is None
                      else f"{_num(r['flops_ratio']):.3f}",
                      _pct(r.get("val_acc")), fmt_mean_std(tests)])
    page.table(["architecture", "FLOPs (MAC)", "params", "FLOPs ratio", "val acc (%)",
                "test acc (%)"], table)


def _trials_section(rec: RunRecords, page: Page) -> None:
    page.h2("Every trial")
    if not rec.trials:
        page.p("No trial recorded yet.")
        return
    counts = {s: sum(t.state == s for t in rec.trials) for s in STATES}
    other = len(rec.trials) - sum(counts.values())
    page.p(f"{len(rec.trials)} trials: " + ", ".join(f"{v} {k.lower()}" for k, v in
                                                    counts.items() if v)
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


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md``, ``report.html`` and the PNGs into ``run_dir``; return report.md.

    Works on whatever part of the contract exists; what is missing is said in the report.
    """
    rec = RunRecords.read(run_dir)
    out = rec.run_dir
    winner, winner_from = rec.winner_widths()
    page = Page(f"nas-prune report: {out.name}")
    _header(rec, page)

    page.h2("Accuracy vs FLOPs")
    acc_png = _plot_accuracy_vs_flops(rec, winner, winner_from, out / "accuracy_vs_flops.png")
    if acc_png is None:
        page.p("No completed trial with FLOPs and accuracy yet.")
    page.image(acc_png, "Validation accuracy vs FLOPs of every completed trial; seed proposals, "
                        "uniform and the winner marked; the Pareto front of the trials.")
    if rec.pareto:
        page.p("Exported Pareto architectures (pareto/): " + ", ".join(
            f"{name} ({fmt_count(s.flops)} FLOPs, val {_pct(s.metrics.get('val_acc'))}%)"
            for name, s in rec.pareto.items()))

    page.h2("Width profile")
    width_png = _plot_width_profile(rec, winner, winner_from, out / "width_profile.png")
    if width_png is None:
        page.p("No architecture YAML to read the family's width groups from.")
    page.image(width_png, "Channels per width group: base network, seed proposals, winner.")
    if winner:
        page.p(f"Winner ({winner_from}): " + ", ".join(f"{g}={w}" for g, w in winner.items()))

    page.h2("Search progress")
    prog_png = _plot_progress(rec, out / "search_progress.png")
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
        page.p("config.yaml not found.")

    md = out / "report.md"
    md.write_text(page.markdown())
    (out / "report.html").write_text(page.html())
    return md
