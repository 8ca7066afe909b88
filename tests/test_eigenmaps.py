"""Hessian eigenvalue maps: every grid point against the extreme eigenvalues of a dense float64
Hessian of a tiny model at that point; shards merge onto the x and y scales."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, hessian

from landscape import store
from landscape.directions import write_direction
from landscape.eigenmap_merge import merge_eigenmap
from landscape.eigenmap_plots import plot_eigenmap
from landscape.eigenmaps import compute_eigenmap_shard, extreme_eigenvalues
from landscape.lambda_grids import lambda_grid
from landscape.models import build_model
from landscape.params import unflatten
from landscape.train import load_model, train_model


def dense_extremes(model, point, x, y):
    """Largest and smallest eigenvalue of the dense float64 Hessian of the mean loss there."""
    m = copy.deepcopy(model).double().eval()
    like = {n: t.double() for n, t in point.items()}
    flat = torch.cat([t.reshape(-1) for t in like.values()])

    def f(theta):
        return F.cross_entropy(functional_call(m, unflatten(theta, like), (x.double(),)), y)

    evals = torch.linalg.eigvalsh(hessian(f)(flat))
    return float(evals[-1]), float(evals[0])


@pytest.fixture(scope="module")
def tiny(digits):
    torch.manual_seed(0)
    model = build_model({"arch": "mlp", "hidden": [4]}, 10, (1, 8, 8))
    g = torch.Generator().manual_seed(1)
    dirs = [
        {n: 0.5 * torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
        for _ in range(2)
    ]
    return model, dirs, digits.train.x[:96], digits.train.y[:96]


def test_every_point_matches_the_dense_hessian(tiny):
    model, dirs, x, y = tiny
    coords = np.array([[0.0, 0.0], [1.0, -0.5], [-1.0, 1.0]])
    spec = {"dtype": "float64"}
    out = extreme_eigenvalues(model, dirs, coords, [(x[:50], y[:50]), (x[50:], y[50:])], spec)
    theta = {n: p.detach() for n, p in model.named_parameters()}
    for i, (a, b) in enumerate(coords):
        point = {n: theta[n] + a * dirs[0][n] + b * dirs[1][n] for n in theta}
        top, bottom = dense_extremes(model, point, x, y)
        assert out["max_eigenvalue"][i] == pytest.approx(top, rel=1e-7, abs=1e-9)
        assert out["min_eigenvalue"][i] == pytest.approx(bottom, rel=1e-7, abs=1e-9)
        assert out["ratio"][i] == pytest.approx(abs(bottom / top), rel=1e-6)
        assert out["max_residual"][i] < 1e-6 and out["min_residual"][i] < 1e-6
    # the model itself is left at theta
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), theta[n])
    assert out["min_eigenvalue"].min() < 0 < out["max_eigenvalue"].min()


def test_shards_merge_onto_the_grid(tmp_path, digits):
    spec_run = {
        "run": "r",
        "dataset_name": "digits",
        "dataset": {"source": "digits"},
        "model_name": "mlp",
        "model": {"arch": "mlp", "hidden": [4]},
        "train": {"epochs": 1, "seed": 0},
    }
    train_model(tmp_path / "e0.pt", spec_run, 0, device="cpu")
    dirs = [tmp_path / "a.h5", tmp_path / "b.h5"]
    for path, seed in zip(dirs, (1, 2), strict=True):
        write_direction(tmp_path / "e0.pt", path, {"seed": seed, "bias_bn": "raw"}, device="cpu")
    spec = {
        "directions": ["a", "b"],
        "x": {"min": -1.0, "max": 1.0, "num": 3},
        "y": {"min": -0.5, "max": 0.5, "num": 2},
        "samples": 64,
        "batch_size": 64,
        "dtype": "float64",
    }
    shards = [tmp_path / f"s{i}.h5" for i in (1, 2)]
    for i, shard in enumerate(shards, start=1):
        compute_eigenmap_shard(
            tmp_path / "e0.pt", dirs, shard, spec, {"source": "digits"}, f"{i}-of-2", "cpu"
        )
    merge_eigenmap(shards[:1], tmp_path / "partial.h5", spec)
    merge_eigenmap(shards, tmp_path / "map.h5", spec)
    art = store.open(tmp_path / "map.h5")
    assert art.kind == "eigenmap" and art.dims["ratio"] == ("x", "y")
    assert art["max_eigenvalue"].shape == (3, 2)
    assert np.isnan(store.open(tmp_path / "partial.h5")["max_eigenvalue"][2, 1])
    model, _ = load_model(tmp_path / "e0.pt")
    from landscape.curvature import evaluation_batches
    from landscape.data import load_data

    (x, y), *_ = evaluation_batches(load_data({"source": "digits"}), spec)
    theta = {n: p.detach() for n, p in model.named_parameters()}
    d = [{n: torch.as_tensor(v) for n, v in store.open(p).tensors().items()} for p in dirs]
    xs, ys = lambda_grid(spec["x"]), lambda_grid(spec["y"])
    i, j = 2, 0
    point = {n: theta[n] + xs[i] * d[0][n] + ys[j] * d[1][n] for n in theta}
    top, bottom = dense_extremes(model, point, x, y)
    assert art["max_eigenvalue"][i, j] == pytest.approx(top, rel=1e-7)
    assert art["min_eigenvalue"][i, j] == pytest.approx(bottom, rel=1e-7, abs=1e-9)
    with pytest.raises(ValueError, match="spec differs"):
        merge_eigenmap(shards, tmp_path / "other.h5", {**spec, "tol": 1e-3, "x": spec["x"]})
    plot_eigenmap(tmp_path / "partial.h5", tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 0
