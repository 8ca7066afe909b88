"""Training: determinism, resumable chains, schedules and divergence."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

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


# ----------------------------------------------------------------------------- checkpoint bytes


def test_same_config_gives_identical_checkpoint_bytes(tmp_path, monkeypatch):
    """Not only equal tensors: equal files, so every SHA-256 recorded downstream is equal too."""
    files = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)  # relative paths, as the workflow records them
        paths = chain(Path("ckpt"), [0, 1], spec(epochs=1))
        files[name] = {e: p.read_bytes() for e, p in paths.items()}
    assert files["a"] == files["b"]
    meta = store.read_checkpoint(tmp_path / "a" / "ckpt" / "epoch1.pt")["meta"]
    assert meta["inputs"]["previous"] == {
        "path": "ckpt/epoch0.pt",
        "sha256": hashlib.sha256(files["a"][0]).hexdigest(),
    }


def test_checkpoint_meta_is_read_without_tensors(tmp_path):
    paths = chain(tmp_path, [0, 1], spec())
    assert store.checkpoint_meta(paths[1]) == store.read_checkpoint(paths[1])["meta"]
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(store.ArtifactError, match=r"junk\.pt"):
        store.checkpoint_meta(tmp_path / "junk.pt")


# ----------------------------------------------------------------------------- which chain


def test_an_existing_checkpoint_keeps_the_checkpoint_it_was_trained_from(tmp_path):
    s = spec(epochs=2)
    paths = chain(tmp_path, [0, 2], s)  # epoch 2 trained from epoch 0
    earlier = {0: str(paths[0]), 1: str(tmp_path / "epoch1.pt")}  # epoch 1 added in between
    assert store.kept_previous(paths[2], s, 2, earlier) == str(paths[0])
    # ... and that is safe: training from the new epoch-1 checkpoint gives the same weights
    train_model(tmp_path / "epoch1.pt", s, 1, previous=paths[0], device="cpu")
    train_model(tmp_path / "again2.pt", s, 2, previous=tmp_path / "epoch1.pt", device="cpu")
    again = store.read_checkpoint(tmp_path / "again2.pt")
    assert tensors_equal(again["model"], store.read_checkpoint(paths[2])["model"])
    # not kept: another spec, a missing checkpoint, a previous no longer kept or newer
    assert store.kept_previous(paths[2], spec(epochs=2, lr=0.05), 2, earlier) is None
    assert store.kept_previous(tmp_path / "epoch9.pt", s, 9, earlier) is None
    assert store.kept_previous(paths[2], s, 2, {1: str(tmp_path / "epoch1.pt")}) is None
    os.utime(paths[0], ns=(paths[2].stat().st_mtime_ns + 10**9,) * 2)
    assert store.kept_previous(paths[2], s, 2, earlier) is None


# ----------------------------------------------------------------------------- the workflow's chain


def _planned_checkpoints(workdir: Path, *targets: str) -> set[str]:
    """Checkpoint epochs a dry run of the workflow would (re)train, e.g. ``{"epoch1"}``."""
    from workflow_utils import snakemake

    dry = snakemake(workdir, *targets, "-n")
    text = dry.stdout + dry.stderr
    return set(re.findall(r"output: \S*/checkpoints/(epoch\d+)\.pt", text))


@pytest.mark.workflow
def test_adding_a_checkpoint_retrains_nothing_and_changing_epochs_retrains_all(tmp_path):
    import yaml
    from workflow_utils import REPO, edit_config, snakemake

    config = yaml.safe_load((REPO / "tests/configs/reliability.yaml").read_text())
    config["runs"]["vgg_bn"]["train"].update(epochs=2, checkpoints=[0, 2])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    ckpt = "results/digits/vgg_bn/vgg_bn/checkpoints/epoch{}.pt"
    snakemake(tmp_path, ckpt.format(2))
    before = {e: (tmp_path / ckpt.format(e)).stat().st_mtime_ns for e in (0, 2)}

    edit_config(tmp_path, lambda c: c["runs"]["vgg_bn"]["train"].update(checkpoints=[0, 1, 2]))
    targets = [ckpt.format(e) for e in (0, 1, 2)]
    assert _planned_checkpoints(tmp_path, *targets) == {"epoch1"}
    snakemake(tmp_path, *targets)
    assert {e: (tmp_path / ckpt.format(e)).stat().st_mtime_ns for e in (0, 2)} == before
    assert _planned_checkpoints(tmp_path, *targets) == set()
    # the new checkpoint continues the chain: equal weights from 1 -> 2 as from 0 -> 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workflow's jobs: float sums depend on the thread count
    try:
        spec2 = store.checkpoint_meta(tmp_path / ckpt.format(2))["spec"]
        again = tmp_path / "again2.pt"
        train_model(again, spec2, 2, previous=tmp_path / ckpt.format(1), device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert tensors_equal(
        store.read_checkpoint(again)["model"],
        store.read_checkpoint(tmp_path / ckpt.format(2))["model"],
    )

    # the cosine schedule depends on the total: a longer run retrains every checkpoint
    edit_config(tmp_path, lambda c: c["runs"]["vgg_bn"]["train"].update(epochs=3))
    assert _planned_checkpoints(tmp_path, *targets) == {"epoch0", "epoch1", "epoch2"}


# ----------------------------------------------------------------------------- fine-tuning (init)


def pre_spec():
    """A pre-training run on digits 0-4 (the head keeps its 10 outputs)."""
    s = spec(epochs=2, seed=5)
    return {**s, "run": "pre", "dataset_name": "digits_04",
            "dataset": {"source": "digits", "classes": [0, 1, 2, 3, 4]}}


def fine_spec(source_spec, epoch=2, **train):
    """A fine-tuning run on all digits, initialized from ``source_spec``'s run at ``epoch``."""
    init = {"run": source_spec["run"], "epoch": epoch, "spec": source_spec}
    return {**spec(epochs=2, lr=0.01, seed=3, init=init, **train), "run": "ft"}


