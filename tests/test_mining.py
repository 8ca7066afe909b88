"""Tests of landscape.mining against closed forms on quadratic losses (float64).

The quadratic model's loss is, per sample, ``0.5 (w + x)^T A (w + x) + c^T (w + x)`` with ``w`` the
concatenation of two parameters: its Hessian is ``A`` exactly, its gradient
``A (w + mean x) + c``, and every reference below is written out with numpy from ``A``, ``c`` and
the data, not through the library. A linear model with MSE loss gives a second quadratic whose
Hessian trace is known in closed form.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.directions import negative_gradient, towards, trainable
from landscape.mining import (
    cosine_similarity,
    cosine_table,
    descent_angles,
    loss_change_samples,
    mine_vvv,
    mine_wpeak,
    soa_curve,
)
from landscape.models import build_model

F64 = torch.float64
N = 12  # dimension of the quadratic problems


# --------------------------------------------------------------------------- fixtures


class Quadratic(nn.Module):
    """Outputs ``w + x`` with ``w = cat(w1, w2)``; the loss below makes it a quadratic."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w1 = nn.Parameter(w[:5].clone())
        self.w2 = nn.Parameter(w[5:].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.w1, self.w2]) + x


def quadratic_loss(A: torch.Tensor, c: torch.Tensor):
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (0.5 * ((out @ A) * out).sum(-1) + out @ c).mean()

    return loss


