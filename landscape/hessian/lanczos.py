r"""Extreme eigenpairs of the Hessian: :func:`lanczos` and :func:`eigsh_topk`.

:func:`lanczos` runs Lanczos with full reorthogonalization on the operator's device
(:class:`_Lanczos`, which :func:`~landscape.hessian.slq_density` shares) and returns
:class:`Eigenpairs` with residuals; :func:`eigsh_topk` does the same through
``scipy.sparse.linalg.eigsh`` (the paper's Listing 1). :func:`_probe` draws the seeded random
vectors of every estimator of the package.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch
from torch import Tensor

from landscape.hessian.operator import HessianLinearOperator

WHICH = ("LA", "SA", "LM", "BE")
RESIDUALS = ("stored", "recompute", "estimate")


class Eigenpairs(NamedTuple):
    """Eigenpairs of the Hessian.

    Attributes:
        eigenvalues: ``(k,)`` float64 numpy array, ordered most extreme first (see ``which``).
        eigenvectors: ``(n, k)`` tensor in the operator's dtype and device, unit columns.
        residuals: ``(k,)`` float64 numpy array, :math:`\\|Hv_i - \\lambda_i v_i\\|_2`.
    """

    eigenvalues: np.ndarray
    eigenvectors: Tensor
    residuals: np.ndarray


def _probe(n: int, gen: torch.Generator, dist: str, dtype: torch.dtype, device) -> Tensor:
    if dist == "rademacher":
        z = torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1
    elif dist == "gaussian":
        z = torch.randn(n, generator=gen, dtype=torch.float64)
    else:
        raise ValueError(f"dist must be 'rademacher' or 'gaussian', got {dist!r}")
    return z.to(device=device, dtype=dtype)


class _Lanczos:
    r"""Lanczos tridiagonalization :math:`V^T H V = T` with full reorthogonalization.

    Each step computes :math:`w = Hv_j - \beta_{j-1} v_{j-1}`, :math:`\alpha_j = v_j^T w`,
    :math:`w \leftarrow w - \alpha_j v_j`, then orthogonalizes :math:`w` against all previous
    vectors twice (classical Gram-Schmidt, twice is enough), :math:`\beta_j = \|w\|`,
    :math:`v_{j+1} = w / \beta_j`. The basis lives on the operator's device in ``basis_dtype``
    (default: the operator's dtype; products are taken and kept in the operator's dtype). On a
    breakdown (:math:`\beta_j \le \min(10 n \varepsilon, \sqrt\varepsilon) \max(|\alpha|, \beta)`:
    an invariant subspace; without the :math:`\sqrt\varepsilon` cap a float32 basis of
    large ``n`` would take an ordinary :math:`\beta_j` for one) it either stops (``restart=False``,
    as SLQ needs: the quadrature is then exact) or continues from a random vector orthogonal to the
    basis with :math:`\beta_j = 0` (eigenvalue search). With ``keep_products`` the raw products
    :math:`Hv_j` are kept as the rows of ``W`` (as much memory again as the basis).
    """

    def __init__(
        self,
        op,
        v0: Tensor,
        gen: torch.Generator,
        restart: bool,
        keep_products: bool = False,
        basis_dtype: torch.dtype | None = None,
    ) -> None:
        self.op, self.gen, self.restart = op, gen, restart
        self.n = op.shape[0]
        self.dtype = op.dtype if basis_dtype is None else basis_dtype
        # rows are written before they are read (V[:m + 1], W[:m]): no zero-filling
        self.V = torch.empty(min(self.n, 64), self.n, dtype=self.dtype, device=op.device)
        self.V[0] = v0 / v0.norm()
        self.W = torch.empty_like(self.V, dtype=op.dtype) if keep_products else None
        self.alpha: list[float] = []
        self.beta: list[float] = []  # beta[j] couples v_j and v_{j+1}
        self.m = 0  # steps done; V[: m + 1] filled unless stopped
        self.stopped = False
        self.scale = 0.0

    def _orth(self, w: Tensor, upto: int) -> Tensor:
        basis = self.V[:upto]
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        return w

    def extend(self, steps: int) -> None:
        target = min(steps, self.n)
        while self.m < target and not self.stopped:
            j = self.m
            v = self.V[j]
            w = self.op.matvec(v.to(self.op.dtype))
            if self.W is not None:
                self.W[j] = w
            w = w.to(self.dtype)
            if j > 0:
                w = w - self.beta[j - 1] * self.V[j - 1]
            a = float(v @ w)
            w = w - a * v
            w = self._orth(w, j + 1)
            b = float(w.norm())
            self.alpha.append(a)
            self.m += 1
            self.scale = max(self.scale, abs(a), b)
            if self.m >= self.n:
                self.beta.append(b)
                self.stopped = True
                break
            if self.m >= self.V.shape[0]:
                grown = torch.empty(
                    min(self.n, 2 * self.V.shape[0]),
                    self.n,
                    dtype=self.V.dtype,
                    device=self.V.device,
                )
                grown[: self.V.shape[0]] = self.V
                if self.W is not None:
                    products = torch.empty_like(grown, dtype=self.W.dtype)
                    products[: self.W.shape[0]] = self.W
                    self.W = products
                self.V = grown
            eps = torch.finfo(self.op.dtype).eps
            if b <= min(10 * self.n * eps, math.sqrt(eps)) * max(self.scale, 1e-300):
                self.beta.append(0.0)
                if not self.restart:
                    self.stopped = True
                    break
                for _ in range(3):  # random vector orthogonal to the current basis
                    r = _probe(self.n, self.gen, "gaussian", self.dtype, self.op.device)
                    r = self._orth(r, self.m)
                    if float(r.norm()) > 1e-3:
                        break
                self.V[self.m] = r / r.norm()
            else:
                self.beta.append(b)
                self.V[self.m] = w / b

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors of the ``m x m`` tridiagonal matrix."""
        alpha = np.asarray(self.alpha, dtype=np.float64)
        beta = np.asarray(self.beta[: self.m - 1], dtype=np.float64)
        if self.m == 1:
            return alpha.copy(), np.ones((1, 1))
        return scipy.linalg.eigh_tridiagonal(alpha, beta)


