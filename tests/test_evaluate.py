"""The per-point evaluator against independent references."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.directions import make_direction
from landscape.evaluate import evaluate_grid, lambda_grid
from landscape.models import build_model


@pytest.fixture
def vgg():
    torch.manual_seed(0)
    model = build_model({"arch": "vgg", "layers": [4, "M", 8]}, 10, (1, 8, 8))
    with torch.no_grad():  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def reference_point(model, direction, lam, x, y, bn_batches=None):
    """Loss/error of theta + lam * d built from scratch with load_state_dict."""
    ref = copy.deepcopy(model)
    state = ref.state_dict()
    for name, d in direction.items():
        state[name] = state[name] + lam * d
    ref.load_state_dict(state)
    if bn_batches is not None:
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        ref.train()
        with torch.no_grad():
            for bx, _ in bn_batches:
                ref(bx)
    ref.eval()
    with torch.no_grad():
        logits = ref(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) != y).double().mean().item()


ENGINES = [
    {"strategy": "pointwise", "first_layer": True},
    {"strategy": "pointwise", "first_layer": False},
    {"strategy": "batched", "first_layer": True, "chunk_size": 2},
    {"strategy": "batched", "first_layer": False},
]


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(1)
    return build_model({"arch": "mlp", "hidden": [16, 12]}, 10, (1, 8, 8)).eval()


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: "-".join(map(str, e.values())))
@pytest.mark.parametrize("bn_mode", ["keep", "recompute"])
@pytest.mark.parametrize("arch", ["vgg", "mlp"])
def test_grid_equals_per_point_reference(request, digits, arch, bn_mode, engine):
    model = request.getfixturevalue(arch)
    d = make_direction({"normalization": "filter", "bias_bn": "normalize", "seed": 3}, model)
    before = copy.deepcopy(model.state_dict())
    lambdas = lambda_grid({"min": -1.0, "max": 1.0, "num": 5})
    bn_batches = list(digits.train.batches(256))[:2]
    out = evaluate_grid(
        model,
        [d],
        lambdas[:, None],
        {"test": digits.test},
        bn_mode=bn_mode,
        bn_batches=bn_batches,
        batch_size=100,
        **engine,
    )
    n = len(digits.test)
    for i, lam in enumerate(lambdas):
        loss, err = reference_point(
            model,
            d,
            lam,
            digits.test.x,
            digits.test.y,
            bn_batches if bn_mode == "recompute" else None,
        )
        assert out["test"]["loss"][i] == pytest.approx(loss, rel=1e-5)
        # float rounding may flip the argmax of a sample sitting on a tie
        assert abs(out["test"]["error"][i] - err) <= 1 / n + 1e-12
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lambda_zero_keep_is_the_base_loss(vgg, digits):
    d = make_direction({"seed": 1}, vgg)
    out = evaluate_grid(vgg, [d], np.zeros((1, 1)), {"train": digits.train}, bn_mode="keep")
    with torch.no_grad():
        loss = F.cross_entropy(vgg(digits.train.x), digits.train.y).item()
    assert out["train"]["loss"][0] == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: "-".join(map(str, e.values())))
def test_two_directions_non_square_grid(vgg, digits, engine):
    d1, d2 = (make_direction({"seed": s}, vgg) for s in (1, 2))
    xs, ys = np.linspace(-1, 1, 7), np.linspace(-0.5, 0.5, 5)
    coords = np.array([(a, b) for a in xs for b in ys])
    out = evaluate_grid(vgg, [d1, d2], coords, {"test": digits.test}, bn_mode="keep", **engine)
    grid = out["test"]["loss"].reshape(7, 5)
    for i, j in [(6, 0), (0, 4), (3, 2)]:
        combo = {n: xs[i] * d1[n] + ys[j] * d2[n] for n in d1}
        loss, _ = reference_point(vgg, combo, 1.0, digits.test.x, digits.test.y)
        assert grid[i, j] == pytest.approx(loss, rel=1e-5)


def test_exploding_loss_is_kept_as_it_came(vgg, digits):
    d = {n: torch.full_like(p, 1e30) for n, p in vgg.named_parameters()}
    out = evaluate_grid(vgg, [d], np.array([[1.0]]), {"test": digits.test}, bn_mode="keep")
    assert not math.isfinite(out["test"]["loss"][0])


def test_bad_arguments(vgg, digits):
    d = make_direction({"seed": 1}, vgg)
    with pytest.raises(ValueError, match="bn_mode"):
        evaluate_grid(vgg, [d], np.zeros((1, 1)), {}, bn_mode="update")
    with pytest.raises(ValueError, match="coords"):
        evaluate_grid(vgg, [d], np.zeros((2, 2)), {}, bn_mode="keep")
    with pytest.raises(ValueError, match="strategy"):
        evaluate_grid(vgg, [d], np.zeros((1, 1)), {}, bn_mode="keep", strategy="fast")
    with pytest.raises(ValueError, match="bn_batches"):
        evaluate_grid(vgg, [d], np.zeros((1, 1)), {}, bn_mode="recompute")
    with pytest.raises(ValueError, match="min"):
        lambda_grid({"min": 1, "max": -1, "num": 3})