def make_problem(eigenvalues, *, batch_sizes=(7, 9, 4, 12), noise=0.3, seed=0):
    """A quadratic problem: ``(model, batches, loss, A, c, X)`` with ``X`` all inputs stacked."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    A = q @ np.diag(np.asarray(eigenvalues, dtype=float)) @ q.T
    A = 0.5 * (A + A.T)
    c = rng.standard_normal(N)
    theta = rng.standard_normal(N)
    batches = []
    for size in batch_sizes:
        x = torch.as_tensor(noise * rng.standard_normal((size, N)))
        batches.append((x, torch.zeros(size, dtype=torch.long)))
    model = Quadratic(torch.as_tensor(theta))
    loss = quadratic_loss(torch.as_tensor(A), torch.as_tensor(c))
    X = np.concatenate([b[0].numpy() for b in batches])
    return model, batches, loss, A, c, X


def ref_loss(w: np.ndarray, A: np.ndarray, c: np.ndarray, X: np.ndarray) -> float:
    """Mean over all samples of ``0.5 (w + x)^T A (w + x) + c^T (w + x)``."""
    z = w[None, :] + X
    return float(np.mean(0.5 * np.einsum("ij,jk,ik->i", z, A, z) + z @ c))


def flat(d) -> np.ndarray:
    return torch.cat([t.detach().reshape(-1) for t in d.values()]).double().numpy()


def as_direction(v: np.ndarray) -> dict[str, torch.Tensor]:
    t = torch.as_tensor(v, dtype=F64)
    return {"w1": t[:5].clone(), "w2": t[5:].clone()}


def vector_to(v: np.ndarray, like) -> dict[str, torch.Tensor]:
    """A flat float64 numpy vector as ``{name: tensor}`` with the shapes of ``like``."""
    out, start = {}, 0
    for name, t in like.items():
        out[name] = torch.as_tensor(v[start : start + t.numel()]).reshape(t.shape)
        start += t.numel()
    return out


def snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {m: m.training for m in model.modules()},
        [p.grad for p in model.parameters()],
        [p.requires_grad for p in model.parameters()],
    )


def assert_unchanged(model: nn.Module, snap) -> None:
    state, flags, grads, req = snapshot(model)
    for k, v in snap[0].items():
        assert v.dtype == state[k].dtype and torch.equal(v, state[k]), f"{k} changed"
    assert flags == snap[1], "training flags changed"
    assert all(g is None for g in grads) and all(g is None for g in snap[2]), ".grad was set"
    assert req == snap[3]


def report(name: str, got: np.ndarray, want: np.ndarray, atol: float) -> str:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    diff = np.abs(got - want)
    i = int(np.argmax(diff))
    return (
        f"{name}: max |diff| {diff.max():.3g} > atol {atol:g} at flat index {i} "
        f"(got {got.reshape(-1)[i]!r}, want {want.reshape(-1)[i]!r})"
    )


def assert_close(name: str, got, want, atol: float) -> None:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    want = np.broadcast_to(want, got.shape) if want.ndim == 0 else want
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    assert np.all(np.abs(got - want) <= atol), report(name, got, want, atol)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # these models are tiny: on a shared CPU, intra-op threads only add contention (up to 40x)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_batches(digits):
    x, y = digits.train.x[:96], digits.train.y[:96]
    return [(x[:40], y[:40]), (x[40:72], y[40:72]), (x[72:], y[72:])]


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(1)
    return build_model({"arch": "mlp", "hidden": [8]}, 10, (1, 8, 8))


# --------------------------------------------------------------------------- s.o.a. (V14)


def test_soa_curve_is_exact_on_a_quadratic():
    model, batches, loss, A, c, X = make_problem(
        [3, 2, 1.5, 1, 0.7, 0.5, 0.3, 0.1, -0.2, -0.5, -1, 2.5]
    )
    theta = flat(trainable(model))
    eps = np.random.default_rng(5).standard_normal(N)
    lambdas = np.linspace(-1, 0, 11)
    out = soa_curve(model, batches, as_direction(eps), loss=loss, dtype=F64, local_loss=True)
    assert_close("lambdas", out["lambdas"], lambdas, 0)
    xbar = X.mean(axis=0)
    want_loss = [ref_loss(theta + lam * eps, A, c, X) for lam in lambdas]
    want_slope = [eps @ (A @ (theta + lam * eps + xbar) + c) for lam in lambdas]
    assert_close("loss", out["loss"], want_loss, 1e-12)
    assert_close("slope", out["slope"], want_slope, 1e-11)
    assert_close("curvature", out["curvature"], np.full(11, eps @ A @ eps), 1e-11)
    assert out["quadratic"].shape == out["x"].shape == (11, 11)
    assert_close("offsets", out["offsets"], np.linspace(-0.05, 0.05, 11), 1e-15)
    want_local = [[ref_loss(theta + x * eps, A, c, X) for x in row] for row in out["x"]]
    # the s.o.a. of a quadratic is the loss itself
    assert_close("quadratic vs closed form", out["quadratic"], want_local, 1e-10)
    assert_close("quadratic vs local_loss", out["quadratic"], out["local_loss"], 1e-10)


def test_soa_curve_is_second_order_on_a_smooth_network(digits_batches):
    torch.manual_seed(2)  # tanh, not ReLU: kinks would break the O(h^3) remainder
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10))
    eps = {n: 0.05 * torch.randn_like(p) for n, p in trainable(net).items()}
    errors = []
    for h in (0.02, 0.01):
        kw = {"half_width": h, "num_local": 3, "local_loss": True, "dtype": F64}
        out = soa_curve(net, digits_batches, eps, [-0.5, 0.0], **kw)
        errors.append(np.abs(out["quadratic"] - out["local_loss"])[:, [0, 2]].max())
        assert np.all(out["quadratic"][:, 1] == out["loss"])
    # the remainder of a second-order expansion is O(h^3): halving h divides it by about 8
    assert 5 < errors[0] / errors[1] < 12, errors


# --------------------------------------------------------------------------- Algorithm 1


def test_mine_wpeak_finds_the_negative_curvature_direction():
    eigs = [3, 2.5, 2, 1.5, 1.2, 1, 0.8, 0.6, 0.5, 0.4, -0.1, -1.0]
    model, batches, loss, A, c, X = make_problem(eigs)
    snap = snapshot(model)
    eps = mine_wpeak(model, batches, epochs=10, steps_per_epoch=60, lr=0.1, seed=3, loss=loss)
    assert_unchanged(model, snap)
    assert list(eps) == ["w1", "w2"] and eps["w1"].dtype == F64
    values, vectors = np.linalg.eigh(A)
    e = flat(eps)
    cos = abs(e @ vectors[:, 0]) / np.linalg.norm(e)
    assert values[0] == pytest.approx(-1.0)
    assert cos > 0.99, cos
    # and the curve is a w-peak: the loss falls on both sides of theta
    theta = flat(trainable(model))
    base = ref_loss(theta, A, c, X)
    assert ref_loss(theta + e, A, c, X) < base and ref_loss(theta - e, A, c, X) < base


def test_mine_wpeak_on_a_convex_quadratic_shrinks_to_zero():
    # no negative curvature: E[eps] contracts, only the zero-mean gradient noise is left
    model, batches, loss, A, c, X = make_problem(np.linspace(0.5, 3, N))
    eps = mine_wpeak(model, batches, epochs=5, steps_per_epoch=40, lr=0.05, seed=0, loss=loss)
    g = np.linalg.norm(A @ (flat(trainable(model)) + X.mean(0)) + c)
    assert np.linalg.norm(flat(eps)) < 0.5 * g


def test_mine_wpeak_stays_at_zero_without_gradients():
    _, _, _, A, _, _ = make_problem([-1.0, *np.linspace(0.5, 3, N - 1)])
    # theta = 0 is an exact saddle of 0.5 w^T A w: every batch gradient is exactly zero
    model = Quadratic(torch.zeros(N, dtype=F64))
    loss = quadratic_loss(torch.as_tensor(A), torch.zeros(N, dtype=F64))
    batches = [(torch.zeros(4, N, dtype=F64), torch.zeros(4, dtype=torch.long))]
    with pytest.warns(RuntimeWarning, match="zero"):
        eps = mine_wpeak(model, batches, epochs=2, lr=0.1, loss=loss)
    assert not np.any(flat(eps))
    # from a nonzero start the same saddle's negative direction is found
    init = as_direction(np.random.default_rng(1).standard_normal(N) * 1e-3)
    eps = mine_wpeak(model, batches, epochs=10, steps_per_epoch=30, lr=0.2, loss=loss, init=init)
    vectors = np.linalg.eigh(A)[1]
    assert abs(flat(eps) @ vectors[:, 0]) / np.linalg.norm(flat(eps)) > 0.99


# --------------------------------------------------------------------------- Algorithm 2


def vvv_fixed_point(A, c, theta, gamma, alpha):
    """Minimizer of L(phi) + gamma E L((1 - lam) theta + lam phi), lam ~ U[.5-a, .5+a]."""
    m2 = 0.25 + alpha**2 / 3
    rhs = -(1 + gamma / 2) * c - gamma * (0.5 - m2) * (A @ theta)
    return np.linalg.solve((1 + gamma * m2) * A, rhs)


def test_mine_vvv_converges_to_the_closed_form_minimizer():
    model, _, loss, A, c, _ = make_problem(np.linspace(0.5, 3, N))
    batches = [(torch.zeros(5, N, dtype=F64), torch.zeros(5, dtype=torch.long))]
    theta = flat(trainable(model))
    snap = snapshot(model)
    kw = {"epochs": 4, "steps_per_epoch": 100, "loss": loss}
    eps = mine_vvv(model, batches, alpha=0.0, gamma=0.5, lr=0.2, **kw)
    assert_unchanged(model, snap)
    want = vvv_fixed_point(A, c, theta, 0.5, 0.0) - theta
    assert_close("eps", flat(eps), want, 1e-9 * np.linalg.norm(want))
    # with alpha > 0 lambda is random: SGD hovers around the minimizer for E[lam^2] = 1/4 + a^2/3
    eps = mine_vvv(model, batches, alpha=0.3, gamma=0.9, lr=0.02, **kw)
    want = vvv_fixed_point(A, c, theta, 0.9, 0.3) - theta
    other = vvv_fixed_point(A, c, theta, 0.9, 0.0) - theta
    err = np.linalg.norm(flat(eps) - want)
    assert err < 0.02 * np.linalg.norm(want), err
    assert err < 0.5 * np.linalg.norm(want - other)  # the alpha term is seen


def test_mine_vvv_midpoint_is_lower_than_along_a_random_direction():
    model, batches, loss, A, c, X = make_problem(np.linspace(0.5, 3, N))
    theta = flat(trainable(model))
    e = flat(mine_vvv(model, batches, alpha=0.1, gamma=0.5, epochs=5, lr=0.05, seed=1, loss=loss))
    r = np.random.default_rng(0).standard_normal(N)
    r *= np.linalg.norm(e) / np.linalg.norm(r)
    base = ref_loss(theta, A, c, X)
    assert ref_loss(theta + e, A, c, X) < base  # phi has a lower loss than theta
    assert ref_loss(theta + 0.5 * e, A, c, X) < ref_loss(theta + 0.5 * r, A, c, X)
    assert ref_loss(theta + 0.5 * e, A, c, X) < base


# --------------------------------------------------------------------------- angles (V5)


def test_descent_angles(mlp, digits_batches):
    params = trainable(mlp)
    n = sum(p.numel() for p in params.values())
    g0 = negative_gradient(mlp, [digits_batches[0]])
    other = copy.deepcopy(mlp)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p))
    targets = {
        "g0": g0,
        "minus_g0": {k: -v for k, v in g0.items()},
        "theta_f - theta_cur": towards(params, trainable(other)),
    }
    snap = snapshot(mlp)
    out = descent_angles(mlp, digits_batches, num_directions=100, seed=0, targets=targets)
    assert_unchanged(mlp, snap)
    names = list(out["names"])
    assert names == ["g_batch[0]", "g_batch[1]", "g_batch[2]", *targets]
    assert out["gaussian"].shape == (100, 6) and out["between"].shape == (6, 6)
    between = out["between"]
    # exact: 2 atan2(|u - v|, |u + v|) is 0 for u = v and 180 for u = -v (acos would be ~1e-6 off)
    assert np.all(np.diag(between) == 0)
    assert between[0, 3] == 0  # the batch gradient with itself
    assert between[0, 4] == 180.0
    assert_close("symmetric", between, between.T, 1e-9)
    # an independent check of one angle
    a, b = flat(g0), flat(negative_gradient(mlp, [digits_batches[1]]))
    want = math.degrees(math.acos(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    assert between[0, 1] == pytest.approx(want, abs=1e-6)
    # isotropic Gaussians: cos has mean 0 and variance 1/n, i.e. angles 90 +- 57.3 / sqrt(n)
    cos = np.cos(np.radians(out["gaussian"]))
    assert abs(out["gaussian"].mean() - 90) < 1.0
    assert 0.6 < cos.var() * n < 1.5, cos.var() * n
    assert np.all(np.abs(out["gaussian"] - 90) < 6 * 57.3 / math.sqrt(n))
    # a tiny angle (1e-9 rad) survives: arccos of the cosine would give 0
    net64 = copy.deepcopy(mlp).double()
    x0, y0 = digits_batches[0]
    g = flat(negative_gradient(net64, [(x0.double(), y0)]))
    w = np.random.default_rng(0).standard_normal(g.size)
    w -= (w @ g) / (g @ g) * g
    tilted = g + 1e-9 * np.linalg.norm(g) * w / np.linalg.norm(w)
    like = trainable(net64)
    tiny = descent_angles(
        net64, [], num_directions=0, targets={"g": vector_to(g, like), "t": vector_to(tilted, like)}
    )
    assert tiny["gaussian"].shape == (0, 2)
    assert tiny["between"][0, 1] == pytest.approx(math.degrees(1e-9), rel=1e-6)
    # the Gaussian angles against g0 and minus_g0 add up to 180 degrees
    assert_close("supplementary", out["gaussian"][:, 3] + out["gaussian"][:, 4], 180.0, 1e-9)
    again = descent_angles(mlp, digits_batches, num_directions=100, seed=0, targets=targets)
    assert np.array_equal(again["gaussian"], out["gaussian"])
    other_seed = descent_angles(mlp, digits_batches[:1], num_directions=5, seed=1)
    assert not np.array_equal(other_seed["gaussian"], out["gaussian"][:5, :1])


# --------------------------------------------------------------------------- cosines (V9)


def test_cosine_similarity_and_table():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(N), rng.standard_normal(N)
    da, db = as_direction(a), as_direction(b)
    want = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert cosine_similarity(da, db) == pytest.approx(want, abs=1e-14)
    assert cosine_similarity(da, da) == pytest.approx(1.0, abs=1e-14)
    assert cosine_similarity(da, {k: -3 * v for k, v in da.items()}) == pytest.approx(-1, abs=1e-14)
    reordered = {"w2": db["w2"], "w1": db["w1"]}
    assert cosine_similarity(da, reordered) == pytest.approx(want, abs=1e-14)
    assert math.isnan(cosine_similarity(da, {k: torch.zeros_like(v) for k, v in da.items()}))
    with pytest.raises(ValueError, match="names"):
        cosine_similarity(da, {"w1": db["w1"]})

    q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    vecs = torch.as_tensor(q[:, :4])  # flat (n, k) unit columns, rows in w1, w2 order
    mined = [as_direction(q[:, 2] * 5.0), as_direction(-q[:, 0] + q[:, 1])]
    mined_reordered = [{"w2": m["w2"], "w1": m["w1"]} for m in mined]
    want = np.array([[0, 0, 1, 0], [2**-0.5, 2**-0.5, 0, 0]])
    for m in (mined, mined_reordered):
        assert_close("table", cosine_table(m, vecs, names=["w1", "w2"]), want, 1e-14)
    as_dirs = [as_direction(q[:, j]) for j in range(4)]
    assert_close("table of directions", cosine_table(mined_reordered, as_dirs), want, 1e-14)
    with pytest.raises(ValueError, match="names"):
        cosine_table(mined, vecs)
    with pytest.raises(ValueError, match="names"):
        cosine_table([{"w1": mined[0]["w1"]}], vecs, names=["w1", "w2"])


# --------------------------------------------------------------------------- loss change (V13)


def test_loss_change_samples_mean_is_half_lambda2_sigma2_trace():
    torch.manual_seed(3)
    model = nn.Linear(6, 3).double()
    sizes = (20, 30, 50)
    xs = [torch.randn(s, 6, dtype=F64) for s in sizes]
    batches = [(x, torch.randn(len(x), 3, dtype=F64)) for x in xs]
    X = torch.cat(xs).numpy()
    # L = 1/(3N) sum_i ||W x_i + b - y_i||^2: H = 2/(3N) sum_i [x_i;1][x_i;1]^T per output row
    trace = 2.0 / len(X) * float(np.sum(X**2) + len(X))
    lambdas = [0.0, 0.1, 1.0]

    def mse(out, y):  # not F.mse_loss: its jvp-of-grad fails in torch 2.14 (ZeroTensors)
        return ((out - y) ** 2).mean()

    snap = snapshot(model)
    out = loss_change_samples(
        model,
        batches,
        lambdas=lambdas,
        sigma=0.5,
        num_samples=200,
        seed=2,
        trace=trace,
        loss=mse,
    )
    assert_unchanged(model, snap)
    actual, soa = out["actual"], out["soa"]
    assert actual.shape == soa.shape == (200, 3)
    assert np.all(actual[:, 0] == 0)
    assert_close("actual vs s.o.a. (a quadratic)", actual, soa, 1e-10)
    assert_close("predicted", out["predicted_mean"], 0.5 * np.square(lambdas) * 0.25 * trace, 0)
    for j in (1, 2):
        mean, se = actual[:, j].mean(), actual[:, j].std(ddof=1) / math.sqrt(200)
        assert abs(mean - out["predicted_mean"][j]) < 4 * se, (mean, out["predicted_mean"][j], se)
    # the second directional derivative alone averages to sigma^2 tr(H)
    a = out["curvature"]
    assert abs(a.mean() - 0.25 * trace) < 4 * a.std(ddof=1) / math.sqrt(200)
    no_trace = loss_change_samples(model, batches, lambdas=[0.1], num_samples=2, loss=mse)
    assert np.isnan(no_trace["predicted_mean"]).all()


# --------------------------------------------------------------------------- the caller's model


def test_model_bit_identical_with_batch_norm(digits_batches):
    torch.manual_seed(0)
    model = build_model({"arch": "vgg", "layers": [2, "M", 4]}, 10, (1, 8, 8)).train()
    snap = snapshot(model)
    rng_state = torch.random.get_rng_state()
    small = [(x[:16], y[:16]) for x, y in digits_batches[:2]]
    for mode in ("train", "eval"):
        eps = mine_wpeak(model, small, epochs=2, lr=0.05, bn_mode=mode)
        assert_unchanged(model, snap)
        mine_vvv(model, small, alpha=0.1, epochs=1, lr=0.05, bn_mode=mode, init=eps)
        assert_unchanged(model, snap)
    descent_angles(model, small, num_directions=2, bn_mode="train")
    assert_unchanged(model, snap)
    soa_curve(model, small, eps, [-0.5, 0.0], num_local=3, local_loss=True)
    assert_unchanged(model, snap)
    loss_change_samples(model, small, lambdas=[0.01], num_samples=2)
    assert_unchanged(model, snap)
    assert torch.equal(rng_state, torch.random.get_rng_state())


def test_determinism_with_a_seed(mlp, digits_batches):
    def run(fn, seed, **kw):
        return fn(mlp, digits_batches, epochs=2, lr=0.1, seed=seed, **kw)

    for fn, kw in ((mine_wpeak, {}), (mine_vvv, {"alpha": 0.1})):
        a, b, c = run(fn, 0, **kw), run(fn, 0, **kw), run(fn, 1, **kw)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)
        # the global RNG plays no part
        torch.manual_seed(123)
        assert all(torch.equal(a[k], v) for k, v in run(fn, 0, **kw).items())


def test_invalid_arguments(mlp, digits_batches):
    with pytest.raises(ValueError, match="bn_mode"):
        mine_wpeak(mlp, digits_batches, bn_mode="recompute")
    with pytest.raises(ValueError, match="epochs"):
        mine_wpeak(mlp, digits_batches, epochs=0)
    with pytest.raises(ValueError, match="lr"):
        mine_vvv(mlp, digits_batches, lr=0.0)
    with pytest.raises(ValueError, match="alpha"):
        mine_vvv(mlp, digits_batches, alpha=0.6)
    with pytest.raises(ValueError, match="no batches"):
        mine_wpeak(mlp, [])
    partial = dict(list(trainable(mlp).items())[:1])
    with pytest.raises(ValueError, match="missing"):
        soa_curve(mlp, digits_batches, partial)
    with pytest.raises(ValueError, match="init"):
        mine_wpeak(mlp, digits_batches, init=partial)
    with pytest.raises(ValueError, match="targets"):
        descent_angles(mlp, digits_batches, num_directions=1, targets={"t": partial})


def test_loss_change_at_lambda_1e_3_needs_float64(digits):
    """At lambda = 0.001 near a minimum the actual change is ~1e-5 on a loss of ~1: float32
    forward passes blur it; the default (float64 actual change, float32 products) matches the
    dense float64 second-order prediction lambda eps.g + 0.5 lambda^2 eps.H.eps per sample."""
    from torch.func import functional_call, grad, hessian

    from landscape.hessian.lanczos import _probe
    from landscape.params import unflatten

    x = digits.train.x[:200].double()
    y = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(0))  # loss ~ 0.9
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10)).double()
    opt = torch.optim.LBFGS(
        model.parameters(), max_iter=500, tolerance_grad=1e-12, tolerance_change=0,
        history_size=50, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure():
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(model(x), y)
        value.backward()
        return value

    opt.step(closure)
    model = model.float()
    for p in model.parameters():
        p.grad = None
    ref = copy.deepcopy(model).double()
    like = {n: p.detach() for n, p in ref.named_parameters()}
    theta = torch.cat([p.reshape(-1) for p in like.values()])

    def dense_loss(flat):
        logits = functional_call(ref, unflatten(flat, like), (x,))
        return torch.nn.functional.cross_entropy(logits, y)

    g, H = grad(dense_loss)(theta), hessian(dense_loss)(theta)
    lam, S = 1e-3, 40
    gen = torch.Generator().manual_seed(5)
    eps = [_probe(len(theta), gen, "gaussian", torch.float32, "cpu").double() for _ in range(S)]
    quadratic = np.array([0.5 * lam**2 * float(e @ H @ e) for e in eps])
    predicted = np.array([lam * float(e @ g) for e in eps]) + quadratic
    xf = x.float()
    batches = [(xf[:120], y[:120]), (xf[120:], y[120:])]
    common = {"lambdas": [lam], "num_samples": S, "seed": 5, "dtype": torch.float32}
    default = loss_change_samples(model, batches, **common)["actual"][:, 0]
    scale = np.abs(quadratic).max()
    assert np.abs(default - predicted).max() < 0.05 * scale
    assert default.mean() == pytest.approx(predicted.mean(), rel=0.01)
    assert default.std() == pytest.approx(predicted.std(), rel=0.05)
    blurred = loss_change_samples(model, batches, loss_dtype=torch.float32, **common)
    blurred = blurred["actual"][:, 0]
    assert np.abs(blurred - predicted).max() > 0.3 * scale  # float32: visibly another distribution
    assert abs(blurred.mean() - predicted.mean()) > 0.2 * predicted.mean()


# ------------------------------------------------------------------ default settings (V9, V10)


def _default_direction(name):
    """A direction block of the repository's default config.yaml (anchors and merges resolved)."""
    import pathlib

    import yaml

    path = pathlib.Path(__file__).resolve().parents[1] / "config.yaml"
    return dict(yaml.safe_load(path.read_text())["directions"][name])


