"""One prepared GPU check: trainer vs DataLoader, epoch times, trials sharing one GPU.

Meant for the day a CUDA machine is lent (an H200, minutes of device time): one run, one JSON,
a short summary, a time guard on every step (``--budget``, 420 s by default; each step also has
its own share of it and is stopped by an alarm when it overruns). A step that fails is recorded
with its error and the run goes on with the next one. The JSON is rewritten after every
measurement, so a run killed from outside (``timeout`` in ``gpu_check.sh``) leaves what it had.

Steps (``--steps``, default all three):

``loader``
    nas-prune's trainer (data on the device, batched augmentation there) vs the usual per-sample
    ``DataLoader`` loop, through :mod:`benchmarks.train_throughput`'s own two functions, on
    CIFAR-shaped synthetic data (3x32x32, 10 classes). The trainer runs twice: as it is used
    (bf16 autocast + channels_last) and like for like with the DataLoader loop (fp32). Best of
    ``--loader-repeats`` runs; one warm-up of each arm first (not timed).
``epoch``
    Seconds per epoch of ResNet-56 and VGG-16 at CIFAR size (50,000 training images, 5,000
    validation images, batch 128): bf16 + channels_last vs fp32 (cuDNN's TF32 setting as
    PyTorch leaves it, recorded), plus bf16 + channels_last with ``cudnn.benchmark`` on (the
    trainer leaves it off). A short warm-up epoch first (not timed). When the warm-up's rate
    says a full epoch would not fit the step's time, fewer images are timed and the epoch time
    is scaled; the JSON says so (``scaled``, ``images_timed``).
``share``
    1, 2 and 4 trials sharing one GPU, as Ray fractional GPUs pack them (``num_gpus=1/k`` each,
    one process and CUDA context per trial): every trial trains the same model (ResNet-56 at
    half width by default) on its own synthetic data with nas-prune's trainer for a fixed
    number of images. Trials set up and warm up first, then wait at a barrier and start
    together. Aggregate images/s = all trials' images / (last end - first start); scaling vs
    k=1. Without Ray (``--sharing auto`` and Ray not installed) the same trials run as
    ``multiprocessing`` processes: that is what Ray's fractional GPUs do on the device (Ray only
    schedules; it does not partition the GPU); the JSON names the backend used.

Each step's ``status``: ok; partial (a part failed: ``failures``); stopped (its time guard hit:
what it had measured is kept); skipped (too little time left); error; terminated (SIGTERM).

``--smoke`` runs every step on the CPU at a tiny size (Ray with a faked GPU resource), to check
the script where there is no GPU; its numbers mean nothing.

    bash benchmarks/gpu_check.sh                       # the GPU machine; see the script
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_smoke.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nas_prune._io import write_json
from nas_prune._meta import code_version, hardware, now
from nas_prune.data import DataConfig, Splits, load_data
from nas_prune.train import TrainConfig, evaluate, train
from nas_prune.widths import SearchSpace

BENCH_DIR = Path(__file__).resolve().parent
REF_TRAIN = 50_000  # CIFAR-10's training images: the epoch every epoch time is given for
REF_VAL = 5_000  # nas-prune's default validation split, scored after every epoch
LR = 0.05
STEPS = ("loader", "epoch", "share")
STEP_SHARE = {"loader": 0.26, "epoch": 0.31, "share": 1.0}  # of --budget, capped by what is left
MIN_STEP_S = 15.0  # a step is skipped with less than this left
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CPU_NOTE = ("on the CPU: bf16 autocast and channels_last are CUDA-only in nas-prune's trainer, "
            "so every 'bf16+channels_last' row ran in fp32 too")

GPU_DEFAULTS: dict[str, Any] = {
    "device": "cuda", "budget": 420.0, "batch_size": 128,
    "loader_spaces": "vgg16_cifar,resnet56_cifar", "loader_images": 16384,
    "loader_workers": [0, 4, 8], "loader_repeats": 2,
    "epoch_spaces": "resnet56_cifar,vgg16_cifar", "epoch_images": REF_TRAIN, "epoch_val": REF_VAL,
    "epoch_warmup": 2048, "epoch_repeats": 2,
    "share_space": "resnet56_cifar", "share_keep": 0.5, "share_images": 12800,
    "share_epochs": 4, "share_k": [1, 2, 4],
}
SMOKE_DEFAULTS: dict[str, Any] = {
    "device": "cpu", "budget": 190.0, "batch_size": 32,
    "loader_spaces": "vgg16_cifar", "loader_images": 64, "loader_workers": [0],
    "loader_repeats": 1,
    "epoch_spaces": "resnet56_cifar,vgg16_cifar", "epoch_images": 32, "epoch_val": 16,
    "epoch_warmup": 16, "epoch_repeats": 1,
    "share_space": "resnet56_cifar", "share_keep": 0.5, "share_images": 64, "share_epochs": 1,
    "share_k": [1, 2],
}


class StepTimeout(BaseException):
    """Raised by the alarm when a step overruns its time (BaseException: no step swallows it)."""


class Terminated(BaseException):
    """SIGTERM (the shell's ``timeout``): save what there is and stop."""


def _on_alarm(signum, frame):
    raise StepTimeout


def _on_term(signum, frame):
    raise Terminated


def _error(exc: BaseException) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    cause = getattr(exc, "cause", None)  # a RayTaskError: the trial's own exception
    what = cause if isinstance(cause, BaseException) else exc
    text = ANSI.sub("", f"{type(what).__name__}: {what}")
    return {"error": text[:2000], "traceback": ANSI.sub("", tb)[-3000:]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _cmd(argv: list[str], timeout: float = 20.0) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return (out.stdout + out.stderr).strip()


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "code": code_version(), "hardware": hardware(device), "platform": platform.platform(),
        "python": sys.executable, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    try:
        env["loadavg"] = os.getloadavg()
    except OSError:
        env["loadavg"] = None
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        env["torchvision"] = None
    try:
        import ray

        env["ray"] = ray.__version__
    except ImportError:
        env["ray"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = {"name": torch.cuda.get_device_name(device),
                      "capability": list(torch.cuda.get_device_capability(device)),
                      "memory_gib": round(props.total_memory / 2**30, 1),
                      "multiprocessors": props.multi_processor_count,
                      "device_count": torch.cuda.device_count()}
    if shutil.which("nvidia-smi"):
        env["nvidia_smi"] = _cmd(["nvidia-smi"])
        env["nvidia_smi_query"] = _cmd([
            "nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
            "power.limit,compute_mode,mig.mode.current", "--format=csv"])
    else:
        env["nvidia_smi"] = None
    return env


class Check:
    """The run: its arguments, its JSON document, the global and per-step time guards."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget
        self.step_deadline = self.deadline
        command = os.environ.get("GPU_CHECK_COMMAND") or shlex.join([sys.executable, *sys.argv])
        self.doc: dict[str, Any] = {
            "cuda": self.device.type == "cuda", "smoke": args.smoke, "complete": False,
            "started": now(), "command": command, "argv": sys.argv,
            "budget_s": args.budget, "settings": {k: v for k, v in vars(args).items()
                                                  if k != "out"},
            "env": {}, "steps": {},
        }

    def left(self) -> float:
        return self.step_deadline - time.monotonic()

    def save(self) -> None:
        self.doc["elapsed_s"] = round(time.monotonic() - self.t0, 2)
        write_json(self.args.out, self.doc)

    def run_step(self, key: str, fn: Callable[[Check, dict[str, Any]], None]) -> None:
        entry: dict[str, Any] = {"status": "running"}
        self.doc["steps"][key] = entry
        left = self.deadline - time.monotonic()
        limit = min(STEP_SHARE[key] * self.args.budget, left - 5.0)
        if limit < MIN_STEP_S:
            entry.update(status="skipped", error=f"time guard: {left:.0f} s of the budget left")
            print(f"[{key}] skipped: {entry['error']}", flush=True)
            self.save()
            return
        entry["time_limit_s"] = round(limit, 1)
        self.save()
        print(f"[{key}] start (limit {limit:.0f} s)", flush=True)
        t = time.monotonic()
        self.step_deadline = t + limit
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            fn(self, entry)
            entry["status"] = "partial" if entry.get("failures") or entry.get("skipped") \
                else "ok"
        except StepTimeout:
            entry.update(status="stopped", error=f"time guard: step stopped after {limit:.0f} s "
                         f"(what it had measured is kept)")
        except Terminated:
            entry.update(status="terminated", error="SIGTERM during this step")
            raise
        except Exception as exc:  # recorded; the next step runs
            entry.update(status="error", **_error(exc))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.step_deadline = self.deadline
            entry["elapsed_s"] = round(time.monotonic() - t, 2)
            _free(self.device)
            self.save()
        msg = f" ({entry['error'].splitlines()[0]})" if entry.get("error") else ""
        print(f"[{key}] {entry['status']} in {entry['elapsed_s']:.0f} s{msg}", flush=True)


def _skip(entry: dict[str, Any], where: str, left: float, why: str = "") -> dict[str, Any]:
    msg = f"time guard: {left:.0f} s left in the step{why}"
    entry.setdefault("skipped", []).append(f"{where}: {msg}")
    print(f"  {where}: skipped, {msg}", flush=True)
    return {"skipped": msg}


def _fail(entry: dict[str, Any], where: str, exc: Exception) -> dict[str, Any]:
    err = _error(exc)
    entry.setdefault("failures", []).append(f"{where}: {err['error']}")
    print(f"  {where}: {err['error']}", flush=True)
    return err


# ---- step 1: the trainer vs a plain DataLoader loop ------------------------------------------
def _train_throughput():
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module("train_throughput")


def step_loader(ck: Check, entry: dict[str, Any]) -> None:
    a, device = ck.args, ck.device
    tt = _train_throughput()
    bs, n = a.batch_size, a.loader_images
    entry["how"] = (
        "benchmarks/train_throughput.py's ours() and baseline(), data 'synthetic' at the space's "
        "input (3x32x32, 10 classes), same model (base widths), batch, SGD and image count; "
        "best of the repeats; warm-up of each arm first. nas-prune's trainer as used (bf16 "
        "autocast + channels_last: CUDA only) and in fp32 (like for like with the DataLoader "
        "loop, which is fp32); DataLoader workers' start-up is inside its timing, as in the "
        "script. Synthetic augmentation: random crop with padding 2, no flip (both arms).")
    workers = " ".join(str(w) for w in a.loader_workers)
    entry["command_equivalent"] = [
        f"python benchmarks/train_throughput.py --space {s} --data synthetic --device "
        f"{device.type} --images {n} --batch-size {bs} --repeats {a.loader_repeats} "
        f"--workers {workers}{amp}"
        for s in a.loader_spaces for amp in ("", " --no-amp")]
    spaces: dict[str, Any] = entry.setdefault("spaces", {})
    took = 0.0
    for name in a.loader_spaces:
        if ck.left() < max(10.0, 1.2 * took):
            spaces[name] = _skip(entry, name, ck.left(), f", the one before took {took:.0f} s")
            continue
        t_space = time.perf_counter()
        r: dict[str, Any] = spaces.setdefault(name, {"images": n, "batch_size": bs})
        try:
            space = SearchSpace.load(name)
            arms: dict[str, Callable[[int], float]] = {
                "nas-prune bf16+channels_last": lambda k, s=space: tt.ours(
                    s, "synthetic", k, bs, device, True, LR),
                "nas-prune fp32": lambda k, s=space: tt.ours(
                    s, "synthetic", k, bs, device, False, LR),
            }
            for w in a.loader_workers:
                arms[f"DataLoader {w} workers"] = lambda k, s=space, w=w: tt.baseline(
                    s, "synthetic", k, bs, device, w, LR)
            t = time.perf_counter()
            for label in ("nas-prune bf16+channels_last", "nas-prune fp32",
                          f"DataLoader {a.loader_workers[0]} workers"):
                arms[label](2 * bs)
            r["warmup_s"] = round(time.perf_counter() - t, 2)
            runs: dict[str, list[float]] = r.setdefault("runs_images_per_s", {})
            plan = [(rep, label) for rep in range(a.loader_repeats) for label in arms]
            for rep, label in plan:
                if ck.left() < 5:  # the rest of the repeats: the best of those done is kept
                    r["skipped"] = _skip(entry, f"{name} from repeat {rep + 1} ({label})",
                                         ck.left())["skipped"]
                    break
                runs.setdefault(label, []).append(round(arms[label](n), 1))
                ck.save()
            best = {label: max(v) for label, v in runs.items() if v}
            r["best_images_per_s"] = best
            ratios = {}
            for ours in ("nas-prune bf16+channels_last", "nas-prune fp32"):
                for label, ips in best.items():
                    if label.startswith("DataLoader") and ours in best:
                        ratios[f"{ours} / {label}"] = round(best[ours] / ips, 2)
            loaders = {k: v for k, v in best.items() if k.startswith("DataLoader")}
            if loaders:
                top = max(loaders, key=loaders.get)
                r["best_dataloader"] = top
                for ours in ("nas-prune bf16+channels_last", "nas-prune fp32"):
                    if ours in best:
                        ratios[f"{ours} / best DataLoader"] = round(best[ours] / loaders[top], 2)
            r["ratios"] = ratios
        except Exception as exc:
            r.update(_fail(entry, name, exc))
        ck.save()
        _free(device)
        took = time.perf_counter() - t_space


# ---- step 2: seconds per epoch, bf16 + channels_last vs fp32 ---------------------------------
def _variants(ck: Check) -> list[tuple[str, bool, bool, bool]]:
    out = [("bf16+channels_last", True, True, False), ("fp32", False, False, False)]
    if ck.device.type == "cuda" and not ck.args.no_cudnn_benchmark:
        out.append(("bf16+channels_last+cudnn.benchmark", True, True, True))
    return out


def _take(splits: Splits, n: int) -> Splits:
    if n >= len(splits.train):
        return splits
    return dataclasses.replace(splits, train=splits.train.take(torch.arange(n)))


def step_epoch(ck: Check, entry: dict[str, Any]) -> None:
    a, device = ck.args, ck.device
    bs, n, nval = a.batch_size, a.epoch_images, a.epoch_val
    ref_steps = REF_TRAIN // bs
    entry["how"] = (
        f"nas_prune.train.train(epochs=1, validate=False) on synthetic data (3x32x32, 10 "
        f"classes, {n} training images on the device), batch {bs}, model at the space's base "
        f"widths; one warm-up epoch of {a.epoch_warmup} images per model and variant first (not "
        f"timed). s_per_epoch is for {REF_TRAIN} images = {ref_steps} steps of {bs} (the "
        f"trainer drops the last partial batch): wall time x {ref_steps} / steps timed; "
        f"'scaled' says whether fewer images than that were timed. val_s: evaluate() on "
        f"{nval} validation images (eval batch 1000), what every epoch adds; "
        f"s_per_epoch_with_val adds it (scaled to {REF_VAL} images).")
    t = time.perf_counter()
    dc = DataConfig(name="synthetic", synthetic_train=n + nval, synthetic_test=16,
                    synthetic_size=32, synthetic_channels=3, synthetic_classes=10, val_size=nval)
    splits = load_data(dc, device=device)
    _sync(device)
    entry["data_load_s"] = round(time.perf_counter() - t, 2)
    warm = _take(splits, a.epoch_warmup)
    variants = _variants(ck)
    todo = len(a.epoch_spaces) * len(variants)
    spaces: dict[str, Any] = entry.setdefault("spaces", {})
    for name in a.epoch_spaces:
        r: dict[str, Any] = spaces.setdefault(name, {})
        try:
            space = SearchSpace.load(name)
            r["flops"] = space.base_cost("flops")
        except Exception as exc:
            r.update(_fail(entry, name, exc))
            todo -= len(variants)
            continue
        for label, amp, cl, bench in variants:
            todo -= 1
            if ck.left() < 8:
                r[label] = _skip(entry, f"{name} {label}", ck.left())
                continue
            v: dict[str, Any] = r.setdefault(label, {})
            old_bench = torch.backends.cudnn.benchmark
            try:
                torch.backends.cudnn.benchmark = bench
                cfg = TrainConfig(epochs=1, batch_size=bs, lr=LR, amp=amp, channels_last=cl)
                torch.manual_seed(0)
                model = space.spec(space.base_widths()).build()
                t = time.perf_counter()
                wres = train(model, warm, cfg, epochs=1, seed=0, device=device,
                             validate=False, progress=False)
                evaluate(model, splits.val, cfg)
                v["warmup_s"] = round(time.perf_counter() - t, 2)
                v["warmup_images_per_s"] = round(wres.images_per_s, 1)
                # time for this run: what is left, shared with the runs still to come
                per_run = max(2.0, (ck.left() - 3.0) / ((todo + 1) * (a.epoch_repeats + 0.5)))
                m = len(splits.train)
                if m / max(wres.images_per_s, 1e-9) > per_run:
                    m = max(bs * 10, int(per_run * wres.images_per_s) // bs * bs)
                data = _take(splits, m)
                steps = len(data.train) // bs
                v.update(images_timed=steps * bs, steps_timed=steps, scaled=steps != ref_steps)
                t = time.perf_counter()
                evaluate(model, splits.val, cfg)
                val_s = time.perf_counter() - t
                v["val_s"] = round(val_s, 4)
                walls = []
                for _ in range(a.epoch_repeats):
                    res = train(model, data, cfg, epochs=1, seed=0, device=device,
                                validate=False, progress=False)
                    walls.append(res.wall_time)
                    best = min(walls)
                    epoch_s = best * ref_steps / steps
                    v.update(status=res.status, wall_s=[round(w, 3) for w in walls],
                             images_per_s=round(steps * bs / best, 1),
                             s_per_epoch=round(epoch_s, 3),
                             s_per_epoch_with_val=round(epoch_s + val_s * REF_VAL / nval, 3))
                    ck.save()
                if device.type == "cuda":
                    v["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                    torch.cuda.reset_peak_memory_stats(device)
            except Exception as exc:
                v.update(_fail(entry, f"{name} {label}", exc))
            finally:
                torch.backends.cudnn.benchmark = old_bench
                model = None
                _free(device)
            ck.save()
        bf, fp = r.get("bf16+channels_last", {}), r.get("fp32", {})
        if "s_per_epoch" in bf and "s_per_epoch" in fp:
            r["speedup_bf16_cl_vs_fp32"] = round(fp["s_per_epoch"] / bf["s_per_epoch"], 2)
    splits = warm = None


# ---- step 3: trials sharing one GPU ----------------------------------------------------------
def share_trial(job: dict[str, Any], wait: Callable[[], None]) -> dict[str, Any]:
    """One trial: set up, warm up, wait for the others, train ``job['epochs']`` epochs."""
    t_setup = time.time()
    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    space = SearchSpace.load(job["space"])
    bs, n = job["batch_size"], job["images"]
    dc = DataConfig(name="synthetic", synthetic_train=n + 16, synthetic_test=16,
                    synthetic_size=32, synthetic_channels=3, synthetic_classes=10, val_size=16,
                    split_seed=job["index"])
    splits = load_data(dc, device=device)
    torch.manual_seed(job["index"])
    model = space.spec(job["widths"]).build()
    cfg = TrainConfig(epochs=job["epochs"], batch_size=bs, lr=LR, amp=job["amp"],
                      channels_last=job["amp"])
    train(model, _take(splits, 4 * bs), cfg, epochs=1, seed=job["index"], device=device,
          validate=False, progress=False)
    setup_s = time.time() - t_setup
    wait()
    t0 = time.time()
    res = train(model, splits, cfg, epochs=job["epochs"], seed=job["index"], device=device,
                validate=False, progress=False)
    t1 = time.time()
    out = {"index": job["index"], "pid": os.getpid(), "start": t0, "end": t1,
           "setup_s": round(setup_s, 2), "wall_s": round(res.wall_time, 3),
           "images": (n // bs) * bs * res.epochs_run, "images_per_s": round(res.images_per_s, 1),
           "status": res.status, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if device.type == "cuda":
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


class _Barrier:  # a Ray actor (wrapped with ray.remote when Ray is used)
    def __init__(self) -> None:
        self.n, self.failed = 0, False

    def arrive(self) -> int:
        self.n += 1
        return self.n

    def fail(self) -> None:
        self.failed = True

    def count(self) -> int:
        if self.failed:
            raise RuntimeError("barrier: another trial failed before it")
        return self.n


def _ray_trial(job: dict[str, Any], barrier) -> dict[str, Any]:
    import ray

    def wait() -> None:
        ray.get(barrier.arrive.remote())
        stop = time.time() + job["barrier_timeout"]
        while ray.get(barrier.count.remote()) < job["k"]:
            if time.time() > stop:
                raise TimeoutError(f"barrier: not all {job['k']} trials arrived")
            time.sleep(0.01)

    try:
        return share_trial(job, wait)
    except BaseException:
        barrier.fail.remote()  # the others stop waiting
        raise


class RayShare:
    name = "ray"

    def __init__(self, smoke: bool) -> None:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # workers import this file's functions when it is imported rather than run
        paths = [str(BENCH_DIR), str(BENCH_DIR.parent), os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.ray = ray
        # a GPU resource of 1 also on the CPU (smoke): Ray only schedules it
        self.info = ray.init(num_gpus=1, num_cpus=2 if smoke else max(4, os.cpu_count() or 4),
                             include_dashboard=False, log_to_driver=False,
                             object_store_memory=200 * 2**20)
        self.barrier_cls = ray.remote(num_cpus=0)(_Barrier)
        self.task = ray.remote(_ray_trial)

    def run(self, jobs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        ray, k = self.ray, len(jobs)
        barrier = self.barrier_cls.remote()
        refs = [self.task.options(num_gpus=1 / k, num_cpus=1, max_retries=0).remote(j, barrier)
                for j in jobs]
        stop = time.monotonic() + timeout
        out, done = [], False
        try:
            for job, ref in zip(jobs, refs, strict=True):
                try:
                    out.append(ray.get(ref, timeout=max(1.0, stop - time.monotonic())))
                except ray.exceptions.GetTimeoutError:
                    raise
                except Exception as exc:
                    out.append({"index": job["index"], **_error(exc)})
            done = True
        finally:
            if not done:  # cancel only what still runs (cancelling a finished task can crash Ray)
                _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
                for ref in pending:
                    try:
                        ray.cancel(ref, force=True)
                    except Exception:
                        pass
            ray.kill(barrier)
        return out

    def close(self) -> None:
        self.ray.shutdown()


def _mp_trial(job: dict[str, Any], barrier, queue) -> None:
    try:
        out = share_trial(job, lambda: barrier.wait(timeout=job["barrier_timeout"]))
    except BaseException as exc:
        barrier.abort()  # the others stop waiting
        out = {"index": job["index"], **_error(exc)}
    queue.put(out)


class MpShare:
    name = "multiprocessing"

    def __init__(self, smoke: bool) -> None:
        self.ctx = mp.get_context("spawn")

    def run(self, jobs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        barrier, queue = self.ctx.Barrier(len(jobs)), self.ctx.Queue()
        procs = [self.ctx.Process(target=_mp_trial, args=(j, barrier, queue), daemon=True)
                 for j in jobs]
        stop = time.monotonic() + timeout
        try:
            for p in procs:
                p.start()
            out = [queue.get(timeout=max(1.0, stop - time.monotonic())) for _ in jobs]
            out.sort(key=lambda x: x["index"])
            for p in procs:  # each has sent its result and is exiting
                p.join(timeout=10)
            return out
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(timeout=5)

    def close(self) -> None:
        pass


def step_share(ck: Check, entry: dict[str, Any]) -> None:
    a = ck.args
    space = SearchSpace.load(a.share_space)
    base = space.base_widths()
    widths = space.snap({g: w * a.share_keep for g, w in base.items()})
    bs = a.batch_size
    per_trial = (a.share_images // bs) * bs * a.share_epochs
    entry.update(space=a.share_space, keep=a.share_keep, widths=widths,
                 flops=space.cost(widths), flops_ratio=round(space.cost(widths)
                                                              / space.base_cost(), 4),
                 images_per_trial=per_trial, batch_size=bs,
                 how=(f"k trials at once, each training {a.share_space} at {a.share_keep} x "
                      f"base widths (snapped) on its own {a.share_images} synthetic images for "
                      f"{a.share_epochs} epochs (bf16 + channels_last on CUDA), one process "
                      f"and one torch thread each; set-up and a warm-up epoch before a barrier. "
                      f"aggregate_images_per_s = all images / (last end - first start); "
                      f"scaling = aggregate / aggregate at k=1."))
    backend = a.sharing
    if backend == "auto":
        backend = "ray" if importlib.util.find_spec("ray") is not None else "mp"
        if backend == "mp":
            entry["note"] = ("Ray is not installed here: the trials run as multiprocessing "
                             "processes (what Ray's fractional GPUs run as).")
    t = time.perf_counter()
    runner = RayShare(a.smoke) if backend == "ray" else MpShare(a.smoke)
    entry["backend"] = runner.name
    entry["backend_start_s"] = round(time.perf_counter() - t, 2)
    runs: dict[str, Any] = entry.setdefault("runs", {})
    try:
        for k in a.share_k:
            if ck.left() < 15:
                runs[str(k)] = _skip(entry, f"k={k}", ck.left())
                continue
            jobs = [{"index": i, "k": k, "space": a.share_space, "widths": widths,
                     "images": a.share_images, "epochs": a.share_epochs, "batch_size": bs,
                     "device": "cuda" if ck.device.type == "cuda" else "cpu",
                     "amp": ck.device.type == "cuda", "threads": 1,
                     "barrier_timeout": max(10.0, ck.left() - 5.0)} for i in range(k)]
            t = time.perf_counter()
            try:
                trials = runner.run(jobs, timeout=ck.left() - 3.0)
            except Exception as exc:
                runs[str(k)] = _fail(entry, f"k={k}", exc)
                ck.save()
                continue
            run: dict[str, Any] = {"k": k, "gpu_fraction": round(1 / k, 4),
                                   "driver_wall_s": round(time.perf_counter() - t, 2),
                                   "trials": trials}
            good = [x for x in trials if "error" not in x]
            bad = [x for x in trials if "error" in x]
            if bad:
                entry.setdefault("failures", []).append(f"k={k}: {bad[0]['error']}")
            if good:
                first, last = min(x["start"] for x in good), max(x["end"] for x in good)
                images = sum(x["images"] for x in good)
                run.update(trials_ok=len(good), images=images, window_s=round(last - first, 3),
                           start_skew_s=round(max(x["start"] for x in good) - first, 3),
                           aggregate_images_per_s=round(images / max(last - first, 1e-9), 1),
                           mean_trial_images_per_s=round(
                               sum(x["images_per_s"] for x in good) / len(good), 1))
            runs[str(k)] = run
            ck.save()
    finally:
        runner.close()
    one = runs.get("1", {}).get("aggregate_images_per_s")
    if one:
        entry["scaling_vs_k1"] = {k: round(r["aggregate_images_per_s"] / one, 2)
                                  for k, r in runs.items() if r.get("aggregate_images_per_s")}


# ---- the run ---------------------------------------------------------------------------------
def summary(doc: dict[str, Any]) -> list[str]:
    lines = []
    env = doc.get("env", {})
    gpu = env.get("gpu", {}).get("name") or env.get("hardware", {}).get("cpu")
    lines.append(f"gpu_check{' (smoke: numbers mean nothing)' if doc['smoke'] else ''} on {gpu}, "
                 f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
                 f"{doc.get('elapsed_s', 0):.0f} s")
    steps = doc["steps"]
    s = steps.get("loader")
    if s:
        lines.append(f"1. trainer vs DataLoader: {s['status']}")
        for name, r in s.get("spaces", {}).items():
            best = r.get("best_images_per_s", {})
            if not best:
                lines.append(f"   {name}: {r.get('error') or r.get('skipped') or 'no result'}")
                continue
            top = r.get("best_dataloader")
            parts = [f"{k} {v:,.0f}" for k, v in best.items()]
            lines.append(f"   {name} ({r['images']} images), images/s: " + ", ".join(parts))
            if top:
                lines.append(f"   ratio vs best DataLoader ({top}): bf16+cl "
                             f"{r['ratios'].get('nas-prune bf16+channels_last / best DataLoader')}"
                             f"x, fp32 {r['ratios'].get('nas-prune fp32 / best DataLoader')}x")
    s = steps.get("epoch")
    if s:
        lines.append(f"2. s per epoch of {REF_TRAIN} images (train only / with val): "
                     f"{s['status']}")
        for name, r in s.get("spaces", {}).items():
            parts = []
            for label, v in r.items():
                if isinstance(v, dict) and "s_per_epoch" in v:
                    parts.append(f"{label} {v['s_per_epoch']:.2f}/{v['s_per_epoch_with_val']:.2f}"
                                 f"{' (scaled)' if v.get('scaled') else ''}")
                elif isinstance(v, dict) and v.get("error"):
                    parts.append(f"{label} failed: {v['error'][:80]}")
                elif isinstance(v, dict) and v.get("skipped"):
                    parts.append(f"{label} skipped ({v['skipped'][:60]})")
            sp = r.get("speedup_bf16_cl_vs_fp32")
            lines.append(f"   {name}: " + "; ".join(parts)
                         + (f"; bf16+cl speed-up {sp}x" if sp else ""))
    s = steps.get("share")
    if s:
        lines.append(f"3. trials sharing one GPU ({s.get('backend')}, {s.get('space')} x "
                     f"{s.get('keep')}): {s['status']}")
        scal = s.get("scaling_vs_k1", {})
        for k, r in s.get("runs", {}).items():
            if r.get("aggregate_images_per_s"):
                lines.append(f"   k={k}: {r['aggregate_images_per_s']:,.0f} images/s aggregate "
                             f"({r['mean_trial_images_per_s']:,.0f} per trial), "
                             f"x{scal.get(k, '?')} vs k=1")
            else:
                lines.append(f"   k={k}: {(r.get('error') or r.get('skipped') or '?')[:100]}")
    for key, s in steps.items():
        if s.get("error"):
            lines.append(f"   [{key}] {s['error'].splitlines()[0][:160]}")
        for f in s.get("failures", [])[:3] + s.get("skipped", [])[:3]:
            lines.append(f"   [{key}] {f.splitlines()[0][:160]}")
    lines.append(f"JSON: {doc.get('out')}")
    return lines


def no_cuda(path: Path) -> None:
    """Say so, and write ``{"cuda": false}``, unless ``path`` holds measured results."""
    print("no CUDA device: nothing measured")
    try:
        old = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and old.get("cuda"):
        print(f"  {path} holds results measured on a GPU: kept as it is")
        return
    write_json(path, {"cuda": False})


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT")
                   else Path("benchmarks/results/gpu_check.json"))
    p.add_argument("--out", type=Path, default=default_out,
                   help="the JSON (default: $OUT/gpu_check.json, else %(default)s)")
    p.add_argument("--smoke", action="store_true",
                   help="every step on the CPU at a tiny size (a check of the script)")
    p.add_argument("--steps", default=",".join(STEPS),
                   help="comma-separated, of " + ",".join(STEPS))
    p.add_argument("--device", help="cuda (default) or cuda:N; cpu with --smoke")
    p.add_argument("--budget", type=float, help="seconds for the whole run (default 420)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--loader-spaces", help="step 1's spaces, comma-separated")
    p.add_argument("--loader-images", type=int)
    p.add_argument("--loader-workers", type=int, nargs="+")
    p.add_argument("--loader-repeats", type=int)
    p.add_argument("--epoch-spaces", help="step 2's spaces, comma-separated")
    p.add_argument("--epoch-images", type=int, help=f"training images (default {REF_TRAIN})")
    p.add_argument("--epoch-val", type=int)
    p.add_argument("--epoch-warmup", type=int, help="images of the untimed warm-up epoch")
    p.add_argument("--epoch-repeats", type=int)
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="skip step 2's cudnn.benchmark variant")
    p.add_argument("--share-space")
    p.add_argument("--share-keep", type=float, help="width multiplier of the shared model")
    p.add_argument("--share-images", type=int, help="training images of each trial")
    p.add_argument("--share-epochs", type=int)
    p.add_argument("--share-k", type=int, nargs="+", help="trials at once (default 1 2 4)")
    p.add_argument("--sharing", choices=["auto", "ray", "mp"], default="auto",
                   help="auto: Ray when installed, else multiprocessing")
    args = p.parse_args(argv)
    for key, value in (SMOKE_DEFAULTS if args.smoke else GPU_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("loader_spaces", "epoch_spaces"):
        setattr(args, key, [s for s in getattr(args, key).split(",") if s])
    args.steps = [s for s in args.steps.split(",") if s]
    bad = [s for s in args.steps if s not in STEPS]
    if bad:
        p.error(f"--steps: unknown {', '.join(bad)}; choose from {', '.join(STEPS)}")
    if min(args.batch_size, args.loader_images, args.epoch_images, args.share_images,
           args.loader_repeats, args.epoch_repeats, args.share_epochs, *args.share_k) < 1:
        p.error("sizes, repeats and k must be >= 1")
    if not 0 < args.share_keep <= 1:
        p.error("--share-keep must be in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        no_cuda(args.out)
        return 0
    ck = Check(args)
    ck.doc["out"] = str(args.out)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, _on_term)
    steps = {"loader": step_loader, "epoch": step_epoch, "share": step_share}
    rc = 0
    try:
        if ck.device.type == "cuda":
            torch.cuda.set_device(ck.device.index)
            torch.zeros(1, device=ck.device)  # the CUDA context, outside every timing
        else:
            ck.doc["note"] = CPU_NOTE
        try:
            ck.doc["env"] = environment(ck.device)
        except Exception as exc:  # recorded; the steps still run
            ck.doc["env"] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                             **_error(exc)}
        ck.save()
        print(f"gpu_check: {ck.doc['env'].get('gpu', {}).get('name', ck.device)}, "
              f"steps {','.join(args.steps)}, budget {args.budget:.0f} s -> {args.out}",
              flush=True)
        for key in args.steps:
            ck.run_step(key, steps[key])
        ck.doc["complete"] = True
    except Terminated:
        ck.doc["terminated"] = "SIGTERM (the shell's timeout?): the JSON holds what was done"
        rc = 124
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        ck.doc["finished"] = now()
        ck.save()
    ck.doc["summary"] = summary(ck.doc)
    ck.save()
    print("\n".join(ck.doc["summary"]), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
