"""Directions: noise, special, gradient and checkpoint directions, their transforms and
normalizations, against their definitions and independent references."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from landscape import store
from landscape.data import DataBundle, TensorSplit, stratified_indices
from landscape.directions import (
    NOISE,
    gradient_batches,
    make_direction,
    needs_data,
    negative_gradient,
    noise,
    normalize,
    orthogonalize,
    required_references,
    sign_consistent,
    special,
    towards,
    trainable,
    write_direction,
)
from landscape.models import build_model
from landscape.params import group_names


@pytest.fixture
def vgg():
    torch.manual_seed(0)
    return build_model({"arch": "vgg", "layers": [8, "M", 16]}, 10, (1, 8, 8))


BIG = {"w": torch.zeros(400, 500)}


@pytest.mark.parametrize(
    ("name", "mean", "var"),
    [
        ("gaussian", 0.0, 1.0),
        ("uniform", 0.0, 1 / 3),
        ("rademacher", 0.0, 1.0),
        ("laplace", 0.0, 2.0),
        ("logistic", 0.0, math.pi**2 / 3),
        ("student_t", 0.0, 3.0),
    ],
)
def test_noise_moments(name, mean, var):
    x = noise(BIG, name, seed=0)["w"].double()
    assert x.mean().item() == pytest.approx(mean, abs=0.02)
    # Student-t(3) has infinite kurtosis: its sample variance converges slowly.
    assert x.var().item() == pytest.approx(var, rel=0.15 if name == "student_t" else 0.02)


def test_cauchy_quartiles():
    x = noise(BIG, "cauchy", seed=0)["w"].flatten().double()
    q = torch.quantile(x[:100_000], torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    assert q.tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=0.03)


def test_rademacher_values_and_all_families_listed():
    x = noise(BIG, "rademacher", seed=0)["w"]
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    assert len(NOISE) >= 7


def test_noise_is_seeded():
    a, b, c = (noise(BIG, "gaussian", s)["w"] for s in (1, 1, 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_filter_normalization_matches_filter_norms(vgg):
    d = make_direction({"normalization": "filter", "bias_bn": "zero", "seed": 0}, vgg)
    for name, p in trainable(vgg).items():
        if p.dim() <= 1:
            assert torch.count_nonzero(d[name]) == 0, name
            continue
        for f in range(p.shape[0]):  # one filter at a time, as plainly as possible
            assert d[name][f].norm().item() == pytest.approx(p[f].norm().item(), rel=1e-5)


def test_layer_and_norm_normalizations(vgg):
    params = trainable(vgg)
    eps = noise(params, "gaussian", 0)
    layer = normalize(eps, params, "layer", bias_bn="normalize")
    for name, p in params.items():
        assert layer[name].norm().item() == pytest.approx(p.norm().item(), rel=1e-5)
    glob = normalize(eps, params, "norm", bias_bn="raw")
    total = math.sqrt(sum(float(d.double().pow(2).sum()) for d in glob.values()))
    theta = math.sqrt(sum(float(p.double().pow(2).sum()) for p in params.values()))
    assert total == pytest.approx(theta, rel=1e-6)
    # Norm scaling keeps the direction: the ratio to the raw noise is one constant.
    ratios = torch.cat([(glob[n] / eps[n]).flatten() for n in params])
    assert ratios.std().item() < 1e-5 * ratios.mean().item()
    raw = normalize(eps, params, "raw", bias_bn="raw")
    assert all(torch.equal(raw[n], eps[n]) for n in params)


def test_unknown_options_raise(vgg):
    with pytest.raises(ValueError, match="distribution"):
        noise(trainable(vgg), "poisson", 0)
    with pytest.raises(ValueError, match="normalization"):
        normalize({}, {}, "filters")
    with pytest.raises(ValueError, match="kind"):
        make_direction({"kind": "banana"}, vgg)


# --------------------------------------------------------------------------- sign transform


def test_sign_consistent_full(vgg):
    params = trainable(vgg)
    eps = noise(params, "gaussian", 5)
    d = sign_consistent(eps, params, ratio=1.0, seed=0)
    for name, p in params.items():
        nz = p != 0
        assert torch.equal(torch.sign(d[name])[nz], torch.sign(p)[nz]), name
        assert torch.equal(d[name].abs()[nz], eps[name].abs()[nz]), name
        assert torch.count_nonzero(d[name][~nz]) == 0, name


def test_sign_consistent_partial_exact_count():
    torch.manual_seed(1)
    theta = {"w": torch.randn(10, 7), "b": torch.randn(13)}
    # Every element of eps has the sign opposite to theta: each chosen element changes.
    eps = {n: -torch.sign(t) * (torch.rand(t.shape) + 0.1) for n, t in theta.items()}
    d = sign_consistent(eps, theta, ratio=0.3, seed=4)
    for name, e in eps.items():
        changed = d[name] != e
        assert int(changed.sum()) == round(0.3 * e.numel()), name  # 21 of 70, 4 of 13
        assert torch.equal(d[name][~changed], e[~changed])  # the rest bit-identical
        assert torch.equal(d[name][changed], e[changed].abs() * torch.sign(theta[name])[changed])
    again = sign_consistent(eps, theta, ratio=0.3, seed=4)
    assert all(torch.equal(again[n], d[n]) for n in d)
    other = sign_consistent(eps, theta, ratio=0.3, seed=5)
    assert not torch.equal(other["w"], d["w"])
    # Nested choices: what 0.3 changes, 0.6 changes too.
    more = sign_consistent(eps, theta, ratio=0.6, seed=4)
    for name, e in eps.items():
        assert bool(((d[name] != e) <= (more[name] != e)).all())
    same = sign_consistent(eps, theta, ratio=0.0, seed=4)
    assert all(torch.equal(same[n], eps[n]) for n in eps)
    with pytest.raises(ValueError, match="sign_ratio"):
        sign_consistent(eps, theta, ratio=1.5)


# --------------------------------------------------------------------------- special directions

THETA = {
    "w": torch.tensor([[1.0, -2.0], [3.0, 0.0]]),  # mean 0.5
    "b": torch.tensor([0.5, -0.5, 2.0]),  # mean 2/3
}


def test_special_directions_by_hand():
    assert torch.equal(special("theta_f", THETA)["w"], THETA["w"])
    sign = special("sign_theta_f", THETA)
    assert sign["w"].tolist() == [[1, -1], [1, 0]]
    assert sign["b"].tolist() == [1, -1, 1]
    sign_mu = special("sign_theta_f_mu", THETA)
    assert sign_mu["w"].tolist() == [[1, -1], [1, -1]]
    assert sign_mu["b"].tolist() == [-1, -1, 1]
    theta_0 = {"w": torch.full((2, 2), 0.25), "b": torch.tensor([1.0, 2.0, 3.0]), "extra": 0}
    init = special("theta_0", THETA, theta_0=theta_0)
    assert list(init) == ["w", "b"]
    assert torch.equal(init["w"], theta_0["w"]) and torch.equal(init["b"], theta_0["b"])
    with pytest.raises(ValueError, match="theta_0"):
        special("theta_0", THETA)
    with pytest.raises(ValueError, match="sgp_theta_f_mu"):
        special("sign", THETA)


def test_sgp_gaussian_magnitudes_with_sign_pattern():
    g = torch.Generator().manual_seed(9)
    mags = {
        n: torch.randn(t.shape, generator=g, dtype=torch.float64).abs() for n, t in THETA.items()
    }
    sgp = special("sgp_theta_f", THETA, seed=9)
    sgp_mu = special("sgp_theta_f_mu", THETA, seed=9)
    assert torch.allclose(sgp["w"].double(), mags["w"] * torch.tensor([[1.0, -1], [1, 0]]))
    assert torch.allclose(sgp_mu["b"].double(), mags["b"] * torch.tensor([-1.0, -1, 1]))
    for name, t in THETA.items():
        assert torch.equal(torch.sign(sgp[name]), torch.sign(t))
        assert bool((sgp[name].abs()[t != 0] > 0).all())
    assert not torch.equal(special("sgp_theta_f", THETA, seed=10)["w"], sgp["w"])


# --------------------------------------------------------------------------- gradients


@pytest.fixture
def mlp64():
    torch.manual_seed(2)
    return build_model({"arch": "mlp", "hidden": [12]}, 10, (1, 8, 8)).double()


def reference_negative_gradient(model, x, y, train=False):
    ref = copy.deepcopy(model).train(train)
    F.cross_entropy(ref(x), y).backward()
    return {n: -p.grad for n, p in ref.named_parameters()}


def test_negative_gradient_equals_autograd(digits, mlp64):
    x, y = digits.train.x[:65].double(), digits.train.y[:65]
    ref = reference_negative_gradient(mlp64, x, y)
    before = {n: p.clone() for n, p in mlp64.named_parameters()}
    one = negative_gradient(mlp64, [(x, y)])
    two = negative_gradient(mlp64, [(x[:40], y[:40]), (x[40:], y[40:])])  # unequal sizes
    for name in ref:
        assert torch.allclose(one[name], ref[name], rtol=0, atol=1e-6), name
        assert torch.allclose(two[name], ref[name], rtol=0, atol=1e-6), name
    for name, p in mlp64.named_parameters():
        assert p.grad is None and torch.equal(p, before[name])
    with pytest.raises(ValueError, match="batches"):
        negative_gradient(mlp64, [])


def test_negative_gradient_bn_modes_leave_model_alone(digits):
    torch.manual_seed(0)
    model = build_model({"arch": "vgg", "layers": [4, "M", 8]}, 10, (1, 8, 8)).double()
    with torch.no_grad():
        model.features[1].running_mean.uniform_(-0.5, 0.5)
    model.eval()
    x, y = digits.train.x[:32].double(), digits.train.y[:32]
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    for train in (False, True):
        got = negative_gradient(model, [(x, y)], train_mode=train)
        ref = reference_negative_gradient(model, x, y, train=train)
        for name in ref:
            assert torch.allclose(got[name], ref[name], rtol=0, atol=1e-6), (train, name)
    assert not model.training and not any(m.training for m in model.modules())
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    assert all(p.grad is None for p in model.parameters())


def class_sorted(digits, subset_seed=0):
    """The digits with the training split sorted by class, as image folders are."""
    order = torch.argsort(digits.train.y, stable=True)
    train = TensorSplit(digits.train.x[order], digits.train.y[order])
    return DataBundle("sorted", train, digits.test, 10, (1, 8, 8), subset_seed=subset_seed)


def test_gradient_batches_cover_the_classes_in_proportion(digits):
    data = class_sorted(digits)
    spec = {"kind": "gradient", "batches": 4, "batch_size": 50}
    batches = list(gradient_batches(spec, data))
    assert [len(y) for _, y in batches] == [50] * 4
    y = torch.cat([y for _, y in batches])
    population = torch.bincount(data.train.y, minlength=10).double()
    assert (torch.bincount(y, minlength=10) - 200 * population / len(data.train)).abs().max() < 1
    assert all(len(set(yb.tolist())) >= 5 for _, yb in batches)  # not one class per batch
    x = torch.cat([x for x, _ in batches])
    assert torch.equal(x, torch.cat([x for x, _ in gradient_batches(spec, data)]))
    other = torch.cat([x for x, _ in gradient_batches(spec, class_sorted(digits, 1))])
    assert not torch.equal(x, other)
    everything = torch.cat([y for _, y in gradient_batches({**spec, "batches": "all"}, data)])
    assert torch.equal(torch.bincount(everything), torch.bincount(data.train.y))


def test_gradient_direction_uses_fixed_batches(digits, mlp64):
    model = mlp64.float()
    data = class_sorted(digits)
    spec = {"kind": "gradient", "batches": 2, "batch_size": 100}
    d = make_direction(spec, model, data=data)
    idx = torch.as_tensor(stratified_indices(data.train.y.numpy(), 200, 0))
    ref = reference_negative_gradient(model, data.train.x[idx], data.train.y[idx])
    for name in ref:
        assert torch.allclose(d[name], ref[name], rtol=1e-4, atol=1e-6), name
    assert needs_data(spec) and not needs_data({"kind": "noise"})
    with pytest.raises(ValueError, match="data"):
        make_direction(spec, model)
    with pytest.raises(ValueError, match="batches"):
        make_direction({**spec, "batches": 0}, model, data=digits)


# --------------------------------------------------------------------------- towards, orthogonalize


def test_towards(vgg):
    theta = trainable(vgg)
    target = {n: torch.randn(p.shape) for n, p in vgg.state_dict().items() if p.is_floating_point()}
    d = towards(theta, target)
    assert list(d) == list(theta)
    for name, p in theta.items():
        assert torch.equal(d[name], target[name] - p)
    bad = {**target, "classifier.weight": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match=r"classifier\.weight"):
        towards(theta, bad)


def test_orthogonalize():
    torch.manual_seed(7)
    d1 = {"a": torch.randn(30, 4), "b": torch.randn(9)}
    d2 = {n: 0.8 * t + 0.3 * torch.randn(t.shape) for n, t in d1.items()}  # far from orthogonal
    out = orthogonalize(d1, d2)
    v1 = torch.cat([t.double().flatten() for t in d1.values()])
    v2 = torch.cat([t.double().flatten() for t in d2.values()])
    w = torch.cat([out[n].double().flatten() for n in d2])
    assert abs(float(v1 @ w / (v1.norm() * w.norm()))) < 1e-6
    assert float(w.norm()) == pytest.approx(float(v2.norm()), rel=1e-6)
    assert out["a"].dtype == torch.float32 and out["a"].shape == (30, 4)
    with pytest.raises(ValueError, match="parallel"):
        orthogonalize(d1, {n: 2 * t for n, t in d1.items()})


# --------------------------------------------------------------------------- make_direction


def filter_norms_match(d, p):
    return all(
        d[f].norm().item() == pytest.approx(p[f].norm().item(), rel=1e-5) for f in range(len(p))
    )


def test_make_direction_group_after_normalization(vgg):
    params = trainable(vgg)
    d = make_direction({"normalization": "filter", "group": "CONV", "seed": 1}, vgg)
    conv = set(group_names(vgg, "CONV"))
    assert conv == {"features.0.weight", "features.4.weight", "classifier.weight"}
    for name, p in params.items():
        if name in conv:
            assert filter_norms_match(d[name], p), name
        else:
            assert torch.count_nonzero(d[name]) == 0, name


def test_make_direction_sign_then_normalization_then_scale(vgg):
    params = trainable(vgg)
    spec = {"sign": "consistent", "normalization": "filter", "seed": 2}
    d = make_direction(spec, vgg)
    doubled = make_direction({**spec, "scale": 2.0}, vgg)
    for name, p in params.items():
        if p.dim() > 1:
            # Filter normalization rescales by positive factors: signs stay those of theta.
            assert torch.equal(torch.sign(d[name]), torch.sign(p)), name
            assert filter_norms_match(d[name], p), name
        assert torch.equal(doubled[name], 2.0 * d[name]), name
    # BN-only noise, layer-normalized, biases included.
    bn = make_direction({"group": "BN", "normalization": "layer", "bias_bn": "normalize"}, vgg)
    for name, p in params.items():
        if name in group_names(vgg, "BN"):
            assert bn[name].norm().item() == pytest.approx(p.norm().item(), rel=1e-5, abs=1e-9)
        else:
            assert torch.count_nonzero(bn[name]) == 0, name


def test_make_direction_references(vgg):
    params = trainable(vgg)
    target = {n: p + 0.5 for n, p in params.items()}
    d = make_direction(
        {"kind": "checkpoint", "target": {"epoch": 3}}, vgg, references={"target": target}
    )
    for name in params:  # raw, biases and BN included: theta + d is the target
        assert torch.allclose(d[name], torch.full_like(d[name], 0.5)), name
    init = {n: torch.randn(p.shape) for n, p in params.items()}
    d0 = make_direction({"kind": "special", "of": "theta_0"}, vgg, references={"theta_0": init})
    assert all(torch.equal(d0[n], init[n]) for n in params)
    with pytest.raises(ValueError, match="target"):
        make_direction({"kind": "checkpoint"}, vgg)
    with pytest.raises(ValueError, match="theta_0"):
        make_direction({"kind": "special", "of": "theta_0"}, vgg, references={})
    sign = make_direction({"kind": "special", "of": "sign_theta_f", "scale": 0.5}, vgg)
    assert all(torch.equal(sign[n], 0.5 * torch.sign(p)) for n, p in params.items())


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"kind": "special", "of": "theta"}, "sgp_theta_f"),
        ({"sign": "flip"}, "consistent"),
        ({"kind": "hessian"}, "checkpoint"),
        ({"group": "HEAD"}, "LAYER1"),
    ],
)
def test_make_direction_unknown_values_list_valid_ones(vgg, spec, match):
    with pytest.raises(ValueError, match=match):
        make_direction(spec, vgg)


def test_required_references():
    assert required_references({"kind": "special", "of": "theta_0"}) == {
        "theta_0": {"run": None, "epoch": 0}
    }
    target = {"run": "other", "epoch": "final"}
    assert required_references({"kind": "checkpoint", "target": target}) == {"target": target}
    assert required_references({"kind": "checkpoint"}) == {
        "target": {"run": None, "epoch": "final"}
    }
    assert required_references({"kind": "special", "of": "sign_theta_f"}) == {}
    assert required_references({"kind": "gradient"}) == {}
    assert required_references({}) == {}


def save_checkpoint(path, model, spec, epoch):
    meta = {
        "spec": {"model": spec, "model_name": "tiny"},
        "num_classes": 10,
        "input_shape": [1, 8, 8],
        "run": "r",
        "epoch": epoch,
    }
    torch.save({"model": model.state_dict(), "meta": meta}, path)


def test_write_direction_with_references(tmp_path):
    spec = {"arch": "mlp", "hidden": [6]}
    torch.manual_seed(0)
    first = build_model(spec, 10, (1, 8, 8))
    torch.manual_seed(1)
    last = build_model(spec, 10, (1, 8, 8))
    save_checkpoint(tmp_path / "e0.pt", first, spec, 0)
    save_checkpoint(tmp_path / "e5.pt", last, spec, 5)
    out = tmp_path / "d.h5"
    write_direction(
        tmp_path / "e5.pt",
        out,
        {"kind": "checkpoint"},
        references={"target": tmp_path / "e0.pt"},
        dataset=None,
    )
    art = store.open(out)
    assert set(art.inputs) == {"checkpoint", "target"}
    stored = art.tensors("params")
    for name, p in first.named_parameters():
        expected = (p - dict(last.named_parameters())[name]).detach().numpy()
        assert (stored[name] == expected).all(), name


def test_gradient_direction_records_the_subset_seed(tmp_path):
    spec = {"arch": "mlp", "hidden": [6]}
    torch.manual_seed(0)
    model = build_model(spec, 10, (1, 8, 8))
    save_checkpoint(tmp_path / "e0.pt", model, spec, 0)
    gradient = {"kind": "gradient", "batches": 2, "batch_size": 64}
    paths = {seed: tmp_path / f"g{seed}.h5" for seed in (0, 4)}
    for seed, out in paths.items():
        dataset = {"source": "digits", "subset_seed": seed}
        write_direction(tmp_path / "e0.pt", out, gradient, "cpu", dataset=dataset)
    first, other = (store.open(p) for p in paths.values())
    assert (first.attrs["subset_seed"], other.attrs["subset_seed"]) == (0, 4)
    assert any((first.tensors()[n] != other.tensors()[n]).any() for n in first.tensors())
    write_direction(tmp_path / "e0.pt", tmp_path / "n.h5", {"seed": 1}, "cpu", dataset=dataset)
    assert "subset_seed" not in store.open(tmp_path / "n.h5").attrs


@pytest.mark.parametrize(
    ("algorithm", "keys"),
    [("wpeak", {"lr": 0.05}), ("vvv", {"lr": 0.02, "alpha": 0.1, "gamma": 0.9})],
)
def test_mined_direction_runs_the_algorithm_on_the_fixed_batches(digits, algorithm, keys):
    from landscape import mining

    torch.manual_seed(3)
    model = build_model({"arch": "mlp", "hidden": [12]}, 10, (1, 8, 8))
    spec = {"kind": "mined", "algorithm": algorithm, "epochs": 3, "batches": 2, "seed": 4, **keys}
    data = class_sorted(digits)
    batches = list(data.train.sample(64, 0).batches(32))
    mined = make_direction({**spec, "batch_size": 32}, model, data=data)
    miner = mining.mine_wpeak if algorithm == "wpeak" else mining.mine_vvv
    expected = miner(model, batches, epochs=3, seed=4, **keys)
    assert mined.keys() == expected.keys()
    assert all(torch.equal(mined[n], expected[n]) for n in mined)
    assert any(t.abs().sum() > 0 for t in mined.values())
    with pytest.raises(ValueError, match="kind 'mined': needs data"):
        make_direction(spec, model)


def test_eigenvector_direction_is_scaled_to_the_parameter_norm(vgg):
    """V8: a unit eigenvector is scaled to ||theta|| by default (the paper's Norm), every element
    kept, so the direction is unchanged; raw keeps the unit vector; scale multiplies after."""
    params = trainable(vgg)
    flat = torch.randn(sum(p.numel() for p in params.values()), generator=torch.Generator())
    flat = flat / flat.norm()
    unit, start = {}, 0
    for name, p in params.items():
        unit[name] = flat[start : start + p.numel()].view(p.shape)
        start += p.numel()
    theta_norm = math.sqrt(sum(float(p.double().pow(2).sum()) for p in params.values()))
    refs = {"eigenvector": unit}
    scaled = make_direction({"kind": "eigenvector"}, vgg, references=refs)
    for name in params:
        torch.testing.assert_close(scaled[name], unit[name] * theta_norm, rtol=1e-5, atol=1e-7)
    raw = make_direction({"kind": "eigenvector", "normalization": "raw"}, vgg, references=refs)
    assert all(torch.equal(raw[n], unit[n]) for n in params)
    tenth = make_direction({"kind": "eigenvector", "scale": 0.1}, vgg, references=refs)
    for name in params:
        torch.testing.assert_close(tenth[name], 0.1 * scaled[name])


def test_fresh_initialization_is_epoch_0_of_a_run_with_that_seed(tmp_path):
    from landscape.directions import fresh_initialization
    from landscape.train import train_model

    model = {"arch": "mlp", "hidden": [6]}
    spec = {
        "run": "r",
        "dataset": {"source": "digits"},
        "dataset_name": "digits",
        "model": model,
        "model_name": "tiny",
        "train": {"epochs": 1, "seed": 3},
    }
    epoch0 = train_model(tmp_path / "e0.pt", spec, 0, device="cpu")
    state = torch.get_rng_state()
    fresh = fresh_initialization(epoch0["meta"], 3)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert all(torch.equal(fresh[n], epoch0["model"][n]) for n in fresh)
    other = fresh_initialization(epoch0["meta"], 4)
    assert all(not torch.equal(other[n], fresh[n]) for n in fresh if fresh[n].dim() > 1)


def test_mined_vvv_from_a_fresh_initialization_records_its_relative_norm(tmp_path):
    """Algorithm 2 with phi_init: init starts phi at the init_seed initialization: eps = phi -
    theta is of the order of ||theta||; the file holds ||eps|| / ||theta||, the seed and the
    normalization applied."""
    spec = {"arch": "mlp", "hidden": [6]}
    torch.manual_seed(0)
    model = build_model(spec, 10, (1, 8, 8))
    save_checkpoint(tmp_path / "e0.pt", model, spec, 0)
    mined = {"kind": "mined", "algorithm": "vvv", "epochs": 1, "batches": 1, "lr": 1e-6}
    dataset = {"source": "digits"}
    for start in ("theta", "init"):
        out = tmp_path / f"{start}.h5"
        write_direction(tmp_path / "e0.pt", out, {**mined, "phi_init": start}, dataset=dataset)
    art = store.open(tmp_path / "init.h5")
    eps = art.tensors("params")
    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    eps_norm = math.sqrt(sum(float((v.astype("float64") ** 2).sum()) for v in eps.values()))
    theta_norm = math.sqrt(sum(float((v.astype("float64") ** 2).sum()) for v in params.values()))
    assert art.attrs["relative_norm"] == pytest.approx(eps_norm / theta_norm, rel=1e-6)
    assert art.attrs["relative_norm"] > 0.5  # a start in another basin, not theta
    assert (art.attrs["init_seed"], art.attrs["normalization"]) == (1, "raw")
    torch.manual_seed(1)  # init_seed 1: the start is that seed's initialization (lr ~ 0)
    start = build_model(spec, 10, (1, 8, 8))
    for name, p in start.named_parameters():
        expected = (p - dict(model.named_parameters())[name]).detach().numpy()
        assert abs(eps[name] - expected).max() < 1e-4, name
    at_theta = store.open(tmp_path / "theta.h5")
    assert at_theta.attrs["relative_norm"] < 1e-4 and "init_seed" not in at_theta.attrs


def test_phi_init_is_checked(vgg, digits):
    vvv = {"kind": "mined", "algorithm": "vvv", "epochs": 1, "batch_size": 8}
    with pytest.raises(ValueError, match="phi_init: unknown 'elsewhere'"):
        make_direction({**vvv, "phi_init": "elsewhere"}, vgg, data=digits)
    with pytest.raises(ValueError, match="phi_init: 'init' applies to algorithm 'vvv'"):
        make_direction({**vvv, "algorithm": "wpeak", "phi_init": "init"}, vgg, data=digits)
    with pytest.raises(ValueError, match=r"phi_init 'init': needs references\['phi_init'\]"):
        make_direction({**vvv, "phi_init": "init"}, vgg, data=digits)


# --------------------------------------------------------------------------- issue 12: V6, Alg. 2


def _flat64(direction):
    return torch.cat([t.detach().double().reshape(-1) for t in direction.values()])


def _cosine(a, b):
    x, y = _flat64(a), _flat64(b)
    return float(x @ y / (x.norm() * y.norm()))


def test_closest_gaussian_is_the_most_overlapping_candidate(digits, mlp64):
    """V6: of the candidates (one seeded stream, candidate 0 the plain noise direction), the one
    with the largest cosine to the reference is chosen, scaled to the reference's norm (match);
    checked against a plain loop over the candidates."""
    model = mlp64.float()
    x, y = digits.train.x[:64], digits.train.y[:64]
    reference = negative_gradient(model, [(x, y)])
    params = trainable(model)
    g = torch.Generator().manual_seed(7)
    candidates, cosines = [], []
    for _ in range(30):
        draw = {
            n: torch.randn(p.shape, generator=g, dtype=torch.float64).float()
            for n, p in params.items()
        }
        candidates.append(draw)
        cosines.append(_cosine(draw, reference))
    best = max(range(30), key=lambda i: cosines[i])
    angles = sorted(math.degrees(math.acos(c)) for c in cosines)
    assert all(torch.equal(candidates[0][n], noise(params, "gaussian", 7)[n]) for n in params)
    spec = {
        "kind": "noise",
        "seed": 7,
        "closest_to": {"direction": "grad", "candidates": 30},
        "normalization": "match",
        "bias_bn": "raw",
    }
    attrs = {}
    eps = make_direction(spec, model, references={"closest_to": reference}, attrs=attrs)
    assert attrs["closest_index"] == best != 0
    assert attrs["closest_angle"] == pytest.approx(math.degrees(math.acos(cosines[best])), abs=1e-9)
    assert attrs["candidate_angle_min"] == pytest.approx(angles[0], abs=1e-9)
    assert attrs["candidate_angle_median"] == pytest.approx((angles[14] + angles[15]) / 2, abs=1e-9)
    assert _cosine(eps, reference) == pytest.approx(max(cosines), rel=1e-5)
    ref_norm = float(_flat64(reference).norm())
    assert float(_flat64(eps).norm()) == pytest.approx(ref_norm, rel=1e-6)
    ratio = ref_norm / float(_flat64(candidates[best]).norm())
    for name in params:
        torch.testing.assert_close(eps[name], candidates[best][name] * ratio)
    assert attrs["angle_to_reference"] == pytest.approx(attrs["closest_angle"], abs=1e-4)
    # bias_bn zero (the noise default) zeroes the 1-D tensors before the norm is matched
    refs = {"closest_to": reference}
    zeroed = make_direction({**spec, "bias_bn": "zero"}, model, references=refs)
    assert float(_flat64(zeroed).norm()) == pytest.approx(ref_norm, rel=1e-6)
    assert all(not zeroed[n].any() for n, p in params.items() if p.dim() == 1)


def test_match_and_closest_to_are_checked(vgg):
    ref = {n: torch.ones_like(p) for n, p in trainable(vgg).items()}
    with pytest.raises(ValueError, match="normalization: 'match' needs closest_to"):
        make_direction({"normalization": "match"}, vgg, references={"closest_to": ref})
    spec = {"closest_to": {"direction": "g", "candidates": 3}}
    with pytest.raises(ValueError, match=r"closest_to: needs references\['closest_to'\]"):
        make_direction(spec, vgg)
    zero = {n: torch.zeros_like(p) for n, p in ref.items()}
    with pytest.raises(ValueError, match="closest_to: the reference direction is zero"):
        make_direction(spec, vgg, references={"closest_to": zero})
    with pytest.raises(ValueError, match="closest_to: applies to kind 'noise'"):
        make_direction({**spec, "kind": "special"}, vgg, references={"closest_to": ref})


def test_write_direction_closest_to_a_direction_file(tmp_path):
    """The reference is the direction file of the same checkpoint; the file records the choice
    and the reference as an input; a reference of another checkpoint is refused."""
    spec = {"arch": "mlp", "hidden": [6]}
    torch.manual_seed(0)
    model = build_model(spec, 10, (1, 8, 8))
    save_checkpoint(tmp_path / "e0.pt", model, spec, 0)
    save_checkpoint(tmp_path / "e5.pt", model, spec, 5)
    gradient = {"kind": "gradient", "batches": 1, "batch_size": 64}
    dataset = {"source": "digits"}
    write_direction(tmp_path / "e0.pt", tmp_path / "grad.h5", gradient, dataset=dataset)
    closest = {
        "kind": "noise",
        "seed": 1,
        "closest_to": {"direction": "grad", "candidates": 10},
        "normalization": "match",
    }
    out = tmp_path / "closest.h5"
    write_direction(tmp_path / "e0.pt", out, closest, reference_direction=tmp_path / "grad.h5")
    art, grad = store.open(out), store.open(tmp_path / "grad.h5")
    assert set(art.inputs) == {"checkpoint", "closest_to"}
    assert art.attrs["direction_norm"] == pytest.approx(grad.attrs["direction_norm"], rel=1e-6)
    assert 0 <= art.attrs["closest_index"] < 10
    assert art.attrs["candidate_angle_min"] == pytest.approx(art.attrs["closest_angle"])
    assert art.attrs["candidate_angle_min"] <= art.attrs["candidate_angle_median"] < 95
    with pytest.raises(ValueError, match=r"grad\.h5: a direction of run 'r' epoch 0, not"):
        write_direction(
            tmp_path / "e5.pt", tmp_path / "x.h5", closest, reference_direction=tmp_path / "grad.h5"
        )


def test_mined_vvv_from_another_run_starts_at_its_checkpoint(tmp_path):
    """Algorithm 2 with phi_init: run starts phi at the other run's checkpoint: with a negligible
    step the direction is theta_other - theta (to float32 rounding of theta + (other - theta));
    the file records the other run and epoch; another architecture is refused naming phi_run."""
    spec = {"arch": "mlp", "hidden": [6]}
    torch.manual_seed(0)
    theta = build_model(spec, 10, (1, 8, 8))
    torch.manual_seed(5)
    other = build_model(spec, 10, (1, 8, 8))
    save_checkpoint(tmp_path / "theta.pt", theta, spec, 3)
    torch.save(
        {
            "model": other.state_dict(),
            "meta": {
                "spec": {"model": spec, "model_name": "tiny"},
                "num_classes": 10,
                "input_shape": [1, 8, 8],
                "run": "second",
                "epoch": 2,
            },
        },
        tmp_path / "other.pt",
    )
    mined = {
        "kind": "mined",
        "algorithm": "vvv",
        "epochs": 1,
        "batches": 1,
        "lr": 1e-12,
        "phi_init": "run",
        "phi_run": "second",
    }
    out = tmp_path / "d.h5"
    refs = {"phi_init": tmp_path / "other.pt"}
    dataset = {"source": "digits"}
    write_direction(tmp_path / "theta.pt", out, mined, references=refs, dataset=dataset)
    art = store.open(out)
    eps = art.tensors("params")
    theta_params, other_params = dict(theta.named_parameters()), dict(other.named_parameters())
    for name, p in theta_params.items():
        expected = (other_params[name] - p).detach()
        largest = max(p.abs().max(), other_params[name].abs().max())
        ulp = 2 * torch.finfo(torch.float32).eps * largest
        assert (torch.as_tensor(eps[name]) - expected).abs().max() <= ulp, name
    assert (art.attrs["phi_run"], art.attrs["phi_epoch"]) == ("second", 2)
    assert set(art.inputs) == {"checkpoint", "phi_init"} and "init_seed" not in art.attrs
    assert art.attrs["relative_norm"] > 0.5
    wide = build_model({"arch": "mlp", "hidden": [7]}, 10, (1, 8, 8))
    save_checkpoint(tmp_path / "wide.pt", wide, {"arch": "mlp", "hidden": [7]}, 2)
    with pytest.raises(ValueError, match=r"phi_run 'second' \(.*wide\.pt\): parameter .* shape"):
        write_direction(
            tmp_path / "theta.pt",
            tmp_path / "x.h5",
            mined,
            references={"phi_init": tmp_path / "wide.pt"},
            dataset={"source": "digits"},
        )


def test_phi_init_run_is_checked(vgg, digits):
    vvv = {"kind": "mined", "algorithm": "vvv", "epochs": 1, "batch_size": 8, "phi_init": "run"}
    with pytest.raises(ValueError, match=r"phi_init 'run': needs references\['phi_init'\]"):
        make_direction(vvv, vgg, data=digits)
    with pytest.raises(ValueError, match="phi_init: 'run' applies to algorithm 'vvv'"):
        make_direction({**vvv, "algorithm": "wpeak"}, vgg, data=digits)
    assert required_references({**vvv, "phi_run": "b", "phi_epoch": 4}) == {
        "phi_init": {"run": "b", "epoch": 4}
    }
    assert required_references({**vvv, "phi_run": "b"}) == {"phi_init": {"run": "b", "epoch": None}}


# --------------------------------------------------------------------------- package structure


def test_kind_modules_import_downwards_only():
    """The kinds are a package with a registry; mining imports the package's primitives, and
    the package imports mining only from its ``mined`` module, loaded when first built."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import landscape.mining\n"
        "assert 'landscape.directions.mined' not in sys.modules\n"
        "import landscape.directions as d\n"
        "assert 'mined' not in d.BUILDERS and set(d.BUILDERS) == set(d.KINDS) - {'mined'}\n"
        "assert d.builder('mined') is d.BUILDERS['mined']\n"
        "assert 'landscape.directions.mined' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    fresh = "import sys, landscape.directions\nassert 'landscape.mining' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", fresh], check=True)


# --------------------------------------------------------------------------- sign ratio (A2)


def _agreeing(d, theta):
    return {n: torch.sign(d[n]) == torch.sign(t) for n, t in theta.items()}


GAUSS_THETA = {
    "conv": torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(11)),
    "w": torch.randn(17, 9, generator=torch.Generator().manual_seed(12)),
    "b": torch.randn(13, generator=torch.Generator().manual_seed(13)),
}


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_sign_ratio_is_the_share_of_elements_agreeing_with_theta(ratio):
    """A2's x-axis: after the transform exactly round(r * n) elements of each tensor agree in
    sign with theta (the others disagree), magnitudes kept; the measured share is r up to the
    rounding of each tensor's count."""
    eps = noise(GAUSS_THETA, "gaussian", 6)
    d = sign_consistent(eps, GAUSS_THETA, ratio=ratio, seed=3)
    agreeing = _agreeing(d, GAUSS_THETA)
    for name, t in GAUSS_THETA.items():
        assert int(agreeing[name].sum()) == round(ratio * t.numel()), name
        assert torch.equal(d[name].abs(), eps[name].abs()), name
        disagree = ~agreeing[name]
        assert torch.equal(torch.sign(d[name])[disagree], -torch.sign(t)[disagree]), name
    n = sum(t.numel() for t in GAUSS_THETA.values())
    share = sum(int(a.sum()) for a in agreeing.values()) / n
    assert share == pytest.approx(ratio, abs=len(GAUSS_THETA) / (2 * n))  # rounding per tensor


