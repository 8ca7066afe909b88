"""Sweeps: many curves of one checkpoint in one file, against curves computed one by one."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from landscape import store
from landscape.config import ConfigError, check_sweeps, sweep_spec
from landscape.directions import make_direction, write_direction
from landscape.evaluate import compute_curve
from landscape.sweep_table import read_sweep
from landscape.sweeps import compute_sweep, sign_share
from landscape.train import load_model, train_model

REPO = Path(__file__).resolve().parents[1]
DATASET = {"source": "digits"}
EVALUATION = {
    "lambda": {"min": -1.0, "max": 1.0, "num": 5},
    "splits": ["train", "test"],
    "bn_mode": "recompute",
    "bn_batches": 2,
    "batch_size": 256,
}


def _checkpoint(tmp_path: Path, model: dict, name: str) -> Path:
    """A checkpoint trained one epoch, as tests/test_evaluate.py makes theirs."""
    run = {"run": name, "dataset_name": "digits", "dataset": DATASET, "model_name": name}
    run |= {"model": model, "train": {"epochs": 1, "seed": 0}}
    train_model(tmp_path / f"{name}0.pt", run, 0, device="cpu")
    train_model(tmp_path / f"{name}1.pt", run, 1, previous=tmp_path / f"{name}0.pt", device="cpu")
    return tmp_path / f"{name}1.pt"


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("mlp"), {"arch": "mlp", "hidden": [16]}, "mlp")


@pytest.fixture(scope="module")
def vgg_checkpoint(tmp_path_factory):
    return _checkpoint(
        tmp_path_factory.mktemp("vgg"), {"arch": "vgg", "layers": [4, "M", 8]}, "vgg"
    )


@pytest.mark.parametrize("arch", ["mlp", "vgg"])
def test_a_sweep_equals_its_curves_computed_one_by_one(request, tmp_path, arch):
    checkpoint = request.getfixturevalue(f"{arch}_checkpoint")
    base = {"kind": "noise", "seed": 3, "normalization": "filter", "bias_bn": "normalize"}
    spec = {"base": base, "vary": {"sign": ["none", "consistent"]}, **EVALUATION}
    compute_sweep(checkpoint, tmp_path / "s.h5", spec, DATASET, "cpu")
    sweep = store.open(tmp_path / "s.h5")
    assert sweep.kind == "sweep"
    assert list(sweep["variant"]) == ["sign=none", "sign=consistent"]
    assert sweep.dims["test/loss"] == ("variant", "lambda")
    assert sweep.inputs["checkpoint"]["sha256"] == store.sha256_file(checkpoint)
    assert sweep.attrs["batchnorm"] == (arch == "vgg")
    for i, sign in enumerate(["none", "consistent"]):
        write_direction(checkpoint, tmp_path / f"{sign}.h5", {**base, "sign": sign}, device="cpu")
        compute_curve(checkpoint, tmp_path / f"{sign}.h5", tmp_path / f"c_{sign}.h5", spec, DATASET)
        curve = store.open(tmp_path / f"c_{sign}.h5")
        for metric in ("train/loss", "train/error", "test/loss", "test/error"):
            np.testing.assert_allclose(sweep[metric][i], curve[metric], rtol=0, atol=1e-6)
            for field in ("mean_pos", "mean_neg", "type"):
                key = f"analysis/{metric}/{field}"
                assert sweep[key][i] == pytest.approx(curve[key], abs=1e-6)
        direction = store.open(tmp_path / f"{sign}.h5")
        assert sweep["direction/relative_norm"][i] == pytest.approx(
            direction.attrs["relative_norm"], rel=1e-9
        )
    # the sign-consistent direction agrees with theta wherever it moves; noise about half
    assert sweep["direction/sign_share"][1] == 1.0
    assert 0.4 < sweep["direction/sign_share"][0] < 0.6


def test_variants_are_the_cartesian_product_in_order(mlp_checkpoint, tmp_path):
    vary = {"sign": ["none", "consistent"], "seed": [1, 2], "normalization": ["norm", "filter"]}
    spec = {"base": {"bias_bn": "normalize"}, "vary": vary, **EVALUATION, "splits": ["test"]}
    spec["lambda"] = {"min": -1.0, "max": 1.0, "num": 3}
    compute_sweep(mlp_checkpoint, tmp_path / "s.h5", spec, DATASET, "cpu")
    frame = read_sweep(tmp_path / "s.h5")
    expected = [
        (sign, seed, norm)
        for sign in vary["sign"]
        for seed in vary["seed"]
        for norm in vary["normalization"]
    ]
    assert list(zip(frame["sign"], frame["seed"], frame["normalization"], strict=True)) == expected
    assert frame["variant"][5] == "sign=consistent,seed=1,normalization=filter"
    assert list(frame.columns[:4]) == ["variant", "sign", "seed", "normalization"]
    assert frame["sign_share"].tolist()[4:] == [1.0] * 4
    # the workflow's canonical JSON sorts vary's keys; `order` restores the config's order
    shuffled = {**spec, "vary": dict(sorted(vary.items())), "order": list(vary)}
    compute_sweep(mlp_checkpoint, tmp_path / "t.h5", shuffled, DATASET, "cpu")
    assert store.sha256_file(tmp_path / "t.h5") == store.sha256_file(tmp_path / "s.h5")
    np.testing.assert_array_equal(
        store.open(tmp_path / "t.h5")["test/loss"], store.open(tmp_path / "s.h5")["test/loss"]
    )
    # the direction of each row is make_direction of its block: the seed shows in the norm
    model, _ = load_model(mlp_checkpoint, "cpu")
    d = make_direction(
        {"bias_bn": "normalize", "sign": "none", "seed": 2, "normalization": "norm"}, model
    )
    norm = float(torch.sqrt(sum(v.double().pow(2).sum() for v in d.values())))
    assert store.open(tmp_path / "s.h5")["direction/direction_norm"][2] == pytest.approx(norm)


def test_a_bad_vary_key_is_named_before_anything_is_read(tmp_path):
    spec = {"base": {}, "vary": {"distrib": ["gaussian"]}, **EVALUATION}
    with pytest.raises(ValueError, match=r"vary\.distrib: not a key of a direction block"):
        compute_sweep(tmp_path / "missing.pt", tmp_path / "s.h5", spec, DATASET, "cpu")
    with pytest.raises(ValueError, match=r"vary\.seed: expected a non-empty list"):
        compute_sweep(
            tmp_path / "missing.pt", tmp_path / "s.h5", {**spec, "vary": {"seed": []}}, DATASET
        )
    assert not (tmp_path / "s.h5").exists()


def test_sign_share_counts_the_moved_elements_that_agree_with_theta():
    theta = {"w": torch.tensor([[1.0, -1.0], [2.0, 0.0]]), "b": torch.tensor([1.0])}
    eps = {"w": torch.tensor([[3.0, 1.0], [0.0, 5.0]]), "b": torch.tensor([0.0])}
    # moved: w[0,0] agrees, w[0,1] disagrees, w[1,1] (theta 0) disagrees; zeros do not count
    assert sign_share(eps, theta) == pytest.approx(1 / 3)
    assert np.isnan(sign_share({"b": torch.zeros(1)}, theta))


def _config(sweeps: dict) -> dict:
    """tests/configs/tiny.yaml with ``sweeps``, validated like the workflow does."""
    from snakemake.utils import validate

    from landscape.config import normalize_numbers

    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    config["sweeps"] = copy.deepcopy(sweeps)
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    normalize_numbers(config, schema)
    check_sweeps(config, schema)
    return config


A1 = {
    "base": {"kind": "noise"},
    "vary": {"sign": ["none", "consistent"], "distribution": ["gaussian"]},
}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"vary": {"distrib": ["gaussian"]}}, r"sweeps\.a1\.vary\.distrib: not a key"),
        (
            {"vary": {"distribution": ["gaussian", "normal"]}},
            r"sweeps\.a1\.vary\.distribution: 'normal' is not one of",
        ),
        (
            {"vary": {"sign_ratio": [0.5, 2]}},
            r"sweeps\.a1\.vary\.sign_ratio: 2 is greater than the maximum",
        ),
        (
            {"vary": {"kind": ["noise", "eigenvector"]}},
            r"sweeps\.a1\.vary\.kind: a sweep builds directions of kinds",
        ),
        (
            {"plot": {"rows": "seed"}},
            r"sweeps\.a1\.plot\.rows: 'seed' is not a key of sweeps\.a1\.vary",
        ),
        ({"splits": ["train"]}, r"sweeps\.a1\.plot\.metric: split 'test' is not evaluated"),
        (
            {"plot": {"lines": "sign", "average": "sign"}},
            r"sweeps\.a1\.plot: rows, cols, lines and average must name different keys",
        ),
        ({"runs": ["nope"]}, r"sweeps\.a1\.runs: 'nope' is not a key of runs"),
    ],
)
def test_bad_sweep_blocks_are_refused_naming_the_key(edit, message):
    with pytest.raises(ConfigError, match=message):
        _config({"a1": {**A1, **edit}})


def test_the_sweep_spec_changes_exactly_with_a_direction():
    spec = sweep_spec(_config({"a1": A1}), "a1")
    assert spec["order"] == ["sign", "distribution"]
    assert [v["sign"] for v in spec["variants"]] == ["none", "consistent"]
    assert spec["variants"][0]["normalization"] == "filter"  # the noise default, filled in
    assert "which" not in spec["base"]  # a key no variant reads
    same = sweep_spec(_config({"a1": {**A1, "base": {"kind": "noise", "which": "SA"}}}), "a1")
    assert same == spec
    other = sweep_spec(_config({"a1": {**A1, "base": {"kind": "noise", "seed": 4}}}), "a1")
    assert other["variants"] != spec["variants"]
    ratios = sweep_spec(_config({"a1": {**A1, "vary": {"sign_ratio": [0, 1]}}}), "a1")
    assert ratios["vary"]["sign_ratio"] == [0.0, 1.0]
    assert all(isinstance(r, float) for r in ratios["vary"]["sign_ratio"])


def test_sweep_figures_follow_the_plot_block(mlp_checkpoint, tmp_path, monkeypatch):
    from landscape import sweep_plots

    figures = []
    monkeypatch.setattr(sweep_plots, "save_figure", lambda fig, out: figures.append(fig))
    vary = {"sign": ["none", "consistent"], "distribution": ["gaussian", "laplace", "uniform"]}
    vary |= {"normalization": ["norm", "filter"]}
    spec = {"base": {"bias_bn": "normalize"}, "vary": vary, **EVALUATION, "splits": ["test"]}
    compute_sweep(mlp_checkpoint, tmp_path / "a1.h5", spec, DATASET, "cpu")
    plot = {"rows": "sign", "cols": "distribution", "lines": "normalization"}
    sweep_plots.plot_sweep(tmp_path / "a1.h5", tmp_path / "a1.png", plot, title="t")
    axes = figures[-1].axes
    assert len(axes) == 6
    assert axes[0].get_title() == "distribution=gaussian\nsign=none"
    assert axes[3].get_title() == "distribution=gaussian\nsign=consistent"
    labels = [
        line.get_label() for line in axes[4].get_lines() if not line.get_label().startswith("_")
    ]
    assert labels == ["normalization=norm", "normalization=filter"]
    art = store.open(tmp_path / "a1.h5")
    index = list(art["variant"]).index("sign=consistent,distribution=laplace,normalization=filter")
    np.testing.assert_array_equal(axes[4].get_lines()[1].get_ydata(), art["test/error"][index])

    ratios = {"sign_ratio": [0.0, 0.5, 1.0], "seed": [1, 2]}
    base = {"sign": "consistent", "bias_bn": "normalize"}
    spec = {"base": base, "vary": ratios, **EVALUATION, "splits": ["test"]}
    compute_sweep(mlp_checkpoint, tmp_path / "a2.h5", spec, DATASET, "cpu")
    data = sweep_plots.side_means(
        store.open(tmp_path / "a2.h5"), {"kind": "ratio", "x": "sign_ratio"}
    )
    assert list(data) == ["seed=1", "seed=2"]
    frame = read_sweep(tmp_path / "a2.h5")
    one = frame[frame["seed"] == 1].sort_values("sign_share")
    np.testing.assert_array_equal(data["seed=1"]["x"], one["sign_share"])
    np.testing.assert_array_equal(data["seed=1"]["pos"], one["test/error/mean_pos"])
    np.testing.assert_array_equal(data["seed=1"]["neg"], one["test/error/mean_neg"])
    assert data["seed=1"]["x"][-1] == 1.0
    sweep_plots.plot_sweep(tmp_path / "a2.h5", tmp_path / "a2.png", {"kind": "ratio"}, title="t")
    assert len(figures[-1].axes[0].get_lines()) == 4


def test_a_grid_figure_averages_over_the_key_it_names(mlp_checkpoint, tmp_path, monkeypatch):
    from landscape import sweep_plots

    figures = []
    monkeypatch.setattr(sweep_plots, "save_figure", lambda fig, out: figures.append(fig))
    vary = {"sign": ["none", "consistent"], "seed": [1, 2, 3]}
    spec = {"base": {"bias_bn": "like_weights"}, "vary": vary, **EVALUATION, "splits": ["test"]}
    compute_sweep(mlp_checkpoint, tmp_path / "a6.h5", spec, DATASET, "cpu")
    plot = {"lines": "sign", "average": "seed", "metric": "test/loss"}
    sweep_plots.plot_sweep(tmp_path / "a6.h5", tmp_path / "a6.png", plot, title="t")
    (ax,) = figures[-1].axes
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in lines] == ["sign=none", "sign=consistent"]
    art = store.open(tmp_path / "a6.h5")
    raw = [i for i, v in enumerate(art["vary/sign"]) if v == "none"]
    assert len(raw) == 3
    np.testing.assert_allclose(lines[0].get_ydata(), art["test/loss"][raw].mean(axis=0))
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx(art["test/loss"][raw].max())
    assert band.min() == pytest.approx(art["test/loss"][raw].min())
    assert "mean over seed" in ax.get_ylabel()


def test_special_directions_read_the_initialization_they_name(mlp_checkpoint, tmp_path):
    """A3-style: theta_0 is the run's epoch-0 checkpoint, theta_f theta itself (raw, scaled)."""
    from landscape.config import sweep_references

    init = mlp_checkpoint.with_name("mlp0.pt")
    base = {"kind": "special", "normalization": "raw", "bias_bn": "raw"}
    vary = {"of": ["theta_0", "theta_f"], "scale": [0.5, 2.0]}
    spec = {"base": base, "vary": vary, **EVALUATION, "splits": ["test"]}
    with pytest.raises(ValueError, match="theta_0"):
        compute_sweep(mlp_checkpoint, tmp_path / "s.h5", spec, DATASET, "cpu")
    refs = {"theta_0": init}
    compute_sweep(mlp_checkpoint, tmp_path / "s.h5", spec, DATASET, "cpu", references=refs)
    art = store.open(tmp_path / "s.h5")
    assert art.inputs["theta_0"]["sha256"] == store.sha256_file(init)
    theta_0 = store.read_checkpoint(init)["model"]
    norm_0 = float(torch.sqrt(sum(v.double().pow(2).sum() for v in theta_0.values())))
    np.testing.assert_allclose(art["direction/direction_norm"][:2], [0.5 * norm_0, 2 * norm_0])
    np.testing.assert_allclose(art["direction/relative_norm"][2:], [0.5, 2.0])
    # theta + lambda * theta at lambda = -1 / scale is the zero network: uniform logits
    assert art["test/loss"][3][1] == pytest.approx(np.log(10), rel=1e-6)  # scale 2, lambda -0.5
    config = _config({"a3": {"base": {"kind": "special"}, "vary": vary}})
    assert sweep_references(config, "a3", "mlp") == {"theta_0": ("mlp", 0)}
    assert sweep_references(_config({"a1": A1}), "a1", "mlp") == {}
