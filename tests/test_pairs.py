"""Model-pair statistics (A7, A8): groups, signs, interpolation, SSR over epochs, model soups.

Every number is checked against a hand computation or a plain PyTorch reference on tiny models.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from snakemake.utils import validate
from torch import nn

from landscape import pairs
from landscape.config import ConfigError, check_pairs, pair_checkpoints, pair_spec
from landscape.data import TensorSplit


def _mlp() -> nn.Module:
    """2 -> 2 -> 1 with hand-set values; the last Linear is the classifier."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
        net[0].bias.copy_(torch.tensor([-1.0, 1.0]))
        net[2].weight.copy_(torch.tensor([[2.0, 2.0]]))
        net[2].bias.copy_(torch.tensor([-3.0]))
    return net


def _bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)
    )
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net.eval()


def _images(n: int = 24, seed: int = 0) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    return TensorSplit(torch.randn(n, 1, 4, 4, generator=g), torch.arange(n) % 3)


def test_pair_groups_split_bn_classifier_and_others_by_shape():
    net = _bn_net()
    groups = pairs.pair_groups(net)
    assert groups == {
        "bn_weight": ["1.weight"],
        "bn_bias": ["1.bias"],
        "clf_weight": ["4.weight"],
        "clf_bias": ["4.bias"],
        "other_weight": ["0.weight"],
        "other_bias": ["0.bias"],
    }
    assert sorted(n for names in groups.values() for n in names) == sorted(
        n for n, _ in net.named_parameters()
    )


def test_group_statistics_by_hand():
    stats = pairs.group_statistics(_mlp())
    # other weights 1, -2, 3, 0: mean 0.5, deviations 0.5, -2.5, 2.5, -0.5 -> variance 3.25
    assert stats["other_weight"]["mean"] == 0.5
    assert stats["other_weight"]["std"] == pytest.approx(math.sqrt(3.25), rel=1e-15)
    assert stats["other_weight"]["count"] == 4 and stats["other_weight"]["positive"] == 0.5
    assert stats["other_bias"] == {"mean": 0.0, "std": 1.0, "count": 2.0, "positive": 0.5}
    assert stats["clf_weight"] == {"mean": 2.0, "std": 0.0, "count": 2.0, "positive": 1.0}
    assert stats["clf_bias"] == {"mean": -3.0, "std": 0.0, "count": 1.0, "positive": 0.0}
    for group in ("bn_weight", "bn_bias"):  # an MLP has no BN: empty groups, NaN values
        assert stats[group]["count"] == 0 and math.isnan(stats[group]["mean"])


def test_group_statistics_of_parameters_needs_groups():
    params = pairs.trainable(_mlp())
    with pytest.raises(ValueError, match="need groups"):
        pairs.group_statistics(params)
    stats = pairs.group_statistics(params, {"first": ["0.weight", "0.bias"]})
    # 1, -2, 3, 0, -1, 1: mean 1/3, positive 3 of 6
    assert stats["first"]["mean"] == pytest.approx(1 / 3) and stats["first"]["positive"] == 0.5


def test_sign_consistency_per_group_by_hand():
    a, b = _mlp(), _mlp()
    with torch.no_grad():
        b[0].weight.copy_(torch.tensor([[-1.0, -2.0], [3.0, 1.0]]))  # 1 flip, 0 vs + differs
        b[2].bias.neg_()  # the classifier bias flips
    groups = pairs.pair_groups(a)
    ssr = pairs.sign_consistency(pairs.trainable(a), pairs.trainable(b), groups)
    assert ssr["other_weight"] == 0.5  # 2 of 4 (-2 == -2, 3 == 3)
    assert ssr["other_bias"] == 1.0 and ssr["clf_weight"] == 1.0 and ssr["clf_bias"] == 0.0
    assert ssr["ALL"] == 6 / 9  # 9 parameters, 3 differ
    assert math.isnan(ssr["bn_weight"])
    of_models = pairs.sign_consistency(a, b)  # models: their parameters and pair_groups
    assert {g: v for g, v in of_models.items() if not g.startswith("bn_")} == {
        g: v for g, v in ssr.items() if not g.startswith("bn_")
    }
    same = pairs.sign_consistency(a, a)
    assert all(v == 1.0 for g, v in same.items() if not g.startswith("bn_"))
    assert pairs.sign_consistency(pairs.trainable(a), pairs.trainable(b)) == {"ALL": 6 / 9}


