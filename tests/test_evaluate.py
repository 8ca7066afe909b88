"""The per-point evaluator against independent references."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.directions import make_direction
from landscape.evaluate import evaluate_grid
from landscape.lambda_grids import lambda_grid
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


class _Rebuilt(torch.utils.data.Dataset):
    """Each sample a fresh tensor: the DataLoader builds every batch anew on every pass."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i].clone(), int(self.y[i])


@pytest.mark.parametrize("bn_mode", ["keep", "recompute"])
def test_first_layer_cache_with_batches_rebuilt_on_every_pass(digits, mlp, vgg, bn_mode):
    """Batches of a DatasetSplit are new tensors whose freed addresses get reused: the cache of
    first-layer responses must not take one batch's responses for another's."""
    from landscape.data import DatasetSplit

    split = DatasetSplit(_Rebuilt(digits.test.x[:300], digits.test.y[:300]))
    model = vgg if bn_mode == "recompute" else mlp
    d = make_direction({"normalization": "filter", "bias_bn": "normalize", "seed": 4}, model)
    coords = lambda_grid({"min": -1.0, "max": 1.0, "num": 7})[:, None]
    engine = {"bn_mode": bn_mode, "bn_batches": list(split.batches(64))[:2], "batch_size": 64}
    results = [
        evaluate_grid(model, [d], coords, {"test": split}, first_layer=first, **engine)
        for first in (True, False)
    ]
    cached, plain = (r["test"]["loss"] for r in results)
    np.testing.assert_allclose(cached, plain, rtol=1e-5, atol=0)
    for i, lam in enumerate(coords[:, 0]):
        bn = engine["bn_batches"] if bn_mode == "recompute" else None
        loss, _ = reference_point(model, d, lam, split.dataset.x, split.dataset.y, bn)
        assert plain[i] == pytest.approx(loss, rel=1e-5)


def _class_sorted_digits(digits, subset_seed=0):
    """The digits with the training split sorted by class, as image folders are."""
    from landscape.data import DataBundle, TensorSplit

    order = torch.argsort(digits.train.y, stable=True)
    train = TensorSplit(digits.train.x[order], digits.train.y[order])
    return DataBundle("sorted", train, digits.test, 10, (1, 8, 8), subset_seed=subset_seed)


def test_bn_batches_are_a_fixed_class_proportional_sample(digits, vgg):
    from landscape.evaluate import fixed_bn_batches

    data = _class_sorted_digits(digits)
    spec = {"bn_mode": "recompute", "bn_batches": 4, "batch_size": 100}
    batches = fixed_bn_batches(data, spec)
    assert [len(y) for _, y in batches] == [100] * 4
    counts = torch.bincount(torch.cat([y for _, y in batches]), minlength=10).double()
    population = torch.bincount(data.train.y, minlength=10).double()
    assert (counts - 400 * population / len(data.train)).abs().max() < 1
    assert all(len(set(yb.tolist())) >= 5 for _, yb in batches)  # the head: 1 or 2 classes
    again = fixed_bn_batches(data, spec)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    other = fixed_bn_batches(_class_sorted_digits(digits, 1), spec)
    assert not torch.equal(other[0][0], batches[0][0])
    assert fixed_bn_batches(data, {**spec, "bn_mode": "keep"}) == []
    # The evaluator holds the list: every point re-estimates BN on these same batches.
    d = make_direction({"normalization": "filter", "bias_bn": "normalize", "seed": 3}, vgg)
    coords = np.array([[0.5], [-0.5], [0.5]])
    out = evaluate_grid(
        vgg, [d], coords, {"test": digits.test}, bn_batches=batches, chunk_size=1, batch_size=150
    )
    loss = out["test"]["loss"]
    assert loss[0] == loss[2]
    for i, lam in enumerate(coords[:, 0]):
        ref, _ = reference_point(vgg, d, lam, digits.test.x, digits.test.y, batches)
        assert loss[i] == pytest.approx(ref, rel=1e-5)


