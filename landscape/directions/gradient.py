"""Gradient directions (kind ``gradient``): the negative gradient of the training loss over fixed
batches (V4, V6)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from landscape.data import DataBundle
from landscape.directions.base import Direction, Request, register, trainable


def negative_gradient(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    *,
    train_mode: bool = False,
) -> Direction:
    """The negative gradient of the mean loss over some batches, ``-grad L(theta)``.

    ``L`` is the mean per-sample loss over all samples of all batches: each batch's mean loss is
    weighted by its size, so batches of different sizes give the gradient of one full batch.
    The model is left as it was: parameters, buffers (BN running statistics, also in training
    mode), train/eval flags, and no ``.grad`` is set (the gradient is taken with
    ``torch.autograd.grad`` through ``torch.func.functional_call`` on detached leaves and copies of
    the buffers).

    Args:
        model: The model, on the device of the batches.
        batches: ``(x, y)`` pairs.
        loss: ``loss(logits, y)`` -> the batch's mean loss (default cross-entropy).
        train_mode: Evaluate in training mode (BN with batch statistics, dropout on) instead of
            eval mode.

    Returns:
        ``{name: -dL/dparam}`` over the trainable parameters (float64 accumulation, then the
        parameters' dtypes); parameters the loss does not reach get zeros.

    Raises:
        ValueError: if ``batches`` is empty.
    """
    leaves = {n: p.detach().requires_grad_(True) for n, p in trainable(model).items()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    flags = {m: m.training for m in model.modules()}
    total = 0
    acc = {n: torch.zeros(p.shape, dtype=torch.float64, device=p.device) for n, p in leaves.items()}
    try:
        model.train(train_mode)
        with torch.enable_grad():
            for x, y in batches:
                value = loss(functional_call(model, (leaves, buffers), (x,)), y) * len(y)
                grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
                for (name, _), grad in zip(leaves.items(), grads, strict=True):
                    if grad is not None:
                        acc[name] += grad.double()
                total += len(y)
    finally:
        for module, flag in flags.items():
            module.training = flag
    if total == 0:
        raise ValueError("negative_gradient: no batches (no samples) given")
    return {n: (-acc[n] / total).to(p.dtype) for n, p in leaves.items()}


def gradient_batches(spec: Mapping[str, Any], data: DataBundle | None):
    """The fixed training batches of a ``gradient`` or ``mined`` direction, as an iterator.

    ``batches`` (an integer, or ``"all"``: the whole split) batches of ``batch_size`` of a
    class-proportional training sample drawn with the dataset's ``subset_seed``
    (:meth:`landscape.data.Split.sample`).

    Raises:
        ValueError: without data, or for a bad ``batches``.
    """
    if data is None:
        raise ValueError(
            f"kind {spec.get('kind')!r}: needs data (a DataBundle with the training split)"
        )
    count = spec.get("batches", 1)
    if count != "all" and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"batches: expected an integer >= 1 or 'all', got {count!r}")
    size = spec.get("batch_size", 128)
    samples = len(data.train) if count == "all" else count * size
    return data.train.sample(samples, data.subset_seed).batches(size)


@register("gradient")
def _build(request: Request) -> Direction:
    return negative_gradient(request.model, gradient_batches(request.spec, request.data))
