r"""Exact Hessian trace of piecewise-linear networks through the generalized Gauss-Newton matrix.

With :math:`f_i = f_\theta(x_i) \in \mathbb{R}^C` the logits, :math:`J_i = \partial f_i /
\partial\theta` and :math:`\Lambda_i = \nabla^2_{f} \ell(f_i, y_i)` (for softmax cross-entropy
:math:`\operatorname{diag}(p_i) - p_i p_i^T`), the Hessian of
:math:`L = \frac1N \sum_i \ell(f_i, y_i)` splits into

.. math::

    H = \underbrace{\frac1N \sum_i J_i^T \Lambda_i J_i}_{G\ \text{(GGN)}}
      + \underbrace{\frac1N \sum_i \sum_c \frac{\partial \ell_i}{\partial f_{ic}}
        \nabla^2_\theta f_{ic}}_{R}.

If the logits are piecewise linear in each parameter tensor on its own (linear and convolution
layers, ReLU, ReLU6, leaky ReLU, max and average pooling, eval-mode BN, residual sums: a tensor
enters the logits once, through a linear map followed by piecewise-linear functions), the
diagonal blocks of :math:`\nabla^2_\theta f_{ic}` vanish almost everywhere, so
:math:`\operatorname{diag} R = 0` and :math:`\operatorname{tr} H = \operatorname{tr} G`
(Botev, Ritter and Barber 2017; Dangel, Harmeling and Hennig 2020 on Hessian backpropagation).
:math:`\operatorname{tr} G = \frac1N \sum_i \langle \Lambda_i, J_i J_i^T \rangle` needs one
per-sample Jacobian (``vmap`` of ``jacrev``) per sample and no random probe: the trace of such a
network is exact up to rounding, where Hutchinson-type estimators with 100 products stay at a
percent or more (``benchmarks/hessian.py``).

Smooth activations (tanh, GELU, ...), LayerNorm, train-mode BN and weight sharing break the
identity. :func:`ggn_trace` refuses models with such modules and, because a model's ``forward``
may apply any function, compares :math:`H_{jj}` (one product with :math:`e_j` each) with
:math:`G_{jj}` at sampled coordinates before it returns.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import hessian, jacrev, vmap

from landscape.hessian import HessianLinearOperator

# Leaf modules through which every parameter tensor stays piecewise linear. Containers (modules
# with children) are not listed: their forward is not visible here, the diagonal check covers it.
PIECEWISE_LINEAR: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.Hardtanh,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.modules.dropout._DropoutNd,
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
)


class NotPiecewiseLinearError(ValueError):
    """The model's Hessian diagonal differs from its Gauss-Newton diagonal: tr H != tr G."""


class GGNTrace(NamedTuple):
    """Result of :func:`ggn_trace`.

    Attributes:
        trace: :math:`\\operatorname{tr} G` (:math:`= \\operatorname{tr} H`), float64.
        coordinates: Flat indices :math:`j` of the diagonal check.
        hessian_diagonal: :math:`H_{jj}` at ``coordinates`` (one product each).
        ggn_diagonal: :math:`G_{jj}` at ``coordinates``.
        max_difference: :math:`\\max_j |H_{jj} - G_{jj}|` over the check, relative to the largest
            :math:`|H_{jj}|, |G_{jj}|` (0 without a check).
    """

    trace: float
    coordinates: np.ndarray
    hessian_diagonal: np.ndarray
    ggn_diagonal: np.ndarray
    max_difference: float


def non_piecewise_linear_modules(model: nn.Module) -> list[str]:
    """Names of the leaf modules outside :data:`PIECEWISE_LINEAR` (``""`` for the model itself).

    >>> non_piecewise_linear_modules(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)))
    []
    >>> non_piecewise_linear_modules(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)))
    ['1 (Tanh)']
    """
    return [
        f"{name} ({type(m).__name__})" if name else type(m).__name__
        for name, m in model.named_modules()
        if not any(True for _ in m.children()) and not isinstance(m, PIECEWISE_LINEAR)
    ]


def check_coordinates(op: HessianLinearOperator, num: int, seed: int = 0) -> np.ndarray:
    """``num`` flat coordinates, spread over the parameter tensors, for the diagonal check.

    Tensors are visited in a seeded random order, round-robin, so that every tensor is checked
    once ``num`` reaches their count; within a tensor the coordinate is uniform.
    """
    gen = np.random.default_rng(seed)
    sizes = [math.prod(s) for s in op.shapes.values()]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    order = gen.permutation(len(sizes))
    picks = [order[i % len(sizes)] for i in range(num)]
    return np.array([offsets[t] + gen.integers(sizes[t]) for t in picks], dtype=np.int64)


