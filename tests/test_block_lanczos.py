"""Batched Hessian products and block Lanczos against stacked products and dense references.

The dense references are independent of the operator's code path: ``torch.func.hessian`` of
the loss as a function of the flat parameter vector on a float64 copy of the model (eval-mode
BN), or explicit symmetric matrices with a chosen spectrum, diagonalized by ``numpy.linalg.eigh``.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, hessian

from landscape import curvature
from landscape.hessian import HessianLinearOperator, block_lanczos, lanczos
from landscape.models import build_model
from landscape.params import unflatten

F64 = torch.float64
SPECS = {"mlp": {"arch": "mlp", "hidden": [8]}, "vgg": {"arch": "vgg", "layers": [2, "M", 4]}}


@pytest.fixture(scope="module")
def data(digits):
    return digits.train.x[:200], digits.train.y[:200]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: build_model(spec, 10, (1, 8, 8)) for name, spec in SPECS.items()}


@pytest.fixture(scope="module")
def dense(models, data):
    """Eigenvalues and eigenvectors of the dense float64 eval-mode Hessian of each model."""
    x, y = data
    out = {}
    for name, model in models.items():
        m = copy.deepcopy(model).double().eval()
        like = {n: p.detach() for n, p in m.named_parameters()}
        flat = torch.cat([p.reshape(-1) for p in like.values()])

        def f(theta, m=m, like=like):
            return F.cross_entropy(functional_call(m, unflatten(theta, like), (x.double(),)), y)

        out[name] = np.linalg.eigh(hessian(f)(flat).numpy())
    return out


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
@pytest.mark.parametrize("method", ["retained", "double_backward", "jvp"])
@pytest.mark.parametrize("name", ["mlp", "vgg"])
def test_batched_matmat_equals_stacked_matvecs(name, method, bn_mode, models, data):
    """One batched pass per batch gives the k single products, with one batch and with two."""
    x, y = data
    gen = torch.Generator().manual_seed(1)
    for batches in ([(x, y)], [(x[:150], y[:150]), (x[150:], y[150:])]):
        op = HessianLinearOperator(
            models[name],
            batches,
            dtype=F64,
            bn_mode=bn_mode,
            method=method,
            block_products="batched",
        )
        block = torch.randn(op.shape[0], 4, generator=gen, dtype=F64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vmap's "performance drop" notes for jvp
            batched = op.matmat(block)
            count = op.num_matvecs
            again = op.matmat_batched(block)
        assert batched.shape == (op.shape[0], 4) and batched.dtype == F64
        assert op.num_matvecs == count + 4
        stacked = torch.stack([op.matvec(block[:, j]) for j in range(4)], dim=1)
        assert rel(batched, stacked) < 1e-12
        assert rel(again, stacked) < 1e-12
        assert rel(op @ block, stacked) < 1e-12


def test_block_products_modes(models, data):
    """``loop`` is column by column; ``auto`` loops on the CPU and batches on CUDA."""
    model = models["vgg"]
    loop = HessianLinearOperator(model, [data], dtype=F64, block_products="loop")
    auto = HessianLinearOperator(model, [data], dtype=F64)
    block = torch.randn(loop.shape[0], 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    stacked = torch.stack([loop.matvec(v) for v in block.T.contiguous()], dim=1)
    assert torch.equal(loop.matmat(block), stacked)
    assert torch.equal(auto.matmat(block), stacked)  # CPU: loop
    assert "block_products='auto'" in repr(auto)
    assert loop.matmat(block[:, :0]).shape == (loop.shape[0], 0)
    with pytest.raises(ValueError, match="block_products"):
        HessianLinearOperator(model, [data], block_products="vectorized")
    with pytest.raises(ValueError, match="2-D"):
        loop.matmat(block[:5])


def test_batched_matmat_runs_the_determinism_guard(data):
    """The first batched block checks determinism as the first matvec does."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 10)
    )
    x, y = data
    from landscape.hessian import NondeterministicOperatorError

    for method in ("retained", "double_backward"):
        op = HessianLinearOperator(
            model, [(x[:16], y[:16])], bn_mode="train", method=method, block_products="batched"
        )
        with pytest.raises(NondeterministicOperatorError, match="dropout"):
            op.matmat(torch.randn(op.shape[0], 2))


