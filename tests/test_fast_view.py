"""landscape.fast_view: BN folded, ReLUs after their max-pools; the same function and names."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

from landscape.fast_view import FoldedBN, fast_view
from landscape.hessian import HessianLinearOperator
from landscape.models import build_model


class Mixed(nn.Module):
    """Conv -> BN2d (folded); conv -> BN2d and a skip (not: the conv's output has two users);
    ReLU -> max-pool (moved); ReLU -> max-pool and avg-pool (not: two users); BN2d after a sum
    (not: no layer before it); Linear -> BN1d (folded)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        self.bn3 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(12, 5)
        self.bn4 = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        y = self.conv2(x)
        r = self.act(self.pool(torch.relu(self.bn2(y) + y)))
        x = self.bn3(self.pool(r) + F.avg_pool2d(r, 2))
        return self.head(torch.relu(self.bn4(self.fc(x.flatten(1)))))


def _randomized(model: nn.Module) -> nn.Module:
    """Running statistics and BN affine parameters away from their defaults (mean 0, var 1)."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) * 3 + 0.2)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


@pytest.fixture
def mixed():
    torch.manual_seed(0)
    return _randomized(Mixed()).double()


@pytest.fixture
def x():
    return torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(1)).double()


def test_rewrites_only_single_user_pairs(mixed):
    view, folded, moved = fast_view(mixed)
    assert (folded, moved) == (2, 1)
    nodes = list(view.graph.nodes)
    called = [n.target for n in nodes if n.op == "call_module"]
    assert {"bn", "bn4"}.isdisjoint(called) and {"bn2", "bn3", "act"} <= set(called)
    assert isinstance(view.get_submodule("conv"), FoldedBN)
    assert isinstance(view.get_submodule("fc"), FoldedBN)
    first_pool = next(n for n in nodes if n.target == "pool")
    assert first_pool.args[0].target is not torch.relu  # the ReLU now follows the pool
    assert [u.target for u in first_pool.users] == [F.relu]


def test_gradients_at_ties_equal_the_models(mixed):
    """Windows of equal values (integer inputs, zeros after the ReLU): the first maximum gets the
    gradient either way (equal up to the fold's rounding; a different routing would be O(1))."""
    view = fast_view(mixed.float()).module
    x = torch.randint(-1, 2, (5, 1, 8, 8), generator=torch.Generator().manual_seed(4)).float()
    grads = []
    for net in (mixed, view):
        net.zero_grad()
        net(x).square().sum().backward()
        grads.append([p.grad.clone() for p in mixed.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_keeps_names_and_shares_tensors_and_bn_layers(mixed):
    types = {n: type(m) for n, m in mixed.named_modules()}
    view = fast_view(mixed).module
    assert dict(view.named_parameters()).keys() == dict(mixed.named_parameters()).keys()
    assert dict(view.named_buffers()).keys() == dict(mixed.named_buffers()).keys()
    for (n, a), b in zip(mixed.named_parameters(), view.parameters(), strict=True):
        assert a is b, n
    assert view.get_submodule("bn") is mixed.bn  # flags follow the model's
    assert {n: type(m) for n, m in mixed.named_modules()} == types  # the model is not changed


def test_eval_mode_equals_the_model_and_train_mode_is_the_model_itself(mixed, x):
    view = fast_view(mixed).module
    with torch.no_grad():
        torch.testing.assert_close(view(x), mixed(x), rtol=1e-13, atol=1e-13)
        mixed.train()  # batch statistics: the pairs run unfolded, bit for bit
        assert torch.equal(view(x), copy.deepcopy(mixed)(x))


def test_functional_call_substitutes_every_tensor(mixed, x):
    view = fast_view(mixed).module
    other = {n: p + 0.1 * torch.randn_like(p) for n, p in mixed.named_parameters()}
    with torch.no_grad():
        torch.testing.assert_close(
            functional_call(view, other, (x,)),
            functional_call(mixed, other, (x,)),
            rtol=1e-13,
            atol=1e-13,
        )


def test_default_models_rewrite_every_pair(digits):
    for spec, pairs in (
        ({"arch": "vgg", "layers": [16, "M", 32, "M", 64]}, (3, 2)),
        ({"arch": "resnet", "depth": 8, "width": 8}, (9, 0)),
    ):
        torch.manual_seed(0)
        model = _randomized(build_model(spec, 10, (1, 8, 8)))
        view, folded, moved = fast_view(model)
        assert (folded, moved) == pairs
        with torch.no_grad():
            torch.testing.assert_close(view(digits.test.x), model(digits.test.x), rtol=0, atol=1e-5)


def test_model_without_bn_is_not_traced():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    assert fast_view(model) == (model, 0, 0)


@pytest.mark.parametrize("method", ["jvp", "double_backward", "retained"])
def test_hessian_products_of_the_folded_view_equal_the_dense_hessian(method, mixed, x):
    y = torch.arange(7) % 4
    params = {n: p.detach() for n, p in mixed.named_parameters()}
    names = list(params)

    def loss(theta):
        split = dict(
            zip(names, torch.split(theta, [p.numel() for p in params.values()]), strict=True)
        )
        shaped = {n: t.view_as(params[n]) for n, t in split.items()}
        return F.cross_entropy(functional_call(mixed, shaped, (x,)), y)

    dense = hessian(loss)(torch.cat([p.reshape(-1) for p in params.values()]))
    op = HessianLinearOperator(mixed, [(x, y)], dtype=torch.float64, method=method)
    v = torch.randn(op.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(op.matvec(v), dense @ v, rtol=1e-10, atol=1e-12)
