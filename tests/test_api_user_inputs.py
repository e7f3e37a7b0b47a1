"""Your model and your data from Python (``nas_prune.search(model=..., data=...)``) and the
``tensors`` data source behind them: a model factory searched and rebuilt from the run
directory's space.yaml, Datasets and DataLoaders read into one tensors file, one-line errors for
bad items and bad files, deterministic splits, and the same records from the API and the CLI."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nas_prune
from nas_prune import tensordata
from nas_prune.cli import main
from nas_prune.config import Config, load_config
from nas_prune.data import DataConfig, load_data
from nas_prune.errors import UserError
from nas_prune.scratch import resolve_space
from nas_prune.widths import SearchSpace
from tests.conftest import tiny_data_config
from tests.test_api import _final, _overrides, _trials

pytestmark = pytest.mark.timeout(60)


def tiny_cnn(width: int = 8, num_classes: int = 10) -> nn.Module:
    """A plain CNN; the space adapts its first conv to the data's channels and its last
    linear to the classes."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


@pytest.fixture(scope="module")
def images() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """300 training and 100 test images, 1 x 12 x 12, 4 classes (synthetic, normalised)."""
    d = load_data(tiny_data_config(val_size=0, synthetic_train=300, synthetic_test=100))
    return {"train": (d.train.x, d.train.y), "test": (d.test.x, d.test.y)}


def _datasets(images) -> dict[str, TensorDataset]:
    return {k: TensorDataset(*v) for k, v in images.items()}


def _search_overrides(tmp_path: Path, **more) -> list[str]:
    """The tiny search of test_api, 2 trials and one final seed, on the user's data."""
    return _overrides(tmp_path, **{"search.n_trials": 2, "search.final_seeds": 1,
                                   "data.val_size": 60, **more})


def test_a_model_given_in_python_is_searched_and_its_space_rebuilds_the_winner(tmp_path,
                                                                                images):
    run = nas_prune.search(overrides=_search_overrides(tmp_path), model=tiny_cnn,
                           model_kwargs={"width": 8}, space_options={"divisor": 2},
                           data=_datasets(images), run_dir=tmp_path / "run", report=False)
    space_file = tmp_path / "run" / "space.yaml"
    cfg = load_config(tmp_path / "run" / "config.yaml")
    assert cfg.space == str(space_file) and cfg.data.name == "tensors"
    assert Path(cfg.data.root).parent == tmp_path / "run" / "data"
    assert all(r.state == "COMPLETE" for r in run.records) and len(run.records) == 2
    assert run.rows and run.winner.family_args["model"] == f"{__name__}:tiny_cnn"
    _, raw, space = resolve_space(cfg)  # the space.yaml, its input from the data
    assert raw["input"] == {"channels": 1, "size": 12, "classes": 4}
    rebuilt = space.spec(run.winner.widths).build().state_dict()
    built = run.build().state_dict()
    assert rebuilt.keys() == built.keys()
    assert all(rebuilt[k].shape == built[k].shape for k in built)
    assert built["0.weight"].shape[1] == 1 and built["8.weight"].shape[0] == 4

def test_the_commands_rebuild_a_python_given_model_by_its_import_path(tmp_path, monkeypatch):
    from nas_prune import _callables
    from nas_prune.families import graph

    space = nas_prune.api.model_space(tiny_cnn, {"width": 4}, {"divisor": 2, "input": {
        "channels": 1, "size": 12, "classes": 4}})
    spec = SearchSpace.from_dict(space, name="space")
    spec.spec({g: lo for g, (lo, _) in spec.bounds.items()}).save(tmp_path / "arch.yaml")
    monkeypatch.setattr(_callables, "_REGISTERED", {})  # as in a new process
    graph._analysis.cache_clear()
    assert main(["build", str(tmp_path / "arch.yaml")]) == 0