def test_sign_ratio_choices_are_nested_and_zeros_of_theta_agree():
    eps = noise(GAUSS_THETA, "gaussian", 6)
    import itertools

    ratios = (0.0, 0.1, 0.3, 0.5, 0.8, 1.0)
    sets = [_agreeing(sign_consistent(eps, GAUSS_THETA, r, seed=3), GAUSS_THETA) for r in ratios]
    for small, large in itertools.pairwise(sets):
        assert all(bool((small[n] <= large[n]).all()) for n in GAUSS_THETA)
    # theta with 4 zeros among 20 elements: they become 0 and agree, counting towards round(r n).
    theta = {"w": torch.tensor([0.0, 0, 0, 0] + [1.0, -2.0] * 8)}
    e = {"w": torch.linspace(-1, 1, 20) + 0.025}  # no zeros
    for ratio, expected in ((0.0, 4), (0.1, 4), (0.3, 6), (0.5, 10), (1.0, 20)):
        d = sign_consistent(e, theta, ratio, seed=1)
        assert torch.count_nonzero(d["w"][:4]) == 0
        assert int(_agreeing(d, theta)["w"].sum()) == expected, ratio


def test_sign_ratio_survives_filter_normalization(vgg):
    """Filter-NS scales each filter by a positive factor, so the share of the finished direction's
    elements that agree with theta (2-D and larger tensors) is the sign_ratio."""
    params = trainable(vgg)
    spec = {"sign": "consistent", "sign_ratio": 0.3, "normalization": "filter", "seed": 2}
    d = make_direction(spec, vgg)
    for name, p in params.items():
        if p.dim() > 1:
            assert int((torch.sign(d[name]) == torch.sign(p)).sum()) == round(0.3 * p.numel())


