"""The Python API: ``nas_prune.search``, ``nas_prune.propose`` and ``nas_prune.compare``.

Each takes what the matching command takes, as Python values::

    import nas_prune

    run = nas_prune.search("default", overrides={"search.n_trials": 8, "device": "cpu"},
                           train_fn=fit)          # optional: your training loop
    run.rows                                       # the final table (mean, std, n, per seed)
    run.winner                                     # the winner's ArchSpec
    model = run.build()                            # its nn.Module, with best.pt's weights

* ``config``: a :class:`~nas_prune.config.Config`, a config YAML path or a name in
  ``configs/`` (None: the default config);
* ``overrides``: dotted keys as ``--set`` takes them, ``{"search.n_trials": 8}`` (or a list
  of ``"key=value"`` strings);
* ``train_fn``: a function of the :mod:`nas_prune.trainfn` protocol; the config records its
  ``module:qualname`` as ``train.function``;
* ``model``: a function (or class) that returns your full-width ``nn.Module``, called with
  ``model_kwargs``: the search space is its graph (``family: graph``), written to
  ``RUN_DIR/space.yaml`` with ``space_options`` (``divisor``, ``min_width``, ``fixed``,
  ``max_multiplier``, ``input``...), and the config's ``space`` points at that file;
* ``data``: your data, ``{"train": ..., "val": ..., "test": ...}`` (val and test optional) of
  torch ``Dataset``s or ``DataLoader``s of (image, label): read once into
  ``RUN_DIR/data/user-HASH.pt`` (:mod:`nas_prune.tensordata`), and the config's data become
  ``data.name: tensors``, ``data.root: that file``.

They write the same run directory as the commands (the commands call them) and raise
:class:`~nas_prune.errors.UserError` for bad input; progress goes to ``events`` (a
:class:`nas_prune.search.SearchEvents`; silent by default).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import check_output
from ._yaml import read_yaml, write_yaml
from .config import Config, deep_merge, from_dict, load_config, parse_set, to_dict
from .errors import UserError
from .rundir import BEST_PT, TrialRecord
from .search import SearchEvents
from .search import run_search as _run_search
from .seeds import ProposalRun
from .train import resolve_device
from .trainfn import register
from .widths import FROM_DATA, ArchSpec, SearchSpace, load_spec, space_source

__all__ = ["CompareRun", "ProposalResult", "SearchRun", "compare", "model_space",
           "next_free_run_dir", "propose", "resolve", "search"]

Overrides = Mapping[str, Any] | Sequence[str] | None
UserData = Mapping[str, Any] | None

#: Keys of ``space_options``: the search space's own keys (``fixed``: ``args.fixed``).
SPACE_OPTIONS = ("divisor", "divisors", "min_width", "max_multiplier", "bounds", "fixed", "input")
SPACE_YAML = "space.yaml"


# ---- the config ----------------------------------------------------------------------------
def _nest(overrides: Overrides) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        out: dict[str, Any] = {}
        for key, value in overrides.items():
            node = out
            parts = str(key).split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
                if not isinstance(node, dict):
                    raise UserError(f"overrides: {key}: {p} is set twice")
            node[parts[-1]] = to_dict(value)
        return out
    if isinstance(overrides, str):
        raise UserError(f"overrides: {overrides!r}; give a mapping {{'search.n_trials': 8}} or "
                        f"a list of 'key=value' strings")
    return parse_set(list(overrides))


def resolve(config: Config | str | Path | None = None, overrides: Overrides = None, *,
            train_fn: Callable[..., Any] | None = None) -> Config:
    """The validated config: ``config`` <- ``overrides`` <- ``train_fn``; its device present
    on this machine."""
    extra = _nest(overrides)
    if train_fn is not None:
        extra = deep_merge(extra, {"train": {"function": register(train_fn)}})
    if isinstance(config, Config):
        cfg = from_dict(Config, deep_merge(to_dict(config), extra)) if extra else config
    else:
        cfg = load_config(config, **extra)
    resolve_device(cfg.device)
    return cfg


# ---- your model and your data ----------------------------------------------------------------
def model_space(model: Callable[..., Any], model_kwargs: Mapping[str, Any] | None = None,
                space_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The search space of a model factory given in Python: ``family: graph`` with the factory
    registered under its ``module:qualname``, input from the data unless ``space_options``
    gives one, divisor 8 (and min_width 8) as the shipped graph spaces unless given."""
    from .families.graph import register_model

    path = register_model(model)
    options = dict(space_options or {})
    unknown = [k for k in options if k not in SPACE_OPTIONS]
    if unknown:
        raise UserError(f"space_options: unknown key {unknown[0]!r}; the keys are "
                        f"{', '.join(SPACE_OPTIONS)}")
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise UserError(f"model_kwargs: a {type(model_kwargs).__name__}; give a dict of the "
                        f"factory's keyword arguments")
    args: dict[str, Any] = {"model": path}
    if model_kwargs:
        args["kwargs"] = dict(model_kwargs)
    fixed = options.pop("fixed", None)
    if fixed is not None:
        args["fixed"] = fixed
    return {"description": f"{path} given to nas_prune in Python (model=)",
            "family": "graph", "args": args, "input": options.pop("input", FROM_DATA),
            "divisor": options.pop("divisor", 8), **options}