def test_curve_uses_and_records_the_fixed_bn_batches(digits, tmp_path):
    from landscape import store
    from landscape.data import load_data
    from landscape.directions import write_direction
    from landscape.evaluate import compute_curve, fixed_bn_batches
    from landscape.train import load_model, train_model

    dataset = {"source": "digits", "subset_seed": 3}
    run = {
        "run": "r",
        "dataset_name": "digits",
        "dataset": dataset,
        "model_name": "vgg",
        "model": {"arch": "vgg", "layers": [4, "M", 8]},
        "train": {"epochs": 1, "seed": 0},
    }
    train_model(tmp_path / "e0.pt", run, 0, device="cpu")
    write_direction(tmp_path / "e0.pt", tmp_path / "d.h5", {"seed": 1}, device="cpu")
    spec = {
        "lambda": {"min": -1.0, "max": 1.0, "num": 3},
        "splits": ["test"],
        "bn_mode": "recompute",
        "bn_batches": 2,
        "batch_size": 128,
    }
    compute_curve(tmp_path / "e0.pt", tmp_path / "d.h5", tmp_path / "c.h5", spec, dataset, "cpu")
    curve = store.open(tmp_path / "c.h5")
    assert curve.attrs["subset_seed"] == 3
    model, _ = load_model(tmp_path / "e0.pt", "cpu")
    direction = {n: torch.as_tensor(v) for n, v in store.open(tmp_path / "d.h5").tensors().items()}
    bn = fixed_bn_batches(load_data(dataset), spec)
    loss, _ = reference_point(model, direction, 1.0, digits.test.x, digits.test.y, bn)
    assert curve["test/loss"][2] == pytest.approx(loss, rel=1e-5)


def _default_curve_bn_mode(kind_spec: dict, hessian_bn_mode: str) -> str:
    """The BN mode the config gives, by default, to a curve along one direction."""
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    from landscape.config import evaluation_spec

    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((repo / "tests" / "configs" / "tiny.yaml").read_text())
    config["hessian"] = {"bn_mode": hessian_bn_mode}
    config["directions"]["d"] = kind_spec
    config["curves"]["c"] = {"direction": "d"}
    validate(config, str(repo / "schemas" / "config.schema.yaml"))
    return evaluation_spec(config, "curves", "c")["bn_mode"]


@pytest.mark.parametrize("hessian_bn_mode", ["eval", "train"])
def test_default_curve_along_the_top_eigenvector_curves_by_its_eigenvalue(digits, hessian_bn_mode):
    """d2/dt2 L(theta + t v) at 0, by finite differences of the evaluated curve, is lambda_max.

    A smooth BN net (tanh) in float64 whose running statistics differ from the data's. The
    Hessian with BN in eval mode is that of the curve with theta's statistics (keep, exact);
    with batch statistics (train) it is close to the curve that re-estimates them (recompute)
    on the same single batch: running_var is the unbiased variance, batch norm the biased one.
    """
    from landscape.data import TensorSplit
    from landscape.hessian import HessianLinearOperator, lanczos

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 12),
        torch.nn.BatchNorm1d(12),
        torch.nn.Tanh(),
        torch.nn.Linear(12, 10),
    ).double()
    with torch.no_grad():
        model[2].running_mean.uniform_(-0.5, 0.5)
        model[2].running_var.uniform_(0.5, 2.0)
    model.eval()
    sample = digits.train.sample(256, 0)
    split = TensorSplit(sample.x.double(), sample.y)
    batches = list(split.batches(256))
    op = HessianLinearOperator(model, batches, bn_mode=hessian_bn_mode, dtype=torch.float64)
    pairs = lanczos(op, 1, which="LA")
    top, v = float(pairs.eigenvalues[0]), op.unflatten(pairs.eigenvectors[:, 0])

    def second_derivative(bn_mode: str) -> float:
        h = 1e-3
        out = evaluate_grid(
            model,
            [v],
            h * np.arange(-2.0, 3.0)[:, None],
            {"train": split},
            bn_mode=bn_mode,
            bn_batches=batches,
            batch_size=256,
            strategy="pointwise",
        )
        f = out["train"]["loss"]
        return (-f[0] + 16 * f[1] - 30 * f[2] + 16 * f[3] - f[4]) / (12 * h * h)

    default = _default_curve_bn_mode({"kind": "eigenvector"}, hessian_bn_mode)
    other = {"keep": "recompute", "recompute": "keep"}[default]
    rel = 1e-6 if hessian_bn_mode == "eval" else 1e-2
    assert second_derivative(default) == pytest.approx(top, rel=rel)
    assert abs(second_derivative(other) - top) > 0.5 * top  # measured: 0.12 and 0.14 of it


