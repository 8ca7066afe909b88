"""The exact Gauss-Newton trace against dense float64 Hessians of tiny piecewise-linear networks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

from landscape.gauss_newton import (
    NotPiecewiseLinearError,
    check_coordinates,
    ggn_trace,
    non_piecewise_linear_modules,
)
from landscape.hessian import HessianLinearOperator
from landscape.models import build_model
from landscape.params import unflatten

F64 = torch.float64
SPECS = {
    "mlp": {"arch": "mlp", "hidden": [8, 6]},
    "vgg": {"arch": "vgg", "layers": [2, "M", 4]},
    "resnet": {"arch": "resnet", "depth": 8, "width": 1},
}


@pytest.fixture(scope="module")
def data(digits):
    return digits.train.x[:150], digits.train.y[:150]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    built = {name: build_model(spec, 10, (1, 8, 8)) for name, spec in SPECS.items()}
    for model in built.values():  # BN statistics and weights away from their initial values
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
    return built


def squared_error(logits, y):
    """Mean over samples of 0.5 ||logits - onehot(y)||^2, written out (no F.mse_loss)."""
    target = (torch.arange(logits.shape[1]) == y[:, None]).to(logits.dtype)
    return 0.5 * ((logits - target) ** 2).sum(1).mean()


def dense_hessian(model, x, y, loss=F.cross_entropy):
    """Dense float64 Hessian of the mean loss over (x, y) in eval mode, as one batch."""
    m = copy.deepcopy(model).double().eval()
    like = {n: p.detach() for n, p in m.named_parameters()}
    flat = torch.cat([p.reshape(-1) for p in like.values()])

    def f(theta):
        return loss(functional_call(m, unflatten(theta, like), (x.double(),)), y)

    return hessian(f)(flat)


@pytest.fixture(scope="module")
def dense(models, data):
    return {name: dense_hessian(m, *data) for name, m in models.items()}


def batches(x, y):
    return [(x[:100], y[:100]), (x[100:], y[100:])]  # unequal batches: weighted by size


@pytest.mark.parametrize("name", list(SPECS))
def test_float64_trace_and_diagonal_equal_the_dense_hessian(name, models, data, dense):
    model, H = models[name], dense[name]
    op = HessianLinearOperator(model, batches(*data), dtype=F64)
    result = ggn_trace(op, checks=12, seed=1)
    assert result.trace == pytest.approx(float(torch.trace(H)), rel=1e-12)
    diag = torch.diagonal(H).numpy()[result.coordinates]
    np.testing.assert_allclose(result.ggn_diagonal, diag, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(result.hessian_diagonal, diag, rtol=1e-10, atol=1e-14)
    assert result.max_difference < 1e-12
    checks = max(12, len(op.shapes))  # at least one per parameter tensor
    assert op.num_matvecs == checks + 1  # the checks and the determinism guard's forward pass


@pytest.mark.parametrize("name", ["mlp", "vgg"])
def test_float32_and_chunking(name, models, data, dense):
    exact = float(torch.trace(dense[name]))
    op = HessianLinearOperator(models[name], batches(*data))
    whole = ggn_trace(op, checks=4)
    assert whole.trace == pytest.approx(exact, rel=1e-5)
    one_at_a_time = ggn_trace(op, checks=0, memory_mb=1e-6)  # chunks of one sample
    assert one_at_a_time.trace == pytest.approx(whole.trace, rel=1e-6)
    assert one_at_a_time.max_difference == 0 and len(one_at_a_time.coordinates) == 0


def test_any_loss_of_the_logits(models, data):
    model = models["mlp"]
    H = dense_hessian(model, *data, loss=squared_error)
    op = HessianLinearOperator(model, batches(*data), loss=squared_error, dtype=F64)
    assert ggn_trace(op, checks=4).trace == pytest.approx(float(torch.trace(H)), rel=1e-12)


def test_model_left_as_it_was(models, data):
    model = models["vgg"].train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ggn_trace(HessianLinearOperator(model, batches(*data)), checks=2)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


class FunctionalTanh(nn.Module):
    """tanh applied in ``forward``: invisible to the module check, caught by the diagonal."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(64, 8), nn.Linear(8, 10)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x.flatten(1))))


def test_refuses_what_is_not_piecewise_linear(models, data):
    torch.manual_seed(0)
    tanh = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10))
    assert non_piecewise_linear_modules(tanh) == ["2 (Tanh)"]
    assert non_piecewise_linear_modules(models["resnet"]) == []
    op = HessianLinearOperator(tanh, [data])
    with pytest.raises(NotPiecewiseLinearError, match=r"2 \(Tanh\).*use xtrace"):
        ggn_trace(op)
    assert op.num_matvecs == 0
    with pytest.raises(NotPiecewiseLinearError, match="bn_mode='eval'"):
        ggn_trace(HessianLinearOperator(models["vgg"], [data], bn_mode="train"))
    for dtype in (torch.float32, F64):
        op = HessianLinearOperator(FunctionalTanh(), [data], dtype=dtype)
        with pytest.raises(NotPiecewiseLinearError, match=r"H_jj = .* but GGN_jj = .* of 'hidden"):
            ggn_trace(op, checks=8)


