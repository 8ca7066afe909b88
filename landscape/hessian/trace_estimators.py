r"""Stochastic estimates of :math:`\operatorname{tr} H` with standard errors.

:func:`hutchinson`, :func:`hutchpp` (Hutch++) and :func:`xtrace` (XTrace); the exact trace of
piecewise-linear networks is :func:`landscape.gauss_newton.ggn_trace`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from landscape.hessian.lanczos import _probe
from landscape.hessian.operator import HessianLinearOperator


def hutchinson(
    op: HessianLinearOperator, num_probes: int, seed: int = 0, dist: str = "rademacher"
) -> tuple[float, float]:
    r"""Hutchinson's trace estimate :math:`\operatorname{tr} H \approx \frac1m \sum_i z_i^T H z_i`.

    With Rademacher probes :math:`\operatorname{Var}(z^T H z) = 2(\|H\|_F^2 - \sum_i H_{ii}^2)`;
    with Gaussian probes (as Eq. 1's :math:`\mathcal{N}(0, \sigma^2)` noise) it is
    :math:`2\|H\|_F^2`.

    Args:
        op: The operator.
        num_probes: Number of probes :math:`m \ge 2` (one product each).
        seed: Seeds the probes.
        dist: ``"rademacher"`` or ``"gaussian"``.

    Returns:
        ``(estimate, standard_error)``, the standard error being the sample standard deviation
        of :math:`z_i^T H z_i` over :math:`\sqrt m`.
    """
    if num_probes < 2:
        raise ValueError(f"hutchinson needs num_probes >= 2, got {num_probes}")
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(num_probes):
        z = _probe(op.shape[0], gen, dist, op.dtype, op.device)
        samples.append(float(z @ op.matvec(z)))
    arr = np.asarray(samples)
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(num_probes))


def hutchpp(op: HessianLinearOperator, num_matvecs: int, seed: int = 0) -> tuple[float, float]:
    r"""Hutch++ trace estimate (Meyer, Musco, Musco and Woodruff, 2021).

    With :math:`s = \lfloor m/3 \rfloor` and :math:`q = m - 2s` Rademacher probes: :math:`Q` is an
    orthonormal basis of :math:`HS` (:math:`S \in \{\pm1\}^{n \times s}`), and

    .. math::

        \operatorname{tr} H \approx \operatorname{tr}(Q^T H Q)
          + \frac1q \sum_{i=1}^{q} g_i^T (I - QQ^T) H (I - QQ^T) g_i,

    which uses :math:`s + s + q = m` products. The first term is exact for the captured top
    subspace; only the deflated remainder is estimated stochastically.

    Args:
        op: The operator.
        num_matvecs: Total product budget :math:`m \ge 6`.
        seed: Seeds the probes.

    Returns:
        ``(estimate, standard_error)``; the standard error is that of the Hutchinson part
        (sample standard deviation of its :math:`q` terms over :math:`\sqrt q`).
    """
    if num_matvecs < 6:
        raise ValueError(f"hutchpp needs num_matvecs >= 6, got {num_matvecs}")
    n = op.shape[0]
    s = num_matvecs // 3
    q = num_matvecs - 2 * s
    gen = torch.Generator().manual_seed(seed)
    S = torch.stack([_probe(n, gen, "rademacher", op.dtype, op.device) for _ in range(s)], 1)
    Q, _ = torch.linalg.qr(op.matmat(S))
    exact = float(torch.sum(Q * op.matmat(Q)))
    samples = []
    for _ in range(q):
        g = _probe(n, gen, "rademacher", op.dtype, op.device)
        g = g - Q @ (Q.T @ g)
        samples.append(float(g @ op.matvec(g)))
    arr = np.asarray(samples)
    return exact + float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(q))


def xtrace(op: HessianLinearOperator, num_matvecs: int, seed: int = 0) -> tuple[float, float]:
    r"""XTrace estimate of :math:`\operatorname{tr} H` (Epperly, Tropp and Webber, 2024).

    Hutch++ spends a third of its products on a sketch that its Hutchinson probes never reuse.
    XTrace uses all :math:`s = m/2` Rademacher vectors :math:`\omega_i` in both roles: with
    :math:`Y = H\Omega = QR` and the :math:`s` products :math:`HQ`, the estimate is the mean of
    the :math:`s` leave-one-out Hutch++ estimates

    .. math::

        T_i = \operatorname{tr}(Q_{(i)}^T H Q_{(i)})
          + \omega_i^T (I - Q_{(i)} Q_{(i)}^T) H (I - Q_{(i)} Q_{(i)}^T) \omega_i,

    :math:`Q_{(i)}` an orthonormal basis of :math:`H\Omega` without column :math:`i`
    (:math:`Q_{(i)} Q_{(i)}^T = Q (I - s_i s_i^T) Q^T`, :math:`s_i` the normalized
    :math:`i`-th column of :math:`R^{-T}`), each unbiased. Follows the paper's Algorithm 1 and
    curvlinops' ``xtrace``; the small dense algebra is done in float64.

    Args:
        op: The operator.
        num_matvecs: Total product budget :math:`m`, even, :math:`4 \le m`, :math:`m/2 < n`.
        seed: Seeds the probes.

    Returns:
        ``(estimate, standard_error)``; the standard error is the sample standard deviation of
        the :math:`T_i` over :math:`\sqrt s` (the paper's error estimate; the :math:`T_i` are
        exchangeable, not independent).
    """
    n = op.shape[0]
    if num_matvecs < 4 or num_matvecs % 2:
        raise ValueError(f"xtrace needs an even num_matvecs >= 4, got {num_matvecs}")
    s = num_matvecs // 2
    if s >= n:
        raise ValueError(f"xtrace needs num_matvecs / 2 < n = {n}, got {num_matvecs}")
    f64 = torch.float64
    gen = torch.Generator().manual_seed(seed)
    W = torch.stack([_probe(n, gen, "rademacher", op.dtype, op.device) for _ in range(s)], 1)
    Y = op.matmat(W).to(f64)
    W = W.to(f64)
    Q, R = torch.linalg.qr(Y)
    Z = op.matmat(Q.to(op.dtype)).to(f64)  # HQ
    eye = torch.eye(s, dtype=f64, device=Q.device)
    Rti = torch.linalg.solve_triangular(R, eye, upper=True).T  # R^{-T}
    S = Rti / Rti.norm(dim=0, keepdim=True)
    QtZ = Q.T @ Z
    T = torch.sum(Q * Z) - torch.einsum("ij,ik,kj->j", S, QtZ, S)  # tr(Q_i^T H Q_i)
    QtW = Q.T @ W
    HPw = Y - Z @ (QtW - S * torch.sum(S * QtW, 0))  # H (I - Q_i Q_i^T) w_i, column i
    QtHPw = Q.T @ HPw
    PHPw = HPw - Q @ (QtHPw - S * torch.sum(S * QtHPw, 0))
    T = T + torch.sum(W * PHPw, 0)
    arr = T.cpu().numpy()
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(s))