def check_pairs(result, evals, evecs, order, scale):
    """Eigenvalues within 1e-8 relative, |cos| >= 1 - 1e-8, orthonormal vectors, residuals."""
    np.testing.assert_allclose(result.eigenvalues, evals[order], rtol=1e-8)
    vectors = result.eigenvectors.numpy()
    cos = np.abs(np.sum(vectors * evecs[:, order], axis=0))
    assert np.all(cos >= 1 - 1e-8), cos
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(len(order)), atol=1e-10)
    assert np.all(result.residuals < 1e-8 * scale), result.residuals


@pytest.mark.parametrize(("name", "block_size"), [("mlp", 1), ("mlp", 3), ("vgg", 2), ("vgg", 3)])
def test_block_lanczos_extreme_pairs_match_dense(name, block_size, models, data, dense):
    evals, evecs = dense[name]
    n = len(evals)
    # distinct extreme eigenvalues, so that eigenvectors are defined
    assert np.min(np.diff(evals[:4])) > 1e-3 and np.min(np.diff(evals[-4:])) > 1e-3
    op = HessianLinearOperator(models[name], [data], dtype=F64, block_products="batched")
    scale = np.abs(evals).max()
    top, bottom = [n - 1, n - 2, n - 3], [0, 1, 2]
    kw = {"block_size": block_size, "tol": 1e-11, "max_steps": n}
    check_pairs(block_lanczos(op, 3, which="LA", **kw), evals, evecs, top, scale)
    check_pairs(block_lanczos(op, 3, which="SA", **kw), evals, evecs, bottom, scale)
    by_size = np.argsort(-np.abs(evals), kind="stable")[:3]
    check_pairs(block_lanczos(op, 3, which="LM", **kw), evals, evecs, list(by_size), scale)
    both = block_lanczos(op, 2, which="BE", **kw)
    np.testing.assert_allclose(both.eigenvalues, evals[[0, n - 1]], rtol=1e-8)


def test_residual_modes_agree(models, data, dense):
    """Stored-product, recomputed and estimated residuals agree; only "recompute" costs products."""
    evals = dense["mlp"][0]
    scale = np.abs(evals).max()
    op = HessianLinearOperator(models["mlp"], [data], dtype=F64, block_products="batched")
    out, cost = {}, {}
    for mode in ("stored", "recompute", "estimate"):
        start = op.num_matvecs
        out[mode] = block_lanczos(op, 3, block_size=2, tol=1e-10, residuals=mode)
        cost[mode] = op.num_matvecs - start
        np.testing.assert_allclose(out[mode].eigenvalues, evals[::-1][:3], rtol=1e-8)
        assert np.all(out[mode].residuals <= 1e-9 * scale)
    assert cost["recompute"] == cost["stored"] + 3 == cost["estimate"] + 3
    for mode in ("stored", "estimate"):
        assert np.all(np.abs(out[mode].residuals - out["recompute"].residuals) <= 1e-12 * scale)
    with pytest.raises(ValueError, match="residuals"):
        block_lanczos(op, 1, residuals="exact")
    with pytest.raises(ValueError, match="block_size"):
        block_lanczos(op, 1, block_size=0)
    with pytest.raises(ValueError, match="which"):
        block_lanczos(op, 1, which="XX")


def test_float32_operator_with_float64_basis(models, data, dense):
    """On float32 products the float64 basis keeps the top eigenvalues at float32 accuracy."""
    evals = dense["vgg"][0]
    op = HessianLinearOperator(models["vgg"], [data], block_products="batched")
    result = block_lanczos(op, 3, block_size=2)
    assert result.eigenvectors.dtype == torch.float32
    np.testing.assert_allclose(result.eigenvalues, evals[::-1][:3], rtol=1e-5)


@pytest.mark.filterwarnings("ignore:.*not converged:RuntimeWarning")
def test_deterministic_and_block_size_one_is_lanczos(models, data):
    """Same seed, same numbers (bitwise, CPU); block size 1 starts where lanczos starts."""
    op = HessianLinearOperator(models["vgg"], [data], dtype=F64, block_products="batched")
    first = block_lanczos(op, 3, block_size=2, seed=4)
    second = block_lanczos(op, 3, block_size=2, seed=4)
    assert np.array_equal(first.eigenvalues, second.eigenvalues)
    assert torch.equal(first.eigenvectors, second.eigenvectors)
    assert np.array_equal(first.residuals, second.residuals)
    other = block_lanczos(op, 3, block_size=2, seed=5)
    assert not np.array_equal(first.eigenvalues, other.eigenvalues)
    np.testing.assert_allclose(first.eigenvalues, other.eigenvalues, rtol=1e-9)
    single = lanczos(op, 3, tol=1e-12, seed=4, steps=20, max_steps=20)
    blocked = block_lanczos(op, 3, block_size=1, tol=1e-12, seed=4, steps=20, max_steps=20)
    np.testing.assert_allclose(blocked.eigenvalues, single.eigenvalues, rtol=1e-12)


