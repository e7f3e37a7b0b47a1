"""One search from start to finish, and ``export`` of a run directory.

:func:`run_search`: seed proposals (and uniform) at the budget -> the candidate space -> the
backend (Optuna or Ray) runs the trials -> the winner and the baselines are retrained on several
seeds and scored on the test split -> the run directory (see :mod:`nas_prune.rundir`):

* ``config.yaml`` (resolved config), ``setup.json`` (config + candidate space, what workers and
  Ray trials rebuild the search from), ``search.json`` (command, backend, budget, costs, times,
  hardware, versions, study), ``proposals/<method>.yaml`` and ``proposals/uniform.yaml``;
* ``trials.csv`` / ``trials.jsonl``, rewritten after every trial;
* ``final.json``, ``best.yaml``, ``best.pt``, ``pareto/`` (see :mod:`nas_prune.search.finalize`).

``resume=True`` continues the run directory's study (Optuna) or experiment (Ray) with the stored
proposals: no base network is retrained, no completed trial is repeated. The config may change
only in what does not define the search (``n_trials``, ``timeout``, device, final retraining,
Ray resources); anything else is a one-line error naming the key.

Nothing here prints: progress goes to a :class:`SearchEvents` the caller passes.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._meta import code_version
from ..config import Config, save_config, to_dict
from ..errors import UserError
from ..rundir import (
    FINAL_JSON,
    SEARCH_JSON,
    TrialRecord,
    read_json,
    state_counts,
    write_json,
    write_records,
)
from ..scratch import data_for
from ..seeds import ProposalRun, SeedContext, get_method, parse_methods, propose
from ..seeds import check_budget as _check_budget
from ..train import resolve_device
from ..widths import SearchSpace, space_source
from . import optuna_backend as ob
from .evaluate import SearchSetup
from .finalize import best_from_final, choose_best, finalize, write_best, write_pareto, write_top
from .space import OBJECTIVES, UNIFORM, CandidateSpace

BACKENDS = ("optuna", "ray")
SETUP_JSON = "setup.json"
# Config keys a resumed search may change: they do not change which candidates mean what.
RESUMABLE = ("device", "run_dir", "search.n_trials", "search.timeout", "search.final_seeds",
             "search.finalists", "search.final_epochs", "search.storage", "search.study_name",
             "search.ray")


class SearchEvents:
    """What a search reports while it runs. The CLI overrides these to print; no-ops here."""

    def message(self, text: str) -> None:
        """A line of progress (resuming, waiting, the dashboard URL...)."""

    def proposal(self, name: str, run: ProposalRun, cost_ratio: float) -> None:
        """A seed method (or uniform) proposed ``run.proposal.widths``."""

    def trial(self, record: TrialRecord) -> None:
        """A trial of this process finished (any state)."""

    def final(self, name: str, seed: int, run: dict[str, Any]) -> None:
        """One final retraining run finished (``run`` has test_acc, val_acc, status...)."""


@dataclass
class SearchResult:
    run_dir: Path
    setup: SearchSetup
    records: list[TrialRecord]
    best: TrialRecord | None
    final: dict[str, Any] | None
    paths: list[Path] = field(default_factory=list)


# ---- checks and setup ----------------------------------------------------------------------
def check_search_config(cfg: Config) -> None:
    """Fail on bad search settings before anything is trained."""
    s = cfg.search
    if s.backend not in BACKENDS:
        raise UserError(f"search.backend: {s.backend!r}; choose one of {', '.join(BACKENDS)}")
    if s.objective not in OBJECTIVES:
        raise UserError(f"search.objective: {s.objective!r}; choose one of "
                        f"{', '.join(OBJECTIVES)}")
    if s.n_trials < 1:
        raise UserError("search.n_trials: must be >= 1")
    if s.final_seeds < 1:
        raise UserError("search.final_seeds: must be >= 1")
    if s.finalists < 1:
        raise UserError("search.finalists: must be >= 1 (1 keeps the search's best trial)")
    if s.finalists > 1 and s.objective == "multi":
        raise UserError("search.finalists: applies to the single objective; with --objective "
                        "multi the Pareto front is exported instead; set it to 1")
    if s.timeout is not None and s.timeout <= 0:
        raise UserError("search.timeout: must be a positive number of seconds (or null)")
    ob.make_sampler(s.sampler, seed=0, objective=s.objective, n_trials=s.n_trials,
                    n_baselines=1)
    ob.make_early_stopping(s.early_stopping, objective=s.objective, n_baselines=1)
    if not 0 < s.multiplier_low <= 1 <= s.multiplier_high:
        raise UserError(f"search.multiplier_low/high: need 0 < low <= 1 <= high, got "
                        f"[{s.multiplier_low}, {s.multiplier_high}]")


def _proposal_spec(space: SearchSpace, run: ProposalRun, base_flops: int):
    prov = {**run.proposal.provenance(), "base_flops": base_flops,
            "base_source": run.base_source, "base_train_s": round(run.base_train_s, 3),
            "propose_s": round(run.propose_s, 3), "base_metrics": run.base_metrics}
    return space.spec(run.proposal.widths, provenance=prov)


def prepare_setup(cfg: Config, methods: list[str], run_dir: Path,
                  events: SearchEvents) -> SearchSetup:
    """Seed proposals and the uniform baseline at the budget; RUN/proposals/*.yaml."""
    name, raw = space_source(cfg.space)
    space = SearchSpace.from_dict(raw, name=name)
    sm = cfg.seed_method
    target = _check_budget(space, sm.budget, sm.metric)
    device = resolve_device(cfg.device)
    data = data_for(cfg.data, device, space.spec(space.base_widths()))
    ctx = SeedContext(space=space, data=data, train=cfg.train, device=device,
                      seed=cfg.random_seed, samples=sm.samples, metric=sm.metric)
    starts: dict[str, dict[str, int]] = {}
    base_flops = space.base_cost("flops")
    for method_name in [m for m in methods if m != UNIFORM] + [UNIFORM]:
        method = get_method(method_name, sm.options.get(method_name))
        try:
            run = propose(method, ctx, sm.budget, base_epochs=sm.base_epochs,
                          checkpoint=sm.base_checkpoint, cache_dir=run_dir / "bases",
                          data_cfg=cfg.data)
        except NotImplementedError as exc:
            raise UserError(f"--seed-method {method_name}: not implemented yet ({exc}); "
                            f"choose another method") from None
        starts[method_name] = run.proposal.widths
        _proposal_spec(space, run, base_flops).save(run_dir / "proposals"
                                                     / f"{method_name}.yaml")
        events.proposal(method_name, run, space.cost(run.proposal.widths, sm.metric)
                        / space.base_cost(sm.metric))
    s = cfg.search
    cspace = CandidateSpace(space, starts=starts, objective=s.objective, metric=sm.metric,
                            target=target, tolerance=s.tolerance,
                            multiplier_low=s.multiplier_low, multiplier_high=s.multiplier_high,
                            source={"name": name, "data": raw})
    return SearchSetup(cfg=cfg, cspace=cspace, methods=list(methods))


def _differs(old: Any, new: Any, prefix: str = "") -> str | None:
    """The first config key (dotted) whose value differs, skipping :data:`RESUMABLE` keys."""
    if prefix and any(prefix == k or prefix.startswith(k + ".") for k in RESUMABLE):
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = _differs(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
            if found:
                return found
        return None
    return prefix if old != new else None


def resumed_setup(stored: SearchSetup, cfg: Config) -> SearchSetup:
    """The stored search with the new config, if the new config does not change the search."""
    key = _differs(to_dict(stored.cfg), to_dict(cfg))
    if key is not None:
        raise UserError(f"--resume: {key} differs from the run being resumed; resume with the "
                        f"run's own config (RUN/config.yaml) or start a new --run-dir")
    return replace(stored, cfg=cfg)


def hardware(cfg: Config) -> dict[str, Any]:
    import torch

    device = resolve_device(cfg.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": str(device), "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "gpu": gpu}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def mask_url(url: str | None) -> str | None:
    """A storage URL without its password (search.json must not hold credentials)."""
    if not url or "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def search_info(setup: SearchSetup, *, command: str, study_name: str | None,
                storage: str | None, previous: dict[str, Any] | None) -> dict[str, Any]:
    cfg, cspace = setup.cfg, setup.cspace
    info = {
        "command": command, "backend": cfg.search.backend, "space": cspace.space.name,
        "seed_methods": list(setup.methods), "budget": cfg.seed_method.budget,
        "metric": cspace.metric, "base_flops": setup.base_flops,
        "base_params": setup.base_params, "target_cost": cspace.target,
        "tolerance": cspace.tolerance, "objective": cspace.objective,
        "sampler": ob.effective_sampler(cfg.search.sampler, cspace.objective),
        "early_stopping": "none" if cspace.objective == "multi" else cfg.search.early_stopping,
        "n_trials": cfg.search.n_trials,
        "started": (previous or {}).get("started") or _now(), "finished": None,
        "resumed": list((previous or {}).get("resumed") or []),
        "hardware": hardware(cfg), "versions": code_version(),
        "study_name": study_name, "storage": mask_url(storage),
    }
    if previous is not None:
        info["resumed"].append(_now())
    return info


# ---- the search ----------------------------------------------------------------------------
def run_search(cfg: Config, *, run_dir: str | Path | None = None, resume: bool = False,
               command: str = "", events: SearchEvents | None = None) -> SearchResult:
    """Propose, search, retrain and export; see the module docstring."""
    events = events or SearchEvents()
    run_dir = Path(run_dir or cfg.run_dir)
    check_search_config(cfg)
    methods = parse_methods(cfg.seed_method.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_json(run_dir / SEARCH_JSON) if resume else None
    if cfg.search.backend == "optuna":
        setup, records, study_name, storage = _run_optuna(cfg, methods, run_dir, resume,
                                                          command, previous, events)
    else:
        setup, records = _run_ray(cfg, methods, run_dir, resume, command, previous, events)
        study_name = storage = None
    write_records(run_dir, records)
    paths = [run_dir / "config.yaml", run_dir / SEARCH_JSON, run_dir / "trials.csv",
             run_dir / "trials.jsonl"]
    prov = {"backend": cfg.search.backend, "study_name": study_name,
            "storage": mask_url(storage), "run_dir": str(run_dir.resolve())}
    final, written = finalize(setup, records, run_dir, provenance=prov, on_result=events.final)
    paths += written + sorted((run_dir / "proposals").glob("*.yaml"))
    info = read_json(run_dir / SEARCH_JSON) or {}
    info.update({"finished": _now(), "state_counts": state_counts(records)})
    write_json(run_dir / SEARCH_JSON, info)
    best, _ = best_from_final(setup, records, final) or choose_best(setup, records)
    return SearchResult(run_dir, setup, records, best, final, paths)


def _start(setup: SearchSetup, run_dir: Path, *, command: str, study_name: str | None,
           storage: str | None, previous: dict[str, Any] | None) -> None:
    save_config(setup.cfg, run_dir / "config.yaml")
    write_json(run_dir / SETUP_JSON, setup.to_dict())
    write_json(run_dir / SEARCH_JSON, search_info(setup, command=command, study_name=study_name,
                                                  storage=storage, previous=previous))


def _run_optuna(cfg: Config, methods: list[str], run_dir: Path, resume: bool, command: str,
                previous: dict[str, Any] | None, events: SearchEvents):
    url = cfg.search.storage or ob.default_storage(run_dir)
    name = cfg.search.study_name or run_dir.resolve().name
    storage = ob.open_storage(url)
    if ob.study_exists(storage, name):
        if not resume:
            raise UserError(f"run directory {run_dir}: study {name!r} already exists in "
                            f"{mask_url(url)}; pass --resume to continue it, or choose another "
                            f"--run-dir")
        study = ob.load_study(storage, name)
        setup = resumed_setup(ob.stored_setup(study), cfg)
        interrupted = ob.fail_interrupted(study, storage)
        if interrupted:
            events.message(f"marked {len(interrupted)} interrupted trial(s) FAIL and queued "
                           f"them again: {', '.join(map(str, interrupted))}")
        done, _, waiting = ob.progress_counts(study)
        events.message(f"resuming study {name!r}: {done} of {cfg.search.n_trials} trials "
                       f"done, {waiting} queued")
        study.set_user_attr(ob.ATTR_TOTAL, cfg.search.n_trials)
    else:
        if resume:
            events.message(f"--resume: no study {name!r} yet in {mask_url(url)}; starting it")
            previous = None
        setup = prepare_setup(cfg, methods, run_dir, events)
        n_base = len(setup.cspace.starts)
        if cfg.search.n_trials < n_base:
            raise UserError(f"search.n_trials: {cfg.search.n_trials} is fewer than the {n_base} "
                            f"seed/uniform trials that go first; raise it")
        study = ob.create_study(setup, storage, name, run_dir=run_dir,
                                n_trials=cfg.search.n_trials)
    _start(setup, run_dir, command=command, study_name=name, storage=url, previous=previous)
    n_base = len(setup.cspace.starts)
    study.sampler = ob.make_sampler(cfg.search.sampler,
                                    seed=ob.sampler_seed(cfg.random_seed, study, worker=False),
                                    objective=setup.cspace.objective,
                                    n_trials=cfg.search.n_trials, n_baselines=n_base)
    study.pruner = ob.make_early_stopping(cfg.search.early_stopping,
                                          objective=setup.cspace.objective, n_baselines=n_base,
                                          warmup_epochs=setup.warmup_epochs())

    def on_record(record: TrialRecord, study) -> None:
        write_records(run_dir, ob.records_of(study))
        events.trial(record)

    ob.run_trials(study, setup, total=cfg.search.n_trials, timeout=cfg.search.timeout,
                  on_record=on_record,
                  on_wait=lambda n: events.message(f"waiting for {n} trial(s) of other "
                                                   f"workers"))
    return setup, ob.records_of(study), name, url


def _run_ray(cfg: Config, methods: list[str], run_dir: Path, resume: bool, command: str,
             previous: dict[str, Any] | None, events: SearchEvents):
    from . import ray_backend as rb

    stored = read_json(run_dir / SETUP_JSON)
    exists = rb.experiment_dir(run_dir).is_dir()
    if exists and not resume:
        raise UserError(f"run directory {run_dir}: a Ray experiment already exists in "
                        f"{rb.experiment_dir(run_dir)}; pass --resume to continue it, or choose "
                        f"another --run-dir")
    if resume and exists and stored is not None:
        setup = resumed_setup(SearchSetup.from_dict(stored), cfg)
        was = SearchSetup.from_dict(stored).cfg.search.n_trials
        if was != cfg.search.n_trials:
            raise UserError(f"search.n_trials: a resumed Ray experiment keeps its {was} trials "
                            f"(Tuner.restore cannot change it); drop --n-trials")
    else:
        if resume:
            events.message("--resume: no Ray experiment in this run directory yet; starting it")
            previous = None
        setup = prepare_setup(cfg, methods, run_dir, events)
    _start(setup, run_dir, command=command, study_name=None, storage=None, previous=previous)
    records = rb.run_ray(setup, run_dir=run_dir, resume=resume and exists,
                         n_trials=cfg.search.n_trials, timeout=cfg.search.timeout,
                         on_record=events.trial, on_message=events.message)
    return setup, records


# ---- worker and export ---------------------------------------------------------------------
def run_worker(storage_url: str, study_name: str | None, *, device: str | None = None,
               n_trials: int | None = None, events: SearchEvents | None = None
               ) -> list[TrialRecord]:
    """Join an existing study and run trials in this process; returns the study's records.

    ``n_trials``: run exactly this many; default: until the study holds its total.
    """
    events = events or SearchEvents()
    storage = ob.open_storage(storage_url)
    study = ob.load_study(storage, study_name)
    setup = ob.stored_setup(study, device=device)
    total = int(study.user_attrs.get(ob.ATTR_TOTAL, setup.cfg.search.n_trials))
    n_base = len(setup.cspace.starts)
    study.sampler = ob.make_sampler(setup.cfg.search.sampler,
                                    seed=ob.sampler_seed(setup.cfg.random_seed, study,
                                                         worker=True),
                                    objective=setup.cspace.objective, n_trials=total,
                                    n_baselines=n_base)
    study.pruner = ob.make_early_stopping(setup.cfg.search.early_stopping,
                                          objective=setup.cspace.objective, n_baselines=n_base,
                                          warmup_epochs=setup.warmup_epochs())
    events.message(f"joined study {study.study_name!r}: total {total} trials, device "
                   f"{resolve_device(setup.cfg.device)}")
    ob.run_trials(study, setup, total=None if n_trials is not None else total,
                  n_trials=n_trials, on_record=lambda r, _s: events.trial(r),
                  wait_for_others=False)
    return ob.records_of(study)


def load_run(run_dir: str | Path, *, storage: str | None = None
             ) -> tuple[dict[str, Any], SearchSetup, list[TrialRecord]]:
    """(search.json, setup, records) of a run directory, from the study or the Ray results."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / SEARCH_JSON)
    stored = read_json(run_dir / SETUP_JSON)
    if info is None or stored is None:
        raise UserError(f"{run_dir}: no {SEARCH_JSON}/{SETUP_JSON}; not the run directory of "
                        f"a nas-prune search")
    if info.get("backend") == "ray":
        from . import ray_backend as rb

        setup = SearchSetup.from_dict(stored)
        return info, setup, rb.collect_records(run_dir, setup)
    url = storage or info.get("storage")
    if not url or "***" in url:
        raise UserError(f"{run_dir}: the study's storage URL is not recorded in full; pass "
                        f"--storage URL")
    st = ob.open_storage(url)
    study = ob.load_study(st, info.get("study_name"))
    return info, ob.stored_setup(study), ob.records_of(study)


def export_run(run_dir: str | Path, *, top: int | None = None, pareto: bool = False,
               onnx: bool = False, storage: str | None = None) -> dict[str, Any]:
    """Rewrite trials.csv/.jsonl and best.yaml (plus top-K / Pareto YAMLs, ONNX) from the
    records alone: works for an interrupted study, and never trains."""
    run_dir = Path(run_dir)
    info, setup, records = load_run(run_dir, storage=storage)
    paths = list(write_records(run_dir, records))
    final = read_json(run_dir / FINAL_JSON)
    best, rule = best_from_final(setup, records, final) or choose_best(setup, records)
    final_row = None
    if final is not None and best is not None:
        final_row = next((r for r in final.get("rows", []) if r.get("name") == "best"
                          and r.get("widths") == best.widths), None)
    weights_match = final_row is not None and (run_dir / "best.pt").is_file()
    if best is not None:
        prov = {"backend": info.get("backend"), "study_name": info.get("study_name"),
                "storage": info.get("storage"), "run_dir": str(run_dir.resolve())}
        paths += write_best(setup, best, run_dir, final_row=final_row, rule=rule,
                            provenance=prov)
    if top:
        paths += write_top(setup, records, run_dir, top)
    if pareto or setup.cspace.objective == "multi":
        paths += write_pareto(setup, records, run_dir)
    if onnx:
        paths.append(_export_onnx(run_dir, setup, best, weights_match))
    return {"records": records, "best": best, "best_rule": rule, "paths": paths,
            "final_matches": final_row is not None, "counts": state_counts(records)}


def _export_onnx(run_dir: Path, setup: SearchSetup, best: TrialRecord | None,
                 weights_match: bool) -> Path:
    from ..export import export_onnx, load_weights

    if best is None:
        raise UserError("--onnx: no completed trial to export")
    if not weights_match:
        raise UserError(f"--onnx: {run_dir}/best.pt is missing or belongs to another trial "
                        f"(final training has not run for trial {best.number}); run "
                        f"'nas-prune search --resume --run-dir {run_dir}' to retrain it")
    spec = setup.spec(best.widths)
    model = load_weights(spec.build(), run_dir / "best.pt")
    return export_onnx(model, spec, run_dir / "best.onnx")