def test_datasets_and_dataloaders_give_one_file_and_the_same_splits(tmp_path, images):
    ds = _datasets(images)
    loaders = {k: DataLoader(v, batch_size=64) for k, v in ds.items()}
    a, b = tensordata.from_datasets(ds), tensordata.from_datasets(loaders)
    assert a.content_hash() == b.content_hash() and a.shape == (1, 12, 4)
    sizes = []
    for name, t in (("a", a), ("b", b)):
        path = tensordata.save(t, tmp_path / f"{name}.pt")
        d = load_data(DataConfig(name="tensors", root=str(path), val_size=60))
        sizes.append(d.provenance()["sizes"])
        assert d.provenance()["source"]["sha256"] == tensordata.file_sha256(path)
    assert sizes[0] == sizes[1] == {"train": 240, "val": 60, "test": 100}
    # no test split: data.test_size (20%) is held out first, then validation
    only_train = tensordata.save(tensordata.from_datasets({"train": ds["train"]}),
                                 tmp_path / "train.pt")
    d = load_data(DataConfig(name="tensors", root=str(only_train), val_size=60))
    assert d.provenance()["sizes"] == {"train": 180, "val": 60, "test": 60}


def test_the_tensors_source_splits_deterministically(tmp_path, images):
    path = tensordata.save(tensordata.from_datasets(_datasets(images)), tmp_path / "d.pt")
    cfg = DataConfig(name="tensors", root=str(path), val_size=60)
    a, b = load_data(cfg), load_data(cfg)
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, s).x, getattr(b, s).x)
        assert torch.equal(getattr(a, s).y, getattr(b, s).y)
    other = load_data(DataConfig(name="tensors", root=str(path), val_size=60, split_seed=1))
    assert not torch.equal(other.val.y, a.val.y)
    assert torch.equal(a.test.x, images["test"][0])  # the file's own test split, untouched
    # normalised with the training split's statistics; crop and flip as the decoded sets
    x = a.train.images(slice(None))
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2
    assert (a.crop_padding, a.hflip) == (1, True)
    plain = load_data(DataConfig(name="tensors", root=str(path), val_size=60, augment=False))
    assert (plain.crop_padding, plain.hflip) == (0, False)
    with pytest.raises(UserError, match="has its own test split; remove data.test_size"):
        load_data(DataConfig(name="tensors", root=str(path), val_size=60, test_size=10))
    with pytest.raises(UserError, match=r"0\.00 GB of float32 images, over the memory limit "
                                        r".*data\.memory_limit_gb"):
        load_data(DataConfig(name="tensors", root=str(path), val_size=60,
                             memory_limit_gb=1e-6))


def _bad(images, kind: str):
    x, y = images["train"]
    if kind == "float label":
        return {"train": TensorDataset(x, y.float())}
    if kind == "channels":
        return {"train": TensorDataset(x.expand(-1, 3, -1, -1), y)}
    return {"train": [(x[0].tolist(), 1)]}


