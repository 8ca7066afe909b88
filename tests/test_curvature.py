"""Curvature artifacts of a trained checkpoint against a dense float64 Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from landscape import hessian, plots, store
from landscape.config import ConfigError, check_references
from landscape.curvature import (
    compute_angles,
    compute_cosines,
    compute_density,
    compute_loss_change,
    compute_soa,
    compute_spectrum,
    compute_trace,
    trace_estimate,
)
from landscape.data import load_data
from landscape.directions import eigenvector, trainable, write_direction
from landscape.gauss_newton import NotPiecewiseLinearError
from landscape.train import load_model, train_model

DATASET = {"source": "digits", "test_fraction": 0.25, "split_seed": 0}
SAMPLES = 96
SPEC = {"split": "train", "samples": SAMPLES, "batch_size": 40, "bn_mode": "eval"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    spec = {
        "run": "r",
        "dataset_name": "digits",
        "dataset": DATASET,
        "model_name": "tiny",
        "model": {"arch": "mlp", "hidden": [6]},
        "train": {"epochs": 2, "lr": 0.1, "batch_size": 64, "seed": 0},
    }
    train_model(root / "epoch0.pt", spec, 0, device="cpu")
    train_model(root / "epoch2.pt", spec, 2, previous=root / "epoch0.pt", device="cpu")
    return root / "epoch2.pt"


@pytest.fixture(scope="module")
def dense(checkpoint):
    """Eigenvalues and eigenvectors of the Hessian formed densely in float64."""
    model, _ = load_model(checkpoint, "cpu")
    model = model.double().eval()
    split = load_data(DATASET, "cpu").train
    x, y = next(iter(split.sample(SAMPLES, 0).batches(SAMPLES)))  # the fixed evaluation set
    params = trainable(model)
    shapes = [(n, p.shape, p.numel()) for n, p in params.items()]

    def loss(flat):
        tensors, start = {}, 0
        for name, shape, size in shapes:
            tensors[name] = flat[start : start + size].view(shape)
            start += size
        return F.cross_entropy(functional_call(model, tensors, (x.double(),)), y)

    flat = torch.cat([p.reshape(-1) for p in params.values()]).double()
    h = torch.func.hessian(loss)(flat)
    values, vectors = np.linalg.eigh(h.numpy())
    return values, vectors


@pytest.fixture(scope="module")
def spectrum(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("spectrum") / "spectrum.h5"
    spec = {**SPEC, "dtype": "float64", "spectrum": {"k": 3, "which": ["LA", "SA"], "tol": 1e-12}}
    compute_spectrum(checkpoint, out, spec, DATASET, device="cpu")
    return out


def test_spectrum_matches_dense_hessian(spectrum, dense):
    values, vectors = dense
    art = store.open(spectrum)
    np.testing.assert_allclose(art["LA/eigenvalues"], values[::-1][:3], rtol=1e-8)
    np.testing.assert_allclose(art["SA/eigenvalues"], values[:3], rtol=1e-8)
    assert art["SA/eigenvalues"][0] < 0, "a trained MLP at epoch 2 has negative curvature"
    assert (art["LA/residuals"] < 1e-8 * abs(values).max()).all()
    cos = np.abs(art["LA/eigenvectors"] @ vectors[:, ::-1][:, :3])
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-8)
    assert art.attrs["num_samples"] == SAMPLES and art.attrs["num_params"] == len(values)
    assert art.attrs["subset_seed"] == 0  # with the split and samples: the evaluation set


def test_spectrum_in_float32_with_either_basis(checkpoint, dense, tmp_path):
    values, _ = dense
    found = {}
    for basis in ("float64", "float32"):
        out = tmp_path / f"{basis}.h5"
        spectrum = {"k": 3, "which": ["LA"], "tol": 1e-6, "basis": basis}
        compute_spectrum(checkpoint, out, {**SPEC, "spectrum": spectrum}, DATASET, device="cpu")
        art = store.open(out)
        found[basis] = art["LA/eigenvalues"]
    for basis, got in found.items():
        np.testing.assert_allclose(got, values[::-1][:3], rtol=1e-4, err_msg=basis)
    assert not np.array_equal(found["float64"], found["float32"])  # the key reaches lanczos


def test_eigenvector_direction_round_trip(spectrum, checkpoint, dense, tmp_path):
    _, vectors = dense
    out = tmp_path / "ne2.h5"
    spec = {"kind": "eigenvector", "which": "SA", "index": 2}
    write_direction(checkpoint, out, spec, "cpu", spectrum=spectrum)
    art = store.open(out)
    flat = np.concatenate([v.reshape(-1) for v in art.tensors("params").values()])
    # V8: the unit eigenvector scaled to ||theta|| by default (normalization norm)
    params = trainable(load_model(checkpoint, "cpu")[0])
    theta_norm = np.sqrt(sum(float(p.double().pow(2).sum()) for p in params.values()))
    assert abs(abs(flat @ vectors[:, 1]) / theta_norm - 1.0) < 1e-6  # float32 parameters
    assert art.attrs["relative_norm"] == pytest.approx(1.0, abs=1e-6)
    assert art.attrs["normalization"] == "norm"
    assert set(art.inputs) == {"checkpoint", "spectrum"}
    write_direction(checkpoint, out, {**spec, "normalization": "raw"}, "cpu", spectrum=spectrum)
    flat = np.concatenate([v.reshape(-1) for v in store.open(out).tensors("params").values()])
    assert abs(abs(flat @ vectors[:, 1]) - 1.0) < 1e-6  # raw: the unit vector


def test_eigenvector_errors_name_the_file(spectrum, checkpoint):
    params = trainable(load_model(checkpoint, "cpu")[0])
    with pytest.raises(ValueError, match=r"spectrum\.h5.*holds 3.*hessian\.spectrum\.k"):
        eigenvector(params, spectrum, "LA", 4)
    with pytest.raises(ValueError, match="other parameters"):
        eigenvector({"w": torch.zeros(3)}, spectrum, "LA", 1)


@pytest.mark.parametrize("hvp", ["jvp", "double_backward", "retained"])
def test_hvp_method_from_config(checkpoint, dense, tmp_path, hvp):
    """``hessian.hvp`` picks the product; every method gives the dense top eigenvalue."""
    out = tmp_path / "spectrum.h5"
    spec = {**SPEC, "dtype": "float64", "hvp": hvp, "spectrum": {"k": 1, "which": ["LA"]}}
    compute_spectrum(checkpoint, out, spec, DATASET, device="cpu")
    art = store.open(out)
    assert art.attrs["hvp"] == hvp
    assert art["LA/eigenvalues"][0] == pytest.approx(dense[0][-1], rel=1e-8)


def test_auto_hvp_records_its_choice(spectrum):
    """SPEC has three batches: on CPU auto is double backward."""
    assert store.open(spectrum).attrs["hvp"] == "double_backward"


def test_cosines_against_dense_eigenvectors(spectrum, checkpoint, dense, tmp_path):
    """V9: |cos| of a direction built from dense eigenvectors: 0.6 P.E.1 + 0.8 N.E.2."""
    _, vectors = dense
    flat = 0.6 * vectors[:, -1] - 0.8 * vectors[:, 1]
    params = trainable(load_model(checkpoint, "cpu")[0])
    tensors, start = {}, 0
    for name, p in params.items():
        tensors[name] = flat[start : start + p.numel()].reshape(p.shape)
        start += p.numel()
    mixed = tmp_path / "mixed.h5"
    with store.create(mixed, kind="direction", spec={}) as w:
        w.put_tensors("params", dict(reversed(tensors.items())))  # the order must not matter
    ne2 = tmp_path / "ne2.h5"
    write_direction(
        checkpoint,
        ne2,
        {"kind": "eigenvector", "which": "SA", "index": 2},
        "cpu",
        spectrum=spectrum,
    )
    out = tmp_path / "cosines.h5"
    compute_cosines(spectrum, {"mixed": mixed, "ne2": ne2}, out, {"directions": ["mixed", "ne2"]})
    art = store.open(out)
    assert list(art["direction"]) == ["mixed", "ne2"] and list(art["rank"]) == [1, 2, 3]
    expected_la = np.abs(np.stack([flat, vectors[:, 1]]) @ vectors[:, ::-1][:, :3])
    expected_sa = np.abs(np.stack([flat, vectors[:, 1]]) @ vectors[:, :3])
    np.testing.assert_allclose(art["LA/cosines"], expected_la, atol=1e-6)
    np.testing.assert_allclose(art["SA/cosines"], expected_sa, atol=1e-6)
    assert art["LA/cosines"][0, 0] == pytest.approx(0.6, abs=1e-6)
    assert art["SA/cosines"][1, 1] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(art["SA/eigenvalues"], store.open(spectrum)["SA/eigenvalues"])
    assert set(art.inputs) == {"spectrum", "direction:mixed", "direction:ne2"}


def test_trace_within_three_standard_errors(checkpoint, dense, tmp_path):
    exact = dense[0].sum()
    for method in ("xtrace", "hutchpp", "hutchinson"):
        out = tmp_path / f"{method}.h5"
        spec = {**SPEC, "trace": {"method": method, "matvecs": 60, "seed": 3}}
        compute_trace(checkpoint, out, spec, DATASET, device="cpu")
        art = store.open(out)
        assert 0 < art.attrs["stderr"] < abs(exact)
        factor = 5 if method == "xtrace" else 3  # XTrace's own error estimate is rough
        assert abs(art.attrs["trace"] - exact) < factor * art.attrs["stderr"], method
        assert float(art["trace"]) == art.attrs["trace"]


def test_trace_of_a_relu_network_is_exact(checkpoint, dense, tmp_path):
    exact = dense[0].sum()
    for method in ("ggn", "auto"):
        out = tmp_path / f"{method}.h5"
        spec = {**SPEC, "dtype": "float64", "trace": {"method": method, "checks": 6}}
        compute_trace(checkpoint, out, spec, DATASET, device="cpu")
        art = store.open(out)
        assert art.attrs["estimator"] == "ggn"
        assert art.attrs["trace"] == pytest.approx(exact, rel=1e-10)
        assert art.attrs["stderr"] == 0 and art.attrs["max_diagonal_difference"] < 1e-10
        np.testing.assert_allclose(art["check/ggn_diagonal"], art["check/hessian_diagonal"])
        assert art["check/coordinates"].shape == (6,)


class _FunctionalTanh(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = torch.nn.Linear(64, 6), torch.nn.Linear(6, 10)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x.flatten(1))))


def test_auto_trace_falls_back_to_xtrace(caplog):
    torch.manual_seed(0)
    split = load_data(DATASET, "cpu").train
    batch = next(iter(split.subset(SAMPLES).batches(SAMPLES)))
    nn = torch.nn
    tanh = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 10))
    for model, warned in ((tanh, False), (_FunctionalTanh(), True)):
        op = hessian.HessianLinearOperator(model, [batch])
        _, stderr, attrs, extra = trace_estimate(op, {"matvecs": 20})
        assert attrs == {"estimator": "xtrace"} and extra == {} and stderr > 0
        assert ("falling back to xtrace" in caplog.text) == warned
    with pytest.raises(NotPiecewiseLinearError, match="use xtrace"):
        trace_estimate(op, {"method": "ggn"})


def test_density_is_normalized_and_spans_the_spectrum(checkpoint, dense, tmp_path, monkeypatch):
    values = dense[0]
    out = tmp_path / "density.h5"
    spec = {**SPEC, "dtype": "float64", "density": {"steps": 40, "runs": 2, "grid_points": 400}}
    compute_density(checkpoint, out, spec, DATASET, device="cpu")
    art = store.open(out)
    grid, density = art["eigenvalue"], art["density"]
    assert art.dims["density"] == ("eigenvalue",)
    assert np.sum(density) * (grid[1] - grid[0]) == pytest.approx(1.0, abs=1e-12)  # PyHessian's
    assert art.attrs["broadening"] == "PyHessian: Gaussian variance 1e-5 * max(1, span)"
    span = grid[-1] - grid[0]
    assert art.attrs["sigma"] == pytest.approx(np.sqrt(1e-5 * max(1.0, span)), rel=1e-12)
    assert art.attrs["ritz_max"] == pytest.approx(values.max(), rel=1e-6)
    assert art.attrs["ritz_min"] == pytest.approx(values.min(), rel=1e-6)
    # Gauss quadrature: each run's weights sum to one and reproduce v^T H v.
    np.testing.assert_allclose(art["weights"].sum(axis=1), 1.0, atol=1e-10)
    titles = []

    def save(fig, path):
        titles.append(fig.axes[0].get_title())
        plots.plt.close(fig)

    monkeypatch.setattr(plots, "save_figure", save)
    plots.plot_density(out, tmp_path / "density.png")
    assert "Gaussian broadening: PyHessian, std " in titles[0]


def test_config_checks_eigenvector_directions():
    config = {
        "runs": {},
        "directions": {"pe6": {"kind": "eigenvector", "which": "LA", "index": 6}},
        "hessian": {"spectrum": {"k": 5, "which": ["LA"]}},
    }
    with pytest.raises(ConfigError, match=r"directions\.pe6\.index: 6 exceeds hessian"):
        check_references(config)
    config["directions"] = {"ne1": {"kind": "eigenvector", "which": "SA", "index": 1}}
    with pytest.raises(ConfigError, match=r"directions\.ne1\.which: 'SA' is not in"):
        check_references(config)


@pytest.fixture(scope="module")
def gaussian(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("direction") / "gauss.h5"
    write_direction(checkpoint, out, {"kind": "noise", "seed": 5}, "cpu")
    return out


def reference_loss(checkpoint, direction, lam):
    """L(theta + lam * eps) over the evaluation set, by load_state_dict and one forward pass."""
    model, _ = load_model(checkpoint, "cpu")
    eps = store.open(direction).tensors()
    state = model.state_dict()
    for name, d in eps.items():
        state[name] = state[name] + lam * torch.as_tensor(d)
    model.load_state_dict(state)
    split = load_data(DATASET, "cpu").train.sample(SAMPLES, 0)
    x, y = next(iter(split.batches(SAMPLES)))
    with torch.no_grad():
        return F.cross_entropy(model.eval()(x), y).item()


def test_soa_points_and_local_quadratics(checkpoint, gaussian, tmp_path):
    out = tmp_path / "soa.h5"
    spec = {**SPEC, "lambda": {"min": -1.0, "max": 0.0, "num": 3}, "half_width": 0.05}
    compute_soa(checkpoint, gaussian, out, {**spec, "num_local": 5}, DATASET, device="cpu")
    art = store.open(out)
    np.testing.assert_allclose(art["lambda"], [-1.0, -0.5, 0.0])
    for i, lam in enumerate(art["lambda"]):
        assert art["loss"][i] == pytest.approx(reference_loss(checkpoint, gaussian, lam), rel=1e-5)
        assert art["quadratic"][i, 2] == pytest.approx(art["loss"][i], rel=1e-6)  # offset 0
        edge = reference_loss(checkpoint, gaussian, lam + 0.05)
        assert art["local_loss"][i, 4] == pytest.approx(edge, rel=1e-5)
        # A quadratic over +-0.05 of a smooth loss: within a few percent of the loss change.
        change = abs(edge - art["loss"][i])
        assert abs(art["quadratic"][i, 4] - edge) < 0.05 * change + 1e-6
    assert art.dims["quadratic"] == ("lambda", "offset")


def test_loss_change_against_the_trace(checkpoint, tmp_path):
    trace = tmp_path / "trace.h5"
    compute_trace(checkpoint, trace, {**SPEC, "trace": {"matvecs": 30}}, DATASET, device="cpu")
    out = tmp_path / "loss_change.h5"
    sub = {"lambdas": [0.001, 0.01], "sigma": 1.0, "num_samples": 20, "seed": 1}
    spec = {**SPEC, "dtype": "float64", "loss_change": sub}
    compute_loss_change(checkpoint, trace, out, spec, DATASET, device="cpu")
    art = store.open(out)
    tr = store.open(trace).attrs["trace"]
    np.testing.assert_allclose(art["predicted_mean"], 0.5 * np.array([1e-6, 1e-4]) * tr)
    assert art["actual"].shape == (20, 2) and art.dims["actual"] == ("sample", "lambda")
    lam = art["lambda"]
    expected = art["slope"][:, None] * lam + 0.5 * art["curvature"][:, None] * lam**2
    np.testing.assert_allclose(art["soa"], expected, rtol=1e-12)
    # ReLU kinks crossed by a perturbation break the quadratic for a few samples only.
    actual, soa = art["actual"][:, 0], art["soa"][:, 0]
    assert np.median(np.abs(soa - actual) / np.abs(actual)) < 0.01


def test_angles_of_gaussians_are_near_ninety_degrees(checkpoint, tmp_path):
    out = tmp_path / "angles.h5"
    spec = {"num_directions": 30, "batches": 2, "batch_size": 64, "seed": 0}
    epoch0 = checkpoint.with_name("epoch0.pt")
    compute_angles(epoch0, checkpoint, out, spec, DATASET, device="cpu")
    art = store.open(out)
    assert art.attrs["descent_names"] == ["g_batch[0]", "g_batch[1]", "theta_f - theta_cur"]
    gaussian = art["gaussian"]
    assert gaussian.shape == (30, 3)
    n = sum(p.numel() for p in trainable(load_model(checkpoint, "cpu")[0]).values())
    assert np.abs(gaussian - 90).max() < 5 * 57.3 / np.sqrt(n)  # 90 +- 57.3 / sqrt(n) degrees
    np.testing.assert_allclose(np.diag(art["between"]), 0.0, atol=1e-12)
    # theta_f - theta_0 is a descent direction: it makes an acute angle with the batch gradients.
    assert (art["between"][:2, 2] < 90).all()


def test_loss_change_in_float64_by_default_with_float32_products(checkpoint, tmp_path):
    trace = tmp_path / "trace.h5"
    compute_trace(checkpoint, trace, {**SPEC, "trace": {"method": "ggn"}}, DATASET, device="cpu")
    sub = {"lambdas": [0.001], "num_samples": 20, "seed": 1}
    arts = {}
    for dtype in ("float64", "float32", None):
        out = tmp_path / f"loss_change_{dtype}.h5"
        block = sub if dtype is None else {**sub, "dtype": dtype}
        compute_loss_change(checkpoint, trace, out, {**SPEC, "loss_change": block}, DATASET, "cpu")
        arts[dtype] = store.open(out)
    assert arts[None].attrs["loss_dtype"] == "float64"
    np.testing.assert_array_equal(arts[None]["actual"], arts["float64"]["actual"])
    assert not np.array_equal(arts["float32"]["actual"], arts["float64"]["actual"])
    soa = arts[None]["soa"][:, 0]  # float32 products: exact enough for the quadratic itself
    assert np.median(np.abs(arts[None]["actual"][:, 0] - soa) / np.abs(soa)) < 0.01


def test_spectrum_has_scales_and_shapes_to_rebuild_tensors(spectrum, checkpoint):
    art = store.open(spectrum)
    params = trainable(load_model(checkpoint, "cpu")[0])
    n = sum(p.numel() for p in params.values())
    assert art.dims["LA/eigenvectors"] == art.dims["SA/eigenvectors"] == ("index", "parameter")
    assert art.dims["LA/eigenvalues"] == art.dims["SA/residuals"] == ("index",)
    np.testing.assert_array_equal(art["index"], [1, 2, 3])
    np.testing.assert_array_equal(art["parameter"], np.arange(n))
    table = art.frame()
    assert list(table.index) == [1, 2, 3] and table.index.name == "index"
    np.testing.assert_array_equal(table["SA/eigenvalues"], art["SA/eigenvalues"])
    for which in ("LA", "SA"):
        for i, row in enumerate(art[f"{which}/eigenvectors"]):
            tensors = art.unflatten(row)
            assert list(tensors) == list(params)
            assert {k: v.shape for k, v in tensors.items()} == {
                k: tuple(p.shape) for k, p in params.items()
            }
            flat = np.concatenate([v.reshape(-1) for v in tensors.values()])
            np.testing.assert_array_equal(flat, row)
            direction = eigenvector(params, spectrum, which, i + 1)  # the library's own reading
            for k, v in tensors.items():
                np.testing.assert_allclose(v, direction[k].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"spectrum\.h5.*3 elements"):
        art.unflatten(np.zeros(3))
