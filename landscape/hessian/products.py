r"""How :class:`~landscape.hessian.HessianLinearOperator` computes its Hessian-vector products.

:func:`make_batch_loss` is one batch's loss as a pure function of the trainable parameters,
:func:`make_grad_and_value` its gradient and :func:`make_hvp` its forward-over-reverse product.
:class:`_Products`, the operator's base class, holds the products by method, all of them
unguarded: forward-over-reverse (``"jvp"``), reverse-over-reverse (``"double_backward"``),
through the retained gradient graph (``"retained"``), and a block of products at once
(:meth:`~_Products.matmat_batched`). The operator's data, its determinism guard and the guarded
products ``matvec`` and ``matmat`` are in :mod:`landscape.hessian.operator`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

LossFn = Callable[[Tensor, Tensor], Tensor]
# retained graphs: (leaves, [(grads kept, their indices, batch weight, batch loss) per batch])
_Graph = tuple[list[Tensor], list[tuple[list[Tensor], list[int], float, float]]]


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


def make_grad_and_value(
    batch_loss: Callable[[dict[str, Tensor], Tensor, Tensor], Tensor],
) -> Callable[[dict[str, Tensor], Tensor, Tensor], tuple[dict[str, Tensor], Tensor]]:
    r"""Returns :math:`(\theta, x, y) \mapsto (\nabla_\theta \bar\ell, \bar\ell)` by reverse mode.

    ``torch.autograd.grad`` on detached leaf copies of ``params`` (gradients enabled inside):
    the values of ``torch.func.grad_and_value`` bit for bit (tests/test_hessian.py), without its
    import of ``torch._dynamo`` on the first call in a process (1.2-1.5 s here; every gradient job
    of the workflow is a process of its own). A parameter the loss does not use gets zeros.

    Args:
        batch_loss: As returned by :func:`make_batch_loss`.

    Returns:
        ``grad_and_value(params, x, y)`` -> ``({name: gradient}, detached 0-d loss)``.
    """

    def grad_and_value(params: dict[str, Tensor], x: Tensor, y: Tensor):
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        with torch.enable_grad():
            value = batch_loss(leaves, x, y)
            grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
        return {
            n: torch.zeros_like(leaf) if g is None else g
            for (n, leaf), g in zip(leaves.items(), grads, strict=True)
        }, value.detach()

    return grad_and_value


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


# --------------------------------------------------------------------------- products by method


class _Products:
    r"""The products by method of :class:`~landscape.hessian.HessianLinearOperator` (its base).

    The methods read the operator's state, set by its constructor: ``_params`` (the trainable
    copies ``{name: tensor}``), ``names``, ``_shapes``, ``shape``, ``dtype``, ``device``,
    ``_batch_loss`` and ``_hvp`` (from :func:`make_batch_loss` and :func:`make_hvp`), ``_mode``
    and ``_weights`` (the model's flags, the weighted batches), ``unflatten`` and
    ``_check_vector``; they count products in ``num_matvecs`` and build ``_graph`` (the retained
    gradient graphs) on first use. None of them runs the determinism guard.
    """

    # ---------------------------------------------------------------- single products

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

    # ---------------------------------------------------------------- block products

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
