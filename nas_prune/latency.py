"""Latency as a budget: measured on the target device, predicted from a per-layer lookup table.

**Measuring** (:func:`measure`): the model in eval mode on a fixed random input of
``latency.batch_size`` images, on ``latency.backend`` = ``torch`` (eager PyTorch on the CPU) or
``onnxruntime`` (the exported ONNX graph on ONNX Runtime's CPU provider, all graph optimisations
on). The measuring process pins itself to ``latency.threads`` cores (``sched_setaffinity``) and
sets the backend's intra-op threads to the same count; ``latency.warmup`` untimed runs, then
``latency.repeats`` timed ones; the median and the interquartile range are reported, with what
was measured on (:func:`device_info`).

**Predicting** (:class:`LatencyPredictor`): a budget bisection evaluates dozens of width vectors,
so a candidate's latency is predicted from a lookup table of its layers. Every conv layer of the
family (with its BatchNorm and ReLU) and the classifier are units keyed by their configuration
(kind, input/output channels, input size, kernel, stride, padding); a unit is measured the first
time its key is needed, interleaved with a fixed reference unit (:data:`REFERENCE_UNIT`), and
entered as its ratio to the reference times the reference's latency when the table was started,
so that entries measured at different moments share one scale. The table is kept per device
signature (CPU model, backend and versions, threads, batch) in ``latency.table_dir`` (default
``~/.cache/nas-prune/latency``). The sum over units misses what lies between them (pooling,
additions, the framework's per-call overhead), so ``a x sum + b`` is fitted by least squares to
whole networks at a few uniform scalings of the base widths. Costs are integer nanoseconds.

**Ratios** (:func:`measure_ratio`): a budget given as a ratio of the base network's latency is
measured as one. The candidate and the reference run interleaved in one process (A B B A ...,
the order alternating every round), and the ratio of each round's two times is taken, so that
what the machine does meanwhile falls on both alike; the median ratio is reported with its
quartiles. The calibration networks are measured the same way, interleaved with the base
network, and the fit is kept in the table file with its spreads, as are the ratios measured for
proposals, so later processes on the same machine predict (and propose) exactly the same.

**A busy machine**: when the base network's own times spread (interquartile range over median)
more than ``latency.busy_spread`` (:data:`BUSY_SPREAD` by default) while calibrating, the
predictor says so (``busy``, ``spread``, a warning in the log) and writes nothing it measured to
the table, so a quiet run later starts clean. Budgets land within half the spread of the
measured ratios, or 1% if that is wider (:meth:`LatencyPredictor.band`): a measurement cannot
place a network more finely than its own spread.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import statistics
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import write_atomic
from .errors import UserError
from .families import Family, InputShape

__all__ = ["BACKENDS", "BUSY_SPREAD", "LatencyConfig", "LatencyPredictor", "Measurement",
           "Ratio", "device_info", "format_ns", "measure", "measure_ratio", "parse_budget"]

BACKENDS = ("torch", "onnxruntime")
Shape = InputShape | tuple[int, ...]
#: a measurement whose interquartile range is above this share of its median was taken on a busy
#: machine (vgg_small_fmnist, one thread, nothing else running on this project's 2-core VM: 2-4%
#: in most measurements on torch, 4-12% on onnxruntime, but 14% and 35% once each on torch, so
#: the flag is conservative)
BUSY_SPREAD = 0.15

log = logging.getLogger(__name__)


def timer_floor_ns() -> int:
    """The shortest base-network latency a budget can rest on: 100 ticks of the timer the
    measurements use, and at least one microsecond."""
    return max(1000, int(100 * time.get_clock_info("perf_counter").resolution * 1e9))


def format_ns(ns: float) -> str:
    """A latency for a message: milliseconds, or microseconds below one millisecond."""
    return f"{ns / 1e6:.3f} ms" if ns >= 1e6 else f"{ns / 1e3:.1f} µs"


@dataclass(frozen=True)
class LatencyConfig:
    """Where and how latency is measured (the ``latency:`` section of a config)."""

    backend: str = "torch"
    batch_size: int = 1
    # one thread by default: vgg_small_fmnist measured three times with measure() on a 2-core
    # machine, quiet and with a two-thread training job beside it: one pinned thread 3.0 ms
    # quiet, 3.0-3.2 ms loaded; two threads 1.8 ms quiet, 6-212 ms loaded
    threads: int | None = 1  # null: every core this process may run on
    warmup: int = 10
    repeats: int = 30
    table_dir: str | None = None  # null: ~/.cache/nas-prune/latency
    # a base network whose interquartile range exceeds this share of its median was measured on
    # a busy machine: budgets land within half of it and nothing measured is kept in the table
    busy_spread: float = BUSY_SPREAD


@dataclass(frozen=True)
class Measurement:
    """Median and quartiles of ``repeats`` timed runs, in nanoseconds."""

    median_ns: int
    q25_ns: int
    q75_ns: int
    repeats: int

    @property
    def median_ms(self) -> float:
        return self.median_ns / 1e6

    @property
    def spread(self) -> float:
        """The interquartile range as a share of the median."""
        return (self.q75_ns - self.q25_ns) / max(1, self.median_ns)

    @classmethod
    def of(cls, times: list[int]) -> Measurement:
        q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        return cls(int(statistics.median(times)), int(q[0]), int(q[2]), len(times))

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": round(self.median_ns / 1e6, 5),
                "iqr_ms": round((self.q75_ns - self.q25_ns) / 1e6, 5),
                "q25_ms": round(self.q25_ns / 1e6, 5), "q75_ms": round(self.q75_ns / 1e6, 5),
                "repeats": self.repeats}


@dataclass(frozen=True)
class Ratio:
    """A candidate's latency over a reference's, measured interleaved (:func:`ratio_of`): the
    ratio of their fastest runs, the same from each half of the rounds (``low``, ``high``), and
    both networks' own measurements."""

    value: float
    low: float
    high: float
    candidate: Measurement
    reference: Measurement
    busy_spread: float = BUSY_SPREAD  # the reference's spread above which the machine was busy

    @property
    def spread(self) -> float:
        """How far the two halves of the rounds disagree, as a share of the ratio."""
        return (self.high - self.low) / self.value if self.value else 0.0

    @property
    def busy(self) -> bool:
        """The reference's own times spread more than ``busy_spread`` of their median."""
        return self.reference.spread > self.busy_spread

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": round(self.value, 5), "low": round(self.low, 5),
                "high": round(self.high, 5), "spread": round(self.spread, 5),
                "rounds": self.candidate.repeats, "busy": self.busy,
                "candidate": self.candidate.to_dict(), "reference": self.reference.to_dict()}


