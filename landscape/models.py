"""Model zoo of the two papers: MLP, CIFAR-style ResNet (with and without skips), VGG, torchvision.

Every model is built from one config block (``models.<name>``) by :func:`build_model`. Each spec
key is validated here and every error names its config key, e.g. ``models.mlp.hiden: unknown
key``. Construction only draws from torch's global RNG, so ``torch.manual_seed`` makes it
deterministic; nothing is ever downloaded (``torchvision`` weights come from a local file only).

>>> import torch
>>> model = build_model({"arch": "mlp", "hidden": [32]}, 10, (1, 8, 8), key="models.mlp")
>>> model(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
>>> classifier_name(model), count_parameters(model)
('classifier', 2410)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

ARCHS: tuple[str, ...] = ("mlp", "resnet", "vgg", "torchvision")
TORCHVISION_MODELS: tuple[str, ...] = ("resnet18", "mobilenet_v2", "resnext101_32x8d", "vgg16_bn")
BN_WEIGHT_INITS: tuple[str, ...] = ("ones", "uniform", "normal")
ACTIVATIONS: tuple[str, ...] = ("relu",)

_VGG_CFG_TEXT: dict[str, str] = {
    "vgg11": "64 M 128 M 256 256 M 512 512 M 512 512 M",
    "vgg13": "64 64 M 128 128 M 256 256 M 512 512 M 512 512 M",
    "vgg16": "64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M",
    "vgg19": "64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M 512 512 512 512 M",
}
VGG_CFGS: dict[str, list[int | str]] = {
    name: [item if item == "M" else int(item) for item in text.split()]
    for name, text in _VGG_CFG_TEXT.items()
}

# Dotted names of the replaced head and first conv, and the number of 2x downsamplings.
_TV_HEAD: dict[str, str] = {
    "resnet18": "fc",
    "resnext101_32x8d": "fc",
    "mobilenet_v2": "classifier.1",
    "vgg16_bn": "classifier.6",
}
_TV_FIRST_CONV: dict[str, str] = {
    "resnet18": "conv1",
    "resnext101_32x8d": "conv1",
    "mobilenet_v2": "features.0.0",
    "vgg16_bn": "features.0",
}
_TV_VGG_POOLS = 5

_COMMON_KEYS = ("arch", "bn_weight_init")
_ARCH_KEYS: dict[str, tuple[str, ...]] = {
    "mlp": ("hidden", "activation"),
    "resnet": ("depth", "width", "skip"),
    "vgg": ("layers", "width_mult", "bn"),
    "torchvision": ("name", "weights", "in_channels"),
}


class ModelSpecError(ValueError):
    """An invalid model config block; the message starts with the offending config key."""


# --------------------------------------------------------------------------- spec validation


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def _get(spec: Mapping[str, Any], name: str, types: tuple[type, ...], default: Any, key: str):
    """Returns ``spec[name]`` (or ``default``) after checking its type; bools are not numbers."""
    value = spec.get(name, default)
    is_bool = isinstance(value, bool)
    if not isinstance(value, types) or (is_bool and bool not in types):
        raise ModelSpecError(
            f"{key}.{name}: expected {_type_name(types)}, got {type(value).__name__} {value!r}"
        )
    return value


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelSpecError(f"{key}: expected a positive integer, got {value!r}")
    return value


def _choice(spec: Mapping[str, Any], name: str, choices: Sequence[str], default: str, key: str):
    value = _get(spec, name, (str,), default, key)
    if value not in choices:
        raise ModelSpecError(f"{key}.{name}: {value!r} is not one of {list(choices)}")
    return value


def _check_keys(spec: Mapping[str, Any], arch: str, key: str) -> None:
    allowed = _COMMON_KEYS + _ARCH_KEYS[arch]
    for name in spec:
        if name not in allowed:
            raise ModelSpecError(
                f"{key}.{name}: unknown key for arch '{arch}' (allowed: {sorted(allowed)})"
            )


def _check_shape(num_classes: int, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    return shape  # type: ignore[return-value]


# --------------------------------------------------------------------------- initialization


def _init_convs(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, relu) conv weights and zero conv biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def init_bn(model: nn.Module, mode: str = "ones") -> None:
    """Sets every BN weight to 1.0, U(0, 1) or N(0, 0.1) (``mode``) and every BN bias to 0.

    Args:
        model: Any module; its batch-norm layers (1d/2d/3d) are re-initialized in place.
        mode: One of :data:`BN_WEIGHT_INITS`.
    """
    if mode not in BN_WEIGHT_INITS:
        raise ValueError(f"bn_weight_init {mode!r} is not one of {list(BN_WEIGHT_INITS)}")
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            with torch.no_grad():
                if mode == "ones":
                    module.weight.fill_(1.0)
                elif mode == "uniform":
                    module.weight.uniform_(0.0, 1.0)
                else:
                    module.weight.normal_(0.0, 0.1)
                module.bias.zero_()


# --------------------------------------------------------------------------- MLP


class MLP(nn.Module):
    """Flatten, hidden ``Linear`` + ReLU layers (``features``), final ``Linear`` ``classifier``."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(torch.flatten(x, 1)))


