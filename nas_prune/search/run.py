"""One search from start to finish, and ``export`` of a run directory.

:func:`run_search`: seed proposals (and uniform) at the budget -> the candidate space -> the
configured backend (:data:`nas_prune.search.backends.BACKENDS`) runs the trials -> the winner and
the baselines are retrained on several seeds and scored on the test split -> the run directory
(see :mod:`nas_prune.rundir`):

* ``config.yaml`` (resolved config, written first: a search killed while its seed methods train
  still leaves a run directory that ``--resume`` continues), ``setup.json`` (config + candidate
  space), ``search.json`` (command, backend, budget, costs, times, hardware, versions, where the
  trials live; with ``train.function`` its check on the narrowest network, ``function_check``:
  :func:`function_check`), ``proposals/<method>.yaml`` and ``proposals/uniform.yaml``;
* ``trials.csv`` / ``trials.jsonl``, rewritten after every trial;
* ``final.json``, ``best.yaml``, ``best.pt``, ``pareto/`` (see :mod:`nas_prune.search.finalize`).

``resume=True`` needs an existing run directory and continues its study or experiment with the
stored proposals: no base network is retrained, no completed trial is repeated. A run directory
killed before its trials started is continued from what it holds (its cached base networks). The
config may change only in what does not define the search (:data:`RESUMABLE`, less what the
backend cannot change, ``SearchBackend.fixed_on_resume``); anything else is a one-line error
naming the key.

Nothing here prints: progress goes to a :class:`SearchEvents` the caller passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .._callables import registered
from .._meta import code_version, hardware, now
from ..budget import check_budget
from ..config import Config, SearchConfig, save_config, to_dict
from ..errors import UserError
from ..rundir import (
    BASES,
    BEST_PT,
    CONFIG_YAML,
    FINAL_JSON,
    PROPOSALS,
    SEARCH_JSON,
    SETUP_JSON,
    TRIALS_CSV,
    TRIALS_JSONL,
    TrialRecord,
    read_json,
    read_records,
    require_run_dir,
    state_counts,
    write_json,
    write_records,
)
from ..scratch import data_for, resolve_space
from ..seeds import SEED_METHODS, ProposalRun, SeedContext, get_method, parse_methods, propose
from ..table import check_table, table_path
from ..train import resolve_device
from ..trainfn import check_function, check_on_narrowest, importable
from ..widths import SearchSpace, space_source
from ._backend import Location, SearchEvents, mask_url
from .backends import get_backend
from .evaluate import SearchSetup
from .fidelity import Rung, check_rungs, fidelity_summary
from .finalize import best_from_final, choose_best, finalize, write_best, write_pareto, write_top
from .samplers import effective_early_stopping, effective_sampler
from .screening import (
    ONESHOT_DIR,
    check_base_score,
    check_shared_checkpoint,
    correlation,
    run_screening,
)
from .space import OBJECTIVES, UNIFORM, CandidateSpace

# Config keys a resumed search may change: they do not change which candidates mean what.
RESUMABLE = ("device", "run_dir", "train.function_check", "search.n_trials", "search.timeout",
             "search.final_seeds", "search.finalists", "search.final_epochs",
             "search.finetune_epochs", "search.best_weights", "search.storage",
             "search.study_name", "search.ray")


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
    """Fail on bad search settings (the backend's included) before anything is trained."""
    s = cfg.search
    backend = get_backend(s.backend)
    if s.objective not in OBJECTIVES:
        raise UserError(f"search.objective: {s.objective!r}; choose one of "
                        f"{', '.join(OBJECTIVES)}")
    if s.n_trials < 1:
        raise UserError("search.n_trials: must be >= 1")
    if s.final_seeds < 1:
        raise UserError("search.final_seeds: must be >= 1")
    if s.finalists < 1:
        raise UserError("search.finalists: must be >= 1 (1 keeps the search's best trial)")
    if s.timeout is not None and s.timeout <= 0:
        raise UserError("search.timeout: must be a positive number of seconds (or null)")
    if not 0 < s.multiplier_low <= 1 <= s.multiplier_high:
        raise UserError(f"search.multiplier_low/high: need 0 < low <= 1 <= high, got "
                        f"[{s.multiplier_low}, {s.multiplier_high}]")
    if s.rungs:
        check_rungs([Rung(r.epochs, r.seeds) for r in s.rungs],
                    reduction_factor=s.reduction_factor)
    if s.screening.population:
        if s.objective != "single":
            raise UserError("search.screening.population: one-shot screening needs "
                            "search.objective: single")
        if cfg.train.source != "data":
            raise UserError("search.screening.population: one-shot screening trains a network "
                            "on the data; it cannot run with train.source: table")
        if cfg.train.function is not None:
            raise UserError("search.screening.population: one-shot screening trains its "
                            "weight-sharing network on the config's data with nas-prune's "
                            "trainer, not train.function; set it to 0")
        sc = s.screening
        n_base = len({m for m in parse_methods(cfg.seed_method.name) if m != UNIFORM}) + 1
        if s.n_trials < n_base + sc.promote + sc.random_checks:
            raise UserError(f"search.n_trials: {s.n_trials} is fewer than the {n_base} "
                            f"seed/uniform trials plus the {sc.promote} promoted and "
                            f"{sc.random_checks} random screened candidates; raise it or lower "
                            f"search.screening.promote")
    if s.finetune_epochs:
        if s.objective != "single":
            raise UserError("search.finetune_epochs: the fine-tuned row follows the single "
                            "objective's winner; set it to null with search.objective: multi")
    backend.check(cfg)
    fn = cfg.train.function
    if fn is not None:
        check_function(fn)
        if not backend.in_process and not importable(fn):
            raise UserError(f"train.function: {fn} was given in Python and cannot be imported "
                            f"by the {backend.name} backend's trial processes; define it at "
                            f"module level in an importable module")
    model = python_model(cfg.space)
    if model is not None and not backend.in_process and not importable(model):
        raise UserError(f"model: {model} was given in Python and cannot be imported by the "
                        f"{backend.name} backend's trial processes; define it at module level "
                        f"in an importable module (not in a script's __main__ or inside a "
                        f"function)")


def python_model(space: str) -> str | None:
    """The path of a graph space's model factory when it was given in Python (registered in
    this process: ``nas_prune.search(model=...)``), else None."""
    _, raw = space_source(space)
    args = raw.get("args") if raw.get("family") == "graph" else None
    model = args.get("model") if isinstance(args, dict) else None
    return model if isinstance(model, str) and registered(model) is not None else None


def _check_trial_count(cfg: Config, methods: list[str]) -> None:
    n_base = len({m for m in methods if m != UNIFORM}) + 1
    if cfg.search.n_trials < n_base:
        raise UserError(f"search.n_trials: {cfg.search.n_trials} is fewer than the {n_base} "
                        f"seed/uniform trials that go first; raise it")



def _proposal_spec(space: SearchSpace, run: ProposalRun, base_flops: int):
    prov = {**run.proposal.provenance(), "base_flops": base_flops,
            "base_source": run.base_source, "base_trainer": run.base_trainer,
            "base_train_s": round(run.base_train_s, 3),
            "propose_s": round(run.propose_s, 3), "base_metrics": run.base_metrics}
    return space.spec(run.proposal.widths, provenance=prov)


def uses_data(cfg: Config) -> bool:
    """Whether the search loads ``cfg.data``: not on a results table, nor with the user's
    training function (its data are its own) unless a seed method needs a base network (its
    proposal looks at the data: sensitivity, activations, gates; slimming's base trains on
    them)."""
    if table_path(cfg.train.source) is not None:
        return False
    if cfg.train.function is None:
        return True
    return any(SEED_METHODS[m].needs_base for m in parse_methods(cfg.seed_method.name))


def check_inputs(cfg: Config) -> None:
    """The space, the budget, the data set and a base checkpoint, before anything is written
    (the data set stays cached for the proposals)."""
    _, _, space = resolve_space(cfg)
    check_budget(space, cfg.seed_method.budget, cfg.seed_method.metric)
    check_base_score(cfg, space)
    wide = space.widened_groups()
    if cfg.search.finetune_epochs and wide:
        raise UserError(f"search.finetune_epochs: space {space.name} widens {', '.join(wide)} "
                        f"above the base (max_multiplier), and the fine-tuned row cuts its "
                        f"winner from the base network; set it to null or keep the bounds within "
                        f"the base")
    ckpt = cfg.seed_method.base_checkpoint
    if ckpt and not Path(ckpt).is_file():
        raise UserError(f"seed_method.base_checkpoint: {ckpt}: no such file; check the path")
    if check_table(cfg, space) is None and uses_data(cfg):  # a results table replaces them
        data_for(cfg.data, resolve_device(cfg.device), space.spec(space.base_widths()))


def function_check(cfg: Config, events: SearchEvents) -> dict[str, Any] | None:
    """With ``train.function``: one epoch of it on the space's narrowest network before
    anything else trains (:func:`nas_prune.trainfn.check_on_narrowest`; a failure is a
    one-line UserError), unless ``train.function_check`` is false. Returns what search.json
    records (None without a function)."""
    fn = cfg.train.function
    if fn is None:
        return None
    if not cfg.train.function_check:
        return {"function": fn, "skipped": "train.function_check: false"}
    _, _, space = resolve_space(cfg)
    done = check_on_narrowest(fn, space, seed=cfg.random_seed,
                              device=resolve_device(cfg.device))
    events.message(f"train.function {fn}: checked on the narrowest network (1 epoch): val_acc "
                   f"{done['val_acc']:.4f} in {done['wall_s']:.1f}s")
    return done


def builtin_bases(cfg: Config, methods: list[str]) -> dict[str, str]:
    """Methods whose base network nas-prune's trainer trains although ``train.function`` is
    set (they need a regulariser while it trains) -> why."""
    if cfg.train.function is None or cfg.seed_method.base_checkpoint:
        return {}
    out = {}
    for name in methods:
        cls = SEED_METHODS[name]
        if cls.needs_base and cls.builtin_base:
            out[name] = cls.builtin_base
    return out


def prepare_setup(cfg: Config, methods: list[str], run_dir: Path, events: SearchEvents
                  ) -> tuple[SearchSetup, dict[str, dict[str, Any]]]:
    """Seed proposals and the uniform baseline at the budget; RUN/proposals/*.yaml.

    Base networks are cached in RUN/bases, so a second call (a resumed search that was killed
    while proposing) trains none of them again. Returns the setup and each proposal's channel
    scores (method -> group -> one score per channel of the base network), which screening
    with ``search.screening.score: base`` orders channels by.
    """
    name, raw, space = resolve_space(cfg)
    sm = cfg.seed_method
    target = check_budget(space, sm.budget, sm.metric)
    device = resolve_device(cfg.device)
    # on a results table only methods without a base network run (check_table): no data
    data = data_for(cfg.data, device, space.spec(space.base_widths())) \
        if uses_data(cfg) else None
    ctx = SeedContext(space=space, data=data, train=cfg.train, device=device,
                      seed=cfg.random_seed, samples=sm.samples, metric=sm.metric)
    starts: dict[str, dict[str, int]] = {}
    scores: dict[str, dict[str, Any]] = {}
    base_flops = space.base_cost("flops")
    for method_name, why in builtin_bases(cfg, methods).items():
        events.message(f"train.function {cfg.train.function} does not train the base network "
                       f"of {method_name}: {why}, so nas-prune's trainer trains it with the "
                       f"train.* recipe on data.*")
    for method_name in [m for m in methods if m != UNIFORM] + [UNIFORM]:
        method = get_method(method_name, sm.options.get(method_name))
        run = propose(method, ctx, sm.budget, base_epochs=sm.base_epochs,
                      checkpoint=sm.base_checkpoint, cache_dir=run_dir / BASES,
                      data_cfg=cfg.data)
        starts[method_name] = run.proposal.widths
        scores[method_name] = run.proposal.scores
        _proposal_spec(space, run, base_flops).save(run_dir / PROPOSALS / f"{method_name}.yaml")
        events.proposal(method_name, run, space.cost(run.proposal.widths, sm.metric)
                        / space.base_cost(sm.metric))
    s = cfg.search
    cspace = CandidateSpace(space, starts=starts, objective=s.objective, metric=sm.metric,
                            target=target, tolerance=s.tolerance,
                            multiplier_low=s.multiplier_low, multiplier_high=s.multiplier_high,
                            source={"name": name, "data": raw},
                            latency=asdict(cfg.latency) if sm.metric == "latency" else None)
    return SearchSetup(cfg=cfg, cspace=cspace, methods=list(methods)), scores


def _differs(old: Any, new: Any, prefix: str = "", skip: tuple[str, ...] = RESUMABLE
             ) -> str | None:
    """The first config key (dotted) whose value differs, skipping the keys in ``skip``."""
    if prefix and any(prefix == k or prefix.startswith(k + ".") for k in skip):
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = _differs(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key,
                             skip)
            if found:
                return found
        return None
    return prefix if old != new else None


def _value(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def resumed_setup(stored: SearchSetup, cfg: Config, *,
                  fixed: dict[str, str] | None = None) -> SearchSetup:
    """The stored search with the new config, if the new config does not change the search.

    ``fixed``: resumable keys the backend cannot change after all -> the error's explanation.
    """
    old, new = to_dict(stored.cfg), to_dict(cfg)
    for key, why in (fixed or {}).items():
        if _value(old, key) != _value(new, key):
            raise UserError(f"{key}: {why}")
    key = _differs(old, new)
    if key is not None:
        raise UserError(f"--resume: {key} differs from the run being resumed; resume with the "
                        f"run's own config (RUN/config.yaml) or start a new --run-dir")
    return replace(stored, cfg=cfg)


def search_info(setup: SearchSetup, *, command: str, location: Location,
                previous: dict[str, Any] | None) -> dict[str, Any]:
    """RUN/search.json: what ran, on what, where its trials live (storage password masked)."""
    cfg, cspace = setup.cfg, setup.cspace
    info = {
        "command": command, "backend": cfg.search.backend, "space": cspace.space.name,
        "seed_methods": list(setup.methods), "budget": cfg.seed_method.budget,
        "metric": cspace.metric, "base_flops": setup.base_flops,
        "base_params": setup.base_params, "target_cost": cspace.target,
        "tolerance": cspace.tolerance, "objective": cspace.objective,
        "sampler": effective_sampler(cfg.search.sampler, cspace.objective),
        "early_stopping": effective_early_stopping(cfg.search.early_stopping, cspace.objective),
        "n_trials": cfg.search.n_trials,
        "started": (previous or {}).get("started") or now(), "finished": None,
        "resumed": list((previous or {}).get("resumed") or []),
        "hardware": hardware(resolve_device(cfg.device)), "versions": code_version(),
        "study_name": location.study_name, "storage": mask_url(location.storage),
    }
    if previous is not None:
        info["resumed"].append(now())
    return info


# ---- the search ----------------------------------------------------------------------------
def run_search(cfg: Config, *, run_dir: str | Path | None = None, resume: bool = False,
               command: str = "", events: SearchEvents | None = None,
               final: bool = True) -> SearchResult:
    """Propose, search, retrain and export; see the module docstring.

    ``final=False`` stops after the trials (no final retraining, final.json, best.yaml or
    best.pt; the best is the search's by validation accuracy), for a caller that evaluates
    several searches together (``nas-prune compare``).
    """
    events = events or SearchEvents()
    run_dir = Path(run_dir or cfg.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir}: is a file, not a directory; choose another "
                        f"--run-dir")
    previous = None
    if resume:
        require_run_dir(run_dir)
        previous = read_json(run_dir / SEARCH_JSON)
        read_json(run_dir / SETUP_JSON)  # a damaged record is an error, not a fresh start
    check_search_config(cfg)
    backend = get_backend(cfg.search.backend)
    methods = parse_methods(cfg.seed_method.name)
    where = backend.location(cfg, run_dir)
    stored = backend.stored(cfg, run_dir)
    if stored is not None:
        if not resume:
            raise UserError(f"run directory {run_dir}: {where.label} already exists; pass "
                            f"--resume to continue it, or choose another --run-dir")
        setup = resumed_setup(stored, cfg, fixed=backend.fixed_on_resume)
        checked = function_check(cfg, events)
    else:
        _check_trial_count(cfg, methods)
        if resume:
            held = read_records(run_dir)
            if held:  # trials ran, and their study is gone: never start over quietly
                raise UserError(f"--resume: {run_dir / TRIALS_JSONL} holds {len(held)} trial(s) "
                                f"but there is no {where.label}; restore it (or pass the "
                                f"--storage that holds it), or start a new --run-dir")
            events.message(f"--resume: no {where.label} yet; starting it from what {run_dir} "
                           f"holds")
            previous = None
        check_inputs(cfg)  # nothing is written for a search that cannot start
        checked = function_check(cfg, events)  # before any base network or trial trains
        if cfg.search.screening.population and cfg.search.screening.score == "shared":
            check_shared_checkpoint(cfg, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_YAML)  # a run directory from the first moment
        setup, scores = prepare_setup(cfg, methods, run_dir, events)
        if cfg.search.screening.population:
            chosen, _ = run_screening(setup, run_dir, say=events.message, importance=scores)
            setup = replace(setup, screened=chosen)
    _start(setup, run_dir, command=command, location=where, previous=previous,
           function_check=checked)
    records = backend.run(setup, run_dir, resume=stored is not None, events=events)
    write_records(run_dir, records)
    paths = [run_dir / CONFIG_YAML, run_dir / SEARCH_JSON, run_dir / TRIALS_CSV,
             run_dir / TRIALS_JSONL]
    prov = {"backend": backend.name, "study_name": where.study_name,
            "storage": mask_url(where.storage), "run_dir": str(run_dir.resolve())}
    table, written = None, []
    if final:
        table, written = finalize(setup, records, run_dir, provenance=prov,
                                  on_result=events.final)
    paths += written + sorted((run_dir / PROPOSALS).glob("*.yaml"))
    info = read_json(run_dir / SEARCH_JSON) or {}
    source = table_path(setup.cfg.train.source)
    fn = setup.cfg.train.function
    data = {"table": str(source)} if source else {"train_function": fn} if fn else \
        data_for(setup.cfg.data, resolve_device(setup.cfg.device),
                 setup.space.spec(setup.space.base_widths())).provenance()
    info.update({"finished": now(), "state_counts": state_counts(records), "data": data,
                 "fidelity": fidelity_summary(setup.rungs(), setup.cfg.search.reduction_factor,
                                              records)})
    if setup.screened:
        corr = correlation(setup.screened, records)
        info["screening"] = {**(read_json(run_dir / ONESHOT_DIR / "screening.json") or {}),
                             "correlation": corr}
        events.message(f"screening ({setup.cfg.search.screening.score}) vs top-rung "
                       f"validation accuracy: Spearman "
                       f"{_fmt(corr['spearman'])}, Kendall {_fmt(corr['kendall'])} "
                       f"(n = {corr['n']}: {corr['by_pick']['top']['n']} promoted, "
                       f"{corr['by_pick']['random']['n']} random)")
    write_json(run_dir / SEARCH_JSON, info)
    best, _ = best_from_final(setup, records, table) or choose_best(setup, records)
    return SearchResult(run_dir, setup, records, best, table, paths)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f}"


