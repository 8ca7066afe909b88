"""Synthetic stand-in data and config/smoke-gpu.yaml: the source, the stand-in resolution, and dry
runs of the smoke and paper configs on fixture data roots."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from snakemake.utils import validate
from workflow_utils import snakemake

from landscape.config import (
    ConfigError,
    canonical,
    check_cost,
    check_files,
    check_references,
    checkpoint_epochs,
    normalize_numbers,
    resolve_stand_ins,
    run_spec,
    schema_error,
    split_sizes,
)
from landscape.data import DatasetError, TensorSplit, load_data

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "schemas" / "config.schema.yaml"
SMOKE = REPO / "config" / "smoke-gpu.yaml"
PAPER = REPO / "config" / "paper.yaml"


def _synthetic(**keys) -> dict:
    return {"source": "synthetic", "like": "cifar10", **keys}


# --------------------------------------------------------------------------- the source


def test_synthetic_has_the_shapes_classes_and_sizes_of_the_source_it_imitates():
    c10 = load_data(_synthetic(max_train=40, max_test=30), key="datasets.s")
    assert (c10.num_classes, c10.input_shape, len(c10.train), len(c10.test)) == (
        10,
        (3, 32, 32),
        40,
        30,
    )
    assert isinstance(c10.train, TensorSplit) and c10.train.x.dtype == torch.float32
    assert c10.train.x.shape == (40, 3, 32, 32) and c10.train.y.dtype == torch.int64
    assert split_sizes(_synthetic()) == {"train": 50000, "test": 10000}
    assert split_sizes({"source": "synthetic", "like": "svhn"}) == {"train": 73257, "test": 26032}
    c100 = load_data({"source": "synthetic", "like": "cifar100", "max_train": 300, "max_test": 5})
    assert c100.num_classes == 100 and c100.train.y.max() < 100
    assert len(np.unique(c100.train.labels())) == 100  # class-proportional: 3 of each


def test_synthetic_explicit_layout_and_balanced_labels():
    spec = {"source": "synthetic", "shape": [1, 8, 6], "num_classes": 4, "n_train": 42}
    spec["n_test"] = 9
    data = load_data(spec)
    assert data.input_shape == (1, 8, 6) and data.train.x.shape == (42, 1, 8, 6)
    counts = np.bincount(data.train.labels(), minlength=4)
    assert counts.tolist() == [11, 11, 10, 10]  # i mod 4 over 42 samples
    assert set(data.test.labels().tolist()) <= {0, 1, 2, 3}
    # like fills only what the block leaves out
    assert load_data(_synthetic(n_train=12, n_test=3, num_classes=3)).train.y.max() == 2


def test_synthetic_is_deterministic_and_seeded():
    spec = _synthetic(n_train=64, n_test=16)
    a, b = load_data(spec), load_data(copy.deepcopy(spec))
    for split in ("train", "test"):
        xa, xb = getattr(a, split).x, getattr(b, split).x
        assert xa.numpy().tobytes() == xb.numpy().tobytes()
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)
    other = load_data({**spec, "seed": 1})
    assert not torch.equal(other.train.x, a.train.x)
    # each split has its own stream: more training samples leave the test images as they were
    longer = load_data({**spec, "n_train": 100})
    assert torch.equal(longer.test.x, a.test.x) and torch.equal(longer.test.y, a.test.y)


def test_synthetic_subsets_are_samples_of_the_full_split():
    full = load_data(_synthetic(n_train=200, n_test=10))
    part = load_data(_synthetic(n_train=200, n_test=10, max_train=50, subset_seed=3))
    rows = {full.train.x[i].numpy().tobytes(): int(full.train.y[i]) for i in range(200)}
    assert len(part.train) == 50
    for x, y in zip(part.train.x, part.train.y, strict=True):
        assert rows[x.numpy().tobytes()] == int(y)
    assert np.bincount(part.train.labels(), minlength=10).tolist() == [5] * 10
    kept = load_data(_synthetic(n_train=200, n_test=10, classes=[2, 7]))
    assert set(kept.train.labels().tolist()) == {2, 7} and len(kept.train) == 40
    assert kept.num_classes == 10


def test_synthetic_images_are_normalized_and_the_labels_learnable():
    """A nearest-class-mean classifier fitted on the training split beats chance (0.1) by far on
    the test split, without being perfect: training curves and Hessians are not degenerate (a
    ResNet-8 of width 8 went from 0.27 to 0.41 test accuracy in five epochs of 2,000 images)."""
    data = load_data(_synthetic(n_train=2000, n_test=1000))
    x = data.train.x.double()
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1.0) < 0.05
    flat, y = x.reshape(len(x), -1), data.train.y
    means = torch.stack([flat[y == c].mean(0) for c in range(10)])
    test = data.test.x.double().reshape(len(data.test), -1)
    accuracy = float((torch.cdist(test, means).argmin(1) == data.test.y).double().mean())
    assert 0.4 < accuracy < 0.95
    # the class colours survive global average pooling: a CNN's head sees them from the start
    colours, test_colours = x.mean((2, 3)), data.test.x.double().mean((2, 3))
    means = torch.stack([colours[y == c].mean(0) for c in range(10)])
    accuracy = float((torch.cdist(test_colours, means).argmin(1) == data.test.y).double().mean())
    assert accuracy > 0.3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_synthetic_data_on_cuda_is_the_cpu_data():
    spec = _synthetic(n_train=32, n_test=8)
    cpu, cuda = load_data(spec, "cpu"), load_data(spec, "cuda")
    assert cuda.train.x.device.type == "cuda"
    assert torch.equal(cuda.train.x.cpu(), cpu.train.x)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"source": "synthetic", "like": "mnist"}, "datasets.s.like: 'mnist'"),
        ({"source": "synthetic", "num_classes": 3}, "datasets.s.shape must be three"),
        (
            {"source": "synthetic", "shape": [1, 4, 4], "num_classes": 2, "n_train": 5},
            "datasets.s.n_test is required",
        ),
        (_synthetic(n_train=0), "datasets.s.n_train must be an integer >= 1"),
        (_synthetic(classes=[10]), "datasets.s.classes: class 10 is outside [0, 10)"),
    ],
)
def test_bad_synthetic_blocks_name_the_key(spec, message):
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_data(spec, key="datasets.s")


# --------------------------------------------------------------------------- the stand-in


def _workflow_config(path: Path, **roots: str) -> dict:
    """A config file as the workflow sees it: schema defaults, numbers, stand-ins resolved."""
    config = yaml.safe_load(path.read_text())
    for name, root in roots.items():
        config["datasets"][name]["root"] = root
    validate(config, str(SCHEMA))
    normalize_numbers(config, yaml.safe_load(SCHEMA.read_text()))
    return config


def _cifar10_root(directory: Path) -> Path:
    """The files the CIFAR-10 loader reads (empty: no job reads them in these tests)."""
    folder = directory / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).touch()
    return directory


def test_stand_in_replaces_an_absent_dataset_and_says_so(tmp_path):
    missing = tmp_path / "nowhere"
    config = _workflow_config(SMOKE, c10=str(missing))
    warnings = resolve_stand_ins(config)
    path = missing / "cifar-10-batches-py" / "data_batch_1"
    assert len(warnings) == 1 and "datasets.c10" in warnings[0] and f"'{path}'" in warnings[0]
    assert "SYNTHETIC" in warnings[0]
    dataset = run_spec(config, "rn56_c10")["dataset"]
    assert dataset == {
        "source": "synthetic",
        "like": "cifar10",
        "shape": [3, 32, 32],
        "num_classes": 10,
        "n_train": 50000,
        "n_test": 10000,
        "seed": 0,
        "max_train": 5000,
        "max_test": 1000,
        "subset_seed": 0,
    }
    check_references(config)
    check_files(config)  # no root needed
    check_cost(config)
    data = load_data({**dataset, "max_train": 20, "max_test": 10}, key="datasets.c10")
    assert data.input_shape == (3, 32, 32) and len(data.train) == 20


def test_real_data_replaces_the_stand_in_and_changes_every_spec(tmp_path):
    absent = _workflow_config(SMOKE, c10=str(tmp_path / "c10"))
    resolve_stand_ins(absent)
    root = _cifar10_root(tmp_path / "c10")
    present = _workflow_config(SMOKE, c10=str(root))
    assert resolve_stand_ins(present) == []
    real = run_spec(present, "rn56_c10")["dataset"]
    assert real["source"] == "cifar10" and real["root"] == str(root) and "stand_in" not in real
    for run in present["runs"]:
        assert canonical(run_spec(present, run)) != canonical(run_spec(absent, run))
    # with the data there, `stand_in` itself is no part of the spec: adding it reruns nothing
    plain = copy.deepcopy(present)
    without = yaml.safe_load(SMOKE.read_text())
    without["datasets"]["c10"].pop("stand_in")
    without["datasets"]["c10"]["root"] = str(root)
    validate(without, str(SCHEMA))
    assert canonical(run_spec(without, "rn56_c10")) == canonical(run_spec(plain, "rn56_c10"))


def test_a_missing_file_under_an_existing_root_stands_in_too(tmp_path):
    root = _cifar10_root(tmp_path / "c10")
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    config = _workflow_config(SMOKE, c10=str(root))
    (warning,) = resolve_stand_ins(config)
    assert str(root / "cifar-10-batches-py" / "test_batch") in warning
    assert config["datasets"]["c10"]["source"] == "synthetic"


def test_without_stand_in_a_missing_root_stays_an_error(tmp_path):
    config = yaml.safe_load(SMOKE.read_text())
    config["datasets"]["c10"].pop("stand_in")
    config["datasets"]["c10"]["root"] = str(tmp_path / "nowhere")
    validate(config, str(SCHEMA))
    assert resolve_stand_ins(config) == []
    with pytest.raises(ConfigError, match=r"^datasets\.c10\.root: directory '.*nowhere'"):
        check_files(config)


def test_stand_in_only_for_sources_of_known_shape():
    config = {"datasets": {"cub": {"source": "imagefolder", "root": "/x", "stand_in": "synthetic"}}}
    with pytest.raises(ConfigError, match=r"^datasets\.cub\.stand_in: source 'imagefolder'"):
        resolve_stand_ins(config)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"source": "imagefolder", "stand_in": "synthetic"}, "datasets.d.stand_in: unknown key"),
        ({"source": "cifar10", "stand_in": "real"}, "datasets.d.stand_in: 'real' is not one of"),
        ({"source": "synthetic", "n_train": 4}, "datasets.d: {'source': 'synthetic', 'n_train'"),
        ({"source": "synthetic", "like": "c10"}, "datasets.d.like: 'c10' is not one of"),
        ({"source": "synthetic", "like": "svhn", "shape": [3, 2]}, "datasets.d.shape: [3, 2]"),
        ({"source": "digits", "like": "cifar10"}, "datasets.d.like: unknown key"),
        ({"source": "svhn", "root": "/x", "stand_in": "synthetic"}, None),
        (
            {
                "source": "synthetic",
                "shape": [1, 2, 2],
                "num_classes": 2,
                "n_train": 3,
                "n_test": 1,
            },
            None,
        ),
    ],
)
def test_schema_of_stand_in_and_synthetic_keys(block, message):
    schema = yaml.safe_load(SCHEMA.read_text())
    config = {
        "datasets": {"d": block},
        "models": {"m": {"arch": "mlp"}},
        "runs": {"r": {"dataset": "d", "model": "m"}},
    }
    error = schema_error(config, schema)
    assert error == message if message is None else error.startswith(message), error


def test_smoke_config_is_a_slice_of_the_paper_preset():
    smoke, paper = yaml.safe_load(SMOKE.read_text()), yaml.safe_load(PAPER.read_text())
    assert smoke["device"] == paper["device"] == "auto"
    assert smoke["datasets"]["c10"]["root"] == paper["datasets"]["c10"]["root"]
    models = {m: paper["models"].get(m) for m in ("resnet56_noskip", "vgg16_bn")}
    assert {m: smoke["models"][m] for m in models} == models
    assert smoke["models"]["resnet56"] == {"arch": "resnet", "depth": 56}
    surface = smoke["surfaces"]["gauss_2d"]
    assert surface["x"]["num"] == surface["y"]["num"] == 51
    assert surface.get("bn_mode", "auto") in ("auto", "recompute")
    for name in surface["directions"]:
        assert smoke["directions"][name]["normalization"] == "filter"
    assert smoke["hessian"]["spectrum"] == {"k": 5, "which": ["LA"]}
    for run in smoke["runs"].values():
        train = {k: v for k, v in run["train"].items() if k not in ("epochs", "checkpoints")}
        paper_train = paper["runs"]["rn56ns_c10"]["train"]
        assert train == {k: v for k, v in paper_train.items() if k in train}


# --------------------------------------------------------------------------- dry runs


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def _fixture_root(root: Path, block: dict) -> None:
    """The files and folders the loader of ``block``'s source looks for, empty."""
    source = block["source"]
    if source == "cifar10":
        _cifar10_root(root)
    elif source == "cifar100":
        for name in ("train", "test"):
            _touch(root / "cifar-100-python" / name)
    elif source == "svhn":
        for name in ("train_32x32.mat", "test_32x32.mat"):
            _touch(root / name)
    elif source == "flowers102":
        for name in ("jpg/image_00001.jpg", "imagelabels.mat", "setid.mat"):
            _touch(root / name)
    elif source == "imagefolder":
        for split in ("train", block.get("test_dir", "val")):
            _touch(root / split / "class0" / "0.jpg")