class _Written:
    """Files the API writes before a command starts (the space, the data): removed again when
    the command fails before it wrote anything else into its folder, so that nothing is left of
    a search, proposal or comparison that could not start (and nothing that a run's config
    already points at is removed)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.paths = folder, []

    def add(self, path: Path) -> None:
        self.paths.append(path)

    @contextmanager
    def undone_on_failure(self):
        try:
            yield self
        except BaseException:
            self.undo()
            raise

    def undo(self) -> None:
        mine = {p.resolve() for p in self.paths}
        if not self.folder.is_dir() or any(p.resolve() not in mine
                                           for p in self.folder.rglob("*") if not p.is_dir()):
            return
        for path in self.paths:
            path.unlink(missing_ok=True)
            for parent in (path.parent, self.folder):
                if parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()


def _with_model(cfg: Config, folder: Path, space: dict[str, Any], written: _Written) -> Config:
    path = folder / SPACE_YAML
    if not path.is_file():
        written.add(path)
        write_yaml(path, space)
    elif read_yaml(path, what="search space") != space:
        if (folder / "config.yaml").exists():  # a run's space: never replaced under it
            raise UserError(f"model: {path} holds another space (another model, model_kwargs "
                            f"or space_options) of the run in {folder}; pass the same ones to "
                            f"continue it, or another run_dir")
        write_yaml(path, space)
    return dataclasses.replace(cfg, space=str(path))


def _fixed_input(cfg: Config) -> tuple[str, dict[str, int]]:
    """(name, the input keys the config's space fixes: channels, size, classes)."""
    name, raw = space_source(cfg.space)
    inp = raw.get("input")
    if not isinstance(inp, Mapping):
        return name, {}
    return name, {k: v for k, v in inp.items()
                  if k in ("channels", "size", "classes") and isinstance(v, int)}


def _with_data(cfg: Config, folder: Path, data: Any, written: _Written) -> Config:
    from . import tensordata
    from .data import memory_limit

    name, expect = _fixed_input(cfg)
    limit = memory_limit(cfg.data, resolve_device(cfg.device))
    tensors = tensordata.from_datasets(data, expect=expect, space=f"search space {name}",
                                       memory_limit=limit)
    path = folder / "data" / f"user-{tensors.content_hash()[:16]}.pt"
    if not path.is_file():  # the same content is never written twice (--resume reuses it)
        written.add(path)
        tensordata.save(tensors, path)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, name="tensors",
                                                            root=str(path)))


