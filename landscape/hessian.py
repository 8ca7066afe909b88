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
- :func:`hutchinson`, :func:`hutchpp`, :func:`xtrace`: stochastic trace estimates with standard
  errors (the exact trace of piecewise-linear networks is :func:`landscape.gauss_newton.ggn_trace`).
- :func:`slq_density`: stochastic Lanczos quadrature spectral density (Ghorbani et al. 2019,
  PyHessian's ``density``/``density_generate``, the paper's Listing 2).
- :func:`directional_derivatives`, :func:`soa_loss_change`: the second-order approximation
  :math:`\delta L \approx \lambda \epsilon^T g + \tfrac12 \lambda^2 \epsilon^T H \epsilon` (Eq. 1,
  Listing 3).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, jvp

LossFn = Callable[[Tensor, Tensor], Tensor]
# retained graphs: (leaves, [(grads kept, their indices, batch weight, batch loss) per batch])
_Graph = tuple[list[Tensor], list[tuple[list[Tensor], list[int], float, float]]]
BN_MODES = ("eval", "train")
METHODS = ("auto", "jvp", "double_backward", "retained")
BLOCK_PRODUCTS = ("auto", "batched", "loop")
WHICH = ("LA", "SA", "LM", "BE")
RESIDUALS = ("stored", "recompute", "estimate")

_BATCHNORM = nn.modules.batchnorm._BatchNorm


class NondeterministicOperatorError(RuntimeError):
    """Two identical Hessian-vector products disagreed (dropout or another random module)."""


# --------------------------------------------------------------------------- function factories


def make_batch_loss(
    model: nn.Module, loss: LossFn, frozen: Mapping[str, Tensor], buffers: Mapping[str, Tensor]
) -> Callable[[dict[str, Tensor], Tensor, Tensor], Tensor]:
    r"""Returns the pure function :math:`(\theta, x, y) \mapsto \bar\ell(f_\theta(x), y)`.

    Args:
        model: Supplies the architecture only; its own tensors are all replaced.
        loss: ``loss(logits, y)`` -> mean loss of the batch.
        frozen: Non-trainable parameters ``{name: tensor}`` (constants).
        buffers: Buffers ``{name: tensor}`` (BN running statistics, constants).

    Returns:
        ``batch_loss(params, x, y)`` with ``params`` the trainable parameters ``{name: tensor}``.
    """

    def batch_loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return loss(functional_call(model, (params, frozen, buffers), (x,)), y)

    return batch_loss


def make_hvp(
    batch_loss: Callable[[dict[str, Tensor], Tensor, Tensor], Tensor],
) -> Callable[[dict[str, Tensor], dict[str, Tensor], Tensor, Tensor], dict[str, Tensor]]:
    r"""Returns the forward-over-reverse Hessian-vector product of one batch's loss.

    .. math:: H_b v = \frac{\partial}{\partial t} \nabla_\theta \bar\ell_b(\theta + t v)\Big|_{t=0},

    a ``torch.func.jvp`` (forward mode) of ``torch.func.grad`` (reverse mode): one forward and
    one backward pass carrying dual numbers, with no graph kept between calls.

    Args:
        batch_loss: As returned by :func:`make_batch_loss`.

    Returns:
        ``hvp(params, v, x, y)`` -> ``{name: (H_b v)[name]}``.
    """
    grad_fn = grad(batch_loss)

    def hvp(params: dict[str, Tensor], v: dict[str, Tensor], x: Tensor, y: Tensor):
        return jvp(lambda p: grad_fn(p, x, y), (params,), (v,))[1]

    return hvp


# --------------------------------------------------------------------------- the operator


