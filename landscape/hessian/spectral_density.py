r"""The spectral density of :math:`H` by stochastic Lanczos quadrature: :func:`slq_density`."""

from __future__ import annotations

import math

import numpy as np
import torch

from landscape.hessian.lanczos import _Lanczos, _probe
from landscape.hessian.operator import HessianLinearOperator

# PyHessian's density_generate (density_plot.py), the convention of the paper's density figures.
PYHESSIAN_GRID_POINTS = 10000
PYHESSIAN_OVERHEAD = 0.01
PYHESSIAN_VARIANCE = 1e-5


def slq_density(
    op: HessianLinearOperator,
    *,
    steps: int = 100,
    runs: int = 5,
    grid_points: int = PYHESSIAN_GRID_POINTS,
    sigma: float | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray | tuple[float, float] | float | str]:
    r"""Spectral density of :math:`H` by stochastic Lanczos quadrature (Ghorbani et al., 2019).

    For each run :math:`r`, ``steps`` Lanczos iterations from a normalized Rademacher probe
    :math:`v_r` give Ritz values :math:`\theta_{r,i}` and weights
    :math:`w_{r,i} = (e_1^T s_{r,i})^2` (:math:`\sum_i w_{r,i} = 1`), a Gauss quadrature of the
    measure :math:`\sum_j (v_r^T u_j)^2 \delta_{\lambda_j}`, exact for polynomials of degree
    :math:`\le 2\,\text{steps} - 1`: :math:`\sum_i w_{r,i} \theta_{r,i}^p = v_r^T H^p v_r`, whose
    expectation is :math:`\operatorname{tr}(H^p)/n`. The density is the run average broadened by
    Gaussians as in PyHessian's ``density_generate`` (``density_plot.py``), the convention of the
    papers' density figures:

    .. math::

        \phi(t) = \frac{1}{R} \sum_{r=1}^{R} \sum_i w_{r,i}\, \frac{1}{\sqrt{2\pi s}}
            \exp\Big(-\frac{(t - \theta_{r,i})^2}{2 s}\Big),
        \qquad s = 10^{-5} \max(1, t_{\max} - t_{\min}),

    on ``grid_points`` (PyHessian: 10000) uniform points from :math:`t_{\min}` (the run average
    of each run's smallest Ritz value, minus 0.01) to :math:`t_{\max}` (of the largest, plus
    0.01), normalized so that its Riemann sum (sum times grid step) is 1. ``sigma`` overrides the
    width only: :math:`s = \sigma^2`. PyHessian's :math:`s` is a variance: its standard
    deviation :math:`\sqrt{10^{-5}\,\text{span}}` is far narrower than a fraction of the span,
    so near-zero eigenvalues do not smear into negative mass.

    Args:
        op: The operator.
        steps: Lanczos steps per run (capped at ``n``).
        runs: Number of probes :math:`R`.
        grid_points: Grid size.
        sigma: Gaussian standard deviation; None: PyHessian's :math:`\sqrt{s}`.
        seed: Seeds the probes.

    Returns:
        ``grid`` and ``density`` (``(grid_points,)``), ``ritz_values`` and ``weights``
        (``(runs, steps)``; after an early breakdown a run is padded with value 0 and weight 0),
        ``extreme`` ``(min, max)`` Ritz value over all runs (estimates of
        :math:`\lambda_{\min}`, :math:`\lambda_{\max}`), ``sigma`` (the standard deviation
        used) and ``broadening`` (which convention, in words).
    """
    if runs < 1 or steps < 1 or grid_points < 2:
        raise ValueError("slq_density needs runs >= 1, steps >= 1 and grid_points >= 2")
    n = op.shape[0]
    steps = min(steps, n)
    gen = torch.Generator().manual_seed(seed)
    ritz = np.zeros((runs, steps))
    weights = np.zeros((runs, steps))
    for r in range(runs):
        v0 = _probe(n, gen, "rademacher", op.dtype, op.device)
        lz = _Lanczos(op, v0, gen, restart=False)
        lz.extend(steps)
        theta, s = lz.ritz()
        ritz[r, : lz.m] = theta
        weights[r, : lz.m] = s[0] ** 2
    mask = weights > 0
    t_min = np.mean([ritz[r][mask[r]].min() for r in range(runs)]) - PYHESSIAN_OVERHEAD
    t_max = np.mean([ritz[r][mask[r]].max() for r in range(runs)]) + PYHESSIAN_OVERHEAD
    grid = np.linspace(t_min, t_max, grid_points)
    if sigma is None:
        variance = PYHESSIAN_VARIANCE * max(1.0, t_max - t_min)
        broadening = "PyHessian: Gaussian variance 1e-5 * max(1, span)"
    else:
        variance = float(sigma) ** 2
        broadening = "density.sigma"
    density = np.zeros(grid_points)
    for r in range(runs):
        theta, w = ritz[r][mask[r]], weights[r][mask[r]]
        gauss = np.exp(-((grid[None, :] - theta[:, None]) ** 2) / (2 * variance))
        density += (w[:, None] * gauss).sum(0) / math.sqrt(2 * math.pi * variance)
    density /= runs
    density /= np.sum(density) * (grid[1] - grid[0])
    return {
        "grid": grid,
        "density": density,
        "ritz_values": ritz,
        "weights": weights,
        "extreme": (float(ritz[mask].min()), float(ritz[mask].max())),
        "sigma": math.sqrt(variance),
        "broadening": broadening,
    }