# --------------------------------------------------------------------------- bias_bn like_weights


@pytest.fixture
def trained_bn(vgg):
    """The vgg fixture with 1-D parameters of both signs and many sizes (not the init's 1 and 0)."""
    g = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for p in vgg.parameters():
            if p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.8 + 0.3)
    return vgg


BN_NAMES = {"features.1.weight", "features.1.bias", "features.5.weight", "features.5.bias"}


def test_bn_noise_like_weights_filter_scales_each_element_to_its_parameter(trained_bn):
    """A4/A5: Filter-NS noise restricted to BN perturbs exactly the BN weights and biases, each
    element its own filter: eps_i <- |w_i| sign(eps_i)."""
    params = trainable(trained_bn)
    assert set(group_names(trained_bn, "BN")) == BN_NAMES
    spec = {"group": "BN", "normalization": "filter", "bias_bn": "like_weights", "seed": 5}
    d = make_direction(spec, trained_bn)
    eps = noise(params, "gaussian", 5)
    for name, p in params.items():
        if name not in BN_NAMES:
            assert torch.count_nonzero(d[name]) == 0, name
            continue
        assert torch.count_nonzero(d[name]) == p.numel(), name
        for i in range(p.numel()):  # by hand, one element at a time
            expected = abs(float(p[i])) * math.copysign(1.0, float(eps[name][i]))
            assert float(d[name][i]) == pytest.approx(expected, rel=1e-6), (name, i)
    # The V-family default zeroes every 1-D tensor: BN noise is then the zero vector.
    zero = make_direction({**spec, "bias_bn": "zero"}, trained_bn)
    assert all(torch.count_nonzero(t) == 0 for t in zero.values())
    # Over all groups the weights keep their per-filter norms and the classifier bias is
    # element-wise too.
    full = make_direction({**spec, "group": "ALL"}, trained_bn)
    for name, p in params.items():
        if p.dim() > 1:
            assert filter_norms_match(full[name], p), name
        else:
            torch.testing.assert_close(full[name].abs(), p.abs(), rtol=1e-6, atol=0)


def test_bn_noise_like_weights_norm_and_layer(trained_bn):
    """Under Norm-Scaled the 1-D tensors are part of the global vector; under layer per tensor."""
    params = trainable(trained_bn)
    eps = {n: t.double() for n, t in noise(params, "gaussian", 7).items()}
    theta_norm = math.sqrt(sum(float(p.double().pow(2).sum()) for p in params.values()))
    eps_norm = math.sqrt(sum(float(e.pow(2).sum()) for e in eps.values()))
    spec = {"normalization": "norm", "bias_bn": "like_weights", "seed": 7}
    d = make_direction(spec, trained_bn)
    for name in params:
        expected = (eps[name] * (theta_norm / eps_norm)).float()
        torch.testing.assert_close(d[name], expected, rtol=1e-5, atol=1e-7)
    layer = make_direction({**spec, "normalization": "layer", "group": "BN"}, trained_bn)
    for name, p in params.items():
        if name in BN_NAMES:
            expected = (eps[name] * (p.double().norm() / eps[name].norm())).float()
            torch.testing.assert_close(layer[name], expected, rtol=1e-5, atol=1e-7)
        else:
            assert torch.count_nonzero(layer[name]) == 0, name