def test_interpolate_is_exact_at_the_ends_and_linear_between():
    a, b = _bn_net(0).state_dict(), _bn_net(1).state_dict()
    b["1.num_batches_tracked"] = torch.tensor(7)
    for lam, end in ((0.0, a), (1.0, b)):
        got = pairs.interpolate(a, b, lam)
        assert all(torch.equal(got[n], end[n]) for n in a)
    mid = pairs.interpolate(a, b, 0.25)
    for name in ("0.weight", "1.bias", "1.running_var"):
        assert torch.allclose(mid[name], 0.75 * a[name] + 0.25 * b[name], atol=1e-7)
    assert int(mid["1.num_batches_tracked"]) == int(a["1.num_batches_tracked"])
    assert int(pairs.interpolate(a, b, 0.5)["1.num_batches_tracked"]) == 7
    with pytest.raises(ValueError, match="differ in tensors"):
        pairs.interpolate(a, {k: v for k, v in b.items() if k != "4.bias"}, 0.5)


def test_average_of_one_state_is_that_state():
    a, b = _bn_net(0).state_dict(), _bn_net(1).state_dict()
    one = pairs.average([a])
    assert all(torch.equal(one[n], a[n]) for n in a)
    two = pairs.average([a, b])
    assert torch.allclose(two["0.weight"], (a["0.weight"] + b["0.weight"]) / 2, atol=1e-7)


def _reference(net, state, split, bn_batches=None):
    """Plain loop: load, optionally re-estimate BN as a cumulative average, evaluate."""
    net = _bn_net()
    net.load_state_dict(state)
    if bn_batches is not None:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average
        net.train()
        with torch.no_grad():
            for x, _ in bn_batches:
                net(x)
    net.eval()
    with torch.no_grad():
        logits = net(split.x)
    loss = F.cross_entropy(logits.double(), split.y).item()
    return loss, (logits.argmax(1) == split.y).double().mean().item()


@pytest.mark.parametrize("bn_mode", ["interpolate", "recompute"])
def test_evaluate_state_matches_a_plain_loop(bn_mode):
    split, train = _images(30, seed=1), _images(32, seed=2)
    bn_batches = list(train.batches(8))
    state = pairs.interpolate(_bn_net(0).state_dict(), _bn_net(1).state_dict(), 0.3)
    got = pairs.evaluate_state(
        _bn_net(), state, {"test": split}, bn_mode=bn_mode, bn_batches=bn_batches, batch_size=7
    )["test"]
    loss, acc = _reference(None, state, split, bn_batches if bn_mode == "recompute" else None)
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert got["accuracy"] == pytest.approx(acc, abs=1e-12)


def test_interpolation_curve_endpoints_are_the_models_and_midpoint_the_average():
    split = _images(30, seed=3)
    a, b = _bn_net(0).state_dict(), _bn_net(1).state_dict()
    lambdas = [0.0, 0.5, 1.0]
    curve = pairs.interpolation_curve(
        _bn_net(), a, b, lambdas, {"test": split}, bn_mode="interpolate", batch_size=64
    )["test"]
    for i, state in ((0, a), (2, b), (1, pairs.average([a, b]))):
        loss, acc = _reference(None, state, split)
        assert curve["loss"][i] == pytest.approx(loss, rel=1e-5)
        assert curve["accuracy"][i] == pytest.approx(acc, abs=1e-12)


def test_interpolation_gap_definition():
    assert pairs.interpolation_gap([0.0, 0.5, 1.0], [0.9, 0.5, 0.7]) == pytest.approx(0.3)
    gap = pairs.gap_curve([0.0, 0.25, 0.5, 1.0], [0.9, 0.8, 0.5, 0.7])
    np.testing.assert_allclose(gap, [-0.1, 0.0, 0.3, 0.1], atol=1e-12)
    with pytest.raises(ValueError, match=r"no point at 0\.5"):
        pairs.interpolation_gap([0.0, 1.0], [0.9, 0.7])


def test_ssr_over_epochs_by_hand():
    init = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    run_a = {0: init, 1: {"w": torch.tensor([1.0, -1.0, 1.0, 1.0])}, 2: {"w": -init["w"]}}
    run_b = {0: init, 2: {"w": torch.tensor([-1.0, -1.0, 1.0, 1.0])}, 5: init}
    ssr = pairs.ssr_over_epochs(init, run_a, run_b)
    assert ssr["epoch"].tolist() == [0, 2]  # the epochs both runs have
    assert ssr["IA"].tolist() == [1.0, 0.0]
    assert ssr["IB"].tolist() == [1.0, 0.5]
    assert ssr["AB"].tolist() == [1.0, 0.5]
    with pytest.raises(ValueError, match="share no epoch"):
        pairs.ssr_over_epochs(init, {1: init}, {2: init})


