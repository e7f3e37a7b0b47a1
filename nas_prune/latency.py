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
(kind, input/output channels, input size, kernel, stride, padding); a unit is measured alone the
first time its key is needed and the table is kept per device signature (CPU model, backend and
versions, threads, batch) in ``latency.table_dir`` (default ``~/.cache/nas-prune/latency``). The
sum over units misses what lies between them (pooling, additions, the framework's per-call
overhead), so ``a x sum + b`` is fitted by least squares to whole networks measured at a few
uniform scalings of the base widths. Costs are integer nanoseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
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

__all__ = ["BACKENDS", "LatencyConfig", "LatencyPredictor", "Measurement", "device_info",
           "measure", "parse_budget"]

BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class LatencyConfig:
    """Where and how latency is measured (the ``latency:`` section of a config)."""

    backend: str = "torch"
    batch_size: int = 1
    threads: int | None = None  # null: every core this process may run on
    warmup: int = 10
    repeats: int = 30
    table_dir: str | None = None  # null: ~/.cache/nas-prune/latency


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

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": round(self.median_ns / 1e6, 5),
                "iqr_ms": round((self.q75_ns - self.q25_ns) / 1e6, 5),
                "q25_ms": round(self.q25_ns / 1e6, 5), "q75_ms": round(self.q75_ns / 1e6, 5),
                "repeats": self.repeats}


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


def _time(fn, warmup: int, repeats: int) -> Measurement:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Measurement(int(statistics.median(times)), int(q[0]), int(q[2]), len(times))


def measure(model: nn.Module, shape: InputShape | tuple[int, ...], cfg: LatencyConfig, *,
            warmup: int | None = None, repeats: int | None = None) -> Measurement:
    """The latency of one forward pass of ``model`` on ``cfg.backend`` (CPU).

    ``shape`` is the input shape of one image (an :class:`InputShape`) or of one sample (a
    tuple, for a linear unit).
    """
    check(cfg)
    dims = (shape.channels, shape.size, shape.size) if isinstance(shape, InputShape) \
        else tuple(shape)
    x = torch.randn(cfg.batch_size, *dims, generator=torch.Generator().manual_seed(0))
    model = model.cpu().eval()
    threads = threads_of(cfg)
    warmup = cfg.warmup if warmup is None else warmup
    repeats = cfg.repeats if repeats is None else repeats
    with pinned(threads), torch.no_grad():
        if cfg.backend == "torch":
            return _time(lambda: model(x), warmup, repeats)
        session = _ort_session(model, x, threads)
        feed = {"images": x.numpy()}
        return _time(lambda: session.run(None, feed), warmup, repeats)


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
        self.table: dict[str, int] = self._load()
        self._fit: tuple[float, float] | None = None
        self.calibration_points: list[dict[str, float]] = []
        self._dirty = False

    # ---- the table on disk ------------------------------------------------------------------
    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
            if data.get("device") == self.info:
                return {k: int(v) for k, v in data["entries"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # missing or damaged: measured again
        return {}

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps({"device": self.info, "entries": self.table},
                                           indent=0, sort_keys=True))
        self._dirty = False

    # ---- prediction -------------------------------------------------------------------------
    def unit_ns(self, key: str) -> int:
        if key not in self.table:
            module, shape = _unit_module(key)
            m = measure(module, shape, self.cfg, warmup=3, repeats=max(5, self.cfg.repeats // 3))
            self.table[key] = m.median_ns
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
        """``(a, b)`` of ``latency = a x table sum + b``, fitted once on whole networks."""
        if self._fit is None:
            xs, ys = [], []
            for keep in self.CALIBRATION:
                w = self._scaled(keep)
                xs.append(self.table_sum(w))
                ys.append(self.measure(w).median_ns)
            n = len(xs)
            mx, my = sum(xs) / n, sum(ys) / n
            sxx = sum((x - mx) ** 2 for x in xs)
            a = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 1
            if not 0.25 <= a <= 4:  # noise swamped the slope (a loaded machine, a tiny model):
                a = 1.0  # keep the table's scale and fit the offset alone
            self._fit = (a, my - a * mx)
            self.calibration_points = [{"keep": k, "table_ms": x / 1e6, "measured_ms": y / 1e6}
                                       for k, x, y in zip(self.CALIBRATION, xs, ys, strict=True)]
        return self._fit

    def predict(self, widths: Mapping[str, int]) -> int:
        """Predicted latency of the network at ``widths``, integer nanoseconds (>= 1)."""
        a, b = self.calibration()
        return max(1, int(round(a * self.table_sum(widths) + b)))

    def measure(self, widths: Mapping[str, int]) -> Measurement:
        """The network at ``widths`` measured directly (randomly initialised weights)."""
        torch.manual_seed(0)
        return measure(self.family.build(dict(widths)), self.family.input_shape, self.cfg)

    def describe(self) -> dict[str, Any]:
        a, b = self.calibration()
        return {"config": asdict(self.cfg), "device": self.info, "table": str(self.path),
                "entries": len(self.table), "fit": {"a": a, "b_ms": b / 1e6},
                "calibration": self.calibration_points}


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
