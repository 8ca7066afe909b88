"""A9 theory demos: closed forms against autograd, ReLU agreement, pre-activation histograms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape import store
from landscape.models import MLP
from landscape.theory import (
    activation_agreement,
    compute_theory,
    filter_noise,
    fit_softmax,
    model_noise,
    preactivation_shift,
    relu_modules,
    softmax_demo,
    softmax_terms,
)
from landscape.train import train_model

LAMBDAS = [-1.0, -0.5, 0.0, 0.5, 1.0]


def _softmax_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    W = torch.randn(3, 4, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, generator=g, dtype=torch.float64)
    return x, y, W, b, eps


def _mean_ce(x, y, b):
    return lambda w: nn.functional.cross_entropy(x @ w.T + b, y)


@pytest.mark.parametrize("lam", [-0.7, 0.0, 1.3])
def test_softmax_closed_forms_equal_autograd(lam):
    x, y, W, b, eps = _softmax_case()
    at = W + lam * eps
    terms = softmax_terms(x, y, at, eps, b)
    loss = _mean_ce(x, y, b)
    grad = torch.autograd.functional.jacobian(loss, at)
    hess = torch.autograd.functional.hessian(loss, at).reshape(at.numel(), at.numel())
    e = eps.reshape(-1)
    assert terms["loss"] == pytest.approx(float(loss(at)), rel=1e-12)
    assert terms["eps_g"] == pytest.approx(float((grad.reshape(-1) * e).sum()), rel=1e-10)
    assert terms["eps_h_eps"] == pytest.approx(float(e @ hess @ e), rel=1e-10)
    assert terms["trace_h"] == pytest.approx(float(torch.trace(hess)), rel=1e-10)
    p = torch.softmax(x @ at.T + b, dim=1)
    trace_p = torch.stack([torch.trace(torch.diag(q) - torch.outer(q, q)) for q in p]).mean()
    assert terms["trace_p"] == pytest.approx(float(trace_p), rel=1e-12)
    error = float(((x @ at.T + b).argmax(1) != y).double().mean())
    assert terms["error"] == error


def test_softmax_demo_walks_the_line_in_float64():
    x, y, W, b, eps = _softmax_case(1)
    demo = softmax_demo(x.float(), y, W.float(), eps.float(), LAMBDAS, b.float())
    x, W, b, eps = (t.float().double() for t in (x, W, b, eps))  # what the demo sees
    for i, lam in enumerate(LAMBDAS):
        expected = softmax_terms(x, y, W + lam * eps, eps, b)
        for name, value in expected.items():
            assert demo[name][i] == pytest.approx(value, rel=1e-12, abs=1e-15)


def test_fit_softmax_is_deterministic_and_fits():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(5, 3, generator=g, dtype=torch.float64)).argmax(1)
    W, b, info = fit_softmax(x, y, 3, steps=300)
    W2, b2, _ = fit_softmax(x, y, 3, steps=300)
    assert torch.equal(W, W2) and torch.equal(b, b2)
    assert info["loss"] < 0.5 * np.log(3)
    assert info["error"] < 0.1


def test_filter_noise_rows_have_the_norm_of_the_weight_rows():
    w = torch.randn(5, 8)
    eps = filter_noise(w, seed=3)
    np.testing.assert_allclose(eps.norm(dim=1), w.double().norm(dim=1), rtol=1e-12)
    assert torch.equal(eps, filter_noise(w, seed=3))
    assert not torch.equal(eps, filter_noise(w, seed=4))


def test_preactivation_histograms_count_every_unit_sample_pair():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 9, generator=g)
    h = torch.relu(torch.randn(40, 9, generator=g))
    shift = preactivation_shift(w, h, LAMBDAS, seed=1, bins=25)
    assert shift["pre_counts"].shape == shift["post_counts"].shape == (5, 25)
    np.testing.assert_array_equal(shift["pre_counts"].sum(axis=1), 40 * 6)
    np.testing.assert_array_equal(shift["post_counts"].sum(axis=1), 40 * 6)
    # Post-ReLU: every non-positive pre-activation lands in the bin of 0.
    zero_bin = np.searchsorted(shift["edges"], 0.0, side="right") - 1
    eps = filter_noise(w, 1).abs() * torch.sign(w.double())
    for i, lam in enumerate(LAMBDAS):
        z = h.double() @ (w.double() + lam * eps).T
        assert shift["post_counts"][i, zero_bin] >= int((z <= 0).sum())
        assert shift["pre_mean"][i] == pytest.approx(float(z.mean()), rel=1e-12)
        changed = float(((z > 0) != (h.double() @ w.double().T > 0)).double().mean())
        assert shift["flip_share"][i] == pytest.approx(changed)
    assert shift["flip_share"][2] == 0.0


def _trained_mlp(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 20, generator=g)
    y = (x @ torch.randn(20, 4, generator=g)).argmax(1)
    torch.manual_seed(seed)
    model = MLP(20, [32, 32], 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x


def test_agreement_is_one_at_lambda_zero_and_counts_every_relu_element():
    model, x = _trained_mlp()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = activation_agreement(model, x, model_noise(model, 0)["raw"], LAMBDAS)
    assert result["agreement"][2] == 1.0
    assert result["confusion"][2, 0, 1] == result["confusion"][2, 1, 0] == 0
    np.testing.assert_array_equal(result["confusion"].sum(axis=(1, 2)), 256 * (32 + 32))
    assert (result["agreement"][[0, 1, 3, 4]] < 1).all()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_sign_consistent_noise_keeps_more_activations_on_the_positive_side():
    # Held with a margin of at least 0.03 for 10 trained MLPs x 3 noise seeds.
    model, x = _trained_mlp()
    noises = model_noise(model, 0)
    raw = activation_agreement(model, x, noises["raw"], LAMBDAS)["agreement"]
    sign = activation_agreement(model, x, noises["sign_consistent"], LAMBDAS)["agreement"]
    assert (sign[3:] > raw[3:] + 0.02).all()
    assert (sign[3:] > sign[1::-1]).all()  # asymmetric: +lambda keeps more than -lambda


def test_agreement_refuses_a_model_without_relu_modules():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return torch.relu(self.fc(x))

    with pytest.raises(ValueError, match=r"no nn\.ReLU module"):
        relu_modules(Functional())


def test_compute_theory_writes_a_deterministic_artifact(tmp_path):
    run = {"run": "m", "dataset_name": "digits", "dataset": {"source": "digits"}}
    run |= {"model_name": "m", "model": {"arch": "mlp", "hidden": [16]}}
    run |= {"train": {"epochs": 1, "seed": 0}}
    train_model(tmp_path / "e0.pt", run, 0, device="cpu")
    train_model(tmp_path / "e1.pt", run, 1, previous=tmp_path / "e0.pt", device="cpu")
    spec = {"lambdas": LAMBDAS, "seed": 0, "samples": 100, "steps": 50, "bins": 20}
    for name in ("a.h5", "b.h5"):
        compute_theory(tmp_path / "e1.pt", tmp_path / name, spec, {"source": "digits"}, "cpu")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    art = store.open(tmp_path / "a.h5")
    assert art.kind == "theory"
    assert art.inputs["checkpoint"]["sha256"] == store.sha256_file(tmp_path / "e1.pt")
    np.testing.assert_array_equal(art["relu/pre_counts"].sum(axis=1), 100 * 10)
    assert art["agreement/agreement"].shape == (2, 5)
    np.testing.assert_array_equal(art["agreement/agreement"][:, 2], 1.0)
    assert art["agreement/confusion"].sum(axis=(2, 3)).tolist() == [[100 * 16] * 5] * 2
    for name in ("error", "loss", "trace_p", "trace_h", "eps_g", "eps_h_eps"):
        assert art.dims[f"softmax/{name}"] == ("noise", "lambda")
    for name in ("error", "loss", "trace_p", "trace_h"):  # at theta_f, whatever the noise
        assert art[f"softmax/{name}"][0, 2] == art[f"softmax/{name}"][1, 2]