def ggn_trace(
    op: HessianLinearOperator, checks: int = 16, seed: int = 0, memory_mb: float = 256.0
) -> GGNTrace:
    r"""Exact :math:`\operatorname{tr} H` of a piecewise-linear network, as that of its GGN.

    :math:`\operatorname{tr} G = \frac1N \sum_i \langle \Lambda_i, J_i J_i^T \rangle` over the
    operator's evaluation set, in its dtype, accumulated in float64; :math:`J_i` by ``vmap`` of
    ``jacrev`` over chunks of samples sized to ``memory_mb`` (a chunk holds :math:`B \times C
    \times n` Jacobian entries), :math:`\Lambda_i` by ``torch.func.hessian`` of the operator's
    loss of one sample (any loss of the logits, cross-entropy included). Then ``checks``
    products :math:`H e_j` give :math:`H_{jj}` at the coordinates of :func:`check_coordinates`,
    which must equal :math:`G_{jj}` to :math:`\sqrt{\varepsilon}` of the largest entry.

    Args:
        op: The operator (``bn_mode="eval"``): its model, loss, batches and dtype.
        checks: Diagonal entries compared (one product each); 0 skips the check.
        seed: Seeds the check's coordinates.
        memory_mb: Budget for one chunk's Jacobians.

    Returns:
        A :class:`GGNTrace`.

    Raises:
        NotPiecewiseLinearError: ``bn_mode="train"`` (the samples of a batch are coupled), a
            module outside :data:`PIECEWISE_LINEAR`, or a diagonal entry of :math:`H` that
            differs from :math:`G`'s.
    """
    if op.bn_mode != "eval":
        raise NotPiecewiseLinearError(
            f"ggn trace needs bn_mode='eval', got {op.bn_mode!r}: train-mode BN couples the "
            "samples of a batch; use xtrace"
        )
    smooth = non_piecewise_linear_modules(op.model)
    if smooth:
        raise NotPiecewiseLinearError(
            f"ggn trace: modules not piecewise linear in their inputs: {', '.join(smooth[:5])}; "
            "tr(H) != tr(GGN) there, use xtrace"
        )
    params = op.param_dict()
    n = op.shape[0]
    names = list(op.shapes)
    starts = np.cumsum([0] + [math.prod(s) for s in op.shapes.values()])
    coords = check_coordinates(op, checks, seed)
    tensors = np.searchsorted(starts, coords, side="right") - 1
    where = [(names[t], int(j - starts[t])) for j, t in zip(coords, tensors, strict=True)]

    def logits(p: dict[str, Tensor], xi: Tensor) -> tuple[Tensor, Tensor]:
        z = op.logits(p, xi[None])[0]
        return z, z

    def sample_loss(z: Tensor, yi: Tensor) -> Tensor:
        return op.loss_fn(z[None], yi[None])

    jacobians = vmap(jacrev(logits, has_aux=True), in_dims=(None, 0))
    curvature = vmap(hessian(sample_loss))
    total = torch.zeros((), dtype=torch.float64, device=op.device)
    g_diag = torch.zeros(len(coords), dtype=torch.float64, device=op.device)
    itemsize = torch.finfo(op.dtype).bits // 8
    chunk = None
    with op.evaluation(), torch.no_grad():
        for x, y, _ in op.weighted_batches():
            if chunk is None:  # a chunk's Jacobians hold chunk x C x n entries
                num_classes = op.logits(params, x[:1]).shape[1]
                chunk = max(1, int(memory_mb * 2**20 // (num_classes * n * itemsize)))
            for start in range(0, len(y), chunk):
                J, z = jacobians(params, x[start : start + chunk])
                J = {k: v.reshape(v.shape[0], v.shape[1], -1) for k, v in J.items()}
                A = curvature(z, y[start : start + chunk]).to(torch.float64)
                gram = sum(J[k] @ J[k].transpose(1, 2) for k in names)
                total += torch.sum(A * gram.to(torch.float64))
                if len(coords):
                    Jc = torch.stack([J[k][:, :, i] for k, i in where], 2).to(torch.float64)
                    g_diag += torch.einsum("bcj,bcd,bdj->j", Jc, A, Jc)
    trace = float(total) / op.num_samples
    g_diag = (g_diag / op.num_samples).cpu().numpy()
    h_diag = np.zeros(len(coords))
    for i, j in enumerate(coords):
        e = torch.zeros(n, dtype=op.dtype, device=op.device)
        e[j] = 1
        h_diag[i] = float(op.matvec(e)[j])
    scale = max(np.abs(h_diag).max(initial=0), np.abs(g_diag).max(initial=0), np.finfo(float).tiny)
    diff = np.abs(h_diag - g_diag)
    worst = float(diff.max(initial=0) / scale)
    if worst > math.sqrt(torch.finfo(op.dtype).eps):
        i = int(diff.argmax())
        raise NotPiecewiseLinearError(
            f"ggn trace: H_jj = {h_diag[i]:.6g} but GGN_jj = {g_diag[i]:.6g} at element "
            f"{where[i][1]} of {where[i][0]!r} (relative {worst:.2g}): the loss is not piecewise "
            "linear in that tensor (smooth function in forward, weight sharing?); use xtrace"
        )
    return GGNTrace(trace, coords, h_diag, g_diag, worst)
