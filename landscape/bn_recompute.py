"""BN recompute ("UpBN") as one functional pass, and BN folded into the preceding convolution.

The eager reference (:mod:`landscape.grid`, ``bn_recompute: eager``) runs the ``B`` fixed batches
one by one through the model in train mode with momentum ``1 / (b + 1)``: a cumulative average of
each BN layer's batch mean and unbiased batch variance. Here:

- :func:`stats_model` is a second view of the same model (sharing every parameter and buffer)
  whose BN layers normalize a batch by its own statistics (as train mode does) and add ``1 / B``
  of its mean and unbiased variance to the running statistics, zeroed before the first batch
  (:func:`reset`). The ``B`` passes leave the same running statistics as the eager ones, up to
  rounding, through one graph that does not change from batch to batch (no per-batch momentum),
  so ``torch.compile`` traces it once. (Concatenating the batches into one pass, each normalized
  by its own statistics, was measured slower on a CPU: the concatenation copies.)
- :func:`folded_model` is a third view for the eval pass in which every convolution followed only
  by an eval-mode BN is folded with it (:mod:`landscape.fast_view`): exact up to rounding, and one
  pass over the activations fewer.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.fast_view import fast_view

_BN = nn.modules.batchnorm._BatchNorm


class StatsBN(nn.Module):
    """A BN layer in "statistics" mode: normalizes a batch by its own mean and biased variance
    (train mode's output) and adds ``1 / batches`` of its mean and unbiased variance to ``bn``'s
    running statistics (zeroed by :func:`reset` before the first batch)."""

    def __init__(self, bn: nn.Module, batches: int):
        super().__init__()
        self.bn = bn
        self.weight = 1.0 / batches

    def forward(self, x: Tensor) -> Tensor:
        bn = self.bn
        mean = torch.zeros_like(bn.running_mean)
        var = torch.ones_like(bn.running_var)
        # momentum 1: the two buffers become this batch's mean and unbiased variance
        out = F.batch_norm(x, mean, var, bn.weight, bn.bias, True, 1.0, bn.eps)
        bn.running_mean.add_(mean, alpha=self.weight)
        bn.running_var.add_(var, alpha=self.weight)
        return out


def supported(model: nn.Module) -> bool:
    """Whether every BN layer tracks running statistics (what the functional pass writes)."""
    return all(
        m.track_running_stats and m.running_mean is not None
        for m in model.modules()
        if isinstance(m, _BN)
    )


def _shared_copy(model: nn.Module) -> nn.Module:
    """A copy of the module tree that shares every parameter and buffer tensor with ``model``."""
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo)


def stats_model(model: nn.Module, batches: int) -> nn.Module:
    """``model`` (shared tensors) with every BN layer a :class:`StatsBN` over ``batches``."""
    view = _shared_copy(model).eval()
    for name, module in list(view.named_modules()):
        if isinstance(module, _BN):
            view.set_submodule(name, StatsBN(module, batches))
    return view


def reset(model: nn.Module) -> None:
    """Zeroes the running statistics of every BN layer of ``model`` (before a statistics pass)."""
    for m in model.modules():
        if isinstance(m, _BN):
            m.running_mean.zero_()
            m.running_var.zero_()


def folded_model(model: nn.Module) -> tuple[nn.Module, int]:
    """``model`` (shared tensors, eval mode) with conv -> BN pairs folded and ReLUs moved after
    their max-pools (:func:`landscape.fast_view.fast_view`); also returns the folded pairs'
    count (0: unfolded)."""
    view = fast_view(_shared_copy(model).eval())
    return view.module, view.folded
