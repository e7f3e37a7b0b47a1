"""Your own training loop in place of nas-prune's trainer (``train.function: mypkg.train:fit``).

The protocol, one callable::

    def fit(model, *, epochs, seed, device, report) -> Mapping:
        ...                       # train ``model`` in place for ``epochs`` epochs
        return {"val_acc": 0.87}  # a fraction in [0, 1]; "test_acc" too when test=True

* ``model``: a freshly initialised ``nn.Module`` of the candidate's widths, on ``device``
  (built under ``torch.manual_seed(seed)``);
* ``epochs``: the epochs the budget rule gives this candidate (Scratch-B by default: the base
  epochs scaled by base / candidate FLOPs, see :func:`nas_prune.train.budget_epochs`);
* ``seed``: the training seed (search, selection or evaluation seed; :mod:`nas_prune.seeding`):
  seed your data order and augmentation with it, so rows are paired;
* ``device``: a ``torch.device``;
* ``report(epoch, val_acc) -> bool``: call it after each epoch (``epoch`` from 0, as
  ``range(epochs)`` gives) with the validation accuracy; True means stop now (early stopping
  has judged the run weak). Not calling it is allowed: then nothing stops early and the curve
  holds only the returned value;
* optional keyword ``test``: when the function takes it (or ``**kwargs``), it is True for the
  final table's runs, which also need ``test_acc`` (the accuracy on a test split that nothing
  else looks at) in the returned mapping, and False otherwise.

The returned mapping needs ``val_acc``, a finite number in [0, 1]; it may hold ``test_acc``
(same rule) and ``epochs`` (epochs run). Anything else (not a mapping, no or a bad accuracy,
an exception raised inside) fails that one training with the reason
(:class:`TrainFunctionError`): the trial is FAIL, the search goes on. An import path that does
not import, a name that is not callable or a signature that cannot take those arguments is a
one-line :class:`~nas_prune.errors.UserError` before anything trains (:func:`check_function`).

Before anything trains, a search also runs the function once for one epoch on the space's
narrowest network (:func:`check_on_narrowest`; ``train.function_check: false`` skips it): a
function that fails there stops the search with a one-line UserError instead of failing every
trial. It trains the base networks of the seed methods that need only trained weights (l1norm,
thinet, regression, autopruner; :mod:`nas_prune.seeds._basenet`); slimming's base needs its
sparsity regulariser during training and stays with nas-prune's trainer.

A function given in Python (``nas_prune.search(..., train_fn=fit)``) is registered in this
process under its ``module:qualname`` (:func:`register`) and the config records that path:
another process (Ray workers, ``nas-prune worker``) imports it by the path, so it must then be a
module-level function of an importable module.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import _callables
from .errors import UserError
from .train import TrainResult
from .widths import SearchSpace

__all__ = ["PROTOCOL", "TrainFunctionError", "check_function", "check_on_narrowest", "check_path",
           "importable", "register", "resolve", "run_function"]

PROTOCOL = "fn(model, *, epochs, seed, device, report) -> {'val_acc': float in [0, 1]}"
KEY = "train.function"

class TrainFunctionError(Exception):
    """A training by the user's function failed: a failed trial (or final run), with this
    reason (``reason``: what went wrong, without the function's path)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{KEY} {path} {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):  # picklable across processes (Ray) with its two arguments
        return type(self), (self.path, self.reason)


def check_path(value: Any, key: str = KEY) -> None:
    """``None`` or ``package.module:name`` (one-line error otherwise; nothing is imported)."""
    if value is not None:
        _callables.check_path(value, key, "mypkg.train:fit")


def register(fn: Callable[..., Any]) -> str:
    """Register a function given in Python; returns the path the config records."""
    return _callables.register(fn, "train_fn", PROTOCOL)


def importable(path: str) -> bool:
    """Whether another process could import ``path`` (a Python-given function may not be)."""
    return _callables.importable(path)


def resolve(path: str) -> Callable[..., Any]:
    """The function of a path: one registered in this process, else imported."""
    check_path(path)
    fn = _callables.resolve(path, f"{KEY}: {path!r}", "a training function")
    if not callable(fn):
        raise UserError(f"{KEY}: {path!r} is a {type(fn).__name__}, not callable; name a "
                        f"function {PROTOCOL}")
    return fn


def _takes_test(fn: Callable[..., Any]) -> bool:
    params = inspect.signature(fn).parameters.values()
    return any(p.name == "test" or p.kind is p.VAR_KEYWORD for p in params)


def check_function(path: str) -> Callable[..., Any]:
    """Before anything trains: the function imports, is callable and its signature takes
    ``(model, *, epochs, seed, device, report)``; else a one-line UserError."""
    fn = resolve(path)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn  # a builtin or C function without a signature: the trial will tell
    try:
        sig.bind(torch.nn.Identity(), epochs=1, seed=0, device=torch.device("cpu"),
                 report=lambda epoch, acc: False)
    except TypeError as exc:
        raise UserError(f"{KEY}: {path} has signature {sig} ({exc}); nas-prune calls "
                        f"{PROTOCOL}") from None
    return fn


def _accuracy(out: Mapping[str, Any], key: str, path: str) -> float:
    if key not in out:
        raise TrainFunctionError(path, f"returned no {key!r} (keys: "
                                       f"{', '.join(map(str, out)) or 'none'})")
    v = out[key]
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TrainFunctionError(path, f"returned {key} {v!r}, not a number")
    v = float(v)
    if not math.isfinite(v):
        raise TrainFunctionError(path, f"returned {key} {v}")
    if not 0.0 <= v <= 1.0:
        raise TrainFunctionError(path, f"returned {key} {v:g}, not in [0, 1] (a "
                                       f"fraction, not percent)")
    return v


def run_function(path: str, model: torch.nn.Module, *, epochs: int, seed: int,
                 device: torch.device,
                 on_epoch: Callable[[int, float, float], bool] | None = None,
                 evaluate_test: bool = False) -> TrainResult:
    """Train ``model`` with the function of ``path``; a :class:`~nas_prune.train.TrainResult`
    as the built-in trainer gives (status ``stopped`` when ``report`` asked it to stop).
    ``on_epoch(epoch, val_acc, train_loss)`` sees every report (the loss is NaN: unknown)."""
    import time

    fn = resolve(path)
    curve: list[float] = []
    state = {"stopped": False, "bad": None}

    def report(epoch: int, val_acc: float) -> bool:
        try:
            v = float(val_acc)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v) or not 0.0 <= v <= 1.0:
            state["bad"] = f"reported val_acc {val_acc!r} after epoch {int(epoch) + 1}"
            return True
        curve.append(v)
        stop = bool(on_epoch(int(epoch), v, math.nan)) if on_epoch is not None else False
        state["stopped"] = state["stopped"] or stop
        return stop

    kwargs: dict[str, Any] = {"epochs": int(epochs), "seed": int(seed), "device": device,
                              "report": report}
    if _takes_test(fn):
        kwargs["test"] = bool(evaluate_test)
    t0 = time.perf_counter()
    try:
        out = fn(model, **kwargs)
    except torch.OutOfMemoryError:
        raise  # the search reports it as out of memory
    except Exception as exc:
        raise TrainFunctionError(path, f"raised {type(exc).__name__}: "
                                       f"{_callables.first_line(exc)}") from exc
    wall = time.perf_counter() - t0
    if state["bad"]:
        raise TrainFunctionError(path, f"{state['bad']}; accuracies are fractions in "
                                       f"[0, 1]")
    if not isinstance(out, Mapping):
        raise TrainFunctionError(path, f"returned a {type(out).__name__}, not a mapping "
                                       f"with val_acc")
    val = _accuracy(out, "val_acc", path)
    test = None
    if evaluate_test:
        if "test_acc" not in out:
            raise TrainFunctionError(path, "returned no 'test_acc' for a final-table "
                                           "run; return it when called with test=True")
        test = _accuracy(out, "test_acc", path)
    run = out.get("epochs")
    if isinstance(run, int) and not isinstance(run, bool) and 0 <= run <= epochs:
        epochs_run = run
    else:
        epochs_run = len(curve) if state["stopped"] else int(epochs)
    if curve and len(curve) >= epochs_run:
        curve[-1] = val  # the returned value is the run's (e.g. an EMA model's)
    else:
        curve.append(val)
    status = "stopped" if state["stopped"] else "ok"
    return TrainResult(status=status, epochs_planned=int(epochs), epochs_run=epochs_run,
                       val_acc=curve, val_acc_final=val, test_acc=test, wall_time=wall,
                       reason=f"stopped early after epoch {epochs_run}" if state["stopped"]
                       else "")