def _digits_mlp(digits, epochs):
    """The default MLP (64-32-10) at its seed-0 initialization, trained ``epochs`` epochs with
    the default run's optimizer (SGD, lr 0.1, momentum 0.9, weight decay 5e-4, batch 128)."""
    torch.manual_seed(0)
    model = build_model({"arch": "mlp", "hidden": [32]}, 10, (1, 8, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for x, y in digits.train.batches(128, shuffle=True, generator=gen):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


def _line_loss(model, eps, lambdas, batches):
    """Mean training loss at theta + lambda eps, by a plain loop over points and batches."""
    out = []
    for lam in lambdas:
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in moved.named_parameters():
                p.add_(float(lam) * eps[name])
            total = sum(
                float(torch.nn.functional.cross_entropy(moved(x), y, reduction="sum"))
                for x, y in batches
            )
        out.append(total / sum(len(y) for _, y in batches))
    return np.array(out)


def _relative_norm(eps, model):
    num = math.sqrt(sum(float(t.double().pow(2).sum()) for t in eps.values()))
    den = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in model.parameters()))
    return num / den


def test_default_algorithm_1_moves_and_mines_a_w_peak_at_the_initialization(digits):
    """config.yaml's mined_wpeak at the default MLP's initialization: ||eps|| is of the order of
    ||theta|| (it was 0.1% with 40 steps), and the loss falls by far on both sides of theta."""
    from landscape.directions import make_direction

    spec = _default_direction("mined_wpeak")
    model = _digits_mlp(digits, epochs=0)
    eps = make_direction(spec, model, data=digits)
    assert _relative_norm(eps, model) > 0.5
    batches = list(digits.train.batches(512))
    lam = np.linspace(-1, 1, 21)
    y = _line_loss(model, eps, lam, batches)
    assert y[10] == pytest.approx(math.log(10), abs=0.1)  # theta: chance level
    assert y[:10].min() < 0.5 * y[10] and y[11:].min() < 0.5 * y[10]  # both sides fall


