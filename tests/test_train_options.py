"""Training options for paper scale: on-device augmentation, bf16, channels_last, no host syncs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F

from landscape import store
from landscape.augment import CropFlip, crop_flip
from landscape.data import DatasetError, load_data
from landscape.models import build_model
from landscape.train import (
    TrainConfig,
    augment_generator,
    epoch_generator,
    evaluate_split,
    learning_rate,
    load_model,
    make_optimizer,
    prepare_model,
    time_epoch,
    train_epoch,
    train_model,
)

CNN = {"arch": "vgg", "layers": [16, "M", 32, "M", 64]}  # config.yaml's vgg_bn
TINY_CNN = {"arch": "vgg", "layers": [4, "M", 8]}


def cifar_root(tmp_path: Path, n: int = 16) -> Path:
    """A CIFAR-10 layout of random images: 5 train batches and one test batch of n images."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "c10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        }
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh)
    return tmp_path / "c10"


def svhn_root(tmp_path: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(1)
    root = tmp_path / "svhn"
    root.mkdir()
    for name in ("train", "test"):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, size=(n, 1))
        scipy.io.savemat(root / f"{name}_32x32.mat", {"X": x, "y": y})
    return root


def run_spec(dataset, model=TINY_CNN, **train):
    return {
        "run": "r",
        "dataset_name": "d",
        "dataset": dataset,
        "model_name": "m",
        "model": model,
        "train": {"epochs": 3, "batch_size": 32, "seed": 3, **train},
    }


def train_chain(tmp_path, epochs, spec):
    previous = None
    for e in epochs:
        path = tmp_path / f"epoch{e}.pt"
        train_model(path, spec, e, previous=previous, device="cpu")
        previous = path
    return store.read_checkpoint(previous)


def tensors_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def reference_crop_flip(image, offset, flip, pad, fill):
    """One sample the plain way: pad, slice, flip."""
    channels, height, width = image.shape
    padded = torch.empty(channels, height + 2 * pad, width + 2 * pad)
    for c in range(channels):
        padded[c] = fill[c]
    padded[:, pad : pad + height, pad : pad + width] = image
    row, col = int(offset[0]), int(offset[1])
    crop = padded[:, row : row + height, col : col + width]
    return crop.flip(-1) if flip else crop