def _config_on_fixtures(path: Path, tmp_path: Path, present: bool = True) -> Path:
    """``path`` with every dataset root and weights file moved under ``tmp_path``."""
    config = yaml.safe_load(path.read_text())
    for name, block in config["datasets"].items():
        block["root"] = str(tmp_path / "data" / name)
        if present:
            _fixture_root(tmp_path / "data" / name, block)
    for name, model in config["models"].items():
        if model.get("weights"):
            model["weights"] = str(tmp_path / "weights" / f"{name}.pth")
            _touch(Path(model["weights"]))
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def _dry_run(workdir: Path, configfile: Path) -> tuple[dict[str, int], str]:
    """Jobs per rule of a dry run from scratch, and its stderr."""
    proc = snakemake(workdir, "-n", "--quiet", "rules", configfile=configfile)
    rows = re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.MULTILINE)
    return {rule: int(count) for rule, count in rows}, proc.stderr


def _smoke_jobs() -> dict[str, int]:
    smoke = yaml.safe_load(SMOKE.read_text())
    runs = len(smoke["runs"])
    return {
        "train_model": runs * 2,  # epochs 0 and final
        "compute_curve": runs,
        "compute_surface_shard": smoke["surface_shards"],
        "merge_surface": 1,
        "compute_spectrum": 1,
        "compute_trace": 1,
        "compute_density": 1,
        "compute_loss_change": 1,
    }


