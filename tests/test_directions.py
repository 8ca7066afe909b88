"""Directions: noise distributions and normalizations against their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from landscape.directions import NOISE, make_direction, noise, normalize, trainable
from landscape.models import build_model


@pytest.fixture
def vgg():
    torch.manual_seed(0)
    return build_model({"arch": "vgg", "layers": [8, "M", 16]}, 10, (1, 8, 8))


BIG = {"w": torch.zeros(400, 500)}


@pytest.mark.parametrize(
    ("name", "mean", "var"),
    [
        ("gaussian", 0.0, 1.0),
        ("uniform", 0.0, 1 / 3),
        ("rademacher", 0.0, 1.0),
        ("laplace", 0.0, 2.0),
        ("logistic", 0.0, math.pi**2 / 3),
        ("student_t", 0.0, 3.0),
    ],
)
def test_noise_moments(name, mean, var):
    x = noise(BIG, name, seed=0)["w"].double()
    assert x.mean().item() == pytest.approx(mean, abs=0.02)
    # Student-t(3) has infinite kurtosis: its sample variance converges slowly.
    assert x.var().item() == pytest.approx(var, rel=0.15 if name == "student_t" else 0.02)


def test_cauchy_quartiles():
    x = noise(BIG, "cauchy", seed=0)["w"].flatten().double()
    q = torch.quantile(x[:100_000], torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    assert q.tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=0.03)


def test_rademacher_values_and_all_families_listed():
    x = noise(BIG, "rademacher", seed=0)["w"]
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    assert len(NOISE) >= 7


def test_noise_is_seeded():
    a, b, c = (noise(BIG, "gaussian", s)["w"] for s in (1, 1, 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_filter_normalization_matches_filter_norms(vgg):
    d = make_direction({"normalization": "filter", "bias_bn": "zero", "seed": 0}, vgg)
    for name, p in trainable(vgg).items():
        if p.dim() <= 1:
            assert torch.count_nonzero(d[name]) == 0, name
            continue
        for f in range(p.shape[0]):  # one filter at a time, as plainly as possible
            assert d[name][f].norm().item() == pytest.approx(p[f].norm().item(), rel=1e-5)


def test_layer_and_norm_normalizations(vgg):
    params = trainable(vgg)
    eps = noise(params, "gaussian", 0)
    layer = normalize(eps, params, "layer", bias_bn="normalize")
    for name, p in params.items():
        assert layer[name].norm().item() == pytest.approx(p.norm().item(), rel=1e-5)
    glob = normalize(eps, params, "norm", bias_bn="raw")
    total = math.sqrt(sum(float(d.double().pow(2).sum()) for d in glob.values()))
    theta = math.sqrt(sum(float(p.double().pow(2).sum()) for p in params.values()))
    assert total == pytest.approx(theta, rel=1e-6)
    # Norm scaling keeps the direction: the ratio to the raw noise is one constant.
    ratios = torch.cat([(glob[n] / eps[n]).flatten() for n in params])
    assert ratios.std().item() < 1e-5 * ratios.mean().item()
    raw = normalize(eps, params, "raw", bias_bn="raw")
    assert all(torch.equal(raw[n], eps[n]) for n in params)


def test_unknown_options_raise(vgg):
    with pytest.raises(ValueError, match="distribution"):
        noise(trainable(vgg), "poisson", 0)
    with pytest.raises(ValueError, match="normalization"):
        normalize({}, {}, "filters")
    with pytest.raises(ValueError, match="kind"):
        make_direction({"kind": "banana"}, vgg)
