"""Commands on single architectures: train, flops, build, spaces."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._yaml import read_yaml
from ..errors import UserError
from ..families import FAMILIES
from ..widths import (
    FROM_DATA,
    ArchSpec,
    SearchSpace,
    available_spaces,
    space_source,
    takes_input_from_data,
)
from ._common import (
    add_config_arguments,
    check_output,
    emit_json,
    human,
    resolve_config,
    table,
)


def load_arch_or_space(path: str, cfg=None) -> tuple[ArchSpec, SearchSpace | None]:
    """An architecture YAML, or a search space (its base widths) by path or name; a space that
    takes its input from the data gets it from ``cfg``'s data set."""
    p = Path(path)
    if p.is_file():
        data = read_yaml(p, what="architecture or space")
        if "widths" in data:
            return ArchSpec.from_dict(data, where=str(p)), None
        name, raw = p.stem, data
    else:
        name, raw = space_source(path)
    if cfg is not None and isinstance(raw, dict) and takes_input_from_data(raw):
        import dataclasses

        from ..scratch import resolve_space

        _, _, space = resolve_space(dataclasses.replace(cfg, space=str(path)))
    else:
        space = SearchSpace.from_dict(raw, name=name)
    return space.spec(space.base_widths(), provenance={"source": f"space {space.name}"}), space


# ---- flops ---------------------------------------------------------------------------------
def add_flops_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", help="architecture YAML, search space YAML, or space name")
    p.add_argument("--json", action="store_true", help="print JSON with keys flops and params")
    p.add_argument("--latency", metavar="BACKEND", help="also measure the latency of one "
                   "forward pass on this backend (torch or onnxruntime; CPU, batch 1, all cores)")
    p.add_argument("--threads", type=int, help="threads for --latency (default: 1, as latency.threads)")
    p.add_argument("--groups", action="store_true", help="also list the width groups (their "
                   "layers) and the layers kept at full width, with why")


def group_rows(family, widths) -> tuple[list[dict], dict[str, str]]:
    """The width groups of ``family`` at ``widths``, and its fixed layers with the reason."""
    rows = [{"group": g.name, "width": int(widths[g.name]), "base": g.base,
             "residual": g.residual, "producers": list(g.convs), "bns": list(g.bns),
             "depthwise": list(g.depthwise), "consumers": list(g.consumers)}
            for g in family.groups()]
    return rows, family.fixed_layers()


def run_flops(args: argparse.Namespace) -> int:
    latency = None
    if args.latency is not None:
        from ..latency import LatencyConfig, check

        if args.threads is not None and not 1 <= args.threads <= 1024:
            raise UserError(f"--threads: {args.threads} is out of range; must be in [1, 1024]")
        latency = LatencyConfig(backend=args.latency, **({"threads": args.threads}
                                                         if args.threads is not None else {}))
        check(latency)
    spec, space = load_arch_or_space(args.arch)
    out = {"flops": spec.flops, "params": spec.params}
    if latency is not None:
        import torch

        from ..latency import device_info, measure

        torch.manual_seed(0)
        m = measure(spec.build(), spec.input, latency)
        out["latency"] = {**m.to_dict(), "device": device_info(latency)}
    if space is not None:
        fmin, pmin = space.count(space.min_widths())
        out.update({"min_flops": fmin, "min_params": pmin})
    if args.groups:
        out["groups"], out["fixed"] = group_rows(spec.family_obj(), spec.widths)
    if args.json:
        emit_json(out)
        return 0
    what = f"space {space.name} (base widths)" if space else args.arch
    print(f"{what}: {spec.family} {spec.family_args}, input {spec.input.to_dict()}")
    print(f"  FLOPs  {spec.flops:,} ({human(spec.flops)} multiply-accumulates, conv + linear, "
          f"one image; papers counting 2 x MAC report twice this)")
    print(f"  params {spec.params:,} ({human(spec.params)})")
    if space is not None:
        print(f"  smallest network in the space: {out['min_flops'] / spec.flops:.2%} of the "
              f"FLOPs, {out['min_params'] / spec.params:.2%} of the params")
    if latency is not None:
        lat, dev = out["latency"], out["latency"]["device"]
        print(f"  latency {lat['median_ms']:.3f} ms median (IQR {lat['iqr_ms']:.3f}, "
              f"{lat['repeats']} runs) on {dev['backend']}, {dev['threads']} thread(s), batch "
              f"{dev['batch_size']}, {dev['cpu']}")
    if args.groups:
        print(f"  {len(out['groups'])} width groups:")
        print(table([(r["group"], r["width"], r["base"], "yes" if r["residual"] else "",
                      _layers(r["producers"]), len(r["depthwise"]) or "",
                      _layers(r["consumers"])) for r in out["groups"]],
                    ["group", "width", "base", "residual", "producers", "depthwise",
                     "consumers"]))
        if out["fixed"]:
            print(f"  {len(out['fixed'])} layer(s) kept at full width:")
            for layer, why in out["fixed"].items():
                print(f"    {layer}: {why}")
    return 0