def _user_inputs(cfg: Config, folder: Path, *, model: Callable[..., Any] | None,
                 model_kwargs: Mapping[str, Any] | None,
                 space_options: Mapping[str, Any] | None, data: UserData,
                 written: _Written) -> Config:
    """``cfg`` with its space the graph of ``model`` and its data ``data``, their files written
    in ``folder`` (the run directory)."""
    if model is None:
        for key, value in (("model_kwargs", model_kwargs), ("space_options", space_options)):
            if value is not None:
                raise UserError(f"{key}: given without model=; pass the model factory too (or "
                                f"set the space's keys in its YAML)")
    else:
        cfg = _with_model(cfg, folder, model_space(model, model_kwargs, space_options), written)
    if data is not None:
        cfg = _with_data(cfg, folder, data, written)
    return cfg


# ---- search --------------------------------------------------------------------------------
@dataclass
class SearchRun:
    """What a search wrote, read back: the trials, the final table, the winner."""

    run_dir: Path
    config: Config
    records: list[TrialRecord]
    best: TrialRecord | None
    final: dict[str, Any] | None
    paths: list[Path] = field(default_factory=list)
    report: Path | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The final table's rows (``final.json``): name, widths, FLOPs, test accuracy per seed,
        mean, sample std and n."""
        return list((self.final or {}).get("rows") or [])

    @property
    def comparisons(self) -> list[dict[str, Any]]:
        """The winner minus each baseline, paired by seed, with the 95% interval and verdict."""
        return list((self.final or {}).get("comparisons") or [])

    @property
    def winner(self) -> ArchSpec | None:
        """The winner's architecture (``best.yaml``); None when no trial completed."""
        path = self.run_dir / "best.yaml"
        return load_spec(path) if path.is_file() else None

    def build(self, *, weights: bool = True):
        """The winner's ``nn.Module`` (CPU, fp32), with ``best.pt``'s weights when there are
        (``weights=False``: freshly initialised)."""
        spec = self.winner
        if spec is None:
            raise UserError(f"{self.run_dir}: no best.yaml (no trial completed)")
        model = spec.build()
        if weights and (self.run_dir / BEST_PT).is_file():
            from .export import load_weights

            load_weights(model, self.run_dir / BEST_PT)
        return model


def next_free_run_dir(run_dir: Path) -> Path:
    """``run_dir`` if it holds no search yet, else the first free ``run_dir-2``, ``-3``..."""
    def used(d: Path) -> bool:
        return d.is_dir() and any(d.iterdir())

    if not used(run_dir):
        return run_dir
    n = 2
    while used(run_dir.with_name(f"{run_dir.name}-{n}")):
        n += 1
    return run_dir.with_name(f"{run_dir.name}-{n}")


def search(config: Config | str | Path | None = None, *, overrides: Overrides = None,
           train_fn: Callable[..., Any] | None = None, run_dir: str | Path | None = None,
           resume: bool = False, events: SearchEvents | None = None, report: bool = True,
           command: str = "", model: Callable[..., Any] | None = None,
           model_kwargs: Mapping[str, Any] | None = None,
           space_options: Mapping[str, Any] | None = None, data: UserData = None
           ) -> SearchRun:
    """Propose, search, retrain and export, as ``nas-prune search`` does.

    Without ``run_dir`` the config's ``run_dir`` is used, or, when it holds an earlier search
    (and ``resume`` is off and the study is in the run directory), the first free
    ``run_dir-2``, ``-3``... ``report``: also write ``RUN/report.html`` (a failure to write it
    is a message, the results stay). ``command`` is recorded in ``search.json``. ``model``,
    ``model_kwargs``, ``space_options`` and ``data``: your model and data (module docstring).
    """
    cfg = resolve(config, overrides, train_fn=train_fn)
    events = events or SearchEvents()
    if run_dir is not None:
        cfg = dataclasses.replace(cfg, run_dir=str(run_dir))
    elif not resume and cfg.search.storage is None:
        fresh = next_free_run_dir(Path(cfg.run_dir))
        if fresh != Path(cfg.run_dir):
            events.message(f"{cfg.run_dir} holds an earlier search (continue it with "
                           f"--resume); this one goes to {fresh}")
            cfg = dataclasses.replace(cfg, run_dir=str(fresh))
    with _Written(Path(cfg.run_dir)).undone_on_failure() as written:
        cfg = _user_inputs(cfg, Path(cfg.run_dir), model=model, model_kwargs=model_kwargs,
                           space_options=space_options, data=data, written=written)
        events.message(f"search: space {cfg.space}, seed method(s) {cfg.seed_method.name}, "
                       f"budget {cfg.seed_method.budget} of the base {cfg.seed_method.metric}, "
                       f"backend {cfg.search.backend}, {cfg.search.n_trials} trials, run dir "
                       f"{cfg.run_dir}")
        result = _run_search(cfg, run_dir=cfg.run_dir, resume=resume, command=command,
                             events=events)
    written = None
    if report:
        try:
            written = _report(result.run_dir)
        except Exception as exc:  # the search's results are already on disk
            events.message(f"report: failed ({type(exc).__name__}: {exc}); run 'nas-prune "
                           f"report {result.run_dir}' again later")
    return SearchRun(run_dir=Path(result.run_dir), config=result.setup.cfg,
                     records=result.records, best=result.best, final=result.final,
                     paths=list(result.paths), report=written)