def test_fine_tune_starts_from_the_source_parameters_and_buffers(tmp_path, digits):
    pre = chain(tmp_path / "pre", [0, 2], pre_spec())
    source = store.read_checkpoint(pre[2])
    assert source["model"]["features.1.running_mean"].abs().sum() > 0  # BN statistics trained
    ft0 = tmp_path / "ft" / "epoch0.pt"
    train_model(ft0, fine_spec(pre_spec()), 0, init=pre[2], device="cpu")
    state = store.read_checkpoint(ft0)
    assert tensors_equal(state["model"], source["model"])  # running stats and counters too
    assert state["optimizer"]["state"] == {}  # fresh optimizer: no momentum buffers
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.01
    meta = state["meta"]
    assert meta["inputs"] == {"init": {"path": str(pre[2]), "sha256": store.sha256_file(pre[2])}}
    model, _ = load_model(ft0)
    with torch.no_grad():  # epoch 0 is evaluated on this run's data: all ten classes
        loss = torch.nn.functional.cross_entropy(model(digits.test.x), digits.test.y).item()
    assert meta["history"][0]["test_loss"] == pytest.approx(loss, rel=1e-5)
    assert meta["history"][0]["test_acc"] < 0.6  # classes 5-9 were never seen


def test_fine_tuning_trains_like_a_fresh_optimizer_on_the_loaded_weights(tmp_path, digits):
    """Reference: load the source weights into a model by hand and run SGD from zero momentum."""
    from landscape.train import TrainConfig, make_optimizer, train_epoch

    pre = chain(tmp_path / "pre", [0, 2], pre_spec())
    ft = fine_spec(pre_spec())
    paths = {0: tmp_path / "ft0.pt", 1: tmp_path / "ft1.pt"}
    train_model(paths[0], ft, 0, init=pre[2], device="cpu")
    train_model(paths[1], ft, 1, previous=paths[0], device="cpu")
    model, _ = load_model(pre[2])
    cfg = TrainConfig.from_spec(ft["train"])
    train_epoch(model, make_optimizer(model, cfg), digits.train, cfg, 0)
    assert tensors_equal(store.read_checkpoint(paths[1])["model"], model.state_dict())


def test_fine_tune_chains_resume_exactly_and_depend_on_the_source(tmp_path):
    pre = chain(tmp_path / "pre", [0, 1, 2], pre_spec())

    def fine(directory, epochs, source=pre[2], s=None):
        s = s or fine_spec(pre_spec())
        paths, previous = {}, None
        for e in epochs:
            paths[e] = tmp_path / directory / f"epoch{e}.pt"
            train_model(paths[e], s, e, previous=previous, init=source if e == 0 else None,
                        device="cpu")
            previous = paths[e]
        return store.read_checkpoint(paths[max(epochs)])

    direct, segmented = fine("a", [0, 2]), fine("b", [0, 1, 2])
    assert tensors_equal(direct["model"], segmented["model"])
    assert direct["meta"]["history"] == segmented["meta"]["history"]
    earlier = fine("c", [0, 2], source=pre[1], s=fine_spec(pre_spec(), epoch=1))
    assert not tensors_equal(direct["model"], earlier["model"])