class HessianLinearOperator:
    r"""The Hessian :math:`H = \nabla^2_\theta L(\theta)` of the size-weighted loss over batches.

    :math:`L(\theta) = \sum_b \frac{|B_b|}{N} \bar\ell_b(\theta)`, :math:`N = \sum_b |B_b|`, so
    :math:`H v = \sum_b \frac{|B_b|}{N} H_b v`: the same operator for any batching of the same
    samples. ``theta`` is the model's trainable parameters (``requires_grad``), in
    ``named_parameters()`` order, copied and detached in ``dtype`` at construction; buffers and
    frozen parameters are copied as constants (floating ones cast to ``dtype``), inputs are cast to
    ``dtype`` and moved to the parameters' device. The caller's model keeps its parameters,
    buffers, ``training`` flags and ``.grad`` (none is written): its flags are switched only for
    the duration of each call and restored.

    ``bn_mode="eval"`` evaluates the model in eval mode (BN with running statistics, dropout
    off). ``bn_mode="train"`` evaluates it in training mode (BN with the statistics of each batch,
    which makes the loss of a batch depend jointly on its samples; running statistics are neither
    read nor updated). Any dropout is then active too, and the determinism guard raises.

    Products (``method``):

    - ``"jvp"``: forward-over-reverse, :meth:`matvec_jvp`; no graph kept between products.
    - ``"double_backward"``: reverse-over-reverse, :meth:`matvec_double_backward`; forward,
      backward with ``create_graph=True`` and a second backward per product and batch.
    - ``"retained"``: :meth:`matvec_retained`; the graph of :math:`g = \nabla_\theta L` is built
      once (on the first such product) and kept, so that a product is the second backward pass
      only. It holds every batch's graph at once: memory grows with the number of batches (with
      one batch its peak is that of a double-backward product).
    - ``"auto"`` (default): with a single batch, ``"retained"``: its product is the second half
      of a double-backward product, and it was 1.5-5x faster than forward-over-reverse and
      1.3-2x faster than double backward for the models of ``benchmarks/hessian.py`` (CPU,
      float32 and float64), for the memory of one double-backward product. With several
      batches (where ``"retained"`` would hold them all): ``"jvp"`` on CUDA (6.5x faster than
      double backward for ResNet-56 on an H100, as measured in issue 5) and
      ``"double_backward"`` elsewhere (1.2-2x faster than ``"jvp"`` on the benchmark's CPU).
      The choice depends only on the device and the batches, never on a timing, so that the
      same inputs give the same products bit for bit; :func:`time_matvec` measures a machine.

    All methods give the same :math:`Hv` up to rounding (tested against dense float64 Hessians).

    Products on a block of vectors (:meth:`matmat`, ``block_products``): ``"batched"`` computes
    all of them in one pass per batch (:meth:`matmat_batched`: the retained graph or the batch's
    gradient graph differentiated once with ``is_grads_batched=True``, or ``torch.func.vmap`` of
    the forward-over-reverse product over the block), ``"loop"`` one :meth:`matvec` per column;
    ``"auto"`` (default) batches on CUDA and loops elsewhere (on the 2-core CPU of
    ``benchmarks/hessian.py`` a batched product cost as much per vector as a single one, or more).

    The determinism guard (``check_deterministic``) re-evaluates on the first call of
    :meth:`matvec` and raises :class:`NondeterministicOperatorError` if the two evaluations differ
    by more than :math:`\sqrt{\varepsilon_\text{dtype}}` in relative norm (this tolerates
    nondeterministic GPU reductions, not dropout). With ``"jvp"`` and ``"double_backward"`` it
    recomputes the first product; with ``"retained"``, whose graph freezes
    any randomness of the evaluation it was built from, it compares a fresh forward pass's loss
    with that evaluation's, per batch (a forward pass instead of a product).

    Args:
        model: The network; its trainable parameters define :math:`\theta`.
        batches: ``(x, y)`` pairs forming the evaluation set (materialized into a list).
        loss: ``loss(logits, y)`` -> the batch's *mean* loss (default cross-entropy).
        dtype: Floating dtype of the copies and of all products (``torch.float64`` for checks).
        bn_mode: ``"eval"`` or ``"train"``.
        check_deterministic: Enable the determinism guard.
        method: ``"auto"``, ``"jvp"``, ``"double_backward"`` or ``"retained"`` (see above).
        block_products: ``"auto"``, ``"batched"`` or ``"loop"``: how :meth:`matmat` computes
            a block of products (see above).

    Attributes:
        shape: ``(n, n)``.
        dtype: The computation dtype.
        device: Device of the parameters.
        names: Trainable parameter names, in order.
        num_samples: :math:`N`.
        num_matvecs: Hessian-vector products computed so far (all methods, guard included).
        method: The requested method.

    Raises:
        ValueError: No trainable parameters, no samples, a bad ``bn_mode``, ``dtype`` or
            ``method``.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Iterable[tuple[Tensor, Tensor]],
        *,
        loss: LossFn = F.cross_entropy,
        dtype: torch.dtype = torch.float32,
        bn_mode: str = "eval",
        check_deterministic: bool = True,
        method: str = "auto",
        block_products: str = "auto",
    ) -> None:
        if block_products not in BLOCK_PRODUCTS:
            raise ValueError(
                f"block_products must be one of {BLOCK_PRODUCTS}, got {block_products!r}"
            )
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("HessianLinearOperator: the model has no trainable parameters")
        self.device = trainable[0][1].device
        self.dtype = dtype
        self.bn_mode = bn_mode
        self.check_deterministic = check_deterministic
        self._model = model
        self._loss = loss

        def cast(t: Tensor) -> Tensor:
            t = t.detach().to(self.device)
            return t.to(dtype).clone() if t.is_floating_point() else t.clone()

        self._params = {n: cast(p) for n, p in trainable}
        self._frozen = {n: cast(p) for n, p in model.named_parameters() if not p.requires_grad}
        self._buffers = {n: cast(b) for n, b in model.named_buffers()}
        self._batches: list[tuple[Tensor, Tensor, int]] = []
        for x, y in batches:
            x = x.to(self.device)
            x = x.to(dtype) if x.is_floating_point() else x
            self._batches.append((x, y.to(self.device), int(y.shape[0])))
        self.num_samples = sum(b for _, _, b in self._batches)
        if self.num_samples == 0:
            raise ValueError("HessianLinearOperator: no batches (no samples) given")
        self.names = list(self._params)
        self._shapes = {n: p.shape for n, p in self._params.items()}
        n = sum(p.numel() for p in self._params.values())
        self.shape = (n, n)
        self.num_matvecs = 0
        self._batch_loss = make_batch_loss(model, loss, self._frozen, self._buffers)
        self._hvp = make_hvp(self._batch_loss)
        self._checked = not check_deterministic
        self._grad_cache: tuple[Tensor, float] | None = None
        self.method = method
        self._graph: _Graph | None = None
        self._chosen = method if method != "auto" else self._auto_method()
        self.block_products = block_products
        auto_batched = block_products == "auto" and self.device.type == "cuda"
        self._batched = block_products == "batched" or auto_batched

    def _auto_method(self) -> str:
        if len(self._batches) == 1:
            return "retained"
        return "jvp" if self.device.type == "cuda" else "double_backward"

    # ---------------------------------------------------------------- helpers

    def __repr__(self) -> str:
        return (
            f"HessianLinearOperator(n={self.shape[0]}, N={self.num_samples}, "
            f"batches={len(self._batches)}, dtype={self.dtype}, device={self.device}, "
            f"bn_mode={self.bn_mode!r}, method={self.method!r}, "
            f"block_products={self.block_products!r})"
        )

    @property
    def chosen_method(self) -> str:
        """The method :meth:`matvec` uses (``"auto"`` resolved)."""
        return self._chosen

    @contextlib.contextmanager
    def _mode(self) -> Iterator[None]:
        """Sets the model's flags for evaluation (``bn_mode``) and restores them afterwards."""
        flags = {m: m.training for m in self._model.modules()}
        tracking = {
            m: m.track_running_stats for m in self._model.modules() if isinstance(m, _BATCHNORM)
        }
        try:
            self._model.train(self.bn_mode == "train")
            if self.bn_mode == "train":
                for m in tracking:  # batch statistics; running statistics neither read nor set
                    m.track_running_stats = False
            yield
        finally:
            for m, flag in flags.items():
                m.training = flag
            for m, flag in tracking.items():
                m.track_running_stats = flag

    def _weights(self) -> Iterator[tuple[Tensor, Tensor, float]]:
        for x, y, b in self._batches:
            yield x, y, b / self.num_samples

    # ---------------------------------------------------------------- the loss, for other engines

    @property
    def model(self) -> nn.Module:
        """The caller's model (architecture and flags; its tensors are never read again)."""
        return self._model

    @property
    def loss_fn(self) -> LossFn:
        """``loss(logits, y)`` -> the batch's mean loss."""
        return self._loss

    @property
    def shapes(self) -> dict[str, torch.Size]:
        """``{name: shape}`` of the trainable parameters, in order."""
        return dict(self._shapes)

    def param_dict(self) -> dict[str, Tensor]:
        """The trainable parameters ``{name: tensor}`` (the operator's copies, in ``dtype``)."""
        return dict(self._params)

    def logits(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """The model's output at ``params`` (trainable ones) with the operator's constants."""
        return functional_call(self._model, (dict(params), self._frozen, self._buffers), (x,))

    def evaluation(self) -> contextlib.AbstractContextManager[None]:
        """Sets the model's flags for ``bn_mode`` for the duration of a ``with`` block."""
        return self._mode()

    def weighted_batches(self) -> Iterator[tuple[Tensor, Tensor, float]]:
        """The evaluation set as ``(x, y, |B_b| / N)``, on the device and in ``dtype``."""
        return self._weights()

    def params(self) -> Tensor:
        """The flat parameter vector :math:`\\theta` (a copy, in ``dtype``)."""
        return torch.cat([p.reshape(-1) for p in self._params.values()])

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Splits a flat vector into ``{name: tensor}`` with the trainable parameters' shapes."""
        vector = self._check_vector(vector)
        out, start = {}, 0
        for name, shape in self._shapes.items():
            size = math.prod(shape)
            out[name] = vector[start : start + size].view(shape)
            start += size
        return out

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Concatenates ``{name: tensor}`` (the trainable names, any order) into a flat vector."""
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise ValueError(f"flatten: missing parameters {missing[:5]}")
        return torch.cat([tensors[n].reshape(-1).to(self.device, self.dtype) for n in self.names])

    def _check_vector(self, v: Tensor) -> Tensor:
        if not isinstance(v, Tensor):
            v = torch.as_tensor(v)
        if v.dim() != 1 or v.numel() != self.shape[0]:
            raise ValueError(
                f"expected a 1-D vector of {self.shape[0]} elements, got {tuple(v.shape)}"
            )
        return v.to(device=self.device, dtype=self.dtype)

    # ---------------------------------------------------------------- products

    def _flat(self, parts: Sequence[Tensor | None]) -> Tensor:
        """Concatenates per-parameter results (``None``: zeros) into one flat vector."""
        return torch.cat(
            [
                (h if h is not None else torch.zeros_like(p)).reshape(-1)
                for h, p in zip(parts, self._params.values(), strict=True)
            ]
        )

    def _jvp(self, v: Tensor) -> Tensor:
        vd = self.unflatten(v)
        out = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
        with self._mode():
            for x, y, w in self._weights():
                hv = self._hvp(self._params, vd, x, y)
                out += w * torch.cat([hv[n].reshape(-1) for n in self.names])
        self.num_matvecs += 1
        return out

    def _double_backward(self, v: Tensor) -> Tensor:
        vd = self.unflatten(v)
        leaves = {n: p.detach().requires_grad_(True) for n, p in self._params.items()}
        out = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
        with self._mode(), torch.enable_grad():
            for x, y, w in self._weights():
                value = self._batch_loss(leaves, x, y)
                g = torch.autograd.grad(
                    value, list(leaves.values()), create_graph=True, allow_unused=True
                )
                dot = sum(
                    (gi * vd[n]).sum()
                    for n, gi in zip(self.names, g, strict=True)
                    if gi is not None
                )
                if not isinstance(dot, Tensor) or not dot.requires_grad:
                    continue  # the loss is at most linear in theta on this batch
                hv = torch.autograd.grad(dot, list(leaves.values()), allow_unused=True)
                out += w * self._flat(hv)
        self.num_matvecs += 1
        return out

    def _build_graph(self) -> None:
        """Builds and keeps the gradient graph of every batch (``"retained"`` products)."""
        leaves = [p.detach().requires_grad_(True) for p in self._params.values()]
        named = dict(zip(self.names, leaves, strict=True))
        graphs = []
        with self._mode(), torch.enable_grad():
            for x, y, w in self._weights():
                value = self._batch_loss(named, x, y)
                g = torch.autograd.grad(value, leaves, create_graph=True, allow_unused=True)
                keep = [i for i, gi in enumerate(g) if gi is not None and gi.requires_grad]
                graphs.append(([g[i] for i in keep], keep, w, float(value.detach())))
        self._graph = (leaves, graphs)

    def _retained(self, v: Tensor) -> Tensor:
        if self._graph is None:
            self._build_graph()
        leaves, graphs = self._graph
        vs = list(self.unflatten(v).values())
        if len(graphs) == 1 and graphs[0][0] and graphs[0][2] == 1.0:  # one batch: no sum
            g, keep, _, _ = graphs[0]
            hv = torch.autograd.grad(
                g, leaves, grad_outputs=[vs[i] for i in keep], retain_graph=True, allow_unused=True
            )
            self.num_matvecs += 1
            return self._flat(hv)
        out = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
        for g, keep, w, _ in graphs:
            if not g:
                continue  # the loss is at most linear in theta on this batch
            hv = torch.autograd.grad(
                g, leaves, grad_outputs=[vs[i] for i in keep], retain_graph=True, allow_unused=True
            )
            out += w * self._flat(hv)
        self.num_matvecs += 1
        return out

    def _product(self, method: str, v: Tensor) -> Tensor:
        if method == "jvp":
            return self._jvp(v)
        if method == "double_backward":
            return self._double_backward(v)
        return self._retained(v)

    def _guard(self, v: Tensor, out: Tensor, method: str) -> None:
        """The determinism guard: a fresh evaluation must agree (see the class documentation)."""
        tiny = torch.finfo(self.dtype).tiny
        if method == "retained":  # a fresh forward pass against the graph's own loss
            with self._mode(), torch.no_grad():
                fresh = [float(self._batch_loss(self._params, x, y)) for x, y, _ in self._weights()]
            built = [graph[3] for graph in self._graph[1]]
            what = "evaluations of the loss"
            diff = max(
                abs(a - b) / max(abs(a), abs(b), tiny) for a, b in zip(fresh, built, strict=True)
            )
        else:
            again = self._product(method, v)
            what = "identical Hessian-vector products"
            scale = max(float(out.norm()), float(again.norm()), tiny)
            diff = float((out - again).norm()) / scale
        if not diff <= math.sqrt(torch.finfo(self.dtype).eps):
            raise NondeterministicOperatorError(
                f"two {what} differ (relative {diff:.3g}); the model is random in "
                f"bn_mode={self.bn_mode!r} (dropout?). Use bn_mode='eval' or remove the random "
                "modules."
            )
        self._checked = True

    def matvec(self, v: Tensor) -> Tensor:
        r"""Computes :math:`Hv` by the operator's method (see the class documentation).

        Args:
            v: 1-D tensor of ``n`` elements (cast to ``dtype``, moved to ``device``).

        Returns:
            :math:`Hv`, 1-D, in ``dtype`` on ``device``.

        Raises:
            NondeterministicOperatorError: On the first call with the guard enabled, if a second
                evaluation of the same product differs.
        """
        v = self._check_vector(v)
        out = self._product(self._chosen, v)
        if not self._checked:
            self._guard(v, out, self._chosen)
        return out

    def matmat(self, m: Tensor) -> Tensor:
        r"""Computes :math:`HM` for ``M`` of shape ``(n, k)``, by ``block_products``.

        Batched (:meth:`matmat_batched`) or one :meth:`matvec` per column; both equal the
        ``k`` single products up to rounding. The determinism guard runs on the first call as in
        :meth:`matvec` (on the first column).

        Args:
            m: 2-D tensor ``(n, k)`` (cast to ``dtype``, moved to ``device``).

        Returns:
            :math:`HM`, ``(n, k)``, in ``dtype`` on ``device``.
        """
        rows = self._check_block(m)
        if not self._batched or rows.shape[0] == 0:
            cols = [self.matvec(rows[j]) for j in range(rows.shape[0])]
            if not cols:
                return torch.zeros(self.shape[0], 0, dtype=self.dtype, device=self.device)
            return torch.stack(cols, dim=1)
        out = self._block_product(self._chosen, rows)
        if not self._checked:
            self._guard(rows[0], out[0], self._chosen)
        return out.T

    def matmat_batched(self, m: Tensor) -> Tensor:
        r"""Computes :math:`HM` (``(n, k)``) with all ``k`` products batched, by ``method``.

        Per batch, ``"retained"`` differentiates its kept gradient graph once for the whole
        block (``torch.autograd.grad(..., is_grads_batched=True)``, which vmaps the backward
        pass over the block); ``"double_backward"`` builds the batch's gradient graph once and
        does the same (one forward and create-graph backward per block instead of per vector);
        ``"jvp"`` maps the forward-over-reverse product over the block with ``torch.func.vmap``
        (primal passes once, tangents batched). Memory of the batched passes grows with ``k``.
        Bypasses the determinism guard.

        Args:
            m: 2-D tensor ``(n, k)``.

        Returns:
            :math:`HM`, ``(n, k)``, in ``dtype`` on ``device``.
        """
        rows = self._check_block(m)
        if rows.shape[0] == 0:
            return torch.zeros(self.shape[0], 0, dtype=self.dtype, device=self.device)
        return self._block_product(self._chosen, rows).T

    def _check_block(self, m: Tensor) -> Tensor:
        """The block's columns as contiguous rows ``(k, n)`` in ``dtype`` on ``device``."""
        if not isinstance(m, Tensor):
            m = torch.as_tensor(m)
        if m.dim() != 2 or m.shape[0] != self.shape[0]:
            raise ValueError(
                f"matmat expects a 2-D ({self.shape[0]}, k) tensor, got {tuple(m.shape)}"
            )
        # contiguous vectors: strided ones slow every product down
        return m.T.to(device=self.device, dtype=self.dtype).contiguous()

    def _unflatten_rows(self, rows: Tensor) -> list[Tensor]:
        """Splits ``(k, n)`` rows into per-parameter blocks ``(k, *shape)``, in order."""
        out, start = [], 0
        for shape in self._shapes.values():
            size = math.prod(shape)
            out.append(rows[:, start : start + size].reshape(rows.shape[0], *shape))
            start += size
        return out

    def _flat_rows(self, parts: Sequence[Tensor | None], k: int) -> Tensor:
        """Concatenates per-parameter blocks ``(k, *shape)`` (``None``: zeros) into ``(k, n)``."""
        return torch.cat(
            [
                (h.reshape(k, -1) if h is not None else p.new_zeros(k, p.numel()))
                for h, p in zip(parts, self._params.values(), strict=True)
            ],
            dim=1,
        )

    def _block_product(self, method: str, rows: Tensor) -> Tensor:
        """:math:`H` applied to each row of ``rows`` ``(k, n)``, batched; returns ``(k, n)``."""
        k = rows.shape[0]
        parts = self._unflatten_rows(rows)
        out = torch.zeros(k, self.shape[0], dtype=self.dtype, device=self.device)
        if method == "retained":
            if self._graph is None:
                self._build_graph()
            leaves, graphs = self._graph
            for g, keep, w, _ in graphs:
                if g:  # else the loss is at most linear in theta on this batch
                    out += w * self._flat_rows(self._batched_vjp(g, leaves, keep, parts), k)
        elif method == "double_backward":
            with self._mode(), torch.enable_grad():
                for x, y, w in self._weights():
                    leaves = [p.detach().requires_grad_(True) for p in self._params.values()]
                    value = self._batch_loss(dict(zip(self.names, leaves, strict=True)), x, y)
                    g = torch.autograd.grad(value, leaves, create_graph=True, allow_unused=True)
                    keep = [i for i, gi in enumerate(g) if gi is not None and gi.requires_grad]
                    if keep:
                        hv = self._batched_vjp([g[i] for i in keep], leaves, keep, parts)
                        out += w * self._flat_rows(hv, k)
        else:
            tangents = dict(zip(self.names, parts, strict=True))
            block_hvp = torch.func.vmap(self._hvp, in_dims=(None, 0, None, None))
            with self._mode():
                for x, y, w in self._weights():
                    hv = block_hvp(self._params, tangents, x, y)
                    out += w * self._flat_rows([hv[n] for n in self.names], k)
        self.num_matvecs += k
        return out

    @staticmethod
    def _batched_vjp(
        g: list[Tensor], leaves: list[Tensor], keep: list[int], parts: list[Tensor]
    ) -> tuple[Tensor | None, ...]:
        """Differentiates ``g . v`` for every ``v`` of the block at once (``is_grads_batched``)."""
        return torch.autograd.grad(
            g,
            leaves,
            grad_outputs=[parts[i] for i in keep],
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=True,
        )

    def __matmul__(self, other: Tensor) -> Tensor:
        return self.matvec(other) if other.dim() == 1 else self.matmat(other)

    def matvec_jvp(self, v: Tensor) -> Tensor:
        r"""Computes :math:`Hv` by forward-over-reverse differentiation (method ``"jvp"``).

        .. math:: Hv = \sum_b \frac{|B_b|}{N}\,
            \frac{\partial}{\partial t} \nabla_\theta \bar\ell_b(\theta + t v)\Big|_{t=0}

        (``torch.func.jvp`` of ``torch.func.grad``, see :func:`make_hvp`): per batch one forward
        and one backward pass carrying dual numbers, no graph kept. Bypasses the determinism guard.

        Args:
            v: 1-D tensor of ``n`` elements.

        Returns:
            :math:`Hv`, 1-D, in ``dtype`` on ``device``.
        """
        return self._jvp(self._check_vector(v))

    def matvec_double_backward(self, v: Tensor) -> Tensor:
        r"""Computes :math:`Hv` as PyHessian and Listing 1 do: :math:`\nabla_\theta (g^T v)`.

        Reverse-over-reverse (method ``"double_backward"``): per batch a backward pass with
        ``create_graph=True`` gives :math:`g`, a second one differentiates :math:`g^T v`; runs on
        detached leaf copies through ``torch.autograd.grad`` (no ``.grad`` is written). Bypasses
        the determinism guard.

        Args:
            v: 1-D tensor of ``n`` elements.

        Returns:
            :math:`Hv`, 1-D, in ``dtype`` on ``device``.
        """
        return self._double_backward(self._check_vector(v))

    def matvec_retained(self, v: Tensor) -> Tensor:
        r"""Computes :math:`Hv` by a backward pass through the retained gradient graph.

        Method ``"retained"``: the first call builds :math:`g = \nabla_\theta \bar\ell_b` of
        every batch with ``create_graph=True`` and keeps the graphs (and their memory) on the
        operator; each product is then :math:`\sum_b \frac{|B_b|}{N}\nabla_\theta (g_b^T v)`
        by ``torch.autograd.grad(..., retain_graph=True)``, one backward pass per batch. The graph
        is built with the model's flags set for ``bn_mode`` and freezes any randomness of that
        evaluation. Bypasses the determinism guard.

        Args:
            v: 1-D tensor of ``n`` elements.

        Returns:
            :math:`Hv`, 1-D, in ``dtype`` on ``device``.
        """
        return self._retained(self._check_vector(v))

    def _gradient_and_loss(self) -> tuple[Tensor, float]:
        if self._grad_cache is None:
            gv = grad_and_value(self._batch_loss)
            g = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
            value = 0.0
            with self._mode():
                for x, y, w in self._weights():
                    gb, lb = gv(self._params, x, y)
                    g += w * torch.cat([gb[n].reshape(-1) for n in self.names])
                    value += w * float(lb)
            self._grad_cache = (g, value)
        return self._grad_cache

    def gradient(self) -> Tensor:
        r"""The flat gradient :math:`g = \nabla_\theta L = \sum_b (|B_b|/N) \nabla \bar\ell_b`.

        Returns:
            A new 1-D tensor in ``dtype`` on ``device`` (computed once, then cached).
        """
        return self._gradient_and_loss()[0].clone()

    def loss_value(self) -> float:
        r"""The loss :math:`L(\theta) = \sum_b \frac{|B_b|}{N} \bar\ell_b(\theta)` (cached)."""
        return self._gradient_and_loss()[1]

    def loss_at(self, vector: Tensor) -> float:
        r"""The loss :math:`L(\theta')` at another flat parameter vector :math:`\theta'`."""
        p = self.unflatten(vector)
        value = 0.0
        with self._mode(), torch.no_grad():
            for x, y, w in self._weights():
                value += w * float(self._batch_loss(p, x, y))
        return value

    def to_scipy(self) -> scipy.sparse.linalg.LinearOperator:
        """A ``scipy.sparse.linalg.LinearOperator`` view: float64 numpy in and out.

        Each product converts the vector to ``dtype`` on ``device``, calls :meth:`matvec` and
        returns a float64 numpy array (``rmatvec`` is the same, :math:`H` being symmetric).
        """

        def mv(x: np.ndarray) -> np.ndarray:
            v = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1))
            return self.matvec(v).detach().cpu().double().numpy()

        return scipy.sparse.linalg.LinearOperator(
            self.shape, matvec=mv, rmatvec=mv, dtype=np.float64
        )


