"""A10 federated learning: the Dirichlet split, the algorithms' loss terms by hand, FedAvg against
centralized SGD, FedProx(0) against FedAvg, FedPAN's encoding, whole-run determinism, the table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape import store
from landscape.config import ConfigError, check_federated, federated_spec
from landscape.data import DataBundle, TensorSplit
from landscape.federated.algorithms import (
    attach_pan,
    contrastive_term,
    dynamic_term,
    make_algorithm,
    pan_encoding,
    proximal_term,
    sign_agreement,
    sign_term,
    weighted_average,
)
from landscape.federated.runner import (
    FederatedConfig,
    client_generator,
    participants,
    simulate,
    write_result,
)
from landscape.federated.split import dirichlet_split, label_counts
from landscape.federated.table import (
    federated_table,
    plot_federated_accuracy,
    plot_federated_table,
    write_federated_table,
)
from landscape.models import build_model

MLP = {"arch": "mlp", "hidden": [8]}
VGG = {"arch": "vgg", "layers": [4, "M", 8]}


def toy_data(n_train: int = 60, n_test: int = 30, classes: int = 3, seed: int = 0) -> DataBundle:
    """Random 1x4x4 inputs whose class shifts their mean (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.arange(n) % classes
        x = torch.randn(n, 1, 4, 4, generator=g) + y.float().reshape(-1, 1, 1, 1)
        return TensorSplit(x, y)

    return DataBundle("toy", split(n_train), split(n_test), classes, (1, 4, 4))


def builder(data: DataBundle, spec=MLP):
    return lambda: build_model(spec, data.num_classes, data.input_shape)


# --------------------------------------------------------------------------- Dirichlet split


def balanced_labels(classes: int = 10, per_class: int = 100) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)


def test_split_partitions_every_sample_and_is_seeded():
    labels = balanced_labels()
    parts = dirichlet_split(labels, 10, 0.5, seed=3, min_size=5)
    assert sorted(np.concatenate(parts).tolist()) == list(range(labels.size))
    again = dirichlet_split(labels, 10, 0.5, seed=3, min_size=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = dirichlet_split(labels, 10, 0.5, seed=4, min_size=5)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_large_alpha_is_near_uniform():
    labels = balanced_labels()
    counts = label_counts(labels, dirichlet_split(labels, 10, 1000.0, seed=0), 10)
    sizes = counts.sum(1)
    assert np.all(np.abs(sizes - 100) <= 15), sizes
    shares = counts / sizes[:, None]
    assert np.abs(shares - 0.1).max() < 0.06, shares


def test_small_alpha_is_near_one_class_per_client():
    labels = balanced_labels()
    counts = label_counts(labels, dirichlet_split(labels, 10, 0.01, seed=0), 10)
    shares = counts / counts.sum(1, keepdims=True)
    assert (shares.max(1) > 0.95).sum() >= 7, shares.max(1)  # most clients: one class
    assert (shares > 0.05).sum(1).max() <= 2  # none holds more than two classes
    uniform = label_counts(labels, dirichlet_split(labels, 10, 1000.0, seed=0), 10)
    assert (uniform > 0).sum(1).min() == 10


def test_min_client_size_is_respected_and_impossible_sizes_name_the_key():
    labels = balanced_labels()
    for seed in range(3):
        parts = dirichlet_split(labels, 10, 0.05, seed=seed, min_size=30)
        assert min(len(p) for p in parts) >= 30
    with pytest.raises(ValueError, match=r"federated\.min_client_size"):
        dirichlet_split(labels, 10, 1.0, seed=0, min_size=101)


# --------------------------------------------------------------------------- loss terms by hand


def test_proximal_term_by_hand():
    theta = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([-1.0])}
    anchor = {"w": torch.tensor([0.0, 0.0]), "b": torch.tensor([1.0])}
    assert proximal_term(theta, anchor, 0.2).item() == pytest.approx(0.1 * (1 + 4 + 4))


def test_moon_contrastive_term_by_hand():
    # sample 1: cos(z, z_g) = 1, cos(z, z_p) = 0; sample 2: cos = 1/sqrt(2) and -1/sqrt(2)
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z_global = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    z_previous = torch.tensor([[0.0, 3.0], [-1.0, 0.0]])
    tau = 0.5
    first = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0 / tau)))
    c = 1 / math.sqrt(2)
    second = -math.log(math.exp(c / tau) / (math.exp(c / tau) + math.exp(-c / tau)))
    got = contrastive_term(z, z_global, z_previous, tau).item()
    assert got == pytest.approx((first + second) / 2, rel=1e-6)


