"""Training: determinism, resumable chains, schedules and divergence."""

from __future__ import annotations

import pytest
import torch

from landscape import store
from landscape.train import DivergenceError, TrainConfig, learning_rate, load_model, train_model

DATASET = {"source": "digits"}


def spec(**train):
    return {
        "run": "r",
        "dataset_name": "digits",
        "dataset": DATASET,
        "model_name": "vgg",
        "model": {"arch": "vgg", "layers": [8, "M", 16]},
        "train": {"epochs": 3, "batch_size": 64, "seed": 3, **train},
    }


def chain(tmp_path, epochs, s):
    paths, previous = {}, None
    for e in epochs:
        paths[e] = tmp_path / f"epoch{e}.pt"
        train_model(paths[e], s, e, previous=previous, device="cpu")
        previous = paths[e]
    return paths


def tensors_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_bitwise_identical_checkpoints(tmp_path):
    a = chain(tmp_path / "a", [0, 3], spec())
    b = chain(tmp_path / "b", [0, 3], spec())
    sa, sb = store.read_checkpoint(a[3]), store.read_checkpoint(b[3])
    assert tensors_equal(sa["model"], sb["model"])
    assert sa["meta"]["history"] == sb["meta"]["history"]
    other = chain(tmp_path / "c", [0, 3], spec(seed=4))
    assert not tensors_equal(sa["model"], store.read_checkpoint(other[3])["model"])


def test_segments_resume_exactly(tmp_path):
    direct = chain(tmp_path / "direct", [0, 3], spec())
    segmented = chain(tmp_path / "seg", [0, 1, 2, 3], spec())
    a, b = store.read_checkpoint(direct[3]), store.read_checkpoint(segmented[3])
    assert tensors_equal(a["model"], b["model"])
    assert [r["epoch"] for r in b["meta"]["history"]] == [0, 1, 2, 3]
    assert a["meta"]["history"] == b["meta"]["history"]


def test_training_learns_and_history_matches_model(tmp_path, digits):
    paths = chain(tmp_path, [0, 5], spec(epochs=5))
    hist = store.read_checkpoint(paths[5])["meta"]["history"]
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    assert hist[-1]["test_acc"] > 0.8
    model, meta = load_model(paths[5])
    with torch.no_grad():
        logits = model(digits.test.x)
        loss = torch.nn.functional.cross_entropy(logits, digits.test.y).item()
        acc = (logits.argmax(1) == digits.test.y).double().mean().item()
    assert meta["epoch"] == 5
    assert loss == pytest.approx(hist[-1]["test_loss"], rel=1e-5)
    assert acc == pytest.approx(hist[-1]["test_acc"])


def test_epoch_zero_is_the_seeded_initialization(tmp_path):
    path = tmp_path / "e0.pt"
    train_model(path, spec(), 0, device="cpu")
    from landscape.models import build_model

    torch.manual_seed(3)
    fresh = build_model(spec()["model"], 10, (1, 8, 8))
    assert tensors_equal(store.read_checkpoint(path)["model"], fresh.state_dict())


def test_divergence_names_run_and_epoch(tmp_path):
    bad = spec(lr=1e6, momentum=0.0, schedule="constant")
    train_model(tmp_path / "e0.pt", bad, 0, device="cpu")
    with pytest.raises(DivergenceError, match=r"run 'r'.*epoch 1"):
        train_model(tmp_path / "e3.pt", bad, 3, previous=tmp_path / "e0.pt", device="cpu")
    assert not (tmp_path / "e3.pt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["e0.pt"]


def test_schedules():
    cos = TrainConfig(lr=0.1, epochs=10, schedule="cosine")
    assert learning_rate(cos, 0) == pytest.approx(0.1)
    assert learning_rate(cos, 5) == pytest.approx(0.05)
    step = TrainConfig(lr=0.1, schedule="step", milestones=(2, 4), gamma=0.1)
    assert [learning_rate(step, e) for e in range(5)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001]
    )
    with pytest.raises(ValueError, match=r"train\.checkpoints"):
        TrainConfig.from_spec({"epochs": 2, "checkpoints": [5]})
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_spec({"epoch": 2})
