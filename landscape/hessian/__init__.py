r"""Curvature engine: Hessian-vector products, eigenpairs, trace and spectral density.

The object of study is the Hessian of the empirical loss over a fixed evaluation set
:math:`D = \{(x_i, y_i)\}_{i=1}^N`, given as a list of batches :math:`B_1, \dots, B_K`,

.. math::

    L(\theta) = \frac{1}{N} \sum_{i=1}^{N} \ell(f_\theta(x_i), y_i)
              = \sum_{b=1}^{K} \frac{|B_b|}{N}\, \bar\ell_b(\theta),
    \qquad H = \nabla^2_\theta L(\theta) \in \mathbb{R}^{n \times n},

where :math:`\bar\ell_b` is the mean loss of batch :math:`b` (what ``F.cross_entropy`` returns).
Each batch is weighted by its size, so the operator (and its spectrum) does not depend on how the
evaluation set is cut into batches. :math:`\theta` holds the model's *trainable* parameters in
``named_parameters()`` order (the order of :func:`landscape.params.flatten`).

:class:`HessianLinearOperator` never forms :math:`H`; it computes :math:`Hv` on detached copies
of the parameters (the caller's model, its buffers and its ``.grad`` fields are untouched) by one
of three methods: forward-over-reverse differentiation (``"jvp"``: ``torch.func.jvp`` of
``torch.func.grad`` of a functional loss built with ``torch.func.functional_call``, as in
f-dangel/curvlinops), reverse-over-reverse (``"double_backward"``: PyHessian's and Listing 1's
:math:`\nabla_\theta(g^T v)`), or reverse over a gradient graph built once and retained
(``"retained"``: one backward pass per product, as PyHessian does for a single batch).
``method="auto"`` (the default) takes the retained graph for a single batch and otherwise
forward-over-reverse on CUDA and reverse-over-reverse elsewhere, a rule fixed by the device.
On top of it:

- :func:`lanczos`: extreme eigenpairs by Lanczos with full reorthogonalization on the device
  (``which="LA"`` top-k, the paper's P.E.; ``"SA"`` most negative, N.E.), with residuals.
- :func:`eigsh_topk`: the same through ``scipy.sparse.linalg.eigsh`` (the paper's Listing 1).
- :func:`block_lanczos`: the same on blocks of vectors whose products are computed together.
- :func:`hutchinson`, :func:`hutchpp`, :func:`xtrace`: stochastic trace estimates with standard
  errors (the exact trace of piecewise-linear networks is :func:`landscape.gauss_newton.ggn_trace`).
- :func:`slq_density`: stochastic Lanczos quadrature spectral density (Ghorbani et al. 2019,
  PyHessian's ``density``/``density_generate``, the paper's Listing 2).
- :func:`directional_derivatives`, :func:`soa_loss_change`: the second-order approximation
  :math:`\delta L \approx \lambda \epsilon^T g + \tfrac12 \lambda^2 \epsilon^T H \epsilon` (Eq. 1,
  Listing 3).
- :func:`top_eigenvalues`, :func:`trace`, :func:`density`: the library API on any model, loss
  and data (:mod:`landscape.api`, imported on first use).

Every name above is importable from ``landscape.hessian``; the code lives in its modules:

- :mod:`~landscape.hessian.operator`: :class:`HessianLinearOperator` (its data, the determinism
  guard and the guarded products ``matvec``/``matmat``), :func:`time_matvec`.
- :mod:`~landscape.hessian.products`: the products by method (the operator's base class),
  :func:`make_batch_loss`, :func:`make_grad_and_value`, :func:`make_hvp`.
- :mod:`~landscape.hessian.lanczos`: :class:`Eigenpairs`, :func:`lanczos`, :func:`eigsh_topk`
  and the Lanczos iteration and probes the other solvers share.
- :mod:`~landscape.hessian.block_lanczos`: :func:`block_lanczos`.
- :mod:`~landscape.hessian.trace_estimators`: :func:`hutchinson`, :func:`hutchpp`, :func:`xtrace`.
- :mod:`~landscape.hessian.spectral_density`: :func:`slq_density`.
- :mod:`~landscape.hessian.second_order`: :func:`directional_derivatives`,
  :func:`soa_loss_change`.
"""

from __future__ import annotations

from torch import nn

from landscape.hessian.block_lanczos import block_lanczos
from landscape.hessian.lanczos import RESIDUALS, WHICH, Eigenpairs, eigsh_topk, lanczos
from landscape.hessian.operator import (
    BLOCK_PRODUCTS,
    BN_MODES,
    METHODS,
    HessianLinearOperator,
    NondeterministicOperatorError,
    time_matvec,
)
from landscape.hessian.products import LossFn, make_batch_loss, make_grad_and_value, make_hvp
from landscape.hessian.second_order import directional_derivatives, soa_loss_change
from landscape.hessian.spectral_density import (
    PYHESSIAN_GRID_POINTS,
    PYHESSIAN_OVERHEAD,
    PYHESSIAN_VARIANCE,
    slq_density,
)
from landscape.hessian.trace_estimators import hutchinson, hutchpp, xtrace

__all__ = [
    "BLOCK_PRODUCTS",
    "BN_MODES",
    "METHODS",
    "PYHESSIAN_GRID_POINTS",
    "PYHESSIAN_OVERHEAD",
    "PYHESSIAN_VARIANCE",
    "RESIDUALS",
    "WHICH",
    "Eigenpairs",
    "HessianLinearOperator",
    "LossFn",
    "NondeterministicOperatorError",
    "block_lanczos",
    "density",
    "directional_derivatives",
    "eigsh_topk",
    "hutchinson",
    "hutchpp",
    "lanczos",
    "make_batch_loss",
    "make_grad_and_value",
    "make_hvp",
    "slq_density",
    "soa_loss_change",
    "time_matvec",
    "top_eigenvalues",
    "trace",
    "xtrace",
]

# --------------------------------------------------------------------------- library API


def top_eigenvalues(model: nn.Module, loss_fn: LossFn, data, k: int = 5, **options):
    """The ``k`` extreme eigenpairs of the Hessian of ``loss_fn`` over ``data`` as a spectrum
    Artifact: :func:`landscape.api.top_eigenvalues` (imported on first use)."""
    from landscape import api

    return api.top_eigenvalues(model, loss_fn, data, k, **options)


def trace(model: nn.Module, loss_fn: LossFn, data, **options):
    """The Hessian trace as a trace Artifact: :func:`landscape.api.trace`."""
    from landscape import api

    return api.trace(model, loss_fn, data, **options)


def density(model: nn.Module, loss_fn: LossFn, data, **options):
    """The SLQ spectral density as a density Artifact: :func:`landscape.api.density`."""
    from landscape import api

    return api.density(model, loss_fn, data, **options)