def _layers(names: list[str], shown: int = 3) -> str:
    more = f" +{len(names) - shown}" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# ---- build ---------------------------------------------------------------------------------
def add_build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", help="architecture YAML")
    p.add_argument("--onnx", metavar="OUT", help="also export the (untrained) model to ONNX")
    p.add_argument("--weights", metavar="PT", help="state dict to load before the ONNX export")


def run_build(args: argparse.Namespace) -> int:
    from ..export import export_onnx, load_weights, onnx_difference

    spec = ArchSpec.load(args.arch)
    if args.onnx:
        check_output(args.onnx, "--onnx", folder=False)
    model = spec.build()
    if args.weights:
        load_weights(model, args.weights)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.arch}: rebuilt {spec.family} with {len(spec.widths)} width groups; "
          f"{spec.flops:,} FLOPs, {n:,} params (recorded: {spec.params:,}) - OK")
    if args.onnx:
        export_onnx(model, spec, args.onnx)
        print(f"wrote {args.onnx}")
        checked = onnx_difference(model, spec, args.onnx)
        if checked is None:
            print("  not checked against PyTorch: onnxruntime is not installed "
                  "(pip install 'nas-prune[onnx]')")
            return 0
        diff, ok = checked
        print(f"  onnxruntime vs PyTorch on 4 random images: max |logit difference| "
              f"{diff:.2e} - {'OK' if ok else 'MISMATCH'}")
        if not ok:
            raise UserError(f"--onnx: {args.onnx} computes other logits than the PyTorch model "
                            f"(max difference {diff:.2e}); report it with the YAML")
    return 0


# ---- spaces --------------------------------------------------------------------------------
def add_spaces_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_spaces(args: argparse.Namespace) -> int:
    rows, out = [], []
    for name in available_spaces():
        _, raw = space_source(name)
        if takes_input_from_data(raw):  # counted once the data set is known
            fam = raw.get("family", "?")
            args_ = ", ".join(f"{k}={v}" for k, v in (raw.get("args") or {}).items())
            rows.append([name, f"{fam}({args_})", "-", raw.get("divisor", 1), "-", "-",
                         f"input {FROM_DATA}"])
            out.append({"name": name, "family": fam, "groups": None, "flops": None,
                        "params": None, "dataset": raw.get("dataset"), "input": raw["input"]})
            continue
        s = SearchSpace.from_dict(raw, name=name)
        f, p = s.count(s.base_widths())
        args_ = ", ".join(f"{k}={v}" for k, v in s.family.arguments().items())
        rows.append([name, f"{s.family.name}({args_})", len(s.group_names), s.divisor,
                     human(f), human(p), s.dataset or "-"])
        out.append({"name": name, "family": s.family.name, "groups": len(s.group_names),
                    "flops": f, "params": p, "dataset": s.dataset,
                    "input": s.family.input_shape.to_dict()})
    if args.json:
        emit_json({"spaces": out, "families": list(FAMILIES)})
        return 0
    print(table(rows, ["space", "family", "groups", "divisor", "FLOPs(MAC)", "params",
                       "dataset"]))
    print(f"\nfamilies: {', '.join(FAMILIES)}")
    print(f"a space with input {FROM_DATA} takes channels, size and classes from the config's "
          f"data set (an image folder, a torchvision data set...); its FLOPs depend on them")
    return 0


# ---- train ---------------------------------------------------------------------------------
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", help="architecture YAML (or a search space: its base widths)")
    add_config_arguments(p)
    p.add_argument("--epochs", type=int, help="epochs (default: train.epochs; scratch-b scales "
                   "them by base/candidate FLOPs when the space is known)")
    p.add_argument("--out", help="output folder (default: next to the YAML, NAME.trained/)")
    p.add_argument("--test", action="store_true", help="also score on the test split")


def run_train(args: argparse.Namespace) -> int:
    from ..scratch import train_spec

    if args.epochs is not None and not 1 <= args.epochs <= 100_000:
        raise UserError(f"--epochs: {args.epochs} is out of range; must be in [1, 100000]")
    cfg = resolve_config(args)
    spec, _ = load_arch_or_space(args.arch, cfg)
    out = check_output(args.out or Path(args.arch).with_suffix(".trained"), "--out", folder=True)
    result, spec_out = train_spec(spec, cfg, epochs=args.epochs, evaluate_test=args.test,
                                  out_dir=out, progress=None)
    if result.status != "ok":
        raise UserError(f"training {args.arch}: {result.status} ({result.reason})")
    print(f"trained {args.arch}: {result.epochs_run} epochs in {result.wall_time:.1f}s "
          f"({result.images_per_s:.0f} images/s); val acc {result.val_acc_final:.4f}"
          + (f", test acc {result.test_acc:.4f}" if result.test_acc is not None else ""))
    print(f"wrote {out / 'model.yaml'} and {out / 'model.pt'}")
    return 0