def time_matvec(op: HessianLinearOperator, method: str = "jvp", repeats: int = 5) -> float:
    """Median wall time in seconds of one product by ``method``.

    ``method`` is ``"jvp"``, ``"double_backward"``, ``"retained"`` (the graph is built by the
    warm-up call) or ``"matvec"`` (the operator's own :meth:`~HessianLinearOperator.matvec`).
    """
    fns = {
        "jvp": op.matvec_jvp,
        "double_backward": op.matvec_double_backward,
        "retained": op.matvec_retained,
        "matvec": op.matvec,
    }
    if method not in fns:
        raise ValueError(f"method must be one of {sorted(fns)}, got {method!r}")
    fn = fns[method]
    g = torch.Generator().manual_seed(0)
    v = torch.randn(op.shape[0], generator=g, dtype=torch.float64)
    fn(v)  # warm-up (and the determinism guard)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(v)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# --------------------------------------------------------------------------- Lanczos


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
    :math:`v_{j+1} = w / \beta_j`. The basis lives on the operator's device in its dtype. On a
    breakdown (:math:`\beta_j \le \min(10 n \varepsilon, \sqrt\varepsilon) \max(|\alpha|, \beta)`:
    an invariant subspace; without the :math:`\sqrt\varepsilon` cap a float32 basis of
    large ``n`` would take an ordinary :math:`\beta_j` for one) it either stops (``restart=False``,
    as SLQ needs: the quadrature is then exact) or continues from a random vector orthogonal to the
    basis with :math:`\beta_j = 0` (eigenvalue search). With ``keep_products`` the raw products
    :math:`Hv_j` are kept as the rows of ``W`` (as much memory again as the basis).
    """

    def __init__(
        self, op, v0: Tensor, gen: torch.Generator, restart: bool, keep_products: bool = False
    ) -> None:
        self.op, self.gen, self.restart = op, gen, restart
        self.n = op.shape[0]
        self.V = torch.zeros(min(self.n, 64), self.n, dtype=op.dtype, device=op.device)
        self.V[0] = v0 / v0.norm()
        self.W = torch.zeros_like(self.V) if keep_products else None
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
            w = self.op.matvec(v)
            if self.W is not None:
                self.W[j] = w
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
                grown = torch.zeros(
                    min(self.n, 2 * self.V.shape[0]),
                    self.n,
                    dtype=self.V.dtype,
                    device=self.V.device,
                )
                grown[: self.V.shape[0]] = self.V
                if self.W is not None:
                    products = torch.zeros_like(grown)
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
                    r = _probe(self.n, self.gen, "gaussian", self.op.dtype, self.op.device)
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
    v0 = _probe(n, gen, "gaussian", op.dtype, op.device)
    lz = _Lanczos(op, v0, gen, restart=True, keep_products=residuals == "stored")
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
    s_sel = torch.as_tensor(s[:, idx], dtype=op.dtype, device=op.device)
    vectors = lz.V[: lz.m].T @ s_sel
    norms = vectors.norm(dim=0, keepdim=True)
    vectors = vectors / norms
    values = theta[idx].astype(np.float64)
    if residuals == "estimate":
        return Eigenpairs(values, vectors, estimate * 1.0)
    if residuals == "recompute":
        return Eigenpairs(values, vectors, _residuals(op, values, vectors))
    hy = (lz.W[: lz.m].T @ s_sel) / norms
    theta_sel = torch.as_tensor(values, dtype=op.dtype, device=op.device)
    res = (hy - vectors * theta_sel).norm(dim=0).double().cpu().numpy()
    return Eigenpairs(values, vectors, res)


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


# --------------------------------------------------------------------------- trace


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


# --------------------------------------------------------------------------- density


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


# --------------------------------------------------------------------------- second order


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