def check_on_narrowest(path: str, space: SearchSpace, *, seed: int, device: torch.device
                       ) -> dict[str, Any]:
    """The up-front check (``train.function_check``): one epoch of the function on the space's
    narrowest network (:meth:`~nas_prune.widths.SearchSpace.min_widths`, built under
    ``torch.manual_seed(seed)`` and moved to ``device``) with a real ``report``, before any
    base network or trial trains. Raising, returning anything but a mapping with a finite
    ``val_acc`` in [0, 1], or reporting a bad value is a one-line
    :class:`~nas_prune.errors.UserError`; otherwise what it cost: the record ``search.json``
    keeps (``function_check``)."""
    import time

    widths = space.min_widths()
    torch.manual_seed(seed)
    model = space.family.build(widths).to(device)
    t0 = time.perf_counter()
    try:
        result = run_function(path, model, epochs=1, seed=seed, device=device)
    except TrainFunctionError as exc:
        reason = exc.reason
    except torch.OutOfMemoryError:
        reason = f"ran out of memory on {device}"
    else:
        return {"function": path, "widths": dict(widths), "epochs": 1, "seed": int(seed),
                "device": str(device), "val_acc": result.val_acc_final,
                "wall_s": round(time.perf_counter() - t0, 3)}
    raise UserError(f"{KEY} {path} failed its check on the narrowest network (1 epoch): "
                    f"{reason} (train.function_check: false skips this check)")
