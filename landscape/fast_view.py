"""A view of a model that computes the same function with less work: eval-mode BN folded into
the layer before it, and each ReLU that feeds a max-pool moved after it. Every tensor name kept.

:func:`fast_view` traces the model (``torch.fx``) and rewrites two patterns:

- BN folding: a convolution or linear layer whose output goes only to a BN layer computes
  ``layer(x, w * s, (b - mean) * s + beta)`` with ``s = gamma / sqrt(var + eps)`` from the
  running statistics, and the BN call is removed: exact up to rounding, one pass over the
  activations fewer. In train mode (or without running statistics) the pair runs unfolded.
- ReLU after max-pool: ``max_pool(relu(x)) = relu(max_pool(x))`` (both monotone), bit for bit,
  and so are their derivatives under PyTorch's conventions (the first maximum of a window gets
  the gradient, ``relu'(0) = 0``): the ReLU, and every pass of autograd through it, touches a
  quarter of the elements behind a 2x2 pool.

The view keeps the model's parameter and buffer names, so ``torch.func.functional_call`` takes
the same dictionaries: a :class:`FoldedBN` sits at the layer's path and registers the layer's
own weight and bias, and reads the BN layer, which stays at its path in the module tree, through
an unregistered reference. Tracing a model does not copy its leaf modules: the view shares the
BN layers (their tensors and their ``training`` flags) with the model.

Both save most in second-order autograd: the double backward of an eval-mode ``F.batch_norm``
is a generic formula (it also serves train mode) that cost about a third of a VGG-BN
Hessian-vector product on a CPU, and the ReLUs' masks a sixth.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

_BN = nn.modules.batchnorm._BatchNorm
_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


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


class View(NamedTuple):
    """:func:`fast_view`'s result: the view (or the model itself) and what was rewritten."""

    module: nn.Module
    folded: int  # layer -> BN pairs folded
    moved: int  # ReLUs moved after the max-pool they fed


def fast_view(model: nn.Module) -> View:
    """A view of ``model`` with its layer -> BN pairs folded (:class:`FoldedBN`) and its ReLUs
    moved after the max-pools they feed (see the module documentation).

    A pair is a ``Conv1d/2d/3d`` or ``Linear`` whose output goes to one BN layer only and whose
    output features are the BN layer's; a ReLU (``nn.ReLU``, ``F.relu``, ``torch.relu``) moves
    when its only user is an ``nn.MaxPool1d/2d/3d`` without indices. A model with neither BN
    layers nor max-pools is not traced; one that does not trace, whose view would not keep its
    tensor names, or where nothing applies, is returned as it is (counts 0).
    """
    if not any(isinstance(m, (_BN, *_MAX_POOLS)) for m in model.modules()):
        return View(model, 0, 0)
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow: evaluate as it is
        return View(model, 0, 0)
    modules = dict(gm.named_modules())
    folded, moved = _fold(gm, modules), _move_relus(gm, modules)
    if not (folded or moved) or _tensor_names(gm) != _tensor_names(model):
        return View(model, 0, 0)
    gm.graph.lint()
    gm.recompile()
    return View(gm, folded, moved)


def _fold(gm: fx.GraphModule, modules: dict[str, nn.Module]) -> int:
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
    return folded


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) is nn.ReLU
    return node.op == "call_function" and node.target in (F.relu, torch.relu)


def _move_relus(gm: fx.GraphModule, modules: dict[str, nn.Module]) -> int:
    moved = 0
    for pool in list(gm.graph.nodes):
        if not (
            pool.op == "call_module"
            and isinstance(modules[pool.target], _MAX_POOLS)
            and not modules[pool.target].return_indices
        ):
            continue
        relu = pool.args[0]
        if not (isinstance(relu, fx.Node) and _is_relu(relu, modules) and len(relu.users) == 1):
            continue
        pool.args = (relu.args[0], *pool.args[1:])
        with gm.graph.inserting_after(pool):
            after = gm.graph.call_function(F.relu, (pool,))
        pool.replace_all_uses_with(
            after, delete_user_cb=lambda user, after=after: user is not after
        )
        gm.graph.erase_node(relu)
        moved += 1
    return moved


def _out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
