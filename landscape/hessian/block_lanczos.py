r"""Extreme Hessian eigenpairs by block Lanczos on batched Hessian-vector products.

:func:`block_lanczos` builds an orthonormal basis of the block Krylov space

.. math:: \mathcal{K}_j(H, X_0) = \operatorname{span}\{X_0, HX_0, \dots, H^{j-1} X_0\},
    \qquad X_0 \in \mathbb{R}^{n \times p},

``p`` vectors at a time, each block's products computed together by the operator's
:meth:`~landscape.hessian.HessianLinearOperator.matmat` (one batched pass per evaluation batch
where the operator batches its products, ``block_products``). Against the single-vector
:func:`landscape.hessian.lanczos` it trades products for passes: a block Krylov space of
dimension :math:`jp` needs :math:`j` sequential passes instead of :math:`jp`, which pays where a
batched product costs less per vector than a single one (a GPU that one vector leaves idle), and
it finds every copy of an eigenvalue of multiplicity up to ``p`` (a single start vector sees
only one direction of an eigenspace, so single-vector Lanczos reports a multiple eigenvalue
once and misses tight clusters until late).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from landscape.hessian.lanczos import (
    RESIDUALS,
    Eigenpairs,
    _check_which,
    _probe,
    _residuals,
    _select,
)


class _BlockLanczos:
    r"""Block Lanczos with full reorthogonalization and Rayleigh-Ritz on the computed products.

    Step :math:`j` computes :math:`W_j = HQ_j` for the current block :math:`Q_j` (``p`` rows of
    the basis ``V``), adds the new columns :math:`V^T W_j` of the projected matrix
    :math:`G = V^T H V` (its lower part by symmetry), and orthogonalizes :math:`W_j` against the
    whole basis twice (block classical Gram-Schmidt; twice is enough). The remainder
    :math:`R_j` satisfies :math:`HV = VG + R_j E_j^T` up to rounding, so a Ritz pair
    :math:`(\theta, s)` has the residual :math:`\|R_j^T s_j\|` (:math:`s_j`: its last ``p``
    coordinates), read from the Gram matrix :math:`R_j R_j^T`. The next block is :math:`R_j`
    orthonormalized column by column (Gram-Schmidt twice against the basis and the block's
    earlier columns); a column that vanishes (norm below
    :math:`\min(10 n \varepsilon, \sqrt\varepsilon)` times the largest entry of :math:`G` or
    norm seen: its direction is already in the basis, an invariant subspace or a block of
    linearly dependent vectors) is replaced by a seeded random vector orthogonal to the basis.

    The basis and the products are kept in ``basis_dtype``; :math:`G` and the Ritz problem are
    float64 on the host. With ``keep_products`` the raw products are kept as rows of ``W``.
    """

    def __init__(
        self,
        op,
        x0: Tensor,
        gen: torch.Generator,
        basis_dtype: torch.dtype,
        keep_products: bool = True,
    ) -> None:
        self.op, self.gen, self.dtype = op, gen, basis_dtype
        self.n = op.shape[0]
        self.p = x0.shape[0]
        rows = min(self.n, max(4 * self.p, 64))
        self.V = torch.zeros(rows, self.n, dtype=basis_dtype, device=op.device)
        self.W = torch.zeros_like(self.V) if keep_products else None
        self.G = np.zeros((0, 0))
        self.gram = np.zeros((0, 0))  # R_j R_j^T of the last remainder
        self.m = 0  # basis vectors whose products are known (G is m x m)
        self.pending = 0  # vectors of the next block, V[m : m + pending]
        self.last = 0  # size of the last multiplied block
        self.scale = 0.0
        self.eps = torch.finfo(op.dtype).eps
        self._add_block(x0.to(device=op.device, dtype=basis_dtype))

    def _ensure(self, rows: int) -> None:
        if rows <= self.V.shape[0]:
            return
        size = min(self.n, max(rows, 2 * self.V.shape[0]))
        for name in ("V", "W"):
            old = getattr(self, name)
            if old is None:
                continue
            grown = torch.zeros(size, self.n, dtype=old.dtype, device=old.device)
            grown[: old.shape[0]] = old
            setattr(self, name, grown)

    def _orthogonalize(self, w: Tensor, upto: int) -> Tensor:
        basis = self.V[:upto]
        for _ in range(2):
            w = w - (w @ basis.T) @ basis
        return w

    def _add_block(self, block: Tensor) -> None:
        r"""Appends ``block``'s rows, orthonormalized, after the ``m`` known basis vectors.

        Only as many as still fit in :math:`\mathbb{R}^n` (a last, smaller block).
        """
        self.pending = min(self.p, self.n - self.m)
        self._ensure(self.m + self.pending)
        threshold = min(10 * self.n * self.eps, math.sqrt(self.eps)) * max(self.scale, 1e-300)
        for i in range(self.pending):
            at = self.m + i
            w = self._orthogonalize(block[i], at)
            norm = float(w.norm())
            tries = 0
            while not norm > threshold and tries < 3:  # random, orthogonal to the basis
                w = self._orthogonalize(self._random(), at)
                norm, tries = float(w.norm()), tries + 1
                threshold = 1e-3
            self.V[at] = w / norm

    def _random(self) -> Tensor:
        return _probe(self.n, self.gen, "gaussian", self.dtype, self.op.device)

    @property
    def full(self) -> bool:
        """The basis spans the whole space: every product is known."""
        return self.m >= self.n

    def step(self) -> None:
        """Multiplies the current block by :math:`H` and appends the next block."""
        m, p = self.m, self.pending
        block = self.V[m : m + p]
        products = self.op.matmat(block.T.to(self.op.dtype)).T.to(self.dtype)
        if self.W is not None:
            self.W[m : m + p] = products
        coupling = (self.V[: m + p] @ products.T).double().cpu().numpy()  # (m + p, p)
        G = np.zeros((m + p, m + p))
        G[:m, :m] = self.G
        G[:, m:] = coupling
        G[m:, :m] = coupling[:m].T
        G[m:, m:] = 0.5 * (coupling[m:] + coupling[m:].T)
        self.G, self.m, self.last = G, m + p, p
        remainder = products - (products @ self.V[: m + p].T) @ self.V[: m + p]
        remainder = remainder - (remainder @ self.V[: m + p].T) @ self.V[: m + p]
        self.gram = (remainder @ remainder.T).double().cpu().numpy()
        norms = np.sqrt(np.clip(np.diag(self.gram), 0, None))
        self.scale = max(self.scale, float(np.max(np.abs(coupling))), float(norms.max()))
        if not self.full:
            self._add_block(remainder)

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), vectors ``(m, m)`` and residual estimates ``(m,)``."""
        theta, s = np.linalg.eigh(self.G)
        if self.m >= self.n:
            return theta, s, np.zeros_like(theta)
        last = s[self.m - self.last :]
        estimate = np.sqrt(np.clip(np.einsum("ij,ik,kj->j", last, self.gram, last), 0, None))
        return theta, s, estimate