def test_feddyn_term_by_hand():
    theta = {"w": torch.tensor([1.0, 2.0])}
    anchor = {"w": torch.tensor([0.5, 0.5])}
    grads = {"w": torch.tensor([0.1, -0.2])}
    # -<g, theta> = -(0.1 - 0.4) = 0.3; alpha / 2 ||theta - anchor||^2 = 0.05 * 2.5 = 0.125
    assert dynamic_term(theta, anchor, grads, 0.1).item() == pytest.approx(0.425)


def test_feddyn_client_and_server_state_by_hand():
    model = nn.Linear(1, 1, bias=False)
    algo = make_algorithm("feddyn", {"alpha": 0.5}, num_clients=2, total_samples=4)
    with torch.no_grad():
        model.weight.fill_(0.0)
    algo.start(model)
    algo.begin_client(0, model)
    with torch.no_grad():
        model.weight.fill_(1.0)  # "trained" to 1.0 from the global 0.0
    algo.end_client(0, model)
    assert algo.grads[0]["weight"].item() == pytest.approx(-0.5)  # 0 - 0.5 * (1 - 0)
    start = {"weight": torch.zeros(1, 1)}
    states = [{"weight": torch.full((1, 1), 1.0)}, {"weight": torch.full((1, 1), 2.0)}]
    new = algo.aggregate(start, states, [1, 3])
    # h = -0.5 * (1/4 * 1 + 3/4 * 2) = -0.875; theta = (1/4 * 1 + 3/4 * 2) - h / 0.5 = 3.5
    assert algo.h["weight"].item() == pytest.approx(-0.875)
    assert new["weight"].item() == pytest.approx(3.5)


def test_fedsign_is_zero_when_signs_agree_and_pulls_disagreeing_parameters():
    anchor = {"w": torch.tensor([1.0, 1.0, -1.0]), "v": torch.tensor([[-2.0]])}
    agreeing = {k: 3 * v for k, v in anchor.items()}
    assert sign_term(agreeing, anchor, 5.0).item() == 0.0
    theta = {
        "w": torch.tensor([0.5, -0.3, 0.2], requires_grad=True),
        "v": torch.tensor([[-1.0]], requires_grad=True),
    }
    value = sign_term(theta, anchor, 2.0)
    assert value.item() == pytest.approx(2.0 * (0.3 + 0.2) / 4)
    squared = sign_term(theta, anchor, 2.0, "squared_hinge").item()
    assert squared == pytest.approx(2.0 * (0.09 + 0.04) / 4)
    value.backward()
    step = -theta["w"].grad  # a gradient-descent step
    assert step.tolist() == pytest.approx([0.0, 0.5, -0.5])  # up for +, down for -, 0 if agreeing
    assert theta["v"].grad.item() == 0.0
    with torch.no_grad():
        moved = {"w": theta["w"] + 0.1 * step, "v": theta["v"]}
    assert sign_term(moved, anchor, 2.0) < value


def test_sign_agreement_and_weighted_average():
    a = {"w": torch.tensor([1.0, -1.0, 0.0, 2.0])}
    b = {"w": torch.tensor([3.0, 1.0, 0.0, -1.0])}
    assert sign_agreement(a, b) == 0.5
    states = [
        {"w": torch.tensor([1.0]), "n": torch.tensor(2)},
        {"w": torch.tensor([4.0]), "n": torch.tensor(4)},
    ]
    avg = weighted_average(states, [2, 1])
    assert avg["w"].item() == pytest.approx(2.0) and avg["n"].dtype == torch.int64


# --------------------------------------------------------------------------- FedPAN


def test_pan_encoding_shape_and_periodicity():
    code = pan_encoding(8, 0.3, 2.0, "additive")
    assert code.shape == (8,)
    torch.testing.assert_close(code[:4], code[4:])  # two periods over eight channels
    assert code.abs().max().item() == pytest.approx(0.3)
    assert code[1].item() == pytest.approx(0.3)  # 0.3 sin(2 pi * 2 * 1 / 8) = 0.3
    assert code[2].item() == 0.0  # 0.3 sin(pi), exactly 0
    torch.testing.assert_close(pan_encoding(8, 0.3, 2.0, "multiplicative"), 1 + code)
    with pytest.raises(ValueError, match=r"fedpan\.mode"):
        pan_encoding(8, 0.3, 1.0, "rotate")


def test_pan_adds_the_encoding_after_each_bn_layer():
    torch.manual_seed(0)
    model = build_model(VGG, 3, (1, 4, 4)).eval()
    plain = build_model(VGG, 3, (1, 4, 4)).eval()
    plain.load_state_dict(model.state_dict())
    attach_pan(model, 0.5, 1.0, "additive")
    x = torch.randn(2, 1, 4, 4)
    bn = model.features[1]
    seen = {}

    def keep(_module, _inputs, out):
        seen["out"] = out.clone()  # the ReLU after it works in place

    bn.register_forward_hook(keep)
    reference = plain.features[1](plain.features[0](x))
    code = pan_encoding(4, 0.5, 1.0, "additive").reshape(1, -1, 1, 1)
    model(x)
    torch.testing.assert_close(seen["out"], reference + code)
    assert not torch.allclose(model(x), plain(x))
    zero = build_model(VGG, 3, (1, 4, 4)).eval()
    zero.load_state_dict(plain.state_dict())
    torch.testing.assert_close(attach_pan(zero, 0.0, 1.0, "additive")(x), plain(x))


