r"""The second-order approximation of the loss change along a direction (Eq. 1, Listing 3).

:func:`directional_derivatives` gives :math:`(\epsilon^T g, \epsilon^T H \epsilon)` of one
direction, :func:`soa_loss_change` samples the approximation under Gaussian perturbations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from landscape.hessian.lanczos import _probe
from landscape.hessian.operator import HessianLinearOperator


def directional_derivatives(
    op: HessianLinearOperator, eps: Tensor | Mapping[str, Tensor]
) -> tuple[float, float]:
    r"""First and second directional derivatives :math:`(\epsilon^T g, \epsilon^T H \epsilon)`.

    They are :math:`b` and :math:`a` of the paper's Eq. 1 read as a quadratic in :math:`\lambda`,
    :math:`L(\theta + \lambda\epsilon) - L(\theta) \approx b\lambda + \tfrac12 a \lambda^2`
    (Listing 3). One product (the gradient is cached on the operator).

    Args:
        op: The operator at :math:`\theta`.
        eps: Flat direction of ``n`` elements, or ``{name: tensor}`` over the trainable names.

    Returns:
        ``(eps . g, eps . H eps)`` as floats.
    """
    e = op.flatten(eps) if isinstance(eps, Mapping) else op._check_vector(eps)
    return float(e @ op.gradient()), float(e @ op.matvec(e))


def soa_loss_change(
    op: HessianLinearOperator,
    lambdas: Sequence[float],
    *,
    num_samples: int = 100,
    sigma: float = 1.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    r"""Samples the second-order approximation of the loss change under Gaussian perturbations.

    For :math:`\epsilon_s \sim \mathcal{N}(0, \sigma^2 I)`, :math:`s = 1..S` (the paper's
    Appendix B.3 and Fig. 13), :math:`\delta L_{s}(\lambda) \approx \lambda\, \epsilon_s^T g
    + \tfrac12 \lambda^2 \epsilon_s^T H \epsilon_s`, whose mean is
    :math:`\tfrac12 \lambda^2 \sigma^2 \operatorname{tr} H`.

    Args:
        op: The operator at :math:`\theta`.
        lambdas: Step sizes :math:`\lambda`.
        num_samples: Number of perturbations :math:`S` (one product each).
        sigma: Noise scale :math:`\sigma`.
        seed: Seeds the perturbations.

    Returns:
        ``{"lambdas": (L,), "b": (S,) eps.g, "a": (S,) eps.H.eps, "delta": (S, L)}``.
    """
    gen = torch.Generator().manual_seed(seed)
    a, b = np.zeros(num_samples), np.zeros(num_samples)
    for s in range(num_samples):
        eps = sigma * _probe(op.shape[0], gen, "gaussian", op.dtype, op.device)
        b[s], a[s] = directional_derivatives(op, eps)
    lam = np.asarray(lambdas, dtype=np.float64)
    delta = b[:, None] * lam[None, :] + 0.5 * a[:, None] * lam[None, :] ** 2
    return {"lambdas": lam, "b": b, "a": a, "delta": delta}
