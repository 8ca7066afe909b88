"""The library API (landscape.api) against independent references: a plain per-point loop for
curves and surfaces, a dense float64 Hessian for eigenvalues, trace and density."""

from __future__ import annotations

import copy
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

import landscape
from landscape import api, store
from landscape.directions import make_direction

ROOT = Path(__file__).resolve().parents[1]


def bn_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():  # running statistics unlike the batch statistics of the data
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def data(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def smooth_loss(outputs, targets):
    """Not cross-entropy: the engine's own metric cannot compute it."""
    return F.cross_entropy(outputs, targets) + 0.1 * outputs.pow(2).mean()


def reference(model, loss_fn, dirs, point, batches, bn_batches=None):
    """Mean loss over the batches at theta + point @ dirs, built from scratch."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            for c, d in zip(point, dirs, strict=True):
                p.add_(float(c) * d[name])
        if bn_batches is not None:
            for m in ref.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.reset_running_stats()
                    m.momentum = None
            ref.train()
            for x, _ in bn_batches:
                ref(x)
        ref.eval()
        total = sum(float(loss_fn(ref(x), y)) * len(y) for x, y in batches)
    return total / sum(len(y) for _, y in batches)


@pytest.mark.parametrize("loss_fn", [F.cross_entropy, smooth_loss], ids=["ce", "custom"])
@pytest.mark.parametrize("bn_mode", ["keep", "recompute"])
def test_curve_matches_a_plain_loop(loss_fn, bn_mode):
    model, (x, y) = bn_mlp(), data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    art = landscape.curve(
        model, loss_fn, (x, y), lambdas=5, batch_size=16, bn_mode=bn_mode, bn_batches=2
    )
    batches = api.as_batches((x, y), "cpu", 16)
    spec = {"kind": "noise", "seed": 0, "normalization": "filter", "bias_bn": "zero"}
    d = make_direction(spec, model)
    expected = [
        reference(
            model, loss_fn, [d], [lam], batches, batches[:2] if bn_mode == "recompute" else None
        )
        for lam in np.linspace(-1, 1, 5)
    ]
    assert art.kind == "curve" and art.dims["train/loss"] == ("lambda",)
    np.testing.assert_allclose(art["lambda"], np.linspace(-1, 1, 5))
    np.testing.assert_allclose(art["train/loss"], expected, rtol=1e-5)
    assert len(set(np.round(expected, 4))) > 1  # the direction does move the loss
    assert "analysis/train/loss/type" in art and art.spec["direction"] == spec
    for k, v in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, before[k])


def test_curve_error_and_data_forms():
    """A pair, a list of batches and a DataLoader are the same data; error is the error rate."""
    model, (x, y) = bn_mlp(), data()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    forms = [(x, y), [(x[:16], y[:16]), (x[16:32], y[16:32]), (x[32:], y[32:])], loader]
    arts = [landscape.curve(model, smooth_loss, f, lambdas=3, bn_mode="keep") for f in forms]
    for art in arts[1:]:
        np.testing.assert_allclose(art["train/loss"], arts[0]["train/loss"], rtol=1e-6)
    with torch.no_grad():
        theta_error = float((model(x).argmax(1) != y).double().mean())
    assert arts[0]["train/error"][1] == pytest.approx(theta_error)


def test_surface_matches_a_plain_loop_with_given_directions(tmp_path):
    model, (x, y) = bn_mlp(), data()
    test = data(12, seed=2)
    g = torch.Generator().manual_seed(5)
    dx = {n: torch.randn(p.shape, generator=g) * 0.3 for n, p in model.named_parameters()}
    flat_y = torch.randn(sum(p.numel() for p in model.parameters()), generator=g) * 0.3
    dy = api.directions_for(model, [flat_y], 1)[0][0]
    out = tmp_path / "surface.h5"
    art = landscape.surface(
        model, smooth_loss, {"train": (x, y), "test": test}, directions=[dx, flat_y],
        grid=([-1.0, 0.5], [0.0, 1.0, 2.0]), bn_mode="recompute", bn_batches=1, batch_size=20,
        out=out,
    )  # fmt: skip
    assert out.is_file() and store.open(out)["train/loss"].shape == (2, 3)
    train, bn = api.as_batches((x, y), "cpu", 20), api.as_batches((x, y), "cpu", 20)[:1]
    for i, cx in enumerate([-1.0, 0.5]):
        for j, cy in enumerate([0.0, 1.0, 2.0]):
            for split, batches in (("train", train), ("test", [test])):
                expected = reference(model, smooth_loss, [dx, dy], [cx, cy], batches, bn)
                assert art[f"{split}/loss"][i, j] == pytest.approx(expected, rel=1e-5)
    assert art.to_xarray()["test_loss"].dims == ("x", "y")


def test_default_surface_directions_are_the_workflows_noise_directions():
    model, (x, y) = bn_mlp(), data()
    art = landscape.surface(model, F.cross_entropy, (x, y), grid=[0.0, 1.0], seed=7, bn_mode="keep")
    spec = {"kind": "noise", "seed": 8, "normalization": "filter", "bias_bn": "zero"}
    assert art.spec["y"] == spec
    expected = reference(model, F.cross_entropy, [make_direction(spec, model)], [1.0], [(x, y)])
    assert art["train/loss"][0, 1] == pytest.approx(expected, rel=1e-5)


def test_bad_input_names_the_argument():
    model, (x, y) = bn_mlp(), data()
    with pytest.raises(ValueError, match=r"directions\[0\]: 'nope' is not a trainable"):
        landscape.curve(model, F.cross_entropy, (x, y), direction={"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="data: 40 inputs but 3 targets"):
        landscape.curve(model, F.cross_entropy, (x, y[:3]))
    with pytest.raises(ValueError, match="bn_mode"):
        landscape.curve(model, F.cross_entropy, (x, y), bn_mode="auto")


# ----------------------------------------------------------------------------- Hessian


def tanh_mlp():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))


def regression_data():
    g = torch.Generator().manual_seed(4)
    return torch.randn(30, 4, generator=g), torch.randn(30, 2, generator=g)


def dense_hessian(model, loss_fn, x, y):
    """The float64 Hessian of the mean loss over all samples by torch.autograd."""
    model = copy.deepcopy(model).double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def loss(theta):
        parts = torch.split(theta, [s.numel() for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return loss_fn(functional_call(model, params, (x.double(),)), y)

    h = torch.autograd.functional.hessian(loss, flat)
    return np.linalg.eigvalsh(h.numpy()), float(torch.trace(h))


def test_top_eigenvalues_match_the_dense_hessian():
    model, (x, y) = tanh_mlp(), regression_data()
    eig, _ = dense_hessian(model, F.mse_loss, x, y)
    art = landscape.hessian.top_eigenvalues(
        model, F.mse_loss, (x, y), k=3, which=["LA", "SA"], dtype="float64", batch_size=8
    )
    assert art.kind == "spectrum"
    np.testing.assert_allclose(art["LA/eigenvalues"], eig[::-1][:3], rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(art["SA/eigenvalues"], eig[:3], rtol=1e-7, atol=1e-10)
    assert art["LA/residuals"].max() < 1e-6
    vector = art.unflatten(art["LA/eigenvectors"][0])
    assert set(vector) == {n for n, _ in model.named_parameters()}


def test_trace_exact_and_estimated_match_the_dense_hessian():
    relu = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x, _ = regression_data()
    labels = torch.arange(30) % 3
    _, exact = dense_hessian(relu, F.cross_entropy, x, labels)
    art = landscape.hessian.trace(relu, F.cross_entropy, (x, labels), dtype="float64")
    assert art.attrs["estimator"] == "ggn" and art["trace"] == pytest.approx(exact, rel=1e-9)
    model, (x, y) = tanh_mlp(), regression_data()
    _, exact = dense_hessian(model, F.mse_loss, x, y)
    art = landscape.hessian.trace(model, F.mse_loss, (x, y), dtype="float64", matvecs=30)
    assert art.attrs["estimator"] == "xtrace"  # tanh is not piecewise linear
    assert abs(art["trace"] - exact) <= 4 * art["stderr"] + 1e-9 * abs(exact)


def test_density_integrates_to_one_and_covers_the_spectrum():
    model, (x, y) = tanh_mlp(), regression_data()
    eig, _ = dense_hessian(model, F.mse_loss, x, y)
    n = len(eig)
    art = landscape.hessian.density(model, F.mse_loss, (x, y), steps=n, runs=2, dtype="float64")
    grid, values = art["eigenvalue"], art["density"]
    assert np.sum(values) * (grid[1] - grid[0]) == pytest.approx(1.0)
    assert grid[0] <= eig.min() and grid[-1] >= eig.max()
    # n Lanczos steps from a probe that sees every eigenvector: the Ritz values are the spectrum
    assert art.attrs["ritz_min"] == pytest.approx(eig.min(), abs=1e-8)
    assert art.attrs["ritz_max"] == pytest.approx(eig.max(), rel=1e-8)


# ----------------------------------------------------------------------------- package


def test_import_landscape_stays_cheap():
    code = (
        "import sys, landscape\n"
        "assert 'torch' not in sys.modules, 'import landscape pulled in torch'\n"
        "assert callable(landscape.surface) and callable(landscape.hessian.trace)\n"
        "assert landscape.curve is landscape.api.curve\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """examples/api_quickstart.py, the README's example, on a torchvision ResNet-18, checked
    against closed forms: the loss at theta, and the classifier's Hessian
    H = (1/N) sum_i kron(A_i, z_i z_i^T) (A_i = diag(p_i) - p_i p_i^T, z_i = [h_i, 1])."""
    pytest.importorskip("torchvision")
    monkeypatch.setattr(sys, "argv", ["api_quickstart.py", str(tmp_path)])
    run = runpy.run_path(str(ROOT / "examples" / "api_quickstart.py"), run_name="__main__")
    model, x, y = run["model"].eval(), run["inputs"], run["targets"]
    curve, surface = store.open(tmp_path / "curve.h5"), store.open(tmp_path / "surface.h5")
    assert curve["train/loss"].shape == (5,) and np.all(np.isfinite(curve["train/loss"]))
    with torch.no_grad():
        assert surface["train/loss"][1, 1] == pytest.approx(
            float(run["smoothed"](model(x), y)), rel=1e-5
        )
        features = copy.deepcopy(model)
        features.fc = nn.Identity()
        z = torch.cat([features(x), torch.ones(len(x), 1)], 1).double()
        p = torch.softmax(model(x).double(), 1)
    a = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    h = torch.einsum("ncd,nk,nl->ckdl", a, z, z) / len(x)  # (class, feature, class, feature)
    k = z.shape[1]  # parameters in order fc.weight (class-major), fc.bias
    order = [c * k + f for c in range(10) for f in range(k - 1)] + [
        c * k + k - 1 for c in range(10)
    ]
    dense = h.reshape(10 * k, 10 * k)[order][:, order].numpy()
    assert run["trace"]["trace"] == pytest.approx(np.trace(dense), rel=1e-4)
    top = np.sort(scipy.sparse.linalg.eigsh(dense, k=3, which="LA")[0])[::-1]
    np.testing.assert_allclose(run["top"]["LA/eigenvalues"], top, rtol=1e-4)
    assert run["density"].attrs["ritz_max"] == pytest.approx(top[0], rel=1e-3)