# --------------------------------------------------------------------------- runs


def test_fedavg_of_one_client_equals_centralized_sgd_on_the_same_batches():
    data = toy_data()
    cfg = FederatedConfig(
        algorithm="fedavg",
        clients=1,
        participation=1.0,
        rounds=1,
        local_epochs=3,
        batch_size=8,
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        min_client_size=1,
        seed=7,
    )
    fed = simulate(cfg, data, builder(data))["final_state"]
    torch.manual_seed(7)
    model = builder(data)()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for epoch in range(3):
        for x, y in data.train.batches(8, shuffle=True, generator=client_generator(7, 1, 0, epoch)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(fed[name], value, rtol=0, atol=1e-7)


def test_fedavg_of_one_client_over_rounds_equals_plain_sgd_without_momentum():
    data = toy_data()
    cfg = FederatedConfig(
        clients=1,
        participation=1.0,
        rounds=3,
        local_epochs=1,
        batch_size=16,
        lr=0.2,
        momentum=0.0,
        weight_decay=0.0,
        min_client_size=1,
        seed=1,
    )
    result = simulate(cfg, data, builder(data))
    torch.manual_seed(1)
    model = builder(data)()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    accuracy = []
    for r in range(1, 4):
        for x, y in data.train.batches(16, shuffle=True, generator=client_generator(1, r, 0, 0)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        with torch.no_grad():
            accuracy.append((model(data.test.x).argmax(1) == data.test.y).float().mean().item())
    assert result["metrics"]["test/accuracy"][1:].tolist() == pytest.approx(accuracy, abs=1e-6)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(result["final_state"][name], value, rtol=0, atol=1e-7)


def small_config(**changes) -> FederatedConfig:
    base = dict(
        clients=4,
        participation=0.5,
        rounds=3,
        local_epochs=1,
        batch_size=8,
        lr=0.1,
        alpha=0.5,
        min_client_size=5,
        seed=0,
    )
    return FederatedConfig(**{**base, **changes})


def test_fedprox_with_mu_zero_equals_fedavg_exactly():
    data = toy_data()
    avg = simulate(small_config(algorithm="fedavg"), data, builder(data))
    prox = simulate(small_config(algorithm="fedprox", params={"mu": 0.0}), data, builder(data))
    for name, values in avg["metrics"].items():
        np.testing.assert_array_equal(prox["metrics"][name], values, err_msg=name)
    assert all(torch.equal(prox["final_state"][k], v) for k, v in avg["final_state"].items())
    other = simulate(small_config(algorithm="fedprox", params={"mu": 1.0}), data, builder(data))
    assert not torch.equal(
        other["final_state"]["classifier.weight"], avg["final_state"]["classifier.weight"]
    )


@pytest.mark.parametrize("algorithm", ["moon", "feddyn", "fedpan", "fedsign"])
def test_a_whole_run_is_deterministic(algorithm):
    data = toy_data()
    build = builder(data, VGG)
    first = simulate(small_config(algorithm=algorithm), data, build)
    second = simulate(small_config(algorithm=algorithm), data, build)
    for name, values in first["metrics"].items():
        np.testing.assert_array_equal(second["metrics"][name], values, err_msg=name)
    np.testing.assert_array_equal(first["participation"], second["participation"])
    other = simulate(small_config(algorithm=algorithm, seed=1), data, build)
    assert not np.array_equal(other["metrics"]["test/loss"], first["metrics"]["test/loss"])


def test_run_records_rounds_participation_and_sign_consistency():
    data = toy_data()
    result = simulate(small_config(algorithm="fedavg", rounds=4), data, builder(data))
    metrics = result["metrics"]
    assert all(len(v) == 5 for v in metrics.values())
    assert np.isnan(metrics["sign_consistency/start"][0])
    assert np.all(
        (metrics["sign_consistency/start"][1:] > 0.5) & (metrics["sign_consistency/start"][1:] <= 1)
    )
    assert result["participation"].sum(1).tolist() == [2, 2, 2, 2]
    assert [np.flatnonzero(row).tolist() for row in result["participation"]] == [
        participants(0, r, 4, 0.5) for r in range(1, 5)
    ]
    assert result["client_sizes"].sum() == len(data.train)
    assert result["label_counts"].sum() == len(data.train)
    assert metrics["test/accuracy"][-1] > 0.6  # three separable classes, chance 1/3


def test_moon_keeps_the_previous_local_model_per_client():
    data = toy_data()
    cfg = small_config(algorithm="moon", clients=2, participation=1.0, rounds=2)
    algo_result = simulate(cfg, data, builder(data))
    assert np.isfinite(algo_result["metrics"]["local/loss"][1:]).all()
    algo = make_algorithm("moon", {}, 2, 60)
    model = builder(data)()
    algo.start(model)
    algo.begin_client(1, model)
    assert torch.equal(algo.previous.classifier.weight, model.classifier.weight)  # first round
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    algo.end_client(1, model)
    assert torch.equal(algo.previous_states[1]["classifier.weight"], model.classifier.weight)


# --------------------------------------------------------------------------- files and table


def test_table_and_figures_from_run_files(tmp_path):
    data = toy_data()
    paths = []
    for algorithm in ("fedavg", "fedsign"):
        for seed in (0, 1):
            spec = {
                "dataset": "toy",
                "model": "mlp",
                "alpha": 0.5,
                "algorithm": algorithm,
                "seed": seed,
                "params": {},
            }
            result = simulate(small_config(algorithm=algorithm, seed=seed), data, builder(data))
            path = tmp_path / f"{algorithm}{seed}.h5"
            write_result(path, spec, result)
            paths.append(path)
    art = store.open(paths[0])
    assert art.kind == "federated" and art.attrs["algorithm"] == "fedavg"
    assert art["round"].tolist() == [0, 1, 2, 3]
    finals = [store.open(p).attrs["final_test_accuracy"] for p in paths]
    table = write_federated_table(paths, tmp_path / "federated.csv")
    assert table["algorithm"].tolist() == ["fedavg", "fedsign"]
    assert table["final_accuracy_mean"].tolist() == pytest.approx(
        [np.mean(finals[:2]), np.mean(finals[2:])]
    )
    assert table["final_accuracy_std"].tolist() == pytest.approx(
        [np.std(finals[:2], ddof=1), np.std(finals[2:], ddof=1)]
    )
    assert pd.read_csv(tmp_path / "federated.csv")["seeds"].tolist() == [2, 2]
    plot_federated_table(tmp_path / "federated.csv", tmp_path / "table.png")
    plot_federated_accuracy(paths, tmp_path / "accuracy.png", title="toy")
    assert (tmp_path / "table.png").stat().st_size > 5000
    assert (tmp_path / "accuracy.png").stat().st_size > 5000
    assert federated_table([]).empty


def _config(**federated):
    block = {
        "datasets": ["digits"],
        "model": "mlp",
        "alphas": [1.0, 0.1],
        "seeds": [0],
        "algorithms": {"fedsign": {"gamma": 1.0, "loss": "hinge"}},
        "rounds": 2,
    }
    return {"datasets": {"digits": {}}, "models": {"mlp": {}}, "federated": {**block, **federated}}


def test_check_federated_names_the_bad_key():
    check_federated(_config())
    check_federated({"datasets": {}, "models": {}, "federated": {"datasets": []}})
    with pytest.raises(ConfigError, match=r"federated\.datasets: 'cifar' is not a key"):
        check_federated(_config(datasets=["cifar"]))
    with pytest.raises(ConfigError, match=r"federated\.model: required"):
        check_federated(_config(model=None))
    with pytest.raises(ConfigError, match=r"federated\.model: 'vgg' is not a key of models"):
        check_federated(_config(model="vgg"))
    spec = federated_spec(_config(), "digits", 0.1, "fedsign", 0)
    assert spec["params"] == {"gamma": 1.0, "loss": "hinge"} and spec["rounds"] == 2
    assert "alphas" not in spec and spec["alpha"] == 0.1


def test_schema_keeps_a_subset_of_algorithms_and_names_bad_keys():
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    from landscape.config import schema_error

    schema_path = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    base = {
        "datasets": {"d": {"source": "digits"}},
        "models": {"m": {"arch": "mlp"}},
        "runs": {"r": {"dataset": "d", "model": "m"}},
    }
    config = {**base, "federated": {"datasets": ["d"], "model": "m", "algorithms": {"moon": {}}}}
    validate(config, str(schema_path))
    assert config["federated"]["algorithms"] == {"moon": {"mu": 1.0, "tau": 0.5}}
    unknown = {**base, "federated": {"algorithms": {"fedsgn": {}}}}
    assert schema_error(unknown, schema).startswith("federated.algorithms.fedsgn: unknown key")
    loss = {**base, "federated": {"algorithms": {"fedsign": {"loss": "l1"}}}}
    assert schema_error(loss, schema).startswith("federated.algorithms.fedsign.loss: 'l1'")
