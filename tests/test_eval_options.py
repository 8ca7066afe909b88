"""Evaluation options of the grid engine (precision, channels_last, compile, bn_recompute):
equal to the default engine and to a per-point reference where they should be, bounded where
they change numbers, recorded in the artifacts and absent from default specs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from landscape import bn_recompute as bnr
from landscape import store
from landscape.config import evaluation_spec
from landscape.data import TensorSplit
from landscape.directions import make_direction
from landscape.evaluate import evaluate_grid
from landscape.grid import GridEvaluator
from landscape.models import build_model

NOISE = {"kind": "noise", "normalization": "filter", "bias_bn": "zero"}
COORDS = np.array([[0.0, 0.0], [0.6, -0.3], [-1.0, 0.8]])


def default_model(name: str) -> torch.nn.Module:
    """The default config's ``vgg_bn`` or ``resnet8`` at a seeded init with non-trivial BN."""
    with open("config.yaml") as f:
        spec = yaml.safe_load(f)["models"][name]
    torch.manual_seed(0)
    model = build_model(spec, 10, (1, 8, 8))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def reference_point(model, dirs, coords, x, y, bn_batches):
    """Loss of ``theta + coords @ dirs`` with statistics re-estimated by ``momentum=None``."""
    ref = copy.deepcopy(model)
    state = ref.state_dict()
    for c, d in zip(coords, dirs, strict=True):
        for name, t in d.items():
            state[name] = state[name] + float(c) * t
    ref.load_state_dict(state)
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    ref.train()
    with torch.no_grad():
        for bx, _ in bn_batches:
            ref(bx)
        return F.cross_entropy(ref.eval()(x), y).item()


@pytest.fixture(scope="module")
def bn_batches(digits):
    return list(digits.train.sample(3 * 64, 0).batches(64))


@pytest.mark.parametrize("name", ["vgg_bn", "resnet8"])
def test_functional_bn_recompute_equals_eager_and_per_point_reference(name, digits, bn_batches):
    model = default_model(name)
    dirs = [make_direction(NOISE | {"seed": s}, model) for s in (1, 2)]
    splits = {"test": digits.test}
    kw = {"bn_mode": "recompute", "bn_batches": bn_batches, "batch_size": 256}
    eager = evaluate_grid(model, dirs, COORDS, splits, **kw)["test"]["loss"]
    evaluator = GridEvaluator(model, dirs, bn_recompute="functional", **kw)
    functional = evaluator(COORDS, splits)["test"]["loss"]
    assert evaluator.stats_forward is not None
    assert evaluator.folded == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x, y = digits.test.x, digits.test.y
    ref = [reference_point(model, dirs, c, x, y, bn_batches) for c in COORDS]
    np.testing.assert_allclose(functional, eager, rtol=0, atol=1e-5)
    np.testing.assert_allclose(functional, ref, rtol=0, atol=1e-5)
    assert np.ptp(functional) > 0.01  # the points differ: the statistics follow them


def test_stats_model_leaves_the_cumulative_average(digits, bn_batches):
    model = default_model("vgg_bn")
    eager = copy.deepcopy(model)
    for m in eager.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    eager.train()
    stats = bnr.stats_model(model, len(bn_batches))
    with torch.no_grad():
        for x, _ in bn_batches:
            eager(x)
        bnr.reset(model)
        for x, _ in bn_batches:
            stats(x)
    for (n, a), b in zip(model.named_buffers(), eager.buffers(), strict=True):
        if "running" in n:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_folded_model_equals_eval_mode_model(digits):
    model = default_model("resnet8")
    folded, count = bnr.folded_model(model)
    assert count == 9  # stem, two per block in three blocks, two projections
    called = [folded.get_submodule(n.target) for n in folded.graph.nodes if n.op == "call_module"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in called)
    with torch.no_grad():
        torch.testing.assert_close(folded(digits.test.x), model(digits.test.x), rtol=0, atol=1e-5)


