"""Flat views of parameter-space vectors and named groups of a model's trainable parameters.

A parameter-space vector (parameters, a direction) is a mapping ``{parameter name: tensor}``.
:func:`flatten` and :func:`unflatten` convert it to and from one 1-D tensor. Parameter groups
(Li et al., "Exploring and Exploiting the Asymmetric Valley of DNNs", A4) are lists of trainable
parameter names, in ``named_parameters()`` order, derived from module types:

- ``ALL``: every trainable parameter.
- ``CLF``: weight and bias of the final classification ``nn.Linear``
  (:func:`landscape.models.classifier_name`).
- ``FEAT``: ``ALL`` minus ``CLF``.
- ``LAYER1``: the first layer or block. A model with a child module named ``layer1``
  (torchvision ResNet/ResNeXt, the project's CIFAR ResNet) gives that block's parameters (the stem
  convolution and its BN are not part of it). Any other model gives the parameters of its first
  convolution or ``nn.Linear`` in registration order, plus those of the batch norm that directly
  follows it, i.e. when the next leaf module in registration order is a batch norm (VGG,
  MobileNetV2's ``features.0``; an MLP's first ``Linear`` is followed by a ReLU and stands alone).
- ``CONV``: the weights (not the biases) of every convolution and ``nn.Linear``.
- ``BN``: weight and bias of every batch norm.

>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
>>> param_groups(net)["LAYER1"], group_names(net, "CONV")
(['0.weight', '0.bias', '1.weight', '1.bias'], ['0.weight', '3.weight'])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from landscape.models import classifier_name

GROUPS: tuple[str, ...] = ("ALL", "CLF", "FEAT", "LAYER1", "CONV", "BN")

_CONV_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)
_BATCHNORM = nn.modules.batchnorm._BatchNorm


def flatten(tensors: Mapping[str, Tensor]) -> Tensor:
    """Concatenates the tensors, each flattened, into one 1-D tensor in mapping order.

    Args:
        tensors: ``{name: tensor}``, all on one device; dtypes are promoted as by ``torch.cat``.

    Returns:
        A new 1-D tensor of ``sum(t.numel())`` elements (empty float tensor for no tensors).
    """
    if not tensors:
        return torch.empty(0)
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def unflatten(vector: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Splits a 1-D tensor into tensors of the names and shapes of ``like``, in its order.

    Args:
        vector: 1-D tensor of exactly ``sum(t.numel() for t in like.values())`` elements.
        like: ``{name: tensor}`` giving names, order and shapes (its values are not read).

    Returns:
        ``{name: tensor}``: views into ``vector``, with its dtype and device.

    Raises:
        ValueError: if ``vector`` is not 1-D or its length differs from the total size of ``like``.
    """
    total = sum(t.numel() for t in like.values())
    if vector.dim() != 1 or vector.numel() != total:
        raise ValueError(
            f"unflatten: vector of shape {tuple(vector.shape)} but the parameters hold "
            f"{total} elements"
        )
    out: dict[str, Tensor] = {}
    start = 0
    for name, t in like.items():
        out[name] = vector[start : start + t.numel()].view(t.shape)
        start += t.numel()
    return out


def _params_of(prefix: str, module: nn.Module, keep: Iterable[str] | None = None) -> list[str]:
    """Dotted names of a module's own (non-recursive) parameters, optionally only ``keep``."""
    names = [n for n, _ in module.named_parameters(recurse=False) if keep is None or n in keep]
    return [f"{prefix}.{n}" if prefix else n for n in names]


def _first_layer(model: nn.Module) -> list[str]:
    """Parameter names of the first conv/linear module and of a batch norm directly after it."""
    if "layer1" in dict(model.named_children()):
        return [
            f"layer1.{n}" for n, _ in model.get_submodule("layer1").named_parameters(recurse=True)
        ]
    leaves = [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]
    for i, (name, module) in enumerate(leaves):
        if isinstance(module, _CONV_LINEAR):
            names = _params_of(name, module)
            if i + 1 < len(leaves) and isinstance(leaves[i + 1][1], _BATCHNORM):
                names += _params_of(*leaves[i + 1])
            return names
    return []


def param_groups(model: nn.Module) -> dict[str, list[str]]:
    """Every group of :data:`GROUPS` (see the module docstring) as trainable parameter names.

    Args:
        model: Any model of the project (or any module with an ``nn.Linear`` classifier).

    Returns:
        ``{group: [names]}``, each list in ``named_parameters()`` order; parameters that do not
        require gradients are left out of every group.
    """
    everything = [n for n, p in model.named_parameters() if p.requires_grad]
    head = classifier_name(model)
    clf = set(_params_of(head, model.get_submodule(head), ("weight", "bias")))
    conv: set[str] = set()
    bn: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, _CONV_LINEAR):
            conv.update(_params_of(name, module, ("weight",)))
        elif isinstance(module, _BATCHNORM):
            bn.update(_params_of(name, module, ("weight", "bias")))
    layer1 = set(_first_layer(model))
    return {
        "ALL": list(everything),
        "CLF": [n for n in everything if n in clf],
        "FEAT": [n for n in everything if n not in clf],
        "LAYER1": [n for n in everything if n in layer1],
        "CONV": [n for n in everything if n in conv],
        "BN": [n for n in everything if n in bn],
    }


def group_names(model: nn.Module, group: str) -> list[str]:
    """Trainable parameter names of one group of :data:`GROUPS`.

    Raises:
        ValueError: for an unknown group, naming the valid ones.
    """
    if group not in GROUPS:
        raise ValueError(f"group: unknown parameter group {group!r}; one of {list(GROUPS)}")
    return param_groups(model)[group]


def restrict(direction: Mapping[str, Tensor], names: Iterable[str]) -> dict[str, Tensor]:
    """Zeroes a vector outside a set of parameter names.

    Args:
        direction: ``{name: tensor}``.
        names: The names kept; each must be a key of ``direction``.

    Returns:
        A new dict in ``direction``'s order: a copy of the tensor for every name in ``names``,
        a new zero tensor (same shape, dtype, device) for every other.

    Raises:
        ValueError: if a name is not in ``direction``.
    """
    keep = set(names)
    unknown = sorted(keep.difference(direction))
    if unknown:
        raise ValueError(f"restrict: {unknown} are not parameters of the direction")
    return {n: d.clone() if n in keep else torch.zeros_like(d) for n, d in direction.items()}