def _linear_state(scale: float) -> dict[str, torch.Tensor]:
    """A 2 -> 2 linear classifier: scale > 0 classifies the points below right, < 0 all wrong."""
    return {"0.weight": scale * torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), "0.bias": torch.zeros(2)}


def test_model_soups_greedy_and_uniform_by_hand():
    split = TensorSplit(
        torch.tensor([[1.0, 0.0], [2.0, 1.0], [-1.0, 0.0], [-3.0, 2.0]]), torch.tensor([0, 0, 1, 1])
    )
    net = nn.Sequential(nn.Linear(2, 2))
    states = [_linear_state(1.0), _linear_state(-3.0), _linear_state(0.5)]
    soups = pairs.model_soups(net, states, split, bn_mode="recompute", batch_size=4)
    np.testing.assert_array_equal(soups["ingredients"], [1.0, 0.0, 1.0])
    assert soups["order"].tolist() == [0, 2, 1]  # ties by index
    # soup {0, 2} = 0.75 W: accuracy 1, kept; + ingredient 1 = -0.5 W: accuracy 0, rejected
    assert soups["greedy_members"].tolist() == [True, False, True]
    assert soups["greedy"] == 1.0
    assert soups["uniform"] == 0.0  # (1 - 3 + 0.5) / 3 W = -0.5 W
    one = pairs.model_soups(net, states[1:2], split, batch_size=4)
    assert one["uniform"] == one["greedy"] == one["ingredients"][0] == 0.0


# --------------------------------------------------------------------------- the `pairs` block

PAIRS_CONFIG = Path(__file__).resolve().parent / "configs" / "pairs.yaml"
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def _pairs_config() -> dict:
    config = yaml.safe_load(PAIRS_CONFIG.read_text())
    validate(config, str(SCHEMA))  # fills the defaults, as the workflow does
    return config


def test_pair_spec_resolves_epochs_init_and_ssr_epochs():
    config = _pairs_config()
    check_pairs(config)
    spec = pair_spec(config, "a8_finetunes")
    assert spec["epochs"] == [2, 2] and spec["init"] == {"run": "pre", "epoch": 2}
    assert spec["ssr_epochs"] == [0, 1, 2] and spec["dataset"] == "digits"
    assert spec["bn_mode"] == "recompute" and spec["splits"] == ["test"]
    assert pair_spec(config, "a7_batch")["init"] == {"run": "bs32", "epoch": 0}
    inputs = pair_checkpoints(config, "a8_finetunes")
    assert inputs["init"] == ("pre", 2) and inputs["run1_epoch1"] == ("ft1", 1)
    assert len(inputs) == 7  # init + 2 runs x 3 epochs
    assert pair_checkpoints(config, "a8_soup_of_one") == {"run0_epoch2": ("ft1", 2)}


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda p: p["a7_batch"].update(runs=["bs32", "nope"]), "pairs.a7_batch.runs"),
        (lambda p: p["a7_batch"].update(runs=["bs32"]), "pairs.a7_batch.runs"),
        (lambda p: p["a7_batch"].update(epoch=5), "pairs.a7_batch.epoch"),
        (lambda p: p["a8_finetunes"].update(init={"run": "x"}), "pairs.a8_finetunes.init.run"),
        (
            lambda p: p["a8_finetunes"].update(init={"run": "pre", "epoch": 1}),
            "pairs.a8_finetunes.init.epoch",
        ),
        (lambda p: p["a7_batch"].update(dataset="nope"), "pairs.a7_batch.dataset"),
        (lambda p: p["a7_batch"]["lambda"].update(num=4), "pairs.a7_batch.lambda"),
    ],
)
def test_bad_pair_blocks_name_the_key(edit, key):
    config = _pairs_config()
    edit(config["pairs"])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_pairs(config)


def test_a_pair_of_two_architectures_is_refused():
    config = _pairs_config()
    config["models"]["wide"] = {"arch": "mlp", "hidden": [32]}
    config["runs"]["bs512"]["model"] = "wide"
    with pytest.raises(ConfigError, match=r"pairs\.a7_batch\.runs: run 'bs512'"):
        check_pairs(config)