@pytest.mark.workflow
def test_smoke_dry_run_on_synthetic_data_without_the_dataset(tmp_path):
    configfile = _config_on_fixtures(SMOKE, tmp_path, present=False)
    jobs, stderr = _dry_run(tmp_path, configfile)
    assert {rule: jobs.get(rule) for rule in _smoke_jobs()} == _smoke_jobs()
    (line,) = [line for line in stderr.splitlines() if "SYNTHETIC" in line]
    assert line.startswith("WARNING: datasets.c10: ")
    assert str(tmp_path / "data" / "c10" / "cifar-10-batches-py" / "data_batch_1") in line


@pytest.mark.workflow
def test_smoke_dry_run_on_the_real_dataset(tmp_path):
    configfile = _config_on_fixtures(SMOKE, tmp_path)
    jobs, stderr = _dry_run(tmp_path, configfile)
    assert {rule: jobs.get(rule) for rule in _smoke_jobs()} == _smoke_jobs()
    assert "SYNTHETIC" not in stderr


@pytest.mark.workflow
def test_paper_dry_run_on_fixture_data_roots(tmp_path):
    configfile = _config_on_fixtures(PAPER, tmp_path)
    jobs, stderr = _dry_run(tmp_path, configfile)
    paper = yaml.safe_load(PAPER.read_text())
    hessian = len(paper["hessian"]["runs"]) * len(paper["hessian"]["epochs"])
    surfaces = sum(
        len(block["runs"]) * len(block.get("epochs", ["final"]))
        for block in paper["surfaces"].values()
    )
    federated = paper["federated"]
    expected = {
        "train_model": sum(len(checkpoint_epochs(r["train"])) for r in paper["runs"].values()),
        "compute_spectrum": hessian,
        "compute_trace": hessian,
        "compute_density": hessian,
        "compute_surface_shard": surfaces * paper["surface_shards"],
        "merge_surface": surfaces,
        "run_federated": math.prod(
            len(federated[k]) for k in ("datasets", "alphas", "seeds", "algorithms")
        ),
    }
    assert {rule: jobs.get(rule) for rule in expected} == expected
    assert "SYNTHETIC" not in stderr


def test_a_stand_in_augments_as_the_source_it_imitates(tmp_path):
    config = {
        "datasets": {
            "c10": {"source": "cifar10", "root": str(tmp_path), "stand_in": "synthetic"},
            "svhn": {"source": "svhn", "root": str(tmp_path), "stand_in": "synthetic"},
        }
    }
    for block in config["datasets"].values():
        block.update(augment=True, max_train=10, max_test=10)
    assert len(resolve_stand_ins(config)) == 2
    c10 = load_data(config["datasets"]["c10"], key="datasets.c10")
    svhn = load_data(config["datasets"]["svhn"], key="datasets.svhn")
    assert c10.augment is not None and c10.augment.flip and c10.augment.pad == 4
    assert svhn.augment is not None and not svhn.augment.flip  # a flipped digit is another
    assert load_data(_synthetic(max_train=4, max_test=4)).augment is None
