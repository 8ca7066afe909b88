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
  by an eval-mode BN computes ``conv(x, w * s) + (b - mean) * s + beta`` with
  ``s = gamma / sqrt(var + eps)`` from the current running statistics, and the BN is removed:
  exact up to rounding, and one pass over the activations fewer.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


class FoldedConv(nn.Module):
    """``conv`` followed by eval-mode ``bn``, as one convolution with folded weight and bias."""

    def __init__(self, conv: nn.Module, bn: nn.Module):
        super().__init__()
        self.conv = conv
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        conv, bn = self.conv, self.bn
        scale = torch.rsqrt(bn.running_var + bn.eps)
        shift = -bn.running_mean
        if conv.bias is not None:
            shift = shift + conv.bias
        if bn.affine:
            scale = scale * bn.weight
        bias = shift * scale
        if bn.affine:
            bias = bias + bn.bias
        weight = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        return conv._conv_forward(x, weight, bias)


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
            _set(view, name, StatsBN(module, batches))
    return view


def reset(model: nn.Module) -> None:
    """Zeroes the running statistics of every BN layer of ``model`` (before a statistics pass)."""
    for m in model.modules():
        if isinstance(m, _BN):
            m.running_mean.zero_()
            m.running_var.zero_()


def folded_model(model: nn.Module) -> tuple[nn.Module, int]:
    """``model`` (shared tensors) with conv -> BN pairs folded; also returns the pairs' count.

    A pair is a convolution whose output goes to a BN layer only, found by ``torch.fx`` tracing;
    a model that does not trace is returned unfolded (count 0).
    """
    view = _shared_copy(model).eval()
    try:
        gm = torch.fx.symbolic_trace(view)
    except Exception:  # data-dependent control flow: evaluate unfolded
        return view, 0
    modules = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], _BN):
            continue
        src = node.args[0]
        if not (
            isinstance(src, torch.fx.Node)
            and src.op == "call_module"
            and isinstance(modules.get(src.target), nn.modules.conv._ConvNd)
            and len(src.users) == 1
            and _channels(modules[src.target]) == modules[node.target].num_features
        ):
            continue
        _set(gm, src.target, FoldedConv(modules[src.target], modules[node.target]))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        folded += 1
    gm.graph.lint()
    gm.recompile()
    return gm.eval(), folded


def _channels(conv: nn.Module) -> int:
    return conv.out_channels


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


