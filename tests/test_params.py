"""Parameter groups, flat views and restriction against hand-derived expectations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.models import build_model
from landscape.params import GROUPS, flatten, group_names, param_groups, restrict, unflatten

# (id, spec, num_classes, input shape, classifier module, expected LAYER1 or None for `layer1`)
MODELS = [
    ("mlp", {"arch": "mlp", "hidden": [16, 8]}, 10, (1, 8, 8), "classifier",
     ["features.0.weight", "features.0.bias"]),
    ("resnet8", {"arch": "resnet", "depth": 8, "width": 4}, 10, (3, 8, 8), "fc", None),
    ("resnet8-noskip", {"arch": "resnet", "depth": 8, "width": 4, "skip": False}, 10, (3, 8, 8),
     "fc", None),
    ("vgg", {"arch": "vgg", "layers": [8, "M", 16]}, 10, (1, 8, 8), "classifier",
     ["features.0.weight", "features.1.weight", "features.1.bias"]),
    ("vgg-nobn", {"arch": "vgg", "layers": [8, "M", 16], "bn": False}, 10, (1, 8, 8),
     "classifier", ["features.0.weight", "features.0.bias"]),
    ("resnet18", {"arch": "torchvision", "name": "resnet18"}, 7, (3, 32, 32), "fc", None),
    ("mobilenet_v2", {"arch": "torchvision", "name": "mobilenet_v2"}, 10, (3, 32, 32),
     "classifier.1", ["features.0.0.weight", "features.0.1.weight", "features.0.1.bias"]),
]  # fmt: skip


@pytest.fixture(scope="module", params=MODELS, ids=[m[0] for m in MODELS])
def case(request):
    _, spec, classes, shape, head, layer1 = request.param
    torch.manual_seed(0)
    model = build_model(spec, classes, shape)
    assert model.eval()(torch.zeros(2, *shape)).shape == (2, classes)
    return model, param_groups(model), head, layer1


def test_all_and_classifier(case):
    model, groups, head, _ = case
    assert set(groups) == set(GROUPS)
    assert groups["ALL"] == [n for n, _ in model.named_parameters()]
    assert groups["CLF"] == [f"{head}.weight", f"{head}.bias"]
    assert isinstance(model.get_submodule(head), nn.Linear)


def test_feat_and_clf_partition_all(case):
    _, groups, _, _ = case
    feat, clf = set(groups["FEAT"]), set(groups["CLF"])
    assert not feat & clf
    assert feat | clf == set(groups["ALL"])
    assert len(groups["FEAT"]) + len(groups["CLF"]) == len(groups["ALL"])


def test_conv_is_weights_of_conv_and_linear(case):
    model, groups, _, _ = case
    bn_names = {f"{n}.{p}" for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
                for p in ("weight", "bias")}  # fmt: skip
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert groups["CONV"] == [f"{n}.weight" for n in layers]
    assert not any(n.endswith(".bias") for n in groups["CONV"])
    assert not set(groups["CONV"]) & bn_names


def test_bn_group(case):
    model, groups, _, _ = case
    count = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(groups["BN"]) == 2 * count
    for name in groups["BN"]:
        module = model.get_submodule(name.rpartition(".")[0])
        assert isinstance(module, nn.BatchNorm2d), name


def test_layer1(case):
    _, groups, _, expected = case
    names, everything = groups["LAYER1"], groups["ALL"]
    assert names
    if expected is None:  # a `layer1` block: exactly its parameters, a contiguous run of ALL
        assert names == [n for n in everything if n.startswith("layer1.")]
        start = everything.index(names[0])
        assert everything[start : start + len(names)] == names
    else:  # the first layer: a prefix of ALL
        assert names == expected == everything[: len(names)]


def test_groups_leave_out_frozen_parameters():
    torch.manual_seed(0)
    model = build_model({"arch": "vgg", "layers": [4]}, 3, (1, 4, 4))
    model.features[1].bias.requires_grad_(False)
    groups = param_groups(model)
    assert all("features.1.bias" not in names for names in groups.values())
    assert groups["BN"] == ["features.1.weight"]


def test_group_names_and_unknown_group():
    torch.manual_seed(0)
    model = build_model({"arch": "mlp", "hidden": [4]}, 3, (1, 2, 2))
    assert group_names(model, "CLF") == ["classifier.weight", "classifier.bias"]
    assert group_names(model, "BN") == []
    with pytest.raises(ValueError, match="LAYER1"):
        group_names(model, "layer1")


TENSORS = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor([7.0]), "c": torch.ones(2, 1, 2)}


def test_flatten_unflatten_round_trip():
    flat = flatten(TENSORS)
    assert flat.tolist() == [0, 1, 2, 3, 4, 5, 7, 1, 1, 1, 1]
    back = unflatten(flat, TENSORS)
    assert list(back) == list(TENSORS)
    for name, t in TENSORS.items():
        assert back[name].shape == t.shape
        assert torch.equal(back[name], t)
    assert flatten({}).numel() == 0


def test_unflatten_length_mismatch():
    with pytest.raises(ValueError, match="11"):
        unflatten(torch.zeros(10), TENSORS)
    with pytest.raises(ValueError):
        unflatten(torch.zeros(11, 1), TENSORS)


def test_restrict():
    torch.manual_seed(3)
    d = {"x": torch.randn(3, 4), "y": torch.randn(5), "z": torch.randn(2, 2)}
    r = restrict(d, ["y", "z"])
    assert list(r) == list(d)
    assert r["x"].dtype == d["x"].dtype and r["x"].shape == d["x"].shape
    assert torch.count_nonzero(r["x"]) == 0
    for name in ("y", "z"):
        assert torch.equal(r[name], d[name])
        assert r[name].data_ptr() != d[name].data_ptr()
    r["y"].zero_()  # a copy: the input is untouched
    assert torch.count_nonzero(d["y"]) == 5
    with pytest.raises(ValueError, match="nope"):
        restrict(d, ["nope"])