def _start(setup: SearchSetup, run_dir: Path, *, command: str, location: Location,
           previous: dict[str, Any] | None, function_check: dict[str, Any] | None) -> None:
    save_config(setup.cfg, run_dir / CONFIG_YAML)
    write_json(run_dir / SETUP_JSON, setup.to_dict())
    info = search_info(setup, command=command, location=location, previous=previous)
    if function_check is not None:
        info["function_check"] = function_check
    write_json(run_dir / SEARCH_JSON, info)


# ---- reading a run back --------------------------------------------------------------------
def _load(run_dir: Path, storage: str | None
          ) -> tuple[dict[str, Any], SearchSetup, list[TrialRecord], str]:
    require_run_dir(run_dir, flag="run directory")
    info = read_json(run_dir / SEARCH_JSON)
    stored = read_json(run_dir / SETUP_JSON)
    if info is None or stored is None:
        missing = SEARCH_JSON if info is None else SETUP_JSON
        raise UserError(f"{run_dir}: no {missing}; the search stopped before its first trial "
                        f"(continue it with 'nas-prune search --resume --run-dir {run_dir}')")
    backend = get_backend(str(info.get("backend") or SearchConfig().backend))
    setup, records, source = backend.load(run_dir, info, storage=storage)
    return info, setup, records, source