class MatrixOperator:
    """An explicit symmetric matrix ``Q diag(eigenvalues) Q^T``; counts its products."""

    dtype, device = F64, torch.device("cpu")

    def __init__(self, eigenvalues, seed=0):
        g = torch.Generator().manual_seed(seed)
        n = len(eigenvalues)
        q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))[0]
        self.shape = (n, n)
        self.matrix = (q * torch.as_tensor(eigenvalues, dtype=F64)) @ q.T
        self.products = 0

    def matvec(self, v):
        self.products += 1
        return self.matrix @ v

    def matmat(self, m):
        self.products += m.shape[1]
        return self.matrix @ m


def spectrum(top, n=200):
    return np.concatenate([top, np.linspace(-0.2, 0.3, n - len(top))])


def test_degenerate_top_eigenvalue_at_a_fixed_budget():
    """A triple top eigenvalue over a dense bulk: with 30 products a start block of 3 sees the
    whole eigenspace, one start vector sees one direction of it (the other copies only come from
    rounding and restarts), so single-vector Lanczos reports the eigenvalue twice and a bulk
    value as the fifth."""
    top = [1.0, 1.0, 1.0, 0.5, 0.4]
    exact = np.linalg.eigvalsh(MatrixOperator(spectrum(top)).matrix.numpy())[::-1][:5]
    np.testing.assert_allclose(exact, top, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged at 30 products
        op = MatrixOperator(spectrum(top))
        blocked = block_lanczos(op, 5, block_size=3, max_steps=30)
        assert op.products == 30
        op = MatrixOperator(spectrum(top))
        single = lanczos(op, 5, max_steps=30)
        assert op.products == 30
    np.testing.assert_allclose(blocked.eigenvalues, top, atol=1e-4)
    assert np.sum(np.abs(single.eigenvalues - 1.0) < 1e-4) < 3
    # converged, both find it; the block keeps its vectors orthonormal across the copies
    result = block_lanczos(MatrixOperator(spectrum(top)), 5, block_size=3, tol=1e-10)
    np.testing.assert_allclose(result.eigenvalues, top, atol=1e-9)
    vectors = result.eigenvectors.numpy()
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(5), atol=1e-10)


def test_tight_cluster_and_a_last_partial_block():
    """A cluster 1e-9 wide is resolved; with max_steps = n the basis (13 blocks of 3 and one
    of 1 for n = 40) spans the space and every eigenvalue is exact."""
    top = [1.0, 1.0 - 1e-9, 1.0 - 2e-9, 0.5, 0.4]
    result = block_lanczos(MatrixOperator(spectrum(top)), 5, block_size=3, tol=1e-12)
    np.testing.assert_allclose(result.eigenvalues, top, rtol=0, atol=1e-12)
    small = MatrixOperator(spectrum(top, n=40), seed=1)
    exact = np.linalg.eigvalsh(small.matrix.numpy())
    for which, want in (("LA", exact[::-1][:4]), ("SA", exact[:4])):
        out = block_lanczos(small, 4, which=which, block_size=3, tol=0.0, max_steps=40)
        np.testing.assert_allclose(out.eigenvalues, want, rtol=0, atol=1e-12)


def test_curvature_eigenpairs_by_config(models, data, dense, digits):
    """``spectrum.method: block_lanczos`` with ``block_size`` and ``hessian.block_products``."""
    evals = dense["mlp"][0]
    op = HessianLinearOperator(models["mlp"], [data], dtype=F64)
    spec = {"k": 3, "method": "block_lanczos", "block_size": 2, "tol": 1e-10}
    start = op.num_matvecs
    pairs = curvature.eigenpairs(op, spec, "SA")
    np.testing.assert_allclose(pairs.eigenvalues, evals[:3], rtol=1e-8)
    assert (op.num_matvecs - start) % 2 == 0  # whole blocks of 2
    default = curvature.eigenpairs(op, {"k": 3, "tol": 1e-10}, "SA")  # lanczos by default
    np.testing.assert_allclose(default.eigenvalues, evals[:3], rtol=1e-8)
    built = curvature.operator(
        models["mlp"], digits, {"samples": 64, "batch_size": 32, "block_products": "batched"}
    )
    assert built.block_products == "batched" and built.chosen_method == "double_backward"
    assert curvature.operator(models["mlp"], digits, {"samples": 64}).block_products == "auto"