def reference_epoch(model, optimizer, split, cfg, epoch, augment=None):
    """One epoch of SGD written out: seeded order, per-sample augmentation, one step per batch."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(cfg, epoch)
    model.train()
    n = len(split)
    order = torch.randperm(n, generator=epoch_generator(cfg.seed, epoch))
    if augment is not None:
        offsets, flips = augment.draw(n, augment_generator(cfg.seed, epoch))
    for start in range(0, n, cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        x, y = split.x[idx], split.y[idx]
        if augment is not None:
            fill = augment.fill or (0.0,) * x.shape[1]
            x = torch.stack(
                [
                    reference_crop_flip(
                        x[i], offsets[start + i], flips[start + i], augment.pad, fill
                    )
                    for i in range(len(idx))
                ]
            )
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def fresh(model_spec, data, cfg):
    torch.manual_seed(cfg.seed)
    model = build_model(model_spec, data.num_classes, data.input_shape)
    return model, make_optimizer(model, cfg)


# --------------------------------------------------------------------------- augmentation


def test_crop_flip_equals_a_per_sample_loop():
    x = torch.randn(9, 3, 5, 7)
    aug = CropFlip(pad=2, flip=True, fill=(-1.5, 0.25, 2.0))
    offsets, flips = aug.draw(9, torch.Generator().manual_seed(4))
    assert offsets.min() >= 0 and offsets.max() <= 4
    assert flips.any() and not flips.all()
    want = torch.stack(
        [reference_crop_flip(x[i], offsets[i], flips[i], 2, aug.fill) for i in range(9)]
    )
    assert torch.equal(crop_flip(x, offsets, flips, 2, torch.tensor(aug.fill)), want)
    zeros = torch.stack(
        [reference_crop_flip(x[i], offsets[i], flips[i], 2, (0.0,) * 3) for i in range(9)]
    )
    assert torch.equal(crop_flip(x, offsets, flips, 2), zeros)


def test_crop_flip_draws_every_offset_and_no_flips_without_flip():
    offsets, flips = CropFlip(pad=4).draw(2000, torch.Generator().manual_seed(0))
    assert sorted(offsets.unique().tolist()) == list(range(9))
    assert 0.45 < flips.double().mean().item() < 0.55
    offsets2, none = CropFlip(pad=4, flip=False).draw(2000, torch.Generator().manual_seed(0))
    assert torch.equal(offsets, offsets2) and not none.any()
    # Offsets (pad, pad) without a flip give the image back.
    x = torch.randn(2, 3, 4, 4)
    centre = torch.full((2, 2), 4)
    assert torch.equal(crop_flip(x, centre, torch.zeros(2, dtype=torch.bool), 4), x)


def test_tensor_sources_read_augment(tmp_path):
    c10 = {"source": "cifar10", "root": str(cifar_root(tmp_path))}
    assert load_data(c10).augment is None
    assert load_data({**c10, "augment": False}).augment is None
    aug = load_data({**c10, "augment": True}).augment
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    assert aug == CropFlip(
        pad=4, flip=True, fill=tuple(-m / s for m, s in zip(mean, std, strict=True))
    )
    svhn = load_data({"source": "svhn", "root": str(svhn_root(tmp_path)), "augment": True})
    assert svhn.augment is not None and svhn.augment.flip is False
    with pytest.raises(DatasetError, match=r"datasets\.c\.augment"):
        load_data({**c10, "augment": "yes"}, key="datasets.c")


def test_augmented_training_equals_a_plain_loop_and_never_touches_evaluation(tmp_path):
    block = {"source": "cifar10", "root": str(cifar_root(tmp_path)), "augment": True}
    data = load_data(block)
    cfg = TrainConfig(epochs=2, batch_size=32, seed=5)
    model, opt = fresh(TINY_CNN, data, cfg)
    ref, ref_opt = fresh(TINY_CNN, data, cfg)
    plain, plain_opt = fresh(TINY_CNN, data, cfg)
    for e in range(2):
        train_epoch(model, opt, data.train, cfg, e, augment=data.augment)
        reference_epoch(ref, ref_opt, data.train, cfg, e, augment=data.augment)
        train_epoch(plain, plain_opt, data.train, cfg, e)
    assert tensors_equal(model.state_dict(), ref.state_dict())
    assert not tensors_equal(model.state_dict(), plain.state_dict())
    # The history evaluates the training split as it is, not augmented.
    state = train_chain(tmp_path / "run", [0, 1], run_spec(block, epochs=1))
    trained, _ = load_model(tmp_path / "run" / "epoch1.pt")
    loss, acc = evaluate_split(trained, data.train, 1024)
    assert state["meta"]["history"][-1]["train_loss"] == loss
    assert state["meta"]["history"][-1]["train_acc"] == acc


def test_default_training_equals_a_plain_sgd_loop(digits):
    cfg = TrainConfig(epochs=2, batch_size=128, seed=1)
    model, opt = fresh(CNN, digits, cfg)
    ref, ref_opt = fresh(CNN, digits, cfg)
    for e in range(2):
        train_epoch(model, opt, digits.train, cfg, e)
        reference_epoch(ref, ref_opt, digits.train, cfg, e)
    assert tensors_equal(model.state_dict(), ref.state_dict())
    assert tensors_equal(opt.state_dict()["state"][0], ref_opt.state_dict()["state"][0])


def test_augment_false_trains_like_no_key(tmp_path):
    root = str(cifar_root(tmp_path))
    absent = train_chain(tmp_path / "a", [0, 2], run_spec({"source": "cifar10", "root": root}))
    off = {"source": "cifar10", "root": root, "augment": False}
    false = train_chain(tmp_path / "b", [0, 2], run_spec(off))
    assert tensors_equal(absent["model"], false["model"])
    assert absent["meta"]["history"] == false["meta"]["history"]


@pytest.mark.parametrize(
    "dataset, train",
    [
        ("cifar", {}),
        ("digits", {"precision": "bf16"}),
        ("digits", {"channels_last": True}),
    ],
    ids=["augment", "bf16", "channels_last"],
)
def test_options_keep_chains_resumable_bitwise(tmp_path, dataset, train):
    if dataset == "cifar":
        block = {"source": "cifar10", "root": str(cifar_root(tmp_path)), "augment": True}
    else:
        block = {"source": "digits", "max_train": 256}
    spec = run_spec(block, **train)
    direct = train_chain(tmp_path / "direct", [0, 3], spec)
    segmented = train_chain(tmp_path / "seg", [0, 1, 3], spec)
    assert tensors_equal(direct["model"], segmented["model"])
    assert direct["meta"]["history"] == segmented["meta"]["history"]
    assert all(t.is_contiguous() for t in segmented["model"].values())


# --------------------------------------------------------------------------- precision, layout


def test_train_config_reads_precision_and_channels_last():
    cfg = TrainConfig.from_spec({"precision": "bf16", "channels_last": True})
    assert (cfg.precision, cfg.channels_last) == ("bf16", True)
    assert (TrainConfig().precision, TrainConfig().channels_last) == ("fp32", False)
    with pytest.raises(ValueError, match=r"train\.precision"):
        TrainConfig.from_spec({"precision": "fp16"})
    with pytest.raises(ValueError, match=r"train\.channels_last"):
        TrainConfig.from_spec({"channels_last": "yes"})


def trained_accuracy(digits, cfg):
    model, opt = fresh(CNN, digits, cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        opt = make_optimizer(model, cfg)
    losses = [train_epoch(model, opt, digits.train, cfg, e) for e in range(cfg.epochs)]
    return losses, evaluate_split(model, digits.test, 1024)[1], model


def test_bf16_reaches_the_accuracy_of_fp32(digits):
    fp32 = TrainConfig(epochs=4, seed=2)
    bf16 = TrainConfig(epochs=4, seed=2, precision="bf16")
    loss32, acc32, _ = trained_accuracy(digits, fp32)
    loss16, acc16, _ = trained_accuracy(digits, bf16)
    print(f"digits CNN, 4 epochs: test accuracy fp32 {acc32:.4f}, bf16 {acc16:.4f}")
    assert acc32 > 0.9
    assert abs(acc16 - acc32) <= 0.02
    assert loss16 != loss32  # bf16 did run: the losses differ in the low bits
    assert loss16[-1] == pytest.approx(loss32[-1], rel=0.25)


def test_channels_last_gives_the_loss_of_the_default_layout(tmp_path):
    data = load_data({"source": "cifar10", "root": str(cifar_root(tmp_path))})
    cfg = TrainConfig(epochs=2, batch_size=16, seed=2)
    last = TrainConfig(epochs=2, batch_size=16, seed=2, channels_last=True)
    model = prepare_model(CNN, data, cfg, torch.device("cpu"))
    other = prepare_model(CNN, data, last, torch.device("cpu"))
    conv = next(p for p in other.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    opt, other_opt = make_optimizer(model, cfg), make_optimizer(other, last)
    for e in range(2):  # 5 steps each
        a = train_epoch(model, opt, data.train, cfg, e)
        b = train_epoch(other, other_opt, data.train, last, e)
        assert b == pytest.approx(a, rel=1e-5)
    # Rounding differences grow over ten steps at lr 0.1: about 2e-4 on weights of size 0.3.
    for name, value in model.state_dict().items():
        assert torch.allclose(other.state_dict()[name], value, rtol=1e-2, atol=2e-3), name


# --------------------------------------------------------------------------- host syncs, timing


# Tensor methods that wait for the device (reads) or may (copies from host memory: a CUDA copy
# from pageable memory synchronizes), and the functions that make tensors from host data.
SYNCS = ("item", "tolist", "numpy", "cpu", "to", "__bool__", "__float__", "__int__", "__index__")
HOST_DATA = ("tensor", "as_tensor", "from_numpy")


def count_syncs(monkeypatch, fn):
    """Calls that wait or may wait for the device (:data:`SYNCS`, :data:`HOST_DATA`) in ``fn``."""
    calls = []

    def counted(owner, name):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapped)

    for name in SYNCS:
        counted(torch.Tensor, name)
    for name in HOST_DATA:
        counted(torch, name)
    fn()
    monkeypatch.undo()
    return calls


@pytest.mark.parametrize(
    "options", [{}, {"precision": "bf16", "channels_last": True}], ids=["fp32", "bf16-cl"]
)
def test_train_epoch_waits_for_the_device_once_per_epoch(tmp_path, monkeypatch, options):
    data = load_data({"source": "cifar10", "root": str(cifar_root(tmp_path)), "augment": True})
    counts = []
    for batch_size in (40, 8):  # 2 steps, then 10 steps
        cfg = TrainConfig(batch_size=batch_size, **options)
        model, opt = fresh(TINY_CNN, data, cfg)
        counts.append(
            count_syncs(
                monkeypatch,
                lambda: train_epoch(model, opt, data.train, cfg, 0, augment=data.augment),  # noqa: B023
            )
        )
    assert counts[0] == counts[1]  # as many for 10 steps as for 2
    assert counts[0].count("item") == 1


def test_time_epoch_times_training_only(digits):
    small = type(digits)(
        digits.name, digits.train.subset(64), digits.test.subset(8), 10, digits.input_shape
    )
    cfg = TrainConfig(batch_size=32, seed=1)
    seconds = time_epoch(TINY_CNN, small, cfg, "cpu", epochs=2)
    assert isinstance(seconds, float) and 0.0 < seconds < 30.0


# --------------------------------------------------------------------------- run specs


def test_options_enter_a_run_spec_only_when_on():
    from snakemake.utils import validate

    from landscape.config import run_spec as config_run_spec

    def spec_of(dataset=None, **train):
        config = {
            "datasets": {"c": {"source": "cifar10", "root": "/data", **(dataset or {})}},
            "models": {"m": {"arch": "vgg", "layers": [8, "M"]}},
            "runs": {"r": {"dataset": "c", "model": "m", "train": {"epochs": 2, **train}}},
        }
        validate(config, str(Path(__file__).parents[1] / "schemas" / "config.schema.yaml"))
        return config_run_spec(config, "r")

    plain = spec_of()
    assert "augment" not in plain["dataset"]
    assert not {"precision", "channels_last"} & set(plain["train"])
    assert spec_of({"augment": False}, precision="fp32", channels_last=False) == plain
    on = spec_of({"augment": True}, precision="bf16", channels_last=True)
    assert on["dataset"] == {**plain["dataset"], "augment": True}
    assert on["train"] == {**plain["train"], "precision": "bf16", "channels_last": True}


# --------------------------------------------------------------------------- eval_every


def test_eval_every_thins_the_history_and_changes_no_weight(tmp_path):
    block = {"source": "digits", "max_train": 256}
    every = train_chain(tmp_path / "every", [0, 7], run_spec(block, epochs=7))
    thinned = train_chain(tmp_path / "thin", [0, 7], run_spec(block, epochs=7, eval_every=3))
    assert tensors_equal(every["model"], thinned["model"])
    rows = {r["epoch"]: r for r in every["meta"]["history"]}
    assert [r["epoch"] for r in every["meta"]["history"]] == list(range(8))
    assert [r["epoch"] for r in thinned["meta"]["history"]] == [0, 3, 6, 7]
    assert thinned["meta"]["history"] == [rows[e] for e in (0, 3, 6, 7)]
    segmented = train_chain(tmp_path / "seg", [0, 4, 7], run_spec(block, epochs=7, eval_every=3))
    assert tensors_equal(every["model"], segmented["model"])
    assert [r["epoch"] for r in segmented["meta"]["history"]] == [0, 3, 4, 6, 7]


def test_eval_every_is_checked_and_left_out_of_the_spec_at_one():
    from landscape.config import run_spec as config_run_spec

    assert TrainConfig.from_spec({"eval_every": 5}).eval_every == 5
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=r"train\.eval_every"):
            TrainConfig.from_spec({"eval_every": bad})
    config = {
        "datasets": {"d": {"source": "digits"}},
        "models": {"m": {}},
        "runs": {"r": {"dataset": "d", "model": "m", "train": {"epochs": 2, "eval_every": 1}}},
    }
    assert "eval_every" not in config_run_spec(config, "r")["train"]
    config["runs"]["r"]["train"]["eval_every"] = 2
    assert config_run_spec(config, "r")["train"]["eval_every"] == 2


@pytest.mark.workflow
def test_off_values_written_out_rerun_nothing(tmp_path):
    """`augment: false` and the train options at their off values, written out: nothing reruns.

    The dataset block is a parameter of every curve, surface and Hessian job, so without
    :func:`landscape.config.drop_unset_options` the curve would rerun.
    """
    import yaml
    from workflow_utils import snakemake

    config = {
        "datasets": {"c": {"source": "cifar10", "root": str(cifar_root(tmp_path))}},
        "models": {"m": TINY_CNN},
        "runs": {"r": {"dataset": "c", "model": "m", "train": {"epochs": 1, "batch_size": 8}}},
        "directions": {"g": {"kind": "noise", "normalization": "filter", "seed": 1}},
        "curves": {
            "k": {
                "direction": "g",
                "lambda": {"min": -1.0, "max": 1.0, "num": 3},
                "bn_mode": "keep",
                "runs": ["r"],
                "plot": False,
            }
        },
    }
    work = tmp_path / "work"
    work.mkdir()
    target = "results/c/m/r/curves/epoch1/k.h5"
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(work, target)
    assert (work / target).is_file()
    config["datasets"]["c"]["augment"] = False
    config["runs"]["r"]["train"].update(precision="fp32", channels_last=False, eval_every=1)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(work, target, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]
