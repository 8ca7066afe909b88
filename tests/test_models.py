"""Model zoo: shapes, exact sizes, the no-skip nets, spec validation, init and weights files."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from landscape.models import (
    ARCHS,
    TORCHVISION_MODELS,
    ModelSpecError,
    build_model,
    classifier_name,
    count_parameters,
)

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)

SMALL_SPECS = {
    "mlp": {"arch": "mlp", "hidden": [32]},
    "mlp_default": {"arch": "mlp"},
    "resnet8": {"arch": "resnet", "depth": 8, "width": 8},
    "resnet8_noskip": {"arch": "resnet", "depth": 8, "width": 8, "skip": False},
    "resnet20": {"arch": "resnet", "depth": 20},
    "vgg_small": {"arch": "vgg", "layers": [16, "M", 32, "M"]},
    "vgg_nobn": {"arch": "vgg", "layers": [8, "M", 16], "bn": False, "width_mult": 0.5},
}
SMALL_HEADS = {
    "mlp": "classifier",
    "mlp_default": "classifier",
    "resnet8": "fc",
    "resnet8_noskip": "fc",
    "resnet20": "fc",
    "vgg_small": "classifier",
    "vgg_nobn": "classifier",
}
TV_HEADS = {
    "resnet18": "fc",
    "mobilenet_v2": "classifier.1",
    "resnext101_32x8d": "fc",
    "vgg16_bn": "classifier.6",
}
TV_FIRST_CONV = {"resnet18": "conv1", "mobilenet_v2": "features.0.0", "vgg16_bn": "features.0"}


def convs(model: nn.Module, kernel: int | None = None) -> list[nn.Conv2d]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and (kernel is None or m.kernel_size == (kernel, kernel))
    ]


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def tv(name: str, **extra) -> dict:
    return {"arch": "torchvision", "name": name, **extra}


# --------------------------------------------------------------------------- shapes and heads


def test_public_constants():
    assert ARCHS == ("mlp", "resnet", "vgg", "torchvision")
    assert set(TORCHVISION_MODELS) == set(TV_HEADS)


@pytest.mark.parametrize("shape", [DIGITS, CIFAR], ids=["digits", "cifar"])
@pytest.mark.parametrize("name", sorted(SMALL_SPECS))
def test_small_output_shape_and_head(name, shape):
    model = build_model(SMALL_SPECS[name], 10, shape, key=f"models.{name}")
    assert model(torch.randn(2, *shape)).shape == (2, 10)
    head = classifier_name(model)
    assert head == SMALL_HEADS[name]
    assert isinstance(model.get_submodule(head), nn.Linear)
    assert model.get_submodule(head).out_features == 10


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_on_digits(name):
    model = build_model(tv(name), 10, DIGITS)
    assert model(torch.randn(2, *DIGITS)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 32, 32), CIFAR], ids=["gray", "rgb"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vgg16_bn"])
def test_torchvision_wrappers(name, shape):
    model = build_model(tv(name), 7, shape, key="models.tv")
    head = classifier_name(model)
    assert head == TV_HEADS[name]
    assert model.get_submodule(head).out_features == 7
    first = model.get_submodule(TV_FIRST_CONV[name])
    assert isinstance(first, nn.Conv2d) and first.in_channels == shape[0]
    with torch.no_grad():
        assert model.eval()(torch.randn(2, *shape)).shape == (2, 7)


def test_resnext101_head_without_forward():
    model = build_model(tv("resnext101_32x8d"), 7, (1, 32, 32))
    assert classifier_name(model) == "fc"
    assert model.fc.weight.shape == (7, 2048)
    assert model.conv1.in_channels == 1


def test_torchvision_in_channels_key_must_match_data():
    model = build_model(tv("resnet18", in_channels=1), 7, (1, 32, 32))
    assert model.conv1.in_channels == 1
    with pytest.raises(ModelSpecError, match=r"models\.tv\.in_channels"):
        build_model(tv("resnet18", in_channels=3), 7, (1, 32, 32), key="models.tv")


def test_classifier_name_generic():
    assert classifier_name(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))) == "1"
    with pytest.raises(ValueError):
        classifier_name(nn.Conv2d(1, 1, 1))


# --------------------------------------------------------------------------- exact sizes


def test_mlp_paper_parameter_count():
    model = build_model({"arch": "mlp", "hidden": [128]}, 10, CIFAR)
    assert count_parameters(model) == 3072 * 128 + 128 + 128 * 10 + 10
    assert [m.out_features for m in linears(model)] == [128, 10]
    assert isinstance(model.features[0], nn.Linear)


def test_mlp_default_hidden_is_128():
    model = build_model({"arch": "mlp"}, 10, DIGITS)
    assert model.features[0].out_features == 128


@pytest.mark.parametrize("depth", [20, 32, 56, 110])
def test_resnet_layer_counts(depth):
    skip = build_model({"arch": "resnet", "depth": depth}, 10, CIFAR)
    plain = build_model({"arch": "resnet", "depth": depth, "skip": False}, 10, CIFAR)
    # depth = 3x3 convs + the final linear; option B adds two 1x1 projections (16->32->64)
    assert len(convs(skip, 3)) == depth - 1
    assert len(convs(skip, 1)) == 2
    assert len(convs(plain)) == len(convs(plain, 3)) == depth - 1
    assert len(linears(skip)) == len(linears(plain)) == 1
    n_blocks = 3 * (depth - 2) // 6
    assert sum(m.kernel_size == (3, 3) and m.stride == (2, 2) for m in convs(plain)) == 2
    assert len(bn_layers(plain)) == 1 + 2 * n_blocks
    assert len(bn_layers(skip)) == 1 + 2 * n_blocks + 2
    projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert count_parameters(skip) == count_parameters(plain) + projections


def test_resnet20_noskip_parameter_count():
    # the well-known 269,722 of ResNet-20 with parameter-free shortcuts
    model = build_model({"arch": "resnet", "depth": 20, "skip": False}, 10, CIFAR)
    assert count_parameters(model) == 269_722


def test_resnet_width_and_stages():
    model = build_model({"arch": "resnet", "depth": 8, "width": 4}, 10, DIGITS)
    assert model.conv1.stride == (1, 1) and model.conv1.out_channels == 4
    assert [
        stage[0].conv2.out_channels for stage in (model.layer1, model.layer2, model.layer3)
    ] == [
        4,
        8,
        16,
    ]
    assert model.fc.in_features == 16
    features = model.layer3(
        model.layer2(model.layer1(model.bn1(model.conv1(torch.randn(2, 1, 8, 8)))))
    )
    assert features.shape == (2, 16, 2, 2)


@pytest.mark.parametrize(
    ("name", "n_convs"), [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)]
)
def test_vgg_named_cfgs(name, n_convs):
    model = build_model({"arch": "vgg", "layers": name, "width_mult": 0.125}, 10, CIFAR)
    assert len(convs(model, 3)) == n_convs
    assert len(bn_layers(model)) == n_convs
    assert len(linears(model)) == 1
    assert model.classifier.in_features == 64
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_vgg_default_is_vgg16_and_width_mult_scales():
    model = build_model({"arch": "vgg"}, 10, CIFAR)
    assert len(convs(model)) == 13 and model.classifier.in_features == 512
    half = build_model({"arch": "vgg", "layers": [16, "M", 32], "width_mult": 0.5}, 10, DIGITS)
    assert [c.out_channels for c in convs(half)] == [8, 16]


def test_vgg_without_bn():
    model = build_model({"arch": "vgg", "layers": [8, "M", 16], "bn": False}, 10, DIGITS)
    assert not bn_layers(model)
    assert all(c.bias is not None for c in convs(model))


# --------------------------------------------------------------------------- the no-skip nets


def _zero_last_stage_block_convs(model: nn.Module) -> None:
    with torch.no_grad():
        for block in model.layer3:
            block.conv1.weight.zero_()
            block.conv2.weight.zero_()


@pytest.mark.parametrize("skip", [True, False])
def test_noskip_has_no_residual_addition(skip):
    model = build_model({"arch": "resnet", "depth": 8, "width": 4, "skip": skip}, 10, DIGITS)
    with torch.no_grad():
        for bn in bn_layers(model):
            bn.bias.normal_()  # constant BN output must not hide the input either way
    _zero_last_stage_block_convs(model)
    model.eval()
    x = torch.randn(4, *DIGITS)
    with torch.no_grad():
        out = model(x)
    spread = (out - out[0]).abs().max().item()
    if skip:
        assert spread > 1e-4  # the residual path still carries the earlier stages
    else:
        assert spread == 0.0  # a plain net: the last stage only sees its (zeroed) convs


def test_noskip_blocks_have_no_shortcut_modules():
    model = build_model({"arch": "resnet", "depth": 20, "skip": False}, 10, CIFAR)
    for stage in (model.layer1, model.layer2, model.layer3):
        for block in stage:
            assert block.shortcut is None and not block.skip
    names = [n for n, _ in model.named_modules()]
    assert not any("shortcut" in n for n in names)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("depth", [9, 10, 21, 2, -4])
def test_invalid_depth(depth):
    with pytest.raises(ModelSpecError, match=r"models\.r\.depth.*6n\+2"):
        build_model({"arch": "resnet", "depth": depth}, 10, DIGITS, key="models.r")


def test_vgg_input_too_small():
    spec = {"arch": "vgg", "layers": [8, "M", "M", "M", "M"]}
    with pytest.raises(ModelSpecError, match=r"models\.v\.layers"):
        build_model(spec, 10, DIGITS, key="models.v")
    with pytest.raises(ModelSpecError, match=r"models\.v\.layers"):
        build_model({"arch": "vgg", "layers": "vgg16"}, 10, DIGITS, key="models.v")
    assert build_model(spec, 10, (1, 16, 16))(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    three = build_model({"arch": "vgg", "layers": [8, "M", "M", "M"]}, 10, DIGITS)
    assert three(torch.randn(2, *DIGITS)).shape == (2, 10)


def test_torchvision_vgg_input_too_small():
    with pytest.raises(ModelSpecError, match=r"models\.tv\.name"):
        build_model(tv("vgg16_bn"), 10, DIGITS, key="models.tv")


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"arch": "mlp", "hiden": [128]}, r"models\.m\.hiden: unknown key"),
        ({"arch": "resnet", "layers": [8]}, r"models\.m\.layers: unknown key"),
        ({"arch": "vgg", "depth": 20}, r"models\.m\.depth: unknown key"),
        ({"arch": "torchvision", "name": "resnet18", "skip": True}, r"models\.m\.skip: unknown"),
        ({"arch": "transformer"}, r"models\.m\.arch"),
        ({"hidden": [3]}, r"models\.m\.arch"),
        ({"arch": 3}, r"models\.m\.arch"),
        ({"arch": "mlp", "hidden": 128}, r"models\.m\.hidden"),
        ({"arch": "mlp", "hidden": [0]}, r"models\.m\.hidden\[0\]"),
        ({"arch": "mlp", "hidden": [True]}, r"models\.m\.hidden\[0\]"),
        ({"arch": "mlp", "activation": "tanh"}, r"models\.m\.activation"),
        ({"arch": "resnet", "depth": "20"}, r"models\.m\.depth"),
        ({"arch": "resnet", "depth": 20.0}, r"models\.m\.depth"),
        ({"arch": "resnet", "skip": "yes"}, r"models\.m\.skip"),
        ({"arch": "resnet", "skip": 1}, r"models\.m\.skip"),
        ({"arch": "resnet", "width": 0}, r"models\.m\.width"),
        ({"arch": "vgg", "layers": [16, "X"]}, r"models\.m\.layers\[1\]"),
        ({"arch": "vgg", "layers": "vgg17"}, r"models\.m\.layers"),
        ({"arch": "vgg", "layers": []}, r"models\.m\.layers"),
        ({"arch": "vgg", "width_mult": True}, r"models\.m\.width_mult"),
        ({"arch": "vgg", "width_mult": -1.0}, r"models\.m\.width_mult"),
        ({"arch": "vgg", "bn": "no"}, r"models\.m\.bn"),
        ({"arch": "mlp", "bn_weight_init": "zeros"}, r"models\.m\.bn_weight_init"),
        ({"arch": "torchvision"}, r"models\.m\.name"),
        ({"arch": "torchvision", "name": "alexnet"}, r"models\.m\.name"),
        ({"arch": "torchvision", "name": "resnet18", "weights": 3}, r"models\.m\.weights"),
    ],
)
def test_spec_errors_name_the_key(spec, where):
    with pytest.raises(ModelSpecError, match=where):
        build_model(spec, 10, DIGITS, key="models.m")


def test_spec_must_be_a_mapping_and_error_is_value_error():
    with pytest.raises(ModelSpecError, match=r"^models\.m: expected a mapping"):
        build_model(["mlp"], 10, DIGITS, key="models.m")
    assert issubclass(ModelSpecError, ValueError)


def test_default_key_in_messages():
    with pytest.raises(ModelSpecError, match=r"^model\.hiden"):
        build_model({"arch": "mlp", "hiden": [1]}, 10, DIGITS)


@pytest.mark.parametrize(("classes", "shape"), [(0, DIGITS), (10, (8, 8)), (10, (1, 0, 8))])
def test_bad_shapes(classes, shape):
    with pytest.raises(ValueError):
        build_model({"arch": "mlp"}, classes, shape)


# --------------------------------------------------------------------------- initialization


def test_bn_init_ones_and_zero_bias():
    for spec in (SMALL_SPECS["resnet8"], SMALL_SPECS["vgg_small"]):
        for bn in bn_layers(build_model(spec, 10, DIGITS)):
            assert torch.equal(bn.weight, torch.ones_like(bn.weight))
            assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


def _bn_weights(spec: dict) -> torch.Tensor:
    model = build_model(spec, 10, DIGITS)
    assert bn_layers(model)
    for bn in bn_layers(model):
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    return torch.cat([bn.weight.detach() for bn in bn_layers(model)])


@pytest.mark.parametrize("arch", ["resnet", "vgg", "torchvision"])
def test_bn_init_uniform(arch):
    spec = {
        "resnet": {"arch": "resnet", "depth": 8, "width": 8},
        "vgg": {"arch": "vgg", "layers": [64, "M", 64]},
        "torchvision": tv("resnet18"),
    }[arch]
    w = _bn_weights({**spec, "bn_weight_init": "uniform"})
    assert w.min() >= 0.0 and w.max() <= 1.0
    assert 0.4 < w.mean().item() < 0.6
    assert w.std().item() > 0.2


def test_bn_init_normal_on_wide_layers():
    w = _bn_weights({"arch": "vgg", "layers": [512, 512], "bn_weight_init": "normal"})
    assert w.numel() == 1024
    assert abs(w.std().item() - 0.1) < 0.01
    assert abs(w.mean().item()) < 0.02
    assert (w < 0).any()


def test_convs_are_kaiming_fan_out():
    model = build_model({"arch": "vgg", "layers": [256, 256]}, 10, DIGITS)
    w = model.features[3].weight  # 256 -> 256, fan_out = 256 * 9
    assert abs(w.std().item() - (2.0 / (256 * 9)) ** 0.5) < 0.002


@pytest.mark.parametrize("name", [*sorted(SMALL_SPECS), "mobilenet_v2"])
def test_determinism(name):
    spec = SMALL_SPECS.get(name) or tv(name)
    states = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        states.append(build_model({**spec, "bn_weight_init": "uniform"}, 10, DIGITS).state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


# --------------------------------------------------------------------------- weights files


@pytest.fixture(scope="module")
def imagenet_resnet18(tmp_path_factory):
    """A 1000-class resnet18 state dict (random, standing in for ImageNet weights) on disk."""
    torch.manual_seed(123)
    source = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for bn in bn_layers(source):
            bn.weight.uniform_(0.5, 1.5)
            bn.running_mean.normal_()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(source.state_dict(), path)
    return path, source.state_dict()


@pytest.mark.parametrize("bn_init", ["ones", "normal"])
def test_weights_round_trip(imagenet_resnet18, bn_init):
    path, state = imagenet_resnet18
    spec = tv("resnet18", weights=str(path), bn_weight_init=bn_init)
    model = build_model(spec, 7, CIFAR, key="models.tv")
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for name, tensor in state.items():
        if not name.startswith("fc."):
            assert torch.equal(loaded[name], tensor), name
    assert loaded["fc.weight"].shape == (7, 512) and loaded["fc.bias"].shape == (7,)
    assert model(torch.randn(2, *CIFAR)).shape == (2, 7)


def test_weights_same_head_kept_and_gray_input(imagenet_resnet18, tmp_path):
    path, state = imagenet_resnet18
    same = build_model(tv("resnet18", weights=str(path)), 1000, CIFAR).state_dict()
    assert all(torch.equal(same[k], v) for k, v in state.items())
    gray = build_model(tv("resnet18", weights=path), 7, (1, 32, 32)).state_dict()
    assert gray["conv1.weight"].shape == (64, 1, 7, 7)
    for name, tensor in state.items():
        if not name.startswith(("fc.", "conv1.")):
            assert torch.equal(gray[name], tensor), name
    # a fine-tuned 7-class, 1-channel file loads back completely
    torch.save(gray, tmp_path / "tuned.pt")
    again = build_model(tv("resnet18", weights=str(tmp_path / "tuned.pt")), 7, (1, 32, 32))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in gray.items())


def test_weights_errors(tmp_path):
    with pytest.raises(ModelSpecError, match=r"models\.tv\.weights.*does not exist"):
        build_model(tv("resnet18", weights=str(tmp_path / "nope.pt")), 7, CIFAR, key="models.tv")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ModelSpecError, match=r"models\.tv\.weights"):
        build_model(tv("resnet18", weights=str(tmp_path / "list.pt")), 7, CIFAR, key="models.tv")
    torch.save({"fc.weight": torch.zeros(3, 512)}, tmp_path / "partial.pt")
    with pytest.raises(ModelSpecError, match=r"models\.tv\.weights"):
        build_model(tv("resnet18", weights=str(tmp_path / "partial.pt")), 7, CIFAR, key="models.tv")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "nohead.pt")
    with pytest.raises(ModelSpecError, match=r"models\.tv\.weights.*fc\.weight"):
        build_model(tv("resnet18", weights=str(tmp_path / "nohead.pt")), 7, CIFAR, key="models.tv")