def _report(run_dir: Path) -> Path | None:
    """RUN/report.md and .html (None without the report's optional dependencies)."""
    try:
        from .report import write_report
    except ImportError:
        return None
    return write_report(run_dir)


# ---- propose -------------------------------------------------------------------------------
@dataclass
class ProposalResult:
    """One seed method's proposal: its architecture (written to ``path``), the run behind it
    (where the base network came from, timings) and the space."""

    spec: ArchSpec
    run: ProposalRun
    space: SearchSpace
    config: Config
    path: Path

    @property
    def widths(self) -> dict[str, int]:
        return dict(self.spec.widths)

    def build(self):
        """The proposed architecture's ``nn.Module`` (untrained: candidates train from
        scratch)."""
        return self.spec.build()


def latency_provenance(space: SearchSpace, prop: Any) -> dict[str, Any]:
    """What a proposal under a latency budget measured, for its provenance."""
    lat, d = space.latency, prop.diagnostics["latency"]
    return {"device": lat.info, "predicted_ms": prop.cost / 1e6,
            "base_predicted_ms": space.base_cost("latency") / 1e6, **d}


def propose(config: Config | str | Path | None = None, *, overrides: Overrides = None,
            out: str | Path | None = None, model: Callable[..., Any] | None = None,
            model_kwargs: Mapping[str, Any] | None = None,
            space_options: Mapping[str, Any] | None = None,
            data: UserData = None) -> ProposalResult:
    """One seed method's width vector at the budget, as ``nas-prune propose`` writes it
    (``out``, default ``RUN_DIR/proposals/METHOD-BUDGET.yaml``); the base network is trained
    (with the method's regulariser), taken from ``RUN_DIR/bases`` or loaded from
    ``seed_method.base_checkpoint``. ``model``, ``model_kwargs``, ``space_options``, ``data``:
    your model and data, their files in ``RUN_DIR`` (module docstring)."""

    cfg = resolve(config, overrides)
    with _Written(Path(cfg.run_dir)).undone_on_failure() as written:
        cfg = _user_inputs(cfg, Path(cfg.run_dir), model=model, model_kwargs=model_kwargs,
                           space_options=space_options, data=data, written=written)
        return _propose(cfg, out)