@pytest.mark.parametrize("kind, message", [
    ("float label", r"data\['train'\]\[0\]: the label is a float32 tensor of shape \[\]; "
                    r"labels must be integer class indices"),
    ("channels", r"data\['train'\]\[0\]: the image is 3x12x12 but search space tiny_search takes "
                 r"1x12x12"),
    ("not a tensor", r"data\['train'\]\[0\]: the image is a list of 1, not a tensor"),
])
def test_bad_items_are_one_line_errors_naming_what_was_found(tmp_path, images, no_training,
                                                             kind, message):
    with pytest.raises(UserError, match=message) as err:
        nas_prune.search(overrides=_search_overrides(tmp_path), data=_bad(images, kind),
                         run_dir=tmp_path / "run", report=False)
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"not a torch file", "cannot be read as a tensors file"),
    ({"train": {"x": torch.zeros(4, 1, 12, 12, dtype=torch.uint8),
                "y": torch.zeros(4, dtype=torch.int64)}},
     r"train\.x: a uint8 tensor of shape \[4, 1, 12, 12\]; give float32 images"),
    ({"train": {"x": torch.zeros(4, 1, 12, 12), "y": torch.zeros(4)}},
     r"train\.y: a float32 tensor of shape \[4\]; give int64 labels"),
    ({"train": {"x": torch.zeros(4, 1, 12, 12), "y": torch.zeros(4, dtype=torch.int64)},
      "extra": 1}, "unknown key 'extra'"),
    ({"test": {"x": torch.zeros(4, 1, 12, 12), "y": torch.zeros(4, dtype=torch.int64)}},
     "no 'train' split"),
])
def test_a_bad_tensors_file_from_a_config_is_one_line(tmp_path, capsys, no_training, content,
                                                       message):
    path = tmp_path / "data.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    args = ["search", "--device", "cpu", "--run-dir", str(tmp_path / "run"), "--set",
            f"space={tmp_path / 'unused'}", "--set", "data.name=tensors", "--set",
            f"data.root={path}"]
    from nas_prune._yaml import write_yaml
    from tests.conftest import TINY_VGG

    write_yaml(tmp_path / "unused", TINY_VGG)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"nas-prune: error: data.root: {path}") and re.search(message, err), err


def test_the_api_and_the_cli_on_a_tensors_config_write_the_same_records(tmp_path, images,
                                                                         monkeypatch):
    monkeypatch.setattr(nas_prune.api, "_report", lambda run_dir: None)
    api_dir, cli_dir = tmp_path / "api", tmp_path / "cli"
    over = _search_overrides(tmp_path)
    run = nas_prune.search(overrides=over, data=_datasets(images), run_dir=api_dir)
    data_file = run.config.data.root
    assert Path(data_file).is_file() and run.config.data.name == "tensors"
    sets = [x for o in [*over, "data.name=tensors", f"data.root={data_file}",
                        f"run_dir={cli_dir}"] for x in ("--set", o)]
    assert main(["search", *sets]) == 0
    cfg_cli, cfg_api = load_config(cli_dir / "config.yaml"), load_config(api_dir / "config.yaml")
    assert cfg_api == Config(**{**cfg_cli.__dict__, "run_dir": str(api_dir)})
    assert _trials(api_dir) == _trials(cli_dir) and _final(api_dir) == _final(cli_dir)
    # a second call with the same data reuses the file (--resume reads the same one)
    again = nas_prune.search(overrides=over, data=_datasets(images), run_dir=api_dir,
                             resume=True)
    assert again.config.data.root == data_file
    assert sorted(p.name for p in (api_dir / "data").iterdir()) == [Path(data_file).name]


def _local_factory():
    def make(num_classes: int = 10) -> nn.Module:
        return tiny_cnn(num_classes=num_classes)
    return make