def test_default_algorithm_2_from_a_fresh_initialization_finds_a_second_minimum(digits):
    """config.yaml's mined_vvv (phi_init: init) on a trained MLP: phi ends in another basin, so
    the curve theta + lambda (phi - theta) has two minima, near theta and near phi, with a
    barrier between them; phi starting at theta (the old start) moves far less."""
    from landscape.directions import fresh_initialization, make_direction

    spec = _default_direction("mined_vvv")
    assert spec["phi_init"] == "init"
    model = _digits_mlp(digits, epochs=15)
    meta = {
        "spec": {"model": {"arch": "mlp", "hidden": [32]}, "model_name": "mlp"},
        "num_classes": 10,
        "input_shape": [1, 8, 8],
    }
    start = fresh_initialization(meta, spec["init_seed"])
    eps = make_direction(spec, model, data=digits, references={"phi_init": start})
    assert _relative_norm(eps, model) > 0.5
    lam = np.linspace(-1, 2, 31)
    y = _line_loss(model, eps, lam, list(digits.train.batches(512)))
    inner = [i for i in range(1, len(y) - 1) if y[i] < y[i - 1] and y[i] < y[i + 1]]
    assert len(inner) == 2, y
    near_theta, near_phi = (lam[i] for i in inner)
    assert -0.4 <= near_theta <= 0.3 and 0.7 <= near_phi <= 1.4
    barrier = y[inner[0] : inner[1] + 1].max()
    assert barrier > 1.5 * max(y[inner[0]], y[inner[1]])
    at_theta = make_direction({**spec, "phi_init": "theta"}, model, data=digits)
    assert _relative_norm(at_theta, model) < 0.2


def test_mining_stops_with_a_clear_error_when_sgd_diverges():
    model, batches, loss, *_ = make_problem([50.0] * 6 + [1.0] * 6)
    with pytest.raises(FloatingPointError, match=r"mine_wpeak: .*lower lr \(now 100"):
        mine_wpeak(model, batches, loss=loss, epochs=50, lr=100.0, dtype=F64)
    with pytest.raises(FloatingPointError, match=r"mine_vvv: .*lower lr \(now 10"):
        mine_vvv(model, batches, loss=loss, epochs=50, lr=10.0, dtype=F64)
