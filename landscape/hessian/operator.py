r"""The Hessian as a linear operator: :class:`HessianLinearOperator` and :func:`time_matvec`.

The operator holds detached copies of the model's parameters, buffers and evaluation batches,
the guarded products :meth:`~HessianLinearOperator.matvec` and
:meth:`~HessianLinearOperator.matmat` with their determinism guard, the gradient and the loss.
How each product method computes :math:`Hv` is in :mod:`landscape.hessian.products` (the
operator's base class).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from landscape.fast_view import fast_view
from landscape.hessian.products import (
    LossFn,
    _Graph,
    _Products,
    make_batch_loss,
    make_grad_and_value,
    make_hvp,
)
from landscape.precision import float32_precision

BN_MODES = ("eval", "train")
METHODS = ("auto", "jvp", "double_backward", "retained")
BLOCK_PRODUCTS = ("auto", "batched", "loop")

_BATCHNORM = nn.modules.batchnorm._BatchNorm


class NondeterministicOperatorError(RuntimeError):
    """Two identical Hessian-vector products disagreed (dropout or another random module)."""


# --------------------------------------------------------------------------- the operator


class HessianLinearOperator(_Products):
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
    In eval mode the loss, gradient and products are evaluated on
    :func:`landscape.fast_view.fast_view` of the model: each convolution or linear layer followed
    by a BN layer folded with it (the same function up to rounding; the double backward of a
    folded pair is weight-sized work, that of ``F.batch_norm`` activation-sized) and each ReLU
    moved after the max-pool it feeds (the same values and derivatives, on a quarter of the
    elements).

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
        # BN folded, ReLUs after their max-pools: same function, tensors and names, cheaper products
        products_model = fast_view(model).module if bn_mode == "eval" else model
        self._batch_loss = make_batch_loss(products_model, loss, self._frozen, self._buffers)
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
        """Sets the model's flags for evaluation (``bn_mode``) and IEEE float32 on CUDA
        (:mod:`landscape.precision`), and restores them afterwards."""
        flags = {m: m.training for m in self._model.modules()}
        tracking = {
            m: m.track_running_stats for m in self._model.modules() if isinstance(m, _BATCHNORM)
        }
        try:
            self._model.train(self.bn_mode == "train")
            if self.bn_mode == "train":
                for m in tracking:  # batch statistics; running statistics neither read nor set
                    m.track_running_stats = False
            with float32_precision("ieee"):
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

    # ---------------------------------------------------------------- guarded products

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

    def __matmul__(self, other: Tensor) -> Tensor:
        return self.matvec(other) if other.dim() == 1 else self.matmat(other)

    # ---------------------------------------------------------------- gradient and loss

    def _gradient_and_loss(self) -> tuple[Tensor, float]:
        if self._grad_cache is None:
            gv = make_grad_and_value(self._batch_loss)
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