@pytest.mark.parametrize("model, extra, message", [
    (lambda: tiny_cnn(), [], "model: a lambda has no name to record in the search space"),
    (functools.partial(tiny_cnn, width=4), [], "model: a partial has no name to record"),
    (_local_factory(), ["search.backend=ray"],
     r"model: .*<locals>\.make was given in Python and cannot be imported by the ray "
     r"backend's trial processes"),
    (tiny_cnn, ["search.backend=ray"], None),  # importable: the ray backend may import it
])
def test_model_factories_that_cannot_be_recorded_are_refused(tmp_path, images, no_training,
                                                             monkeypatch, model, extra, message):
    from nas_prune.search import run as search_run

    if message is None:  # stop right after the check under test
        def stop(cfg):
            raise UserError("checked")
        monkeypatch.setattr(search_run, "check_inputs", stop)
        message = "checked"
    with pytest.raises(UserError, match=message) as err:
        nas_prune.search(overrides=[*_search_overrides(tmp_path), *extra], model=model,
                         space_options={"divisor": 2}, run_dir=tmp_path / "run",
                         report=False)
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_propose_and_compare_take_a_model_and_data(tmp_path, images):
    from tests.test_api import fake_fit

    over = [*_search_overrides(tmp_path), f"run_dir={tmp_path / 'p'}"]
    res = nas_prune.propose(overrides=over, model=tiny_cnn, space_options={"divisor": 2},
                            data=_datasets(images))
    assert res.spec.family_args["model"] == f"{__name__}:tiny_cnn"
    assert res.path.parent == tmp_path / "p" / "proposals" and res.spec.input.classes == 4
    assert (tmp_path / "p" / "space.yaml").is_file()
    assert len(list((tmp_path / "p" / "data").glob("user-*.pt"))) == 1
    cmp = nas_prune.compare(overrides=_search_overrides(tmp_path), train_fn=fake_fit,
                            model=tiny_cnn, space_options={"divisor": 2},
                            data=_datasets(images), arms=["seeds", "random"],
                            run_dir=tmp_path / "cmp")
    assert cmp.config.space == str(tmp_path / "cmp" / "space.yaml")
    assert cmp.config.data.name == "tensors" and set(cmp.results[0]["arms"]) == {"seeds",
                                                                                 "random"}


def test_model_options_without_a_model_are_refused():
    with pytest.raises(UserError, match="model_kwargs: given without model="):
        nas_prune.search(model_kwargs={"width": 4})
    with pytest.raises(UserError, match="space_options: unknown key 'divsor'"):
        nas_prune.api.model_space(tiny_cnn, None, {"divsor": 2})
    with pytest.raises(UserError, match="data: a TensorDataset; give a dict"):
        nas_prune.search(data=TensorDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2).long()))


class _SizedStream(torch.utils.data.IterableDataset):
    """An iterable data set that also has a length (a common pattern): read by iterating."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __iter__(self):
        yield from zip(self.x, self.y.tolist(), strict=True)


def test_an_iterable_dataset_with_a_length_is_read_and_a_mapping_is_refused(images):
    x, y = images["train"]
    read = tensordata.from_datasets({"train": _SizedStream(x[:20], y[:20])})
    again = tensordata.from_datasets({"train": TensorDataset(x[:20], y[:20])})
    assert torch.equal(read.parts["train"][0], again.parts["train"][0])
    with pytest.raises(UserError, match=r"data\['train'\]: a dict; give a torch Dataset") as err:
        tensordata.from_datasets({"train": {"x": x, "y": y}})
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("command", ["propose", "compare"])
def test_propose_and_compare_leave_nothing_when_they_cannot_start(tmp_path, images, no_training,
                                                                  command):
    folder = tmp_path / command
    over = [*_search_overrides(tmp_path, **{"seed_method.budget": 0.0001}),
            f"run_dir={folder}"]
    kwargs = {"run_dir": folder} if command == "compare" else {}
    with pytest.raises(UserError, match="below the smallest network"):
        getattr(nas_prune, command)(overrides=over, model=tiny_cnn,
                                    space_options={"divisor": 2}, data=_datasets(images),
                                    **kwargs)
    assert not folder.exists()


def test_a_tensors_file_rewritten_in_place_keys_another_base_network(tmp_path, images):
    from nas_prune.config import TrainConfig
    from nas_prune.seeds import get_method
    from nas_prune.seeds._basenet import base_cache_key

    path = tmp_path / "mine.pt"
    x, y = images["train"]
    cfg = DataConfig(name="tensors", root=str(path), val_size=0)
    space = SearchSpace.load("vgg_small_fmnist")
    keys = []
    for n in (40, 50):
        tensordata.save(tensordata.from_datasets({"train": TensorDataset(x[:n], y[:n])}), path)
        keys.append(base_cache_key(get_method("l1norm"), space, cfg, TrainConfig(), 1, 0))
    assert keys[0] != keys[1]