def block_lanczos(
    op,
    k: int,
    *,
    which: str = "LA",
    block_size: int | None = None,
    steps: int | None = None,
    max_steps: int | None = None,
    tol: float | None = None,
    seed: int = 0,
    residuals: str = "stored",
    basis_dtype: torch.dtype | None = None,
) -> Eigenpairs:
    r"""Extreme eigenpairs of :math:`H` by block Lanczos with full reorthogonalization.

    The start block is ``block_size`` seeded Gaussian vectors (its first column is
    :func:`~landscape.hessian.lanczos`'s start vector for the same seed). Blocks are added (see
    :class:`_BlockLanczos`) until the basis holds ``steps`` vectors, then one block at a time
    while a wanted Ritz pair has a residual estimate above :math:`\text{tol} \max_j|\theta_j|`,
    up to ``max_steps`` vectors. Ritz pairs come from the projected matrix :math:`V^T H V`
    formed from the computed products (Rayleigh-Ritz), eigenvectors :math:`y_i = V s_i`.
    ``residuals`` as in :func:`~landscape.hessian.lanczos`: ``"stored"`` from the kept products
    :math:`HV` (no extra product), ``"recompute"`` one product per pair, ``"estimate"`` the
    Krylov relation's :math:`\|R^T s_i\|`.

    Args:
        op: The operator (``shape``, ``dtype``, ``device``, ``matvec`` and ``matmat``).
        k: Number of eigenpairs.
        which: ``"LA"``, ``"SA"``, ``"LM"`` or ``"BE"`` as in :func:`~landscape.hessian.lanczos`.
        block_size: Vectors per block ``p`` (default ``k``); ``1`` is single-vector Lanczos.
        steps: Initial basis size in vectors, default ``max(2k + 5, 15)`` as for
            :func:`~landscape.hessian.lanczos`, rounded up to whole blocks, capped at ``n``.
        max_steps: Largest basis, default ``min(n, max(5 * steps, 200))``.
        tol: Relative residual for convergence, default :math:`\sqrt{\varepsilon}` of the
            operator's dtype.
        seed: Seeds the start block (and replacement vectors).
        residuals: ``"stored"`` (default), ``"recompute"`` or ``"estimate"``.
        basis_dtype: Dtype of the basis and its projections, default float64: on a float32
            operator it takes the Ritz values to the products' own accuracy (as scipy's float64
            ARPACK over float32 products does; a float32 basis lost up to 10x in the top-5 of
            ``benchmarks/hessian.py``'s CNN), for twice the memory of a float32 basis.

    Returns:
        :class:`~landscape.hessian.Eigenpairs` ordered as by :func:`~landscape.hessian.lanczos`;
        a ``RuntimeWarning`` if ``max_steps`` was reached before convergence.
    """
    n = op.shape[0]
    _check_which(which, k, n)
    if residuals not in RESIDUALS:
        raise ValueError(f"residuals must be one of {RESIDUALS}, got {residuals!r}")
    p = k if block_size is None else int(block_size)
    if not 1 <= p <= n:
        raise ValueError(f"block_size must be in [1, {n}], got {block_size}")
    steps = min(n, max(2 * k + 5, 15) if steps is None else int(steps))
    steps = max(steps, k, p)
    max_steps = min(n, max(5 * steps, 200) if max_steps is None else max(int(max_steps), steps))
    tol = math.sqrt(torch.finfo(op.dtype).eps) if tol is None else float(tol)
    dtype = torch.float64 if basis_dtype is None else basis_dtype
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.stack([_probe(n, gen, "gaussian", dtype, op.device) for _ in range(p)])
    bl = _BlockLanczos(op, x0, gen, dtype, keep_products=residuals == "stored")
    while True:
        if bl.m < steps and not bl.full:
            bl.step()
            continue
        theta, s, estimate = bl.ritz()
        idx = _select(theta, k, which)
        scale = max(float(np.max(np.abs(theta))), np.finfo(np.float64).tiny)
        converged = estimate[idx] <= tol * scale
        if np.all(converged) or bl.m >= max_steps or bl.full:
            break
        bl.step()
    if not np.all(converged):
        warnings.warn(
            f"block_lanczos: {int(np.sum(~converged))} of {k} pairs not converged to "
            f"tol={tol:g} after {bl.m} vectors (max_steps={max_steps}, block_size={p})",
            RuntimeWarning,
            stacklevel=2,
        )
    values = theta[idx].astype(np.float64)
    s_sel = torch.as_tensor(s[:, idx], dtype=dtype, device=op.device)
    vectors = bl.V[: bl.m].T @ s_sel
    norms = vectors.norm(dim=0, keepdim=True)
    vectors = vectors / norms
    if residuals == "estimate":
        return Eigenpairs(values, vectors.to(op.dtype), estimate[idx] * 1.0)
    if residuals == "recompute":
        vectors = vectors.to(op.dtype)
        return Eigenpairs(values, vectors, _residuals(op, values, vectors))
    hy = (bl.W[: bl.m].T @ s_sel) / norms
    theta_sel = torch.as_tensor(values, dtype=dtype, device=op.device)
    res = (hy - vectors * theta_sel).norm(dim=0).double().cpu().numpy()
    return Eigenpairs(values, vectors.to(op.dtype), res)