def load_run(run_dir: str | Path, *, storage: str | None = None
             ) -> tuple[dict[str, Any], SearchSetup, list[TrialRecord]]:
    """(search.json, setup, records) of a run directory, read through its backend.

    A missing or damaged record (search.json, setup.json, the backend's trials) is a
    one-line :class:`UserError` naming it.
    """
    info, setup, records, _ = _load(Path(run_dir), storage)
    return info, setup, records


def export_run(run_dir: str | Path, *, top: int | None = None, pareto: bool = False,
               onnx: bool = False, storage: str | None = None) -> dict[str, Any]:
    """Rewrite trials.csv/.jsonl and best.yaml (plus top-K / Pareto YAMLs, ONNX) from the
    records alone: works for an interrupted study, and never trains.

    Returns the records, the best one and its rule, the paths written, whether final.json has
    test results for the best, the state counts and ``source``: where the records were read
    from (the backend's study or result files), in words.
    """
    run_dir = Path(run_dir)
    info, setup, records, source = _load(run_dir, storage)
    paths = list(write_records(run_dir, records))
    final = read_json(run_dir / FINAL_JSON)
    best, rule = best_from_final(setup, records, final) or choose_best(setup, records)
    final_row = None
    if final is not None and best is not None:
        final_row = next((r for r in final.get("rows", []) if r.get("name") == "best"
                          and r.get("widths") == best.widths), None)
    weights_match = final_row is not None and (run_dir / BEST_PT).is_file()
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
            "final_matches": final_row is not None, "counts": state_counts(records),
            "source": source}


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
    model = load_weights(spec.build(), run_dir / BEST_PT)
    return export_onnx(model, spec, run_dir / "best.onnx")