def test_check_coordinates_visit_every_tensor(models, data):
    op = HessianLinearOperator(models["resnet"], [data])
    sizes = [int(np.prod(s)) for s in op.shapes.values()]
    starts = np.cumsum([0, *sizes])
    coords = check_coordinates(op, len(sizes), seed=3)
    tensors = np.searchsorted(starts, coords, side="right") - 1
    assert sorted(tensors.tolist()) == list(range(len(sizes)))
    assert np.array_equal(coords, check_coordinates(op, len(sizes), seed=3))
    assert not np.array_equal(coords, check_coordinates(op, len(sizes), seed=4))


class SharedLinear(nn.Module):
    """One linear layer applied twice: the loss is quadratic in its weight."""

    def __init__(self):
        super().__init__()
        self.square, self.out = nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.out(torch.relu(self.square(torch.relu(self.square(x.flatten(1))))))


class RowWise(nn.Module):
    """A linear layer over each of the 8 image rows (3-D input: left to jacrev), then a head."""

    def __init__(self):
        super().__init__()
        self.rows, self.out = nn.Linear(8, 3), nn.Linear(24, 10)

    def forward(self, x):
        return self.out(torch.relu(self.rows(x[:, 0])).flatten(1))


def test_weight_sharing_and_sequence_inputs(data):
    torch.manual_seed(0)
    with pytest.raises(NotPiecewiseLinearError, match="'square' is called 2 times"):
        ggn_trace(HessianLinearOperator(SharedLinear(), [data]))
    model = RowWise()
    H = dense_hessian(model, *data)
    result = ggn_trace(HessianLinearOperator(model, batches(*data), dtype=F64), checks=8)
    assert result.trace == pytest.approx(float(torch.trace(H)), rel=1e-12)
    diag = torch.diagonal(H).numpy()[result.coordinates]
    np.testing.assert_allclose(result.ggn_diagonal, diag, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", list(SPECS))
def test_diagonal_check_covers_every_parameter_tensor(name, models, data):
    """ResNet-8 has more tensors than the 16 default checks: each still gets a coordinate."""
    op = HessianLinearOperator(models[name], batches(*data))
    tensors = len(op.shapes)
    result = ggn_trace(op, seed=2)
    starts = np.cumsum([0, *[int(np.prod(s)) for s in op.shapes.values()]])
    checked = np.searchsorted(starts, result.coordinates, side="right") - 1
    assert set(checked.tolist()) == set(range(tensors))
    assert len(result.coordinates) == max(16, tensors)
    assert op.num_matvecs == max(16, tensors) + 1  # one product per check, and the guard
    assert len(check_coordinates(op, 0)) == 0  # checks=0 still skips the check


class BatchStatistics(nn.Module):
    """BN without running statistics: batch statistics even in eval mode (samples coupled)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, track_running_stats=False)
        self.out = nn.Linear(108, 10)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_refuses_batch_norm_without_running_statistics(data):
    torch.manual_seed(0)
    op = HessianLinearOperator(BatchStatistics(), batches(*data), dtype=F64)
    with pytest.raises(NotPiecewiseLinearError, match=r"'bn' .*track_running_stats=False"):
        ggn_trace(op)
    assert op.num_matvecs == 0


class SharedConv(nn.Module):
    """One convolution applied twice: the loss is quadratic in its weight."""

    def __init__(self):
        super().__init__()
        self.conv, self.out = nn.Conv2d(1, 1, 3, padding=1), nn.Linear(64, 10)

    def forward(self, x):
        return self.out(torch.relu(self.conv(torch.relu(self.conv(x)))).flatten(1))


class SharedNorm(nn.Module):
    """One eval-mode BN applied twice: its weight enters the logits as a product with itself."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)
        self.out = nn.Linear(128, 10)

    def forward(self, x):
        return self.out(self.bn(torch.relu(self.bn(self.conv(x)))).flatten(1))


class Tied(nn.Module):
    """Two linear layers holding one weight tensor."""

    def __init__(self):
        super().__init__()
        self.first, self.second, self.out = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)
        self.second.weight = self.first.weight

    def forward(self, x):
        return self.out(torch.relu(self.second(torch.relu(self.first(x.flatten(1))))))


SHARED = [
    (SharedConv, "Conv2d 'conv' is called 2 times"),
    (SharedNorm, "BatchNorm2d 'bn' is called 2 times"),
    (Tied, r"parameter 'first.weight' is shared by modules \['first', 'second'\]"),
]


@pytest.mark.parametrize(("cls", "shared"), SHARED)
def test_refuses_any_module_called_twice(cls, shared, data):
    torch.manual_seed(0)
    op = HessianLinearOperator(cls(), batches(*data), dtype=F64)
    with pytest.raises(NotPiecewiseLinearError, match=shared):
        ggn_trace(op)
    assert op.num_matvecs == 0  # refused before the diagonal check spends products
