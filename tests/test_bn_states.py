"""BN running statistics in directions (``bn_states``): off changes nothing; on, every evaluated
point's statistics are theta's + lambda * d (loss-landscape's ``states`` directions)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape import store
from landscape.directions import make_direction, write_direction
from landscape.directions.states import bn_statistics, state_direction
from landscape.evaluate import compute_curve, evaluate_grid
from landscape.grid import GridEvaluator
from landscape.models import build_model
from landscape.train import train_model

SPEC = {"kind": "noise", "seed": 3, "normalization": "filter", "bias_bn": "zero"}


@pytest.fixture
def vgg():
    torch.manual_seed(0)
    model = build_model({"arch": "vgg", "layers": [4, "M", 8]}, 10, (1, 8, 8))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def reference(model, d, s, lam, x, y):
    """Loss of theta + lam * d with statistics theta's + lam * s, built with load_state_dict."""
    ref = copy.deepcopy(model)
    state = ref.state_dict()
    for name, t in {**d, **s}.items():
        state[name] = state[name] + lam * t
    ref.load_state_dict(state)
    with torch.no_grad():
        return F.cross_entropy(ref.eval()(x), y).item()


def test_state_direction_is_normalized_like_weights(vgg):
    params = {n: p.detach() for n, p in vgg.named_parameters()}
    stats = bn_statistics(vgg)
    assert sorted(stats) == sorted(
        f"features.{i}.{s}" for i in (1, 5) for s in ("running_mean", "running_var")
    )
    d = state_direction(SPEC, vgg, params)
    for name, s in stats.items():  # filter: each element its own filter, |d_i| = |s_i|
        assert torch.allclose(d[name].abs(), s.abs(), rtol=1e-6), name
    layer = state_direction({**SPEC, "normalization": "layer"}, vgg, params)
    for name, s in stats.items():
        assert float(layer[name].norm()) == pytest.approx(float(s.norm()), rel=1e-6)
    clf = state_direction({**SPEC, "group": "CLF", "scale": 2.0}, vgg, params)
    assert all(float(t.abs().max()) == 0 for t in clf.values())
    bn = state_direction({**SPEC, "group": "BN", "scale": 2.0}, vgg, params)
    assert all(torch.allclose(bn[n], 2 * d[n]) for n in stats)
    target = {n: s + 1.0 for n, s in stats.items()}
    towards = state_direction({"kind": "checkpoint"}, vgg, params, target)
    assert all(torch.allclose(towards[n], torch.ones_like(s)) for n, s in stats.items())
    with pytest.raises(ValueError, match="bn_states"):
        state_direction({"kind": "gradient"}, vgg, params)
    mlp = build_model({"arch": "mlp", "hidden": [4]}, 10, (1, 8, 8))
    assert state_direction(SPEC, mlp, dict(mlp.named_parameters())) == {}


@pytest.mark.parametrize("strategy", ["pointwise", "batched"])
def test_evaluated_statistics_are_theta_plus_lambda_d(vgg, digits, strategy):
    params = {n: p.detach() for n, p in vgg.named_parameters()}
    d = make_direction(SPEC, vgg)
    s = state_direction(SPEC, vgg, params)
    x, y = digits.test.x[:200], digits.test.y[:200]
    from landscape.data import TensorSplit

    split = TensorSplit(x, y)
    lambdas = np.array([[-0.5], [0.0], [0.3], [0.8]])
    grid = GridEvaluator(vgg, [d], bn_mode="keep", strategy=strategy, buffer_directions=[s])
    out = grid(lambdas, {"test": split})
    for i, (lam,) in enumerate(lambdas):
        assert out["test"]["loss"][i] == pytest.approx(reference(vgg, d, s, lam, x, y), rel=1e-5)
    if strategy == "pointwise":  # the working copy holds the last point's statistics
        for name, b in grid.work.named_buffers():
            if name in s:
                assert torch.allclose(b, bn_statistics(vgg)[name] + 0.8 * s[name], atol=1e-6)
    plain = GridEvaluator(vgg, [d], bn_mode="keep", strategy=strategy)(lambdas, {"test": split})
    assert not np.allclose(out["test"]["loss"][[0, 2, 3]], plain["test"]["loss"][[0, 2, 3]])
    assert out["test"]["loss"][1] == plain["test"]["loss"][1]  # lambda 0: theta itself
    # recompute re-estimates the statistics: the perturbation has no effect
    bn = list(digits.train.batches(256))[:2]
    on = evaluate_grid(
        vgg,
        [d],
        lambdas,
        {"test": split},
        bn_mode="recompute",
        bn_batches=bn,
        strategy=strategy,
        buffer_directions=[s],
    )
    off = evaluate_grid(
        vgg, [d], lambdas, {"test": split}, bn_mode="recompute", bn_batches=bn, strategy=strategy
    )
    np.testing.assert_array_equal(on["test"]["loss"], off["test"]["loss"])