def _select(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the wanted Ritz values, most extreme first (``BE``: ascending)."""
    if which == "LA":
        return np.argsort(-theta, kind="stable")[:k]
    if which == "SA":
        return np.argsort(theta, kind="stable")[:k]
    if which == "LM":
        return np.argsort(-np.abs(theta), kind="stable")[:k]
    low = np.argsort(theta, kind="stable")[: k // 2]
    high = np.argsort(-theta, kind="stable")[: k - k // 2]
    idx = np.concatenate([low, high[::-1]])
    return idx[np.argsort(theta[idx], kind="stable")]


def _check_which(which: str, k: int, n: int) -> None:
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")


def _residuals(op, values: np.ndarray, vectors: Tensor) -> np.ndarray:
    out = []
    for i in range(vectors.shape[1]):
        r = op.matvec(vectors[:, i]) - float(values[i]) * vectors[:, i]
        out.append(float(r.norm()))
    return np.asarray(out, dtype=np.float64)


def lanczos(
    op: HessianLinearOperator,
    k: int,
    *,
    which: str = "LA",
    steps: int | None = None,
    max_steps: int | None = None,
    tol: float | None = None,
    seed: int = 0,
    residuals: str = "stored",
    basis_dtype: torch.dtype | None = None,
) -> Eigenpairs:
    r"""Extreme eigenpairs of :math:`H` by Lanczos with full reorthogonalization.

    Builds the Krylov basis :math:`V_m` of :math:`\mathcal{K}_m(H, v_0)` (``v0`` seeded Gaussian)
    on the device, takes the eigenpairs :math:`(\theta_i, s_i)` of the tridiagonal
    :math:`T_m = V_m^T H V_m` (``scipy.linalg.eigh_tridiagonal``) and the Ritz vectors
    :math:`y_i = V_m s_i`. Its residual is known for free,
    :math:`\|Hy_i - \theta_i y_i\| = \beta_m |e_m^T s_i|`; while a wanted pair has
    :math:`\beta_m |e_m^T s_i| > \text{tol} \cdot \max_j |\theta_j|`, the basis is extended
    (by an eighth of its size, at least 3 vectors, no restart) up to ``max_steps``: the test is
    cheap next to a product, so it is made often and the iteration stops within a few products of
    convergence. The error of a converged Ritz value is about
    :math:`(\text{tol} \max_j|\theta_j|)^2 / \text{gap}`. Full reorthogonalization keeps the basis
    orthonormal to working precision, so no spurious copies of converged eigenvalues appear; the
    cost is :math:`O(m n)` memory and :math:`O(m^2 n)` flops besides :math:`m` products.

    The returned residuals :math:`\|Hy_i - \theta_i y_i\|` (``residuals``) are computed, by
    default (``"stored"``), from the products :math:`W_m = HV_m` kept during the iteration:
    :math:`Hy_i = W_m s_i` by linearity, so they are the residuals of actually computed products
    (with their rounding and any loss of orthogonality) at no extra product, for :math:`O(mn)`
    more memory. ``"recompute"`` spends one product per pair and no memory; ``"estimate"``
    returns :math:`\beta_m |e_m^T s_i|`, which full reorthogonalization keeps equal to the true
    residuals down to the rounding of a product (a floor the estimates do not show).

    Args:
        op: The operator (anything with ``shape``, ``dtype``, ``device``, ``matvec``).
        k: Number of eigenpairs.
        which: ``"LA"`` largest algebraic (top-k, the paper's P.E.), ``"SA"`` smallest algebraic
            (most negative, N.E.), ``"LM"`` largest magnitude, ``"BE"`` ``k // 2`` from the low
            end and the rest from the high end.
        steps: Initial Krylov dimension, default ``max(2k + 5, 15)`` (ARPACK's minimum ``ncv``
            of ``2k + 1`` with a margin against missing an extreme eigenvalue the start vector
            barely sees), capped at ``n``.
        max_steps: Largest Krylov dimension, default ``min(n, max(5 * steps, 200))``.
        tol: Relative residual for convergence, default :math:`\sqrt{\varepsilon}` of the dtype.
        seed: Seeds the start vector (and restarts after a breakdown).
        residuals: ``"stored"`` (default), ``"recompute"`` or ``"estimate"`` (see above).
        basis_dtype: Dtype of the basis and its projections (the stored products stay in the
            operator's dtype), default float64: on a float32 operator the Ritz values are then
            limited by the products' rounding, not by float32 dot products over ``n`` entries
            (vgg_bn of ``benchmarks/hessian.py``: worst relative error of the top 5 from 1.8e-6
            to 6e-7 at the same 15 products). ``op.dtype`` halves the basis' memory.

    Returns:
        :class:`Eigenpairs`: eigenvalues most extreme first (descending for ``LA``, ascending for
        ``SA``, by decreasing magnitude for ``LM``, ascending for ``BE``), unit eigenvectors
        ``(n, k)`` and residual norms. A warning is issued if ``max_steps`` was reached before
        convergence.
    """
    n = op.shape[0]
    _check_which(which, k, n)
    if residuals not in RESIDUALS:
        raise ValueError(f"residuals must be one of {RESIDUALS}, got {residuals!r}")
    steps = min(n, max(2 * k + 5, 15) if steps is None else int(steps))
    steps = max(steps, k)
    default_max = max(5 * steps, 200)
    max_steps = min(n, default_max if max_steps is None else max(int(max_steps), steps))
    tol = math.sqrt(torch.finfo(op.dtype).eps) if tol is None else float(tol)
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float64 if basis_dtype is None else basis_dtype
    v0 = _probe(n, gen, "gaussian", dtype, op.device)
    lz = _Lanczos(op, v0, gen, restart=True, keep_products=residuals == "stored", basis_dtype=dtype)
    lz.extend(steps)
    while True:
        theta, s = lz.ritz()
        idx = _select(theta, k, which)
        beta_m = lz.beta[-1] if lz.m < n else 0.0
        estimate = np.abs(beta_m * s[-1, idx])
        scale = max(float(np.max(np.abs(theta))), np.finfo(np.float64).tiny)
        if np.all(estimate <= tol * scale) or lz.m >= max_steps:
            break
        lz.extend(min(max_steps, lz.m + max(3, lz.m // 8)))
    if np.any(estimate > tol * scale):
        warnings.warn(
            f"lanczos: {int(np.sum(estimate > tol * scale))} of {k} pairs not converged to "
            f"tol={tol:g} after {lz.m} steps (max_steps={max_steps})",
            RuntimeWarning,
            stacklevel=2,
        )
    s_sel = torch.as_tensor(s[:, idx], dtype=dtype, device=op.device)
    vectors = lz.V[: lz.m].T @ s_sel
    norms = vectors.norm(dim=0, keepdim=True)
    vectors = vectors / norms
    values = theta[idx].astype(np.float64)
    if residuals == "estimate":
        return Eigenpairs(values, vectors.to(op.dtype), estimate * 1.0)
    if residuals == "recompute":
        vectors = vectors.to(op.dtype)
        return Eigenpairs(values, vectors, _residuals(op, values, vectors))
    hy = (lz.W[: lz.m].T @ s_sel.to(lz.W.dtype)).to(dtype) / norms
    theta_sel = torch.as_tensor(values, dtype=dtype, device=op.device)
    res = (hy - vectors * theta_sel).norm(dim=0).double().cpu().numpy()
    return Eigenpairs(values, vectors.to(op.dtype), res)


def eigsh_topk(
    op: HessianLinearOperator,
    k: int,
    which: str = "LA",
    tol: float = 0.0,
    *,
    ncv: int | None = None,
    maxiter: int | None = None,
    seed: int = 0,
) -> Eigenpairs:
    r"""Extreme eigenpairs through ``scipy.sparse.linalg.eigsh`` on ``op.to_scipy()``.

    The paper's Listing 1 (ARPACK's implicitly restarted Lanczos, float64 on the host), with a
    seeded start vector so that results repeat. ARPACK's ``tol`` is a relative accuracy of the
    Ritz values (0 means machine precision).

    Args:
        op: The operator.
        k: Number of eigenpairs, ``1 <= k < n``.
        which: ``"LA"``, ``"SA"``, ``"LM"`` or ``"BE"`` as in :func:`lanczos`.
        tol: ARPACK tolerance.
        ncv: Lanczos vectors kept by ARPACK (default ``min(n, max(2k + 1, 20))``).
        maxiter: ARPACK restarts limit.
        seed: Seeds the start vector.

    Returns:
        :class:`Eigenpairs` ordered as in :func:`lanczos`, residuals from one product per pair.
    """
    n = op.shape[0]
    _check_which(which, k, n)
    if k >= n:
        raise ValueError(f"eigsh_topk needs k < n = {n}, got {k}")
    v0 = np.random.default_rng(seed).standard_normal(n)
    values, vectors = scipy.sparse.linalg.eigsh(
        op.to_scipy(), k=k, which=which, tol=tol, v0=v0, ncv=ncv, maxiter=maxiter
    )
    idx = _select(values, k, which)
    values = values[idx].astype(np.float64)
    vecs = torch.as_tensor(vectors[:, idx], dtype=op.dtype, device=op.device)
    vecs = vecs / vecs.norm(dim=0, keepdim=True)
    return Eigenpairs(values, vecs, _residuals(op, values, vecs))