def test_bad_init_checkpoints_name_the_key(tmp_path):
    pre = chain(tmp_path / "pre", [0, 2], pre_spec())
    out = tmp_path / "ft0.pt"
    with pytest.raises(ValueError, match=r"runs\.ft\.train\.init: .*checkpoint of run 'pre'"):
        train_model(out, fine_spec(pre_spec()), 0, device="cpu")  # no source checkpoint given
    with pytest.raises(ValueError, match=r"runs\.ft\.train\.init: .*epoch 0.*epoch 2"):
        train_model(out, fine_spec(pre_spec()), 0, init=pre[0], device="cpu")
    wide = {**fine_spec(pre_spec()), "model": {"arch": "vgg", "layers": [8, "M", 32]}}
    with pytest.raises(ValueError, match=r"runs\.ft\.train\.init: .*model"):
        train_model(out, wide, 0, init=pre[2], device="cpu")
    other = fine_spec({**pre_spec(), "train": {**pre_spec()["train"], "lr": 0.5}})
    with pytest.raises(ValueError, match=r"runs\.ft\.train\.init: .*another spec"):
        train_model(out, other, 0, init=pre[2], device="cpu")
    with pytest.raises(ValueError, match=r"run 'r'.*no train\.init"):
        train_model(out, spec(), 0, init=pre[2], device="cpu")
    with pytest.raises(ValueError, match=r"runs\.ft\.train\.init: .*only at epoch 0"):
        train_model(out, fine_spec(pre_spec()), 2, previous=pre[0], init=pre[2], device="cpu")
    assert not out.exists()


@pytest.mark.workflow
def test_workflow_fine_tunes_from_the_pretrained_checkpoint_and_follows_its_changes(tmp_path):
    import yaml
    from workflow_utils import REPO, edit_config, snakemake

    config = yaml.safe_load((REPO / "tests/configs/reliability.yaml").read_text())
    config["datasets"]["digits_04"] = {"source": "digits", "classes": [0, 1, 2, 3, 4]}
    train = config["runs"]["vgg_bn"]["train"]
    config["runs"] = {
        "pre": {"dataset": "digits_04", "model": "vgg_bn", "train": train},
        "ft": {"dataset": "digits", "model": "vgg_bn",
               "train": {**train, "lr": 0.01, "init": {"run": "pre"}}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    pre = "results/digits_04/vgg_bn/pre/checkpoints/epoch{}.pt"
    ft = "results/digits/vgg_bn/ft/checkpoints/epoch{}.pt"
    snakemake(tmp_path, ft.format(1))
    source = store.read_checkpoint(tmp_path / pre.format(1))
    start = store.read_checkpoint(tmp_path / ft.format(0))
    assert tensors_equal(start["model"], source["model"])
    assert start["meta"]["inputs"]["init"]["path"] == pre.format(1)
    assert start["meta"]["spec"]["train"]["init"]["spec"] == source["meta"]["spec"]
    assert _planned_checkpoints(tmp_path, ft.format(1)) == set()

    # another pre-training retrains the fine-tune; the fine-tune's own schedule retrains only it
    edit_config(tmp_path, lambda c: c["runs"]["pre"]["train"].update(lr=0.05))
    dry = snakemake(tmp_path, ft.format(1), "-n")
    planned = set(re.findall(r"output: (\S*/checkpoints/epoch\d+\.pt)", dry.stdout + dry.stderr))
    assert planned == {pre.format(0), pre.format(1), ft.format(0), ft.format(1)}
    edit_config(tmp_path, lambda c: c["runs"]["pre"]["train"].update(lr=0.1))
    edit_config(tmp_path, lambda c: c["runs"]["ft"]["train"].update(lr=0.02))
    dry = snakemake(tmp_path, ft.format(1), "-n")
    planned = set(re.findall(r"output: (\S*/checkpoints/epoch\d+\.pt)", dry.stdout + dry.stderr))
    assert planned == {ft.format(0), ft.format(1)}
