"""Per-group curvature against the principal submatrix of a dense float64 Hessian."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, hessian

from landscape import store
from landscape.group_curvature import (
    RestrictedOperator,
    compute_group_curvature,
    group_curvature,
    group_indices,
    restricted_trace,
)
from landscape.group_curvature_table import write_group_curvature_table
from landscape.hessian import HessianLinearOperator
from landscape.models import build_model
from landscape.params import GROUPS, param_groups, unflatten
from landscape.train import train_model


def dense_hessian(model, x, y):
    m = copy.deepcopy(model).double().eval()
    like = {n: p.detach().double() for n, p in m.named_parameters()}
    flat = torch.cat([t.reshape(-1) for t in like.values()])

    def f(theta):
        return F.cross_entropy(functional_call(m, unflatten(theta, like), (x.double(),)), y)

    return hessian(f)(flat)


def selection(model, names):
    """Flat indices of the named parameters, built independently of ``group_indices``."""
    mask = torch.cat(
        [
            torch.full((p.numel(),), n in names, dtype=torch.bool)
            for n, p in model.named_parameters()
        ]
    )
    return mask.nonzero().squeeze(1)


@pytest.fixture(scope="module")
def case(digits):
    torch.manual_seed(0)
    model = build_model({"arch": "vgg", "layers": [2, "M", 4]}, 10, (1, 8, 8))
    with torch.no_grad():  # BN with statistics and affine parameters away from the init's 0 and 1
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    x, y = digits.train.x[:48], digits.train.y[:48]
    op = HessianLinearOperator(model, [(x, y)], dtype=torch.float64)
    return model, op, dense_hessian(model, x, y)


def test_restricted_operator_is_the_principal_submatrix(case):
    model, op, h = case
    groups = param_groups(model)
    for group in GROUPS:
        idx = selection(model, groups[group])
        assert torch.equal(group_indices(op, groups[group]), idx), group
        sub = RestrictedOperator(op, idx)
        v = torch.randn(len(idx), dtype=torch.float64)
        ref = h[idx][:, idx] @ v
        assert torch.allclose(sub.matvec(v), ref, rtol=1e-9, atol=1e-12), group


def test_top_eigenvalues_and_trace_of_every_group(case):
    model, op, h = case
    groups = param_groups(model)
    result = group_curvature(op, groups, {"k": 2, "trace": {"matvecs": 50, "seed": 1}})
    for group in GROUPS:
        idx = selection(model, groups[group])
        block = h[idx][:, idx]
        evals = torch.linalg.eigvalsh(block).flip(0)[:2].numpy()
        got = result[group]
        assert got["num_params"] == len(idx)
        np.testing.assert_allclose(got["eigenvalues"], evals, rtol=1e-7, atol=1e-10)
        assert np.all(got["residuals"] < 1e-6)
        exact = float(torch.trace(block))
        if len(idx) <= 50:  # LAYER1 (22), BN (12), CLF (50): e_j^T H_gg e_j summed
            assert got["trace_estimator"] == "exact" and got["trace_stderr"] == 0.0
            assert got["trace"] == pytest.approx(exact, rel=1e-10, abs=1e-12)
        else:  # ALL, FEAT, CONV: XTrace with 50 products
            assert got["trace_estimator"] == "xtrace" and got["trace_stderr"] > 0
            assert abs(got["trace"] - exact) < 5 * got["trace_stderr"] + 1e-9


def test_bad_method_and_empty_groups(case):
    model, op, _ = case
    sub = RestrictedOperator(op, group_indices(op, param_groups(model)["BN"]))
    with pytest.raises(ValueError, match=r"trace\.method"):
        restricted_trace(sub, "magic")
    empty = group_curvature(op, {"none": []}, {"k": 2})["none"]
    assert empty["num_params"] == 0 and empty["trace"] == 0.0
    assert np.all(np.isnan(empty["eigenvalues"]))
    with pytest.raises(ValueError, match="not trainable parameters"):
        group_indices(op, ["nope.weight"])


def test_file_and_table(tmp_path, digits):
    spec_run = {
        "run": "r",
        "dataset_name": "digits",
        "dataset": {"source": "digits"},
        "model_name": "mlp",
        "model": {"arch": "mlp", "hidden": [4]},
        "train": {"epochs": 1, "seed": 0},
    }
    ckpt = tmp_path / "results/digits/mlp/r/checkpoints/epoch0.pt"
    ckpt.parent.mkdir(parents=True)
    train_model(ckpt, spec_run, 0, device="cpu")
    out = tmp_path / "results/digits/mlp/r/hessian/epoch0/group_curvature.h5"
    spec = {"samples": 64, "batch_size": 64, "dtype": "float64", "k": 2, "groups": ["CLF", "BN"]}
    compute_group_curvature(ckpt, out, spec, {"source": "digits"}, "cpu")
    art = store.open(out)
    assert art.attrs["groups"] == ["CLF", "BN"] and art.dims["eigenvalues"] == ("group", "index")
    assert art["num_params"].tolist() == [50, 0]
    table = write_group_curvature_table([out], tmp_path / "table.csv")
    read = pd.read_csv(tmp_path / "table.csv")
    assert list(read["group"]) == ["CLF", "BN"] and list(read["model"]) == ["mlp", "mlp"]
    assert read["eigenvalue_1"][0] == pytest.approx(table["eigenvalue_1"][0])
    assert np.isnan(read["eigenvalue_1"][1]) and read["trace"][1] == 0.0
