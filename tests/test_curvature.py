"""Curvature artifacts of a trained checkpoint against a dense float64 Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from landscape import store
from landscape.config import ConfigError, check_references
from landscape.curvature import compute_density, compute_spectrum, compute_trace
from landscape.data import load_data
from landscape.directions import eigenvector, trainable, write_direction
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
    x, y = next(iter(split.subset(SAMPLES).batches(SAMPLES)))
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


def test_eigenvector_direction_round_trip(spectrum, checkpoint, dense, tmp_path):
    _, vectors = dense
    out = tmp_path / "ne2.h5"
    spec = {"kind": "eigenvector", "which": "SA", "index": 2}
    write_direction(checkpoint, out, spec, "cpu", spectrum=spectrum)
    art = store.open(out)
    flat = np.concatenate([v.reshape(-1) for v in art.tensors("params").values()])
    assert abs(abs(flat @ vectors[:, 1]) - 1.0) < 1e-6  # float32 parameters
    assert set(art.inputs) == {"checkpoint", "spectrum"}


def test_eigenvector_errors_name_the_file(spectrum, checkpoint):
    params = trainable(load_model(checkpoint, "cpu")[0])
    with pytest.raises(ValueError, match=r"spectrum\.h5.*holds 3.*hessian\.spectrum\.k"):
        eigenvector(params, spectrum, "LA", 4)
    with pytest.raises(ValueError, match="other parameters"):
        eigenvector({"w": torch.zeros(3)}, spectrum, "LA", 1)


def test_trace_within_three_standard_errors(checkpoint, dense, tmp_path):
    exact = dense[0].sum()
    for method in ("hutchpp", "hutchinson"):
        out = tmp_path / f"{method}.h5"
        spec = {**SPEC, "trace": {"method": method, "matvecs": 60, "seed": 3}}
        compute_trace(checkpoint, out, spec, DATASET, device="cpu")
        art = store.open(out)
        assert 0 < art.attrs["stderr"] < abs(exact)
        assert abs(art.attrs["trace"] - exact) < 3 * art.attrs["stderr"], method
        assert float(art["trace"]) == art.attrs["trace"]


def test_density_is_normalized_and_spans_the_spectrum(checkpoint, dense, tmp_path):
    values = dense[0]
    out = tmp_path / "density.h5"
    spec = {**SPEC, "dtype": "float64", "density": {"steps": 40, "runs": 2, "grid_points": 400}}
    compute_density(checkpoint, out, spec, DATASET, device="cpu")
    art = store.open(out)
    grid, density = art["eigenvalue"], art["density"]
    assert art.dims["density"] == ("eigenvalue",)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-9)
    assert art.attrs["ritz_max"] == pytest.approx(values.max(), rel=1e-6)
    assert art.attrs["ritz_min"] == pytest.approx(values.min(), rel=1e-6)
    # Gauss quadrature: each run's weights sum to one and reproduce v^T H v.
    np.testing.assert_allclose(art["weights"].sum(axis=1), 1.0, atol=1e-10)


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