def _initializations(tmp_path) -> dict[str, Path]:
    """Epoch-0 checkpoints of a tiny VGG-BN on the digits, seeds 0 and 1 (no training)."""
    from landscape.train import train_model

    paths = {}
    for seed in (0, 1):
        spec = {
            "run": f"r{seed}",
            "dataset_name": "digits",
            "dataset": {"source": "digits"},
            "model_name": "vgg",
            "model": {"arch": "vgg", "layers": [4, "M", 8]},
            "train": {"epochs": 1, "seed": seed},
        }
        paths[f"run{seed}_epoch0"] = tmp_path / f"r{seed}.pt"
        train_model(paths[f"run{seed}_epoch0"], spec, 0, device="cpu")
    return paths


def test_compute_pair_writes_what_each_part_computes(tmp_path):
    from landscape import store

    checkpoints = _initializations(tmp_path)
    base = {"id": "A7", "runs": ["r0", "r1"], "epochs": [0, 0], "dataset": "digits"}
    signs = {**base, "compute": ["statistics", "ssr"], "init": {"run": "r0", "epoch": 0}}
    signs["ssr_epochs"] = [0]
    out = tmp_path / "signs.h5"
    pairs.compute_pair(
        signs, {"init": checkpoints["run0_epoch0"], **checkpoints}, out, {"source": "digits"}, "cpu"
    )
    art = store.open(out)
    a, b = (store.read_checkpoint(p)["model"] for p in checkpoints.values())
    names = [n for n in a if not n.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    same = np.concatenate([(np.sign(a[n].numpy()) == np.sign(b[n].numpy())).ravel() for n in names])
    assert art["sign_consistency/ALL"] == same.mean() == art["ssr/AB"][0]
    assert art["ssr/IA"].tolist() == [1.0] and art["ssr/IB"][0] == same.mean()
    assert art["statistics/a/bn_weight/mean"] == 1.0  # BN weights start at 1 (bn_weight_init: ones)
    assert "lambda" not in art and set(art.inputs) == {"init", "run0_epoch0", "run1_epoch0"}

    evaluation = {"lambda": {"min": 0.0, "max": 1.0, "num": 3}, "splits": ["test"]}
    evaluation |= {"bn_mode": "recompute", "bn_batches": 2, "batch_size": 256}
    models = {**base, **evaluation, "compute": ["interpolation", "soups"]}
    pairs.compute_pair(models, checkpoints, tmp_path / "models.h5", {"source": "digits"}, "cpu")
    art = store.open(tmp_path / "models.h5")
    ends = art["interpolation/test/accuracy"][[0, -1]]
    assert ends.tolist() == art["soups/ingredients"].tolist()  # evaluated the same way
    assert art["soups/uniform"] == art["interpolation/test/accuracy"][1]  # the midpoint
    assert art["soups/greedy"] >= max(ends) and art.attrs["heldout"] == "test"
    for label, path in zip("ab", checkpoints.values(), strict=True):  # own BN statistics
        recorded = store.read_checkpoint(path)["meta"]["history"][-1]["test_acc"]
        assert art[f"interpolation/test/own_accuracy_{label}"] == pytest.approx(recorded, abs=1e-12)


def test_bn_weights_are_every_runs_bn_weights_at_epoch_0_and_its_epoch(tmp_path):
    """A5: with both epochs 0 the two stages are the same tensors: the checkpoints' BN weights."""
    from landscape import store

    checkpoints = _initializations(tmp_path)
    spec = {"id": "A5", "runs": ["r0", "r1"], "epochs": [0, 0], "dataset": "digits"}
    spec["compute"] = ["bn_weights"]
    pairs.compute_pair(spec, checkpoints, tmp_path / "bn.h5", {"source": "digits"}, "cpu")
    art = store.open(tmp_path / "bn.h5")
    for i, path in enumerate(checkpoints.values()):
        model = store.read_checkpoint(path)["model"]
        bn = [n for n in model if n.endswith("weight") and model[n].ndim == 1]
        expected = np.concatenate([model[n].numpy().ravel() for n in bn])
        np.testing.assert_array_equal(art["bn_weights/initial"][i], expected)
        np.testing.assert_array_equal(art["bn_weights/final"][i], expected)
    assert list(art["run"]) == ["r0", "r1"]