def test_option_off_changes_nothing_in_files(tmp_path):
    spec_run = {
        "run": "r",
        "dataset_name": "digits",
        "dataset": {"source": "digits"},
        "model_name": "vgg",
        "model": {"arch": "vgg", "layers": [4, "M", 8]},
        "train": {"epochs": 1, "seed": 0},
    }
    ckpt = tmp_path / "e1.pt"
    train_model(tmp_path / "e0.pt", spec_run, 0, device="cpu")
    train_model(ckpt, spec_run, 1, previous=tmp_path / "e0.pt", device="cpu")
    write_direction(ckpt, tmp_path / "off.h5", SPEC, device="cpu")
    write_direction(ckpt, tmp_path / "on.h5", {**SPEC, "bn_states": True}, device="cpu")
    off, on = store.open(tmp_path / "off.h5"), store.open(tmp_path / "on.h5")
    assert "buffers" not in off.tensor_groups and sorted(on.tensor_groups) == ["buffers", "params"]
    for name, t in off.tensors().items():
        assert np.array_equal(t, on.tensors()[name]), name
    assert on.attrs["bn_states_norm"] > 0
    curve = {
        "lambda": {"min": -0.5, "max": 0.5, "num": 3},
        "splits": ["test"],
        "bn_mode": "keep",
        "bn_batches": 1,
        "batch_size": 512,
    }
    for name in ("off", "on"):
        compute_curve(
            ckpt,
            tmp_path / f"{name}.h5",
            tmp_path / f"c_{name}.h5",
            curve,
            {"source": "digits"},
            "cpu",
        )
    c_off, c_on = store.open(tmp_path / "c_off.h5"), store.open(tmp_path / "c_on.h5")
    assert c_off["test/loss"][1] == c_on["test/loss"][1]
    assert c_off["test/loss"][0] != c_on["test/loss"][0]
    # the curve of the "on" file reads its statistics: theta's + lambda * d at lambda = -0.5
    from landscape.train import load_model

    model, _ = load_model(ckpt)
    d = {n: torch.as_tensor(v) for n, v in on.tensors().items()}
    s = {n: torch.as_tensor(v) for n, v in on.tensors("buffers").items()}
    from landscape.data import load_data

    data = load_data({"source": "digits"})
    ref = reference(model, d, s, -0.5, data.test.x, data.test.y)
    assert c_on["test/loss"][0] == pytest.approx(ref, rel=1e-5)


def test_config_refuses_recompute_and_other_kinds():
    from landscape.analysis_config import check_analysis
    from landscape.config import ConfigError, direction_spec

    config = {
        "runs": {"r": {"dataset": "d", "model": "m", "train": {"epochs": 1, "checkpoints": []}}},
        "directions": {"s": {"kind": "noise", "bn_states": True}, "g": {"kind": "noise"}},
        "curves": {"c": {"direction": "s", "bn_mode": "keep", "runs": "all", "epochs": "final"}},
        "surfaces": {},
        "eigenmaps": {},
        "group_curvature": {"runs": [], "epochs": "final"},
        "weight_stats": {"runs": []},
    }
    check_analysis(config)
    assert direction_spec(config, "s")["bn_states"] is True
    assert "bn_states" not in direction_spec(config, "g")  # off: the spec is as before
    config["curves"]["c"]["bn_mode"] = "auto"  # noise: auto resolves to recompute
    with pytest.raises(ConfigError, match=r"curves\.c\.bn_mode: .*set bn_mode: keep"):
        check_analysis(config)
    config["curves"] = {}
    config["directions"]["s"]["kind"] = "special"
    with pytest.raises(ConfigError, match=r"directions\.s\.bn_states: applies to kinds"):
        check_analysis(config)
    config["directions"]["s"] = {"kind": "noise"}
    config["sweeps"] = {"w": {"base": {"bn_states": True}, "vary": {}}}
    with pytest.raises(ConfigError, match=r"sweeps\.w: bn_states"):
        check_analysis(config)