def test_channels_last_equals_the_default(digits, bn_batches):
    model = default_model("vgg_bn")
    dirs = [make_direction(NOISE | {"seed": s}, model) for s in (1, 2)]
    kw = {"bn_mode": "recompute", "bn_batches": bn_batches, "batch_size": 256}
    splits = {"test": digits.test}
    base = evaluate_grid(model, dirs, COORDS, splits, **kw)["test"]["loss"]
    other = evaluate_grid(model, dirs, COORDS, splits, channels_last=True, **kw)["test"]["loss"]
    np.testing.assert_allclose(other, base, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def trained_bn_cnn(tmp_path_factory):
    """The default VGG-BN trained 5 epochs of the default 30-epoch recipe: its checkpoint directory
    (``e5.pt``) and dataset."""
    from landscape.train import train_model

    path = tmp_path_factory.mktemp("bn_cnn")
    dataset = {"source": "digits", "subset_seed": 0}
    run = {
        "run": "r",
        "dataset_name": "digits",
        "dataset": dataset,
        "model_name": "vgg",
        "model": {"arch": "vgg", "layers": [16, "M", 32, "M", 64]},  # the default vgg_bn
        "train": {
            **{"epochs": 30, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
            **{"batch_size": 128, "schedule": "cosine", "seed": 0},
        },
    }
    train_model(path / "e0.pt", run, 0, device="cpu")
    train_model(path / "e5.pt", run, 5, previous=path / "e0.pt", device="cpu")
    return path, dataset


def test_bf16_loss_within_1e_2_relative_of_fp32_on_a_trained_bn_cnn(trained_bn_cnn, digits):
    from landscape.train import load_model

    path, _ = trained_bn_cnn
    model, meta = load_model(path / "e5.pt", "cpu")
    assert meta["history"][-1]["test_acc"] > 0.8  # trained
    dirs = [make_direction(NOISE | {"seed": s}, model) for s in (1, 2)]
    bn = list(digits.train.sample(2 * 128, 0).batches(128))
    kw = {"bn_mode": "recompute", "bn_batches": bn, "batch_size": 512}
    coords = 0.3 * COORDS
    splits = {"test": digits.test}
    fp32 = evaluate_grid(model, dirs, coords, splits, **kw)["test"]["loss"]
    bf16 = evaluate_grid(model, dirs, coords, splits, precision="bf16", **kw)["test"]["loss"]
    rel = np.abs(bf16 - fp32) / fp32
    assert rel.max() < 1e-2
    assert rel.max() > 1e-6  # bf16 did change the numbers


def test_curve_records_options_and_difference_to_fp32(trained_bn_cnn, tmp_path):
    from landscape.directions import write_direction
    from landscape.evaluate import compute_curve

    path, dataset = trained_bn_cnn
    write_direction(path / "e5.pt", tmp_path / "d.h5", {"seed": 1}, device="cpu")
    spec = {
        "lambda": {"min": -0.5, "max": 0.5, "num": 3},
        "splits": ["test"],
        "bn_mode": "recompute",
        "bn_batches": 2,
        "batch_size": 128,
    }
    args = (path / "e5.pt", tmp_path / "d.h5")
    compute_curve(*args, tmp_path / "default.h5", spec, dataset, "cpu")
    default = store.open(tmp_path / "default.h5")
    assert "precision" not in default.attrs and "max_abs_diff_vs_fp32" not in default.attrs

    bf16_spec = spec | {"evaluation": {"precision": "bf16", "bn_recompute": "functional"}}
    compute_curve(*args, tmp_path / "bf16.h5", bf16_spec, dataset, "cpu")
    bf16 = store.open(tmp_path / "bf16.h5")
    assert bf16.attrs["precision"] == "bf16" and bf16.attrs["bn_recompute"] == "functional"
    centre = default["test/loss"][1]  # lambda = 0: theta
    assert bf16.attrs["max_abs_diff_vs_fp32"] == pytest.approx(
        abs(bf16["test/loss"][1] - centre), rel=1e-6
    )
    assert 0 < bf16.attrs["max_rel_diff_vs_fp32"] < 1e-2

    tf32_spec = spec | {"evaluation": {"precision": "tf32"}}
    compute_curve(*args, tmp_path / "tf32.h5", tf32_spec, dataset, "cpu")
    tf32 = store.open(tmp_path / "tf32.h5")
    assert tf32.attrs["evaluation_note"] == "tf32 has no effect on CPU"
    assert tf32.attrs["max_abs_diff_vs_fp32"] == 0.0
    np.testing.assert_array_equal(tf32["test/loss"], default["test/loss"])


def test_options_enter_the_spec_only_where_they_differ_from_the_defaults():
    curve = {"directions": ["d"], "bn_mode": "keep"}
    config = {"curves": {"c": dict(curve)}}
    assert evaluation_spec(config, "curves", "c") == curve
    config["evaluation"] = {"precision": "fp32", "compile": False}
    assert evaluation_spec(config, "curves", "c") == curve
    config["evaluation"] = {"precision": "bf16"}
    assert evaluation_spec(config, "curves", "c")["evaluation"] == {"precision": "bf16"}
    config["curves"]["c"]["evaluation"] = {"precision": "fp32", "channels_last": True}
    assert evaluation_spec(config, "curves", "c")["evaluation"] == {"channels_last": True}


def test_bad_options_name_the_option(digits):
    model = default_model("vgg_bn")
    dirs = [make_direction(NOISE | {"seed": 1}, model)]
    with pytest.raises(ValueError, match="precision"):
        GridEvaluator(model, dirs, bn_mode="keep", precision="fp16")
    with pytest.raises(ValueError, match="bn_recompute"):
        GridEvaluator(model, dirs, bn_mode="keep", bn_recompute="lazy")
    with pytest.raises(ValueError, match="first_layer"):
        GridEvaluator(model, dirs, bn_mode="keep", bn_recompute="functional", first_layer=True)


def test_compiled_functional_recompute_equals_eager(digits, bn_batches):
    model = build_model({"arch": "vgg", "layers": [4, "M", 8]}, 10, (1, 8, 8)).eval()
    dirs = [make_direction(NOISE | {"seed": 1}, model)]
    kw = {"bn_mode": "recompute", "bn_batches": bn_batches, "batch_size": 512}
    splits = {"test": digits.test}
    coords = COORDS[:, :1]
    eager = evaluate_grid(model, dirs, coords, splits, **kw)["test"]["loss"]
    try:
        compiled = evaluate_grid(
            model, dirs, coords, splits, bn_recompute="functional", compile=True, **kw
        )["test"]["loss"]
    except Exception as exc:  # torch.compile needs a C++ toolchain
        pytest.skip(f"torch.compile unavailable: {exc}")
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-5)


_SEEN: list[tuple[str, str]] = []  # the engine evaluates copies of the model


class _RecordsPrecision(torch.nn.Module):
    """A linear model that records the CUDA float32 switches in force when it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        _SEEN.append(
            (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
        )
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("precision, mode", [("fp32", "ieee"), ("tf32", "tf32")])
def test_fp32_is_ieee_float32_on_cuda_not_pytorchs_tf32_convolutions(precision, mode):
    model = _RecordsPrecision().eval()
    _SEEN.clear()
    dirs = [make_direction({"kind": "noise", "normalization": "filter", "seed": 1}, model)]
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    x, y = torch.randn(6, 4), torch.arange(6) % 3
    evaluate_grid(
        model,
        dirs,
        np.array([[0.0], [0.5]]),
        {"test": TensorSplit(x, y)},
        bn_mode="keep",
        precision=precision,
    )
    assert _SEEN and set(_SEEN) == {(mode, mode)}
    assert (
        torch.backends.cuda.matmul.fp32_precision,
        torch.backends.cudnn.conv.fp32_precision,
    ) == before