def test_curve_and_surface_figures_say_how_bn_statistics_were_treated(tmp_path, monkeypatch):
    from landscape import plots, store
    from landscape.directions import write_direction
    from landscape.evaluate import compute_curve, compute_surface_shard
    from landscape.surface_merge import merge_surface
    from landscape.train import train_model

    titles = []
    monkeypatch.setattr(
        plots, "save_figure", lambda fig, out: titles.append(fig._suptitle.get_text())
    )
    dataset = {"source": "digits"}
    base = {"lambda": {"min": -1.0, "max": 1.0, "num": 3}, "splits": ["test"]}
    base |= {"bn_batches": 1, "batch_size": 256}
    for arch in ({"arch": "vgg", "layers": [4, "M", 8]}, {"arch": "mlp", "hidden": [8]}):
        run = {"run": arch["arch"], "dataset_name": "digits", "dataset": dataset}
        run |= {"model_name": arch["arch"], "model": arch, "train": {"epochs": 1, "seed": 0}}
        checkpoint, direction = tmp_path / f"{arch['arch']}.pt", tmp_path / "d.h5"
        train_model(checkpoint, run, 0, device="cpu")
        write_direction(checkpoint, direction, {"seed": 1}, device="cpu")
        for bn_mode in ("keep", "recompute"):
            out = tmp_path / f"{arch['arch']}_{bn_mode}.h5"
            spec = {**base, "bn_mode": bn_mode}
            compute_curve(checkpoint, direction, out, spec, dataset, "cpu")
            assert store.open(out).attrs["batchnorm"] == (arch["arch"] == "vgg")
            assert store.open(out).spec["bn_mode"] == bn_mode
            plots.plot_curve(out, tmp_path / "c.png", title="t")
    assert titles == [
        "t\nBN: running statistics of theta (No UpBN)",
        "t\nBN recomputed per point (UpBN)",
        "t\nno BN layers",
        "t\nno BN layers",
    ]
    spec = {"x": {"min": -1.0, "max": 1.0, "num": 2}, "y": {"min": -1.0, "max": 1.0, "num": 2}}
    spec |= {**base, "bn_mode": "keep"}
    checkpoint = tmp_path / "vgg.pt"
    write_direction(checkpoint, tmp_path / "y.h5", {"seed": 2}, device="cpu")
    directions = [tmp_path / "d_vgg.h5", tmp_path / "y.h5"]
    write_direction(checkpoint, directions[0], {"seed": 1}, device="cpu")
    shard = tmp_path / "s.h5"
    compute_surface_shard(checkpoint, directions, shard, spec, dataset, "1-of-1", "cpu")
    merge_surface([shard], tmp_path / "surface.h5", spec)
    assert store.open(tmp_path / "surface.h5").attrs["batchnorm"]
    plots.plot_surface(tmp_path / "surface.h5", tmp_path / "s.png", title="t")
    assert titles[-1] == "t\nBN: running statistics of theta (No UpBN)"