def _propose(cfg: Config, out: str | Path | None) -> ProposalResult:
    from .scratch import data_for, resolve_space
    from .seeds import SEED_METHODS, SeedContext, get_method
    from .seeds import propose as propose_widths

    sm = cfg.seed_method
    if sm.name not in SEED_METHODS:
        raise UserError(f"--seed-method: {sm.name!r} is not one seed method; choose one of "
                        f"{', '.join(SEED_METHODS)} (the search command takes lists and 'all')")
    _, _, space = resolve_space(cfg)
    run_dir = check_output(cfg.run_dir, "run_dir", folder=True)
    path = check_output(out or run_dir / "proposals" / f"{sm.name}-{sm.budget:g}.yaml", "--out",
                   folder=False)
    device = resolve_device(cfg.device)
    data = data_for(cfg.data, device, space.spec(space.base_widths()))
    method = get_method(sm.name, sm.options.get(sm.name))
    ctx = SeedContext(space=space, data=data, train=cfg.train, device=device,
                      seed=cfg.random_seed, samples=sm.samples, metric=sm.metric)
    run = propose_widths(method, ctx, sm.budget, base_epochs=sm.base_epochs,
                         checkpoint=sm.base_checkpoint, cache_dir=run_dir / "bases",
                         data_cfg=cfg.data, progress=None)
    prop = run.proposal
    f0, p0 = space.count(space.base_widths())
    provenance = {
        **prop.provenance(),
        "base": {"source": run.base_source, "trainer": run.base_trainer,
                 "epochs": sm.base_epochs,
                 "checkpoint": sm.base_checkpoint, "metrics": run.base_metrics},
        "base_flops": f0, "base_params": p0,
        "timings_s": {"base_training": round(run.base_train_s, 3),
                      "proposal": round(run.propose_s, 3)},
        "seed": cfg.random_seed, "device": str(device), "config": to_dict(cfg),
    }
    if sm.metric == "latency":  # the prediction the budget used, and the measured ratio
        provenance["latency"] = latency_provenance(space, prop)
    spec = space.spec(prop.widths, provenance=provenance)
    spec.save(path)
    return ProposalResult(spec=spec, run=run, space=space, config=cfg, path=path)


# ---- compare -------------------------------------------------------------------------------
@dataclass
class CompareRun:
    """What ``compare`` wrote: ``compare.json``'s content (per budget: the arms, their compute,
    the joint final table and the paired differences) and the folder."""

    run_dir: Path
    config: Config
    results: list[dict[str, Any]]
    data: dict[str, Any]


def compare(config: Config | str | Path | None = None, *, overrides: Overrides = None,
            train_fn: Callable[..., Any] | None = None,
            budgets: float | Sequence[float] | str | None = None,
            arms: str | Sequence[str] | None = None,
            run_dir: str | Path | None = None, resume: bool = False,
            events: SearchEvents | None = None, command: str = "",
            model: Callable[..., Any] | None = None,
            model_kwargs: Mapping[str, Any] | None = None,
            space_options: Mapping[str, Any] | None = None,
            data: UserData = None) -> CompareRun:
    """The search, its uniform-start control and random search at equal compute, then one
    paired final evaluation, as ``nas-prune compare`` does (``run_dir`` default: the config's
    ``run_dir`` + ``-compare``; ``arms`` default: seeds, uniform, random, and flops under a
    latency or params budget). ``model``, ``model_kwargs``, ``space_options``, ``data``: your
    model and data, their files in ``run_dir`` (module docstring)."""
    from .search.compare import parse_arms, parse_budgets
    from .search.compare import run_compare as _compare

    cfg = resolve(config, overrides, train_fn=train_fn)
    budget_list = parse_budgets(budgets) if budgets is not None else [cfg.seed_method.budget]
    if budgets is not None:
        cfg = dataclasses.replace(cfg, seed_method=dataclasses.replace(
            cfg.seed_method, budget=budget_list[0]))
    arm_list = parse_arms(arms, cfg.seed_method.metric)
    folder = Path(run_dir or f"{cfg.run_dir}-compare")
    events = events or SearchEvents()
    with _Written(folder).undone_on_failure() as written:
        cfg = _user_inputs(cfg, folder, model=model, model_kwargs=model_kwargs,
                           space_options=space_options, data=data, written=written)
        out = _compare(cfg, budgets=budget_list, arms=arm_list, run_dir=folder, resume=resume,
                       command=command, search=_run_search, events=events, log=events.message)
    return CompareRun(run_dir=folder, config=cfg, results=list(out["results"]), data=out)