def threads_of(cfg: LatencyConfig) -> int:
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    return min(cfg.threads or allowed, allowed)


def check(cfg: LatencyConfig) -> None:
    """A one-line error for a backend that is unknown or not installed."""
    if cfg.backend not in BACKENDS:
        raise UserError(f"latency.backend: {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")
    if cfg.backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError("latency.backend: onnxruntime is not installed; pip install "
                            "'nas-prune[onnx]' or use latency.backend=torch") from None


def device_info(cfg: LatencyConfig) -> dict[str, Any]:
    """What a latency was measured on: CPU, threads, batch, backend and its version."""
    from ._meta import cpu_name

    info: dict[str, Any] = {"cpu": cpu_name(), "threads": threads_of(cfg),
                            "batch_size": cfg.batch_size, "backend": cfg.backend,
                            "torch": torch.__version__}
    if cfg.backend == "onnxruntime":
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    return info


@contextlib.contextmanager
def pinned(threads: int) -> Iterator[None]:
    """This process on ``threads`` cores with as many torch threads, restored afterwards."""
    old_threads = torch.get_num_threads()
    old_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        if old_affinity is not None:
            os.sched_setaffinity(0, sorted(old_affinity)[:threads])
        torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(old_threads)
        if old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)


def _ort_session(model: nn.Module, x: torch.Tensor, threads: int):
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings_quiet():
        torch.onnx.export(model, (x,), buf, input_names=["images"], output_names=["out"],
                          dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _rounds(fns: list, warmup: int, repeats: int) -> list[list[int]]:
    """Each callable's times over ``repeats`` rounds; every round runs each callable once, in an
    order that reverses every round (A B, B A, ...) so that neither always runs first."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[int]] = [[] for _ in fns]
    order = list(range(len(fns)))
    for _ in range(repeats):
        for i in order:
            t0 = time.perf_counter_ns()
            fns[i]()
            times[i].append(time.perf_counter_ns() - t0)
        order.reverse()
    return times


def _runner(model: nn.Module, x: torch.Tensor, backend: str, threads: int):
    """A callable that runs one forward pass of ``model`` on ``x`` on the backend."""
    model = model.cpu().eval()
    if backend == "torch":
        return lambda: model(x)
    session = _ort_session(model, x, threads)
    feed = {"images": x.numpy()}
    return lambda: session.run(None, feed)


def measure_many(models: list[nn.Module], shape: Shape | list[Shape], cfg: LatencyConfig, *,
                 warmup: int | None = None, repeats: int | None = None) -> list[list[int]]:
    """The forward-pass times (nanoseconds) of each model, measured interleaved round by round.

    ``shape`` is the input shape of one image (an :class:`InputShape`) or of one sample (a
    tuple, for a linear unit); one for every model, or a list with one per model.
    """
    check(cfg)
    shapes = shape if isinstance(shape, list) else [shape] * len(models)
    threads = threads_of(cfg)
    warmup = cfg.warmup if warmup is None else warmup
    repeats = cfg.repeats if repeats is None else repeats
    with pinned(threads), torch.no_grad():
        fns = [_runner(m, _input(s, cfg.batch_size), cfg.backend, threads)
               for m, s in zip(models, shapes, strict=True)]
        return _rounds(fns, warmup, repeats)


def _input(shape: Shape, batch_size: int) -> torch.Tensor:
    dims = (shape.channels, shape.size, shape.size) if isinstance(shape, InputShape) \
        else tuple(shape)
    return torch.randn(batch_size, *dims, generator=torch.Generator().manual_seed(0))


def measure(model: nn.Module, shape: Shape, cfg: LatencyConfig, *,
            warmup: int | None = None, repeats: int | None = None) -> Measurement:
    """The latency of one forward pass of ``model`` on ``cfg.backend`` (CPU)."""
    return Measurement.of(measure_many([model], shape, cfg, warmup=warmup, repeats=repeats)[0])


def ratio_of(times: list[int], reference: list[int], busy_spread: float = BUSY_SPREAD) -> Ratio:
    """The :class:`Ratio` of two series of times measured interleaved (round by round): the
    ratio of their minima, and of the minima of the even and of the odd rounds (each half once
    first in every pair of rounds) for its spread.

    The minimum, not the median: on a 2-core machine with a two-thread training job beside it,
    vgg_small_fmnist at half its widths over the base network (torch, one thread; 0.39 quiet by
    every estimator) measured 0.22-0.39 as a ratio of minima in four runs, 0.13-0.48 as the
    median of per-round ratios and 0.13-0.59 as a ratio of medians: a forward pass preempted by
    the other job is slower by whatever the scheduler took, never faster, so the fastest run
    is the one the other job left alone. Quiet, the estimators agree within 1-2%.
    """
    def of(a: list[int], b: list[int]) -> float:
        return min(a) / max(1, min(b))

    halves = [of(times[i::2], reference[i::2]) for i in (0, 1)] if len(times) > 1 else \
        [of(times, reference)] * 2
    return Ratio(of(times, reference), min(halves), max(halves), Measurement.of(times),
                 Measurement.of(reference), busy_spread)


def measure_ratio(model: nn.Module, reference: nn.Module, shape: Shape, cfg: LatencyConfig, *,
                  repeats: int | None = None) -> Ratio:
    """``model``'s latency over ``reference``'s, measured interleaved (see the module text)."""
    a, b = measure_many([model, reference], shape, cfg, repeats=repeats)
    return ratio_of(a, b, cfg.busy_spread)


# ---- the lookup-table predictor ------------------------------------------------------------
@dataclass(frozen=True)
class _Unit:
    """One layer of the family: its channels come from width groups or are fixed."""

    kind: str  # conv | linear
    in_group: str | None
    in_fixed: int
    out_group: str | None
    out_fixed: int
    size: int = 1  # input resolution (conv)
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    bn: bool = False
    groups: int = 1  # 0: depthwise (groups = its channels, which its width group sets)

    def key(self, widths: Mapping[str, int]) -> str:
        cin = widths[self.in_group] if self.in_group else self.in_fixed
        cout = widths[self.out_group] if self.out_group else self.out_fixed
        if self.kind == "linear":
            return f"linear:{cin}:{cout}"
        groups = cin if self.groups == 0 else self.groups
        return (f"conv:{cin}:{cout}:{self.size}:{self.kernel}:{self.stride}:{self.padding}:"
                f"{int(self.bn)}" + (f":g{groups}" if groups != 1 else ""))


def _units(family: Family) -> list[_Unit]:
    """Every conv (with its BatchNorm) and linear layer, traced once on the meta device."""
    out_of, in_of, bn_after = {}, {}, set()
    for g in family.groups():
        out_of.update({c: g.name for c in g.convs})
        in_of.update({c: g.name for c in g.consumers})
        bn_after.update(g.convs[i] for i in range(min(len(g.convs), len(g.bns))))
    with torch.device("meta"):
        model = family.build(family.base_widths())
    sizes: dict[str, int] = {}

    def hook(name):
        def fn(m, inp, out):
            sizes[name] = int(inp[0].shape[-1])
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    s = family.input_shape
    with torch.no_grad():
        model.eval()(torch.zeros(1, s.channels, s.size, s.size, device="meta"))
    for h in handles:
        h.remove()
    units = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            gin, gout, groups = in_of.get(name), out_of.get(name), m.groups
            if groups > 1 and gout is not None and groups == m.in_channels == m.out_channels:
                gin, groups = gout, 0  # depthwise: input, output and groups follow its group
            elif groups != 1 and (gin or gout):
                raise UserError(f"latency: layer {name} is a grouped convolution whose width "
                                f"changes, which the latency table does not model; use "
                                f"--metric flops")
            units.append(_Unit("conv", gin, m.in_channels, gout, m.out_channels, sizes[name],
                               m.kernel_size[0], m.stride[0], _padding(m), name in bn_after,
                               groups))
        elif isinstance(m, nn.Linear):
            units.append(_Unit("linear", in_of.get(name), m.in_features, None, m.out_features))
    return units


def _padding(m: nn.Conv2d) -> int:
    if isinstance(m.padding, str):  # "same" keeps the size (odd kernels), "valid" pads nothing
        return m.kernel_size[0] // 2 if m.padding == "same" else 0
    return int(m.padding[0])


def _unit_module(key: str) -> tuple[nn.Module, tuple[int, ...]]:
    parts = key.split(":")
    if parts[0] == "linear":
        cin, cout = int(parts[1]), int(parts[2])
        return nn.Linear(cin, cout), (cin,)
    groups = int(parts.pop()[1:]) if parts[-1].startswith("g") else 1
    cin, cout, size, k, stride, pad, bn = (int(p) for p in parts[1:])
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, pad, groups=groups,
                                         bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers), (cin, size, size)


#: the unit every table entry is measured against, interleaved: an entry is its ratio to this
#: unit times the unit's latency when the table was started, so entries measured at different
#: moments (a quiet machine, a busy one) stay on one scale
REFERENCE_UNIT = "conv:32:32:16:3:1:1:1"
TABLE_FORMAT = 2  # 1: entries measured alone, in nanoseconds (read as empty)


def _table_root(cfg: LatencyConfig) -> Path:
    if cfg.table_dir:
        return Path(cfg.table_dir).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "nas-prune" / "latency"


class LatencyPredictor:
    """A family's latency in nanoseconds from a per-layer table (see the module docstring)."""

    #: uniform keep ratios of the base widths whose whole networks calibrate ``a x sum + b``
    CALIBRATION = (1.0, 0.75, 0.5, 0.3)

    def __init__(self, family: Family, cfg: LatencyConfig, *, divisor: int = 1) -> None:
        check(cfg)
        if cfg.batch_size < 1:
            raise UserError(f"latency.batch_size: {cfg.batch_size} must be >= 1")
        self.family = family
        self.cfg = cfg
        self.divisor = divisor
        self.units = _units(family)
        self.info = device_info(cfg)
        sig = json.dumps(self.info, sort_keys=True)
        self.path = _table_root(cfg) / f"{hashlib.sha256(sig.encode()).hexdigest()[:16]}.json"
        # the calibration belongs to this family's layers and grid, at this measuring setting
        layout = json.dumps([[asdict(u) for u in self.units], family.base_widths(), divisor,
                             self.CALIBRATION, cfg.warmup, cfg.repeats], sort_keys=True)
        self.fingerprint = hashlib.sha256(layout.encode()).hexdigest()[:16]
        self.table, self.calibrations, self.reference_ns = self._load()
        self._fit: tuple[float, float] | None = None
        self.calibration_points: list[dict[str, float]] = []
        self.calibration_source = "none"  # measured | table
        # calibrating: the base network's interquartile range / median (busy: above
        # latency.busy_spread, then nothing measured is kept in the table), and the median
        # interquartile range / median of the calibration networks' ratios to it (the band)
        self.spread = 0.0
        self.ratio_spread = 0.0
        self.busy = False
        self._dirty = False

    # ---- the table on disk ------------------------------------------------------------------
    def _load(self) -> tuple[dict[str, int], dict[str, Any], int | None]:
        try:
            data = json.loads(self.path.read_text())
            if data.get("device") == self.info and data.get("format") == TABLE_FORMAT:
                return ({k: int(v) for k, v in data["entries"].items()},
                        dict(data.get("calibrations") or {}), int(data["reference_ns"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # missing, damaged or of another format: measured again
        return {}, {}, None

    def save(self) -> None:
        if not self._dirty or self.busy:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(
            {"format": TABLE_FORMAT, "device": self.info, "reference": REFERENCE_UNIT,
             "reference_ns": self.reference_ns, "entries": self.table,
             "calibrations": self.calibrations}, indent=0, sort_keys=True))
        self._dirty = False

    # ---- prediction -------------------------------------------------------------------------
    def unit_ns(self, key: str) -> int:
        """A unit's latency: its ratio to :data:`REFERENCE_UNIT` (measured interleaved) times
        the reference's latency when the table was started."""
        if key not in self.table:
            module, shape = _unit_module(key)
            ref, ref_shape = _unit_module(REFERENCE_UNIT)
            times = measure_many([module, ref], [shape, ref_shape], self.cfg, warmup=3,
                                 repeats=max(5, self.cfg.repeats // 3))
            if self.reference_ns is None:
                self.reference_ns = Measurement.of(times[1]).median_ns
            self.table[key] = max(1, round(ratio_of(*times).value * self.reference_ns))
            self._dirty = True
        return self.table[key]

    def table_sum(self, widths: Mapping[str, int]) -> int:
        total = sum(self.unit_ns(u.key(widths)) for u in self.units)
        self.save()
        return total

    def _scaled(self, keep: float) -> dict[str, int]:
        d = self.divisor
        return {g.name: max(d, int(round(g.base * keep / d)) * d) for g in self.family.groups()}

    def calibration(self) -> tuple[float, float]:
        """``(a, b)`` of ``latency = a x table sum + b``: read from the table file, else fitted
        on whole networks at :attr:`CALIBRATION` keep ratios measured interleaved (their spread
        decides :attr:`busy`) and kept in the table file when the machine was quiet."""
        if self._fit is not None:
            return self._fit
        stored = self.calibrations.get(self.fingerprint)
        if stored is not None:
            self._fit = (float(stored["a"]), float(stored["b_ns"]))
            self.calibration_points = list(stored["points"])
            self.spread = float(stored["spread"])
            self.ratio_spread = float(stored["ratio_spread"])
            self.calibration_source = "table"
            return self._fit
        torch.manual_seed(0)
        nets = [self.family.build(self._scaled(k)) for k in self.CALIBRATION]
        times = measure_many(nets, self.family.input_shape, self.cfg)
        base = Measurement.of(times[0])
        floor = timer_floor_ns()
        if base.median_ns < floor:
            raise UserError(f"latency budget: the base network measured {format_ns(base.median_ns)}"
                            f" per call on {self.cfg.backend}, below what this machine's timer "
                            f"can resolve ({format_ns(floor)}); its networks cannot be told "
                            f"apart by latency: use a flops or params budget")
        # each network as its ratio to the base network (measured interleaved: what the machine
        # did meanwhile falls on both alike) times the base network's median
        ratios = [ratio_of(t, times[0], self.cfg.busy_spread) for t in times]
        ys = [r.value * base.median_ns for r in ratios]
        self.spread = base.spread
        self.ratio_spread = statistics.median(r.spread for r in ratios[1:])
        self.busy = base.spread > self.cfg.busy_spread
        xs = [self.table_sum(self._scaled(k)) for k in self.CALIBRATION]
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        a = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 1
        if not 0.25 <= a <= 4:  # noise swamped the slope (a loaded machine, a tiny model):
            a = 1.0  # keep the table's scale and fit the offset alone
        self._fit = (a, my - a * mx)
        self.calibration_source = "measured"
        if self.busy:
            log.warning("latency: the base network's latency varied by %.0f%% (interquartile "
                        "range / median) while measuring: the machine is busy; budgets land "
                        "within %.1f%% and nothing measured is kept in %s",
                        100 * self.spread, 100 * self.band(), self.path)
        self.calibration_points = [{"keep": k, "table_ms": x / 1e6, "measured_ms": y / 1e6,
                                    "ratio": round(r.value, 5), "ratio_spread": round(r.spread, 5)}
                                   for k, x, y, r in zip(self.CALIBRATION, xs, ys, ratios,
                                                         strict=True)]
        self.calibrations[self.fingerprint] = {
            "a": a, "b_ns": self._fit[1], "points": self.calibration_points,
            "spread": round(self.spread, 5), "ratio_spread": round(self.ratio_spread, 5),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._dirty = True
        self.save()
        return self._fit

    def band(self, floor: float = 0.01) -> float:
        """The relative band a latency budget is met within: ``floor`` (the budget tolerance)
        or the calibration's :attr:`ratio_spread` (how far the halves of its rounds disagreed),
        whichever is wider, since a measured ratio cannot place a network more finely than its
        own spread; never wider than half ``latency.busy_spread``, which is the band on a busy
        machine (there the spreads say little: the ratio of minima held in three runs of four,
        not all; see :func:`ratio_of`). A budget the fit cannot place within it fails with the
        busy machine named (:func:`nas_prune.budget.refine_to_budget`)."""
        self.calibration()
        cap = max(floor, self.cfg.busy_spread / 2)
        return cap if self.busy else min(cap, max(floor, self.ratio_spread))

    def predict(self, widths: Mapping[str, int]) -> int:
        """Predicted latency of the network at ``widths``, integer nanoseconds (>= 1)."""
        a, b = self.calibration()
        return max(1, int(round(a * self.table_sum(widths) + b)))

    def measure(self, widths: Mapping[str, int]) -> Measurement:
        """The network at ``widths`` measured directly (randomly initialised weights)."""
        torch.manual_seed(0)
        return measure(self.family.build(dict(widths)), self.family.input_shape, self.cfg)

    def measure_ratio(self, widths: Mapping[str, int], *, fresh: bool = False
                      ) -> tuple[Ratio, str]:
        """The network at ``widths`` over the base network, measured interleaved; and where the
        number came from: ``table`` (measured by an earlier process on this machine, kept with
        the calibration so that a fit corrected by it repeats) or ``measured``. Measurements on
        a busy machine are not kept; ``fresh`` measures again whatever the table holds."""
        self.calibration()
        key = json.dumps(dict(sorted(widths.items())))
        kept = self.calibrations.get(self.fingerprint, {}).get("ratios", {})
        if key in kept and not fresh:
            d = kept[key]
            return Ratio(d["value"], d["low"], d["high"], Measurement(**d["candidate"]),
                         Measurement(**d["reference"]), self.cfg.busy_spread), "table"
        torch.manual_seed(0)
        cand, base = (self.family.build(dict(w)) for w in (widths, self.family.base_widths()))
        r = measure_ratio(cand, base, self.family.input_shape, self.cfg)
        if not r.busy and self.fingerprint in self.calibrations:
            self.calibrations[self.fingerprint].setdefault("ratios", {})[key] = asdict(r)
            self._dirty = True
            self.save()
        return r, "measured"

    def describe(self) -> dict[str, Any]:
        a, b = self.calibration()
        return {"config": asdict(self.cfg), "device": self.info, "table": str(self.path),
                "entries": len(self.table), "fit": {"a": a, "b_ms": b / 1e6},
                "calibration": self.calibration_points,
                "calibration_source": self.calibration_source,
                "spread": round(self.spread, 5), "ratio_spread": round(self.ratio_spread, 5),
                "busy": self.busy}


def parse_budget(value: str | float, metric: str) -> tuple[float | None, int | None]:
    """A budget as ``(ratio, None)`` or, for latency only, ``(None, nanoseconds)`` from
    ``3.5ms`` / ``800us``; anything else is a one-line error."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), None
    text = str(value).strip().lower()
    for unit, scale in (("ms", 1e6), ("us", 1e3), ("µs", 1e3), ("s", 1e9)):
        if text.endswith(unit):
            number = text[: -len(unit)].strip()
            try:
                amount = float(number)
            except ValueError:
                break
            if metric != "latency":
                raise UserError(f"--budget: {value!r} is a time; a {metric} budget is a ratio "
                                f"in (0, 1] (use --metric latency for a time budget)")
            if not amount > 0 or amount != amount or amount == float("inf"):
                raise UserError(f"--budget: {value!r} must be a positive time")
            return None, int(round(amount * scale))
    try:
        return float(text), None
    except ValueError:
        raise UserError(f"--budget: {value!r} is neither a ratio in (0, 1] nor a time with a "
                        f"unit (ms, us, s), e.g. 0.5 or 3.5ms") from None