def _build_mlp(spec: Mapping[str, Any], num_classes: int, shape: tuple[int, int, int], key: str):
    hidden = _get(spec, "hidden", (list, tuple), [128], key)
    hidden = [_positive_int(h, f"{key}.hidden[{i}]") for i, h in enumerate(hidden)]
    _choice(spec, "activation", ACTIVATIONS, "relu", key)
    return MLP(math.prod(shape), hidden, num_classes)


# --------------------------------------------------------------------------- CIFAR ResNet


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers; ``skip`` adds the identity or a 1x1 conv + BN projection.

    With ``skip=False`` the block is the plain "no-skip" block of Li et al. (2018): the residual
    addition, and with it the projection, does not exist.
    """

    def __init__(self, cin: int, cout: int, stride: int, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if skip:
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) of He et al. (2016) for small images: 3 stages of n blocks, widths w/2w/4w.

    Modules: ``conv1``/``bn1`` (3x3, stride 1), ``layer1``..``layer3``, ``avgpool``, ``fc``.
    """

    def __init__(
        self, in_channels: int, num_classes: int, n: int, width: int = 16, skip: bool = True
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(width, width, n, 1, skip)
        self.layer2 = self._stage(width, 2 * width, n, 2, skip)
        self.layer3 = self._stage(2 * width, 4 * width, n, 2, skip)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    @staticmethod
    def _stage(cin: int, cout: int, n: int, stride: int, skip: bool) -> nn.Sequential:
        blocks = [BasicBlock(cin, cout, stride, skip)]
        blocks += [BasicBlock(cout, cout, 1, skip) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _build_resnet(spec: Mapping[str, Any], num_classes: int, shape: tuple[int, int, int], key: str):
    depth = _get(spec, "depth", (int,), 20, key)
    if depth < 8 or (depth - 2) % 6:
        raise ModelSpecError(
            f"{key}.depth: {depth} is not of the form 6n+2 with n >= 1 (e.g. 8, 20, 32, 56, 110)"
        )
    width = _positive_int(_get(spec, "width", (int,), 16, key), f"{key}.width")
    skip = _get(spec, "skip", (bool,), True, key)
    model = CifarResNet(shape[0], num_classes, (depth - 2) // 6, width, skip)
    _init_convs(model)
    return model


# --------------------------------------------------------------------------- VGG


class VGG(nn.Module):
    """``features`` (conv3x3 + [BN] + ReLU, max-pools), global average pool, ``classifier``."""

    def __init__(
        self, in_channels: int, layers: Sequence[int | str], num_classes: int, bn: bool = True
    ) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        width = in_channels
        for item in layers:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
                continue
            modules.append(nn.Conv2d(width, int(item), 3, padding=1, bias=not bn))
            if bn:
                modules.append(nn.BatchNorm2d(int(item)))
            modules.append(nn.ReLU(inplace=True))
            width = int(item)
        self.features = nn.Sequential(*modules)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _vgg_layers(spec: Mapping[str, Any], key: str) -> list[int | str]:
    layers = _get(spec, "layers", (str, list, tuple), "vgg16", key)
    if isinstance(layers, str):
        if layers not in VGG_CFGS:
            raise ModelSpecError(f"{key}.layers: {layers!r} is not one of {sorted(VGG_CFGS)}")
        return list(VGG_CFGS[layers])
    if not layers:
        raise ModelSpecError(f"{key}.layers: empty list")
    return [
        item if item == "M" else _positive_int(item, f"{key}.layers[{i}] (int or 'M')")
        for i, item in enumerate(layers)
    ]


def _check_pools(shape: tuple[int, int, int], pools: int, key: str) -> None:
    """Raises if ``pools`` halvings of the input's height or width reach 0."""
    side = min(shape[1:])
    if side >> pools < 1:
        raise ModelSpecError(
            f"{key}: {pools} max-pools need inputs of at least {2**pools}x{2**pools}, "
            f"got {shape[1]}x{shape[2]}"
        )


def _build_vgg(spec: Mapping[str, Any], num_classes: int, shape: tuple[int, int, int], key: str):
    layers = _vgg_layers(spec, key)
    mult = _get(spec, "width_mult", (int, float), 1.0, key)
    if not mult > 0:
        raise ModelSpecError(f"{key}.width_mult: must be > 0, got {mult!r}")
    bn = _get(spec, "bn", (bool,), True, key)
    _check_pools(shape, layers.count("M"), f"{key}.layers")
    scaled = [item if item == "M" else max(1, round(item * mult)) for item in layers]
    model = VGG(shape[0], scaled, num_classes, bn)
    _init_convs(model)
    return model


# --------------------------------------------------------------------------- torchvision


def _get_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _replace_head(model: nn.Module, name: str, num_classes: int) -> None:
    old = _get_module(model, name)
    _set_module(model, name, nn.Linear(old.in_features, num_classes))


def _replace_first_conv(model: nn.Module, name: str, in_channels: int) -> None:
    old = _get_module(model, name)
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=old.bias is not None,
    )
    _init_convs(new)
    _set_module(model, name, new)


def _load_state(path: Any, key: str) -> dict[str, torch.Tensor]:
    if not isinstance(path, (str, Path)):
        raise ModelSpecError(f"{key}: expected a path string, got {type(path).__name__}")
    if not Path(path).is_file():
        raise ModelSpecError(f"{key}: state-dict file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelSpecError(f"{key}: cannot read {str(path)!r}: {err}") from err
    tensors = isinstance(state, Mapping) and all(torch.is_tensor(v) for v in state.values())
    if not tensors:
        raise ModelSpecError(f"{key}: {str(path)!r} is not a state dict (name -> tensor)")
    return dict(state)


def _state_dim(state: Mapping[str, torch.Tensor], tensor: str, dim: int, key: str) -> int:
    if tensor not in state:
        raise ModelSpecError(f"{key}: the state dict has no tensor {tensor!r}")
    return int(state[tensor].shape[dim])


def _build_torchvision(
    spec: Mapping[str, Any], num_classes: int, shape: tuple[int, int, int], key: str
) -> nn.Module:
    import torchvision  # deferred: slow import, only needed here

    if "name" not in spec:
        raise ModelSpecError(f"{key}.name: missing (one of {list(TORCHVISION_MODELS)})")
    name = _choice(spec, "name", TORCHVISION_MODELS, "", key)
    in_channels = _positive_int(spec.get("in_channels", shape[0]), f"{key}.in_channels")
    if in_channels != shape[0]:
        raise ModelSpecError(f"{key}.in_channels: {in_channels} but the data has {shape[0]}")
    if name == "vgg16_bn":
        _check_pools(shape, _TV_VGG_POOLS, f"{key}.name")
    head, first = _TV_HEAD[name], _TV_FIRST_CONV[name]
    weights = spec.get("weights")
    state = None if weights is None else _load_state(weights, f"{key}.weights")
    wkey = f"{key}.weights"
    head_out = num_classes if state is None else _state_dim(state, f"{head}.weight", 0, wkey)
    file_in = in_channels if state is None else _state_dim(state, f"{first}.weight", 1, wkey)
    model = getattr(torchvision.models, name)(weights=None, num_classes=head_out)
    if file_in != 3:
        _replace_first_conv(model, first, file_in)
    if state is not None:
        init_bn(model, spec.get("bn_weight_init", "ones"))
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ModelSpecError(f"{key}.weights: not a {name} state dict: {err}") from err
    if file_in != in_channels:
        _replace_first_conv(model, first, in_channels)
    if head_out != num_classes:
        _replace_head(model, head, num_classes)
    return model


# --------------------------------------------------------------------------- public API

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _build_mlp,
    "resnet": _build_resnet,
    "vgg": _build_vgg,
    "torchvision": _build_torchvision,
}


def build_model(
    spec: Mapping[str, Any],
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    key: str = "model",
) -> nn.Module:
    """Builds one model from its config block.

    BN weights are initialized by ``bn_weight_init`` (``ones``, ``uniform`` U(0,1) or ``normal``
    N(0, 0.1)), BN biases are zero. Tensors loaded from a ``torchvision`` ``weights`` file take
    precedence over both; the head (and first conv, for other channel counts) is then replaced
    where the file's shape differs.

    Args:
        spec: The block, e.g. ``{"arch": "resnet", "depth": 20, "skip": False}``.
        num_classes: Outputs of the final linear layer.
        input_shape: ``(channels, height, width)`` of one input.
        key: Config path of the block, used in error messages (e.g. ``models.resnet20``).

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ModelSpecError: For an unknown arch or key, a wrong type or value, an input too small
            for the pools, or a missing/unreadable weights file; the message names the key.
    """
    shape = _check_shape(num_classes, input_shape)
    if not isinstance(spec, Mapping):
        raise ModelSpecError(f"{key}: expected a mapping, got {type(spec).__name__}")
    if "arch" not in spec:
        raise ModelSpecError(f"{key}.arch: missing (one of {list(ARCHS)})")
    arch = _choice(spec, "arch", ARCHS, "", key)
    _check_keys(spec, arch, key)
    bn_mode = _choice(spec, "bn_weight_init", BN_WEIGHT_INITS, "ones", key)
    model = _BUILDERS[arch](spec, num_classes, shape, key)
    if arch != "torchvision" or spec.get("weights") is None:
        init_bn(model, bn_mode)
    return model


def classifier_name(model: nn.Module) -> str:
    """Dotted name of the final classification ``nn.Linear`` (the last one registered).

    >>> classifier_name(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    '2'
    """
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer")
    return names[-1]


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not; buffers such as BN statistics excluded).

    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters())
