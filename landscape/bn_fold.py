"""Eval-mode BN folded into the convolution or linear layer before it, keeping every tensor name.

:func:`fold_bn` returns a view of a model (``torch.fx``) in which each convolution or linear
layer whose output goes only to a BN layer computes ``layer(x, w * s, (b - mean) * s + beta)``
with ``s = gamma / sqrt(var + eps)`` from the running statistics, and the BN call is removed:
exact up to rounding, one pass over the activations fewer. In train mode (or without running
statistics) the pair runs unfolded.

The view keeps the model's parameter and buffer names, so ``torch.func.functional_call`` takes
the same dictionaries: a :class:`FoldedBN` sits at the layer's path and registers the layer's
own weight and bias, and reads the BN layer, which stays at its path in the module tree, through
an unregistered reference. Tracing a model does not copy its leaf modules: the view shares the
BN layers (their tensors and their ``training`` flags) with the model.

Folding saves most in second-order autograd: the double backward of an eval-mode
``F.batch_norm`` is a generic formula (it also serves train mode) that costs about a third of a
VGG-BN Hessian-vector product on a CPU, the folded weight's a few weight-sized operations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

_BN = nn.modules.batchnorm._BatchNorm
_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class FoldedBN(nn.Module):
    """``layer`` (a convolution or ``nn.Linear``) followed by ``bn``, folded when ``bn`` is in
    eval mode with running statistics. Registers ``layer``'s ``weight`` and ``bias`` tensors as
    its own (the same objects); ``layer`` and ``bn`` are held unregistered."""

    def __init__(self, layer: nn.Module, bn: nn.Module):
        super().__init__()
        self.weight = layer.weight
        self.register_parameter("bias", layer.bias)
        self._pair = (layer, bn)  # a tuple: not registered as submodules

    def _layer(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        layer = self._pair[0]
        if isinstance(layer, nn.Linear):
            return F.linear(x, weight, bias)
        return layer._conv_forward(x, weight, bias)

    def forward(self, x: Tensor) -> Tensor:
        bn = self._pair[1]
        if bn.training or bn.running_mean is None:
            return bn(self._layer(x, self.weight, self.bias))
        scale = torch.rsqrt(bn.running_var + bn.eps)
        shift = -bn.running_mean
        if self.bias is not None:
            shift = shift + self.bias
        if bn.affine:
            scale = scale * bn.weight
        bias = shift * scale
        if bn.affine:
            bias = bias + bn.bias
        weight = self.weight * scale.view(-1, *([1] * (self.weight.dim() - 1)))
        return self._layer(x, weight, bias)


def _tensor_names(model: nn.Module) -> list[str]:
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    return sorted(names + [n for n, _ in model.named_buffers(remove_duplicate=False)])


def fold_bn(model: nn.Module) -> tuple[nn.Module, int]:
    """A view of ``model`` with its layer -> BN pairs folded (:class:`FoldedBN`), and the pairs'
    count. A pair is a ``Conv1d/2d/3d`` or ``Linear`` whose output goes to one BN layer only and
    whose output features are the BN layer's. A model that does not trace, or whose view would
    not keep its tensor names, is returned as it is (count 0); so is a model without BN layers
    (not traced)."""
    if not any(isinstance(m, _BN) for m in model.modules()):
        return model, 0
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow: evaluate unfolded
        return model, 0
    modules = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], _BN):
            continue
        src = node.args[0]
        if not (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(modules.get(src.target), _FOLDABLE)
            and len(src.users) == 1
            and _out_features(modules[src.target]) == modules[node.target].num_features
        ):
            continue
        gm.set_submodule(src.target, FoldedBN(modules[src.target], modules[node.target]))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        folded += 1
    if not folded or _tensor_names(gm) != _tensor_names(model):
        return model, 0
    gm.graph.lint()
    gm.recompile()
    return gm, folded


def _out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
