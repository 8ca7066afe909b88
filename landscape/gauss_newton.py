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
:math:`\operatorname{tr} G = \frac1N \sum_i \langle \Lambda_i, J_i J_i^T \rangle` needs the
per-sample Gram matrices :math:`J_i J_i^T` (:math:`C \times C`) and no random probe: the trace of
such a network is exact up to rounding, where Hutchinson-type estimators with 100 products stay
at a percent or more (``benchmarks/hessian.py``). Linear layers contribute through their inputs
and output gradients alone (their weight Jacobians are outer products), every other tensor
through its per-sample Jacobian.

Smooth activations (tanh, GELU, ...), LayerNorm, train-mode BN (or BN without running
statistics, which normalizes by batch statistics even in eval mode) and weight sharing break the
identity. :func:`ggn_trace` refuses models with such modules or with a module called more than
once in a forward pass and, because a model's ``forward`` may apply any function, compares
:math:`H_{jj}` (one product with :math:`e_j` each) with :math:`G_{jj}` at sampled coordinates,
at least one in every parameter tensor, before it returns.
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


def batch_statistics_modules(model: nn.Module) -> list[str]:
    """Names of the BN layers that normalize by batch statistics even in eval mode."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and (not m.track_running_stats or m.running_mean is None or m.running_var is None)
    ]


def refusal(op: HessianLinearOperator) -> str | None:
    """Why :func:`ggn_trace` refuses ``op`` before computing anything, or None."""
    if op.bn_mode != "eval":
        return (
            f"ggn trace needs bn_mode='eval', got {op.bn_mode!r}: train-mode BN couples the "
            "samples of a batch; use xtrace"
        )
    coupled = batch_statistics_modules(op.model)
    if coupled:
        return (
            f"ggn trace: BN layers {', '.join(map(repr, coupled[:5]))} have "
            "track_running_stats=False (no running statistics): they normalize by the "
            "statistics of each batch even in eval mode, coupling its samples; use xtrace"
        )
    smooth = non_piecewise_linear_modules(op.model)
    if smooth:
        return (
            f"ggn trace: modules not piecewise linear in their inputs: {', '.join(smooth[:5])}; "
            "tr(H) != tr(GGN) there, use xtrace"
        )
    return None


def _offsets(op: HessianLinearOperator) -> np.ndarray:
    """Start of each parameter tensor in the flat vector, and the total at the end."""
    return np.cumsum([0] + [math.prod(s) for s in op.shapes.values()])


def check_coordinates(op: HessianLinearOperator, num: int, seed: int = 0) -> np.ndarray:
    """Flat coordinates for the diagonal check: ``max(num, tensors)``, or none for ``num=0``.

    Tensors are visited in a seeded random order, round-robin, so that every parameter tensor
    is checked at least once (a tensor left out could hide weight sharing or a smooth function);
    within a tensor the coordinate is uniform.
    """
    gen = np.random.default_rng(seed)
    offsets = _offsets(op)
    sizes = np.diff(offsets)
    order = gen.permutation(len(sizes))
    count = max(num, len(sizes)) if num > 0 else 0
    picks = [order[i % len(sizes)] for i in range(count)]
    return np.array([offsets[t] + gen.integers(sizes[t]) for t in picks], dtype=np.int64)


def ggn_trace(
    op: HessianLinearOperator, checks: int = 16, seed: int = 0, memory_mb: float | None = None
) -> GGNTrace:
    r"""Exact :math:`\operatorname{tr} H` of a piecewise-linear network, as that of its GGN.

    :math:`\operatorname{tr} G = \frac1N \sum_i \langle \Lambda_i, J_i J_i^T \rangle` over the
    operator's evaluation set, in its dtype, accumulated in float64, with :math:`\Lambda_i` by
    ``torch.func.hessian`` of the operator's loss of one sample (any loss of the logits). The
    per-sample Gram matrices :math:`J_i J_i^T` (:math:`C \times C`) are summed over parameter
    tensors:

    - an ``nn.Linear`` layer :math:`z = Wa + b` called once per forward pass contributes
      :math:`(\|a_i\|^2 + 1)\, \Delta_i \Delta_i^T` with :math:`\Delta_i = \partial f_i /
      \partial z` (:math:`C \times \text{out}`), its per-sample weight Jacobian being
      :math:`\Delta_{ic} a_i^T` (Goodfellow 2015); :math:`\Delta_i` comes from ``jacrev`` with
      respect to a zero added to the layer's output, so the weight Jacobians are never formed;
    - every other tensor through its per-sample Jacobian (``vmap`` of ``jacrev``).

    Chunks of samples are sized to ``memory_mb`` of Jacobian entries. Then ``max(checks,
    tensors)`` products :math:`H e_j` give :math:`H_{jj}` at the coordinates of
    :func:`check_coordinates` (at least one in every parameter tensor), which must equal
    :math:`G_{jj}` to :math:`\sqrt{\varepsilon}` of the largest entry.

    Args:
        op: The operator (``bn_mode="eval"``): its model, loss, batches and dtype.
        checks: Diagonal entries compared (one product each), raised to the number of
            parameter tensors so that each is checked; 0 skips the check.
        seed: Seeds the check's coordinates.
        memory_mb: Budget for one chunk's Jacobians; None: 32 on a CPU (chunks that stay in
            cache: 2.5x faster than 256 for the benchmark's BN CNN), 1024 on a GPU.

    Returns:
        A :class:`GGNTrace`.

    Raises:
        NotPiecewiseLinearError: ``bn_mode="train"`` or BN without running statistics (the
            samples of a batch are coupled), a module outside :data:`PIECEWISE_LINEAR`, a module
            with parameters called twice in one forward pass (weight sharing), or a diagonal
            entry of :math:`H` that differs from :math:`G`'s.
    """
    reason = refusal(op)
    if reason is not None:
        raise NotPiecewiseLinearError(reason)
    if memory_mb is None:
        memory_mb = 1024.0 if op.device.type == "cuda" else 32.0
    names = list(op.shapes)
    starts = _offsets(op)
    coords = check_coordinates(op, checks, seed)
    tensors = np.searchsorted(starts, coords, side="right") - 1
    where = [(names[t], int(j - starts[t])) for j, t in zip(coords, tensors, strict=True)]

    def sample_loss(z: Tensor, yi: Tensor) -> Tensor:
        return op.loss_fn(z[None], yi[None])

    curvature = vmap(hessian(sample_loss))
    total = torch.zeros((), dtype=torch.float64, device=op.device)
    g_diag = torch.zeros(len(coords), dtype=torch.float64, device=op.device)
    with op.evaluation(), torch.no_grad(), _GramEngine(op) as engine:
        chunk = None
        for x, y, _ in op.weighted_batches():
            if chunk is None:
                chunk = engine.prepare(x, memory_mb)
            for start in range(0, len(y), chunk):
                gram, z, columns = engine(x[start : start + chunk], where)
                A = curvature(z, y[start : start + chunk]).to(torch.float64)
                total += torch.sum(A * gram.to(torch.float64))
                if len(coords):
                    Jc = columns.to(torch.float64)  # (B, C, checks)
                    g_diag += torch.einsum("bcj,bcd,bdj->j", Jc, A, Jc)
    trace = float(total) / op.num_samples
    g_diag = (g_diag / op.num_samples).cpu().numpy()
    h_diag = np.zeros(len(coords))
    for i, j in enumerate(coords):
        e = torch.zeros(op.shape[0], dtype=op.dtype, device=op.device)
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


class _GramEngine:
    """Per-sample Gram matrices :math:`J_i J_i^T` and Jacobian columns of the operator's model.

    Used as a context manager: forward hooks on the model's linear layers (removed on exit)
    record each layer's input and add a zero, the variable that ``jacrev`` differentiates;
    pre-hooks on every module holding a parameter of the operator record which parameters each
    call uses, so that :meth:`prepare` can refuse weight sharing.
    """

    def __init__(self, op: HessianLinearOperator) -> None:
        self.op = op
        self.linear: dict[str, nn.Linear] = {}
        self._slots: dict[str, Tensor] = {}
        self._inputs: dict[str, Tensor] = {}
        self._calls: dict[str, int] = {}
        self._uses: dict[str, list[str]] = {}  # parameter -> modules that used it, per call
        self._recording = False  # of uses: in the probe pass only
        self._handles: list = []
        self.generic: list[str] = list(op.shapes)  # tensors left to jacrev

    def __enter__(self) -> _GramEngine:
        shapes = self.op.shapes
        canonical = {id(p): n for n, p in self.op.model.named_parameters() if n in shapes}
        for name, m in self.op.model.named_modules():
            owned = [canonical[id(p)] for p in m.parameters(recurse=False) if id(p) in canonical]
            if owned:
                self._handles.append(m.register_forward_pre_hook(self._use_hook(name, owned)))
        for name, m in self.op.model.named_modules():
            if isinstance(m, nn.Linear) and shapes.get(_join(name, "weight")) == m.weight.shape:
                if m.bias is None or _join(name, "bias") in shapes:
                    self.linear[name] = m
                    self._handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def _use_hook(self, name: str, params: list[str]):
        def hook(module: nn.Module, inputs: tuple) -> None:
            if self._recording:
                for p in params:
                    self._uses.setdefault(p, []).append(name)

        return hook

    def _check_sharing(self) -> None:
        """Refuses a parameter used by more than one module call in the probe pass."""
        for param, users in self._uses.items():
            if len(users) < 2:
                continue
            if len(set(users)) == 1:
                kind = type(self.op.model.get_submodule(users[0])).__name__
                what = f"{kind} {users[0]!r} is called {len(users)} times in one forward pass"
            else:
                what = f"parameter {param!r} is shared by modules {sorted(set(users))}"
            raise NotPiecewiseLinearError(
                f"ggn trace: {what}; the loss is then not piecewise linear in its parameters "
                "(weight sharing); use xtrace"
            )

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            self._calls[name] = self._calls.get(name, 0) + 1
            self._inputs[name] = inputs[0]
            slot = self._slots.get(name)
            return output if slot is None else output + slot

        return hook

    def prepare(self, x: Tensor, memory_mb: float) -> int:
        """Sorts out the linear layers by a probe forward pass; returns the samples per chunk."""
        self._calls.clear()
        self._uses.clear()
        self._recording = True
        try:
            out = self.op.logits(self.op.param_dict(), x[:1])
        finally:
            self._recording = False
        self._check_sharing()
        for name in self._calls:
            if self._inputs[name].dim() != 2:  # a sequence of inputs: left to jacrev
                del self.linear[name]
        for name in set(self.linear) - set(self._calls):
            del self.linear[name]  # not called: its Jacobian is zero, jacrev says so
        self.generic = [n for n in self.op.shapes if _module_of(n) not in self.linear]
        params = self.op.param_dict()
        self._generic_params = {n: params[n] for n in self.generic}
        fixed = {n: p for n, p in params.items() if n not in self.generic}
        self._zeros = {
            name: torch.zeros(1, m.out_features, dtype=self.op.dtype, device=self.op.device)
            for name, m in self.linear.items()
        }

        def logits(generic: dict[str, Tensor], slots: dict[str, Tensor], xi: Tensor):
            self._slots = slots
            try:
                z = self.op.logits({**generic, **fixed}, xi[None])[0]
            finally:
                self._slots = {}
            inputs = {name: self._inputs[name][0] for name in self.linear}
            return z, (z, inputs)

        self._jacobians = vmap(
            jacrev(logits, argnums=(0, 1), has_aux=True), in_dims=(None, None, 0)
        )
        entries = sum(math.prod(self.op.shapes[n]) for n in self.generic)
        entries += sum(m.out_features + m.in_features for m in self.linear.values())
        itemsize = torch.finfo(self.op.dtype).bits // 8
        return max(1, int(memory_mb * 2**20 // (out.shape[1] * entries * itemsize)))

    def __call__(self, x: Tensor, where: list[tuple[str, int]]) -> tuple[Tensor, Tensor, Tensor]:
        """``(gram (B, C, C), logits (B, C), Jacobian columns at where (B, C, len(where)))``."""
        (J, D), (z, inputs) = self._jacobians(self._generic_params, self._zeros, x)
        B, C = z.shape
        J = {n: v.reshape(B, C, -1) for n, v in J.items()}
        D = {n: v.reshape(B, C, -1) for n, v in D.items()}
        gram = sum(v @ v.transpose(1, 2) for v in J.values())
        for name, m in self.linear.items():
            delta = D[name]
            scale = torch.sum(inputs[name] ** 2, 1) + (m.bias is not None)
            gram = gram + (delta @ delta.transpose(1, 2)) * scale[:, None, None]
        columns = []
        for tensor, i in where:
            layer, kind = _module_of(tensor), tensor.rpartition(".")[2]
            if tensor in J:
                columns.append(J[tensor][:, :, i])
            elif kind == "bias":
                columns.append(D[layer][:, :, i])
            else:
                row, col = divmod(i, self.linear[layer].in_features)
                columns.append(D[layer][:, :, row] * inputs[layer][:, None, col])
        empty = torch.zeros(B, C, 0, dtype=z.dtype, device=z.device)
        return gram, z, torch.stack(columns, 2) if columns else empty


def _join(module: str, attr: str) -> str:
    return f"{module}.{attr}" if module else attr


def _module_of(param: str) -> str:
    return param.rpartition(".")[0]
