"""Sweeps end to end through Snakemake (tests/configs/sweeps.yaml): an A1-style sweep (two noise
distributions, raw and sign-consistent) and an A2-style sign-ratio sweep on a tiny trained MLP
and a tiny trained BN net, with their figures and catalog rows; A3's special directions, A4's
parameter groups, A5/A6 blocks over seeds on two BN initializations with their claims, and A9's
theory demos."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from workflow_utils import REPO, completed_run

from landscape import store
from landscape.sweep_table import read_sweep

pytestmark = pytest.mark.workflow
CONFIG = REPO / "tests" / "configs" / "sweeps.yaml"
RUNS = {"mlp": ("digits/mlp/mlp", 3), "vgg_bn": ("digits/vgg_bn/vgg_bn", 6)}
NORMAL = ("digits/vgg_bn_normal/vgg_bn_normal", 6)
BLOCKS = {"a1": RUNS, "a2": RUNS, "a3": ["vgg_bn"], "a4": ["vgg_bn"]}
BLOCKS |= {"a5": ["vgg_bn", "vgg_bn_normal"], "a6": ["vgg_bn", "vgg_bn_normal"]}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return completed_run(tmp_path_factory.mktemp("sweeps"), CONFIG)


def sweep(workdir, run, name):
    place, epoch = {**RUNS, "vgg_bn_normal": NORMAL}[run]
    return workdir / "results" / place / "sweeps" / f"epoch{epoch}" / f"{name}.h5"


def test_every_sweep_has_its_figure_and_catalog_row(workdir):
    for name, runs in BLOCKS.items():
        for run in runs:
            place, epoch = {**RUNS, "vgg_bn_normal": NORMAL}[run]
            figure = workdir / f"results/figures/sweeps/{place}/epoch{epoch}/{name}.png"
            assert figure.stat().st_size > 10_000, figure
    catalog = pd.read_csv(workdir / "results" / "catalog.csv")
    rows = catalog[catalog["kind"] == "sweep"]
    assert len(rows) == sum(len(runs) for runs in BLOCKS.values()) and not rows["stale"].any()


def test_a1_variants_in_config_order_with_their_sign_share(workdir):
    frame = read_sweep(sweep(workdir, "vgg_bn", "a1"))
    assert frame["variant"].tolist() == [
        "sign=none,distribution=gaussian",
        "sign=none,distribution=laplace",
        "sign=consistent,distribution=gaussian",
        "sign=consistent,distribution=laplace",
    ]
    raw, consistent = frame[frame["sign"] == "none"], frame[frame["sign"] == "consistent"]
    assert (consistent["sign_share"] == 1.0).all()
    assert raw["sign_share"].between(0.45, 0.55).all()  # measured: 0.505, 0.477


def test_sign_consistent_noise_flattens_the_positive_side_of_the_trained_bn_net(workdir):
    """The paper's A1: raw noise gives a near-symmetric valley, sign-consistent noise a flat
    +lambda side. Measured train error means (+/-): raw 0.603/0.597 and 0.695/0.706,
    consistent 0.343/0.617 and 0.373/0.665."""
    frame = read_sweep(sweep(workdir, "vgg_bn", "a1"))
    pos, neg = frame["train/error/mean_pos"], frame["train/error/mean_neg"]
    raw = frame["sign"] == "none"
    assert ((pos - neg).abs()[raw] < 0.05).all()
    assert ((neg - pos)[~raw] > 0.2).all()


@pytest.mark.parametrize("run", RUNS)
def test_at_ratio_1_the_positive_side_is_lower(workdir, run):
    """A2 at sign ratio 1 (every element sign-consistent): the +lambda side's mean train error is
    below the -lambda side's (measured: MLP 0.128 vs 0.412, VGG-BN 0.343 vs 0.617)."""
    frame = read_sweep(sweep(workdir, run, "a2")).set_index("sign_ratio")
    assert frame.index.tolist() == [0.0, 0.5, 1.0]
    assert frame.loc[1.0, "sign_share"] == 1.0
    assert frame.loc[1.0, "train/error/mean_neg"] - frame.loc[1.0, "train/error/mean_pos"] > 0.2


def test_the_same_direction_gives_the_same_curve_in_two_sweeps(workdir):
    """a1's sign-consistent Gaussian is a2's ratio 1 (same seed and transforms): equal curves
    although they sit at other places of other files."""
    for run in RUNS:
        a1, a2 = store.open(sweep(workdir, run, "a1")), store.open(sweep(workdir, run, "a2"))
        i = list(a1["variant"]).index("sign=consistent,distribution=gaussian")
        j = list(a2["variant"]).index("sign_ratio=1.0")
        for metric in ("train/loss", "test/error"):
            np.testing.assert_array_equal(a1[metric][i], a2[metric][j])


def test_a_sweep_curve_equals_compute_curve_on_the_workflow_checkpoint(workdir, tmp_path):
    """The sweep's curve along its recorded direction spec is compute_curve's along the file
    make_direction writes from that spec."""
    from landscape.directions import write_direction
    from landscape.evaluate import compute_curve

    art = store.open(sweep(workdir, "vgg_bn", "a1"))
    checkpoint = workdir / "results" / "digits/vgg_bn/vgg_bn/checkpoints/epoch6.pt"
    i = list(art["variant"]).index("sign=none,distribution=laplace")
    keys = ("lambda", "splits", "bn_mode", "bn_batches", "batch_size")
    spec = {k: v for k, v in art.spec.items() if k in keys}
    direction = json.loads(art["direction/spec"][i])
    write_direction(checkpoint, tmp_path / "d.h5", direction, device="cpu")
    compute_curve(checkpoint, tmp_path / "d.h5", tmp_path / "c.h5", spec, {"source": "digits"})
    curve = store.open(tmp_path / "c.h5")
    # the job ran on one thread, this test on several: float32 convolutions sum in other orders
    for metric in ("train/loss", "train/error", "test/loss", "test/error"):
        np.testing.assert_allclose(art[metric][i], curve[metric], rtol=1e-5, atol=1e-7)


def test_a3_theta_f_at_minus_one_is_the_all_zero_network(workdir):
    """A3: theta_f under Filter-NS, biases and BN weights scaled like weights, is theta itself,
    so lambda = -1 zeroes every parameter: constant logits, test loss log(10)."""
    art = store.open(sweep(workdir, "vgg_bn", "a3"))
    assert list(art["variant"]) == [
        f"of={of}"
        for of in (
            "theta_0", "theta_f", "sign_theta_f", "sign_theta_f_mu", "sgp_theta_f",
            "sgp_theta_f_mu",
        )
    ]  # fmt: skip
    i = list(art["variant"]).index("of=theta_f")
    assert art["lambda"][0] == -1.0
    assert art["test/loss"][i][0] == pytest.approx(np.log(10), abs=1e-5)
    assert np.isfinite(art["test/loss"]).all()


def test_a4_noise_on_one_group_moves_the_loss_less_than_on_all(workdir):
    """A4: raw noise on the classifier or the BN parameters alone is a part of the noise on every
    parameter (same seed and scaling): the loss moves less along it."""
    art = store.open(sweep(workdir, "vgg_bn", "a4"))
    loss, center = art["test/loss"], len(art["lambda"]) // 2
    moved = {v: np.abs(loss[i] - loss[i][center]).mean() for i, v in enumerate(art["variant"])}
    for group in ("CLF", "BN"):
        assert moved[f"sign=none,group={group}"] < moved["sign=none,group=ALL"], moved
    frame = read_sweep(sweep(workdir, "vgg_bn", "a4"))
    assert (frame[frame["sign"] == "consistent"]["sign_share"] == 1.0).all()


def _raw_asymmetry_by_hand(path):
    """Mean over raw variants of |mean test error at lambda > 0 - at lambda < 0| / their sum,
    straight from the stored curves."""
    art = store.open(path)
    lam, error = art["lambda"], art["test/error"]
    raw = [i for i, v in enumerate(art["variant"]) if "sign=consistent" not in v]
    pos = np.array([error[i][lam > 0].mean() for i in raw])
    neg = np.array([error[i][lam < 0].mean() for i in raw])
    return np.mean(np.abs(pos - neg) / (pos + neg))


def test_a5_and_a6_claims_read_the_pooled_seeds_of_each_block(workdir):
    claims = pd.read_csv(workdir / "results" / "tables" / "claims.csv").set_index("figure")
    asym = {
        (block, run): _raw_asymmetry_by_hand(sweep(workdir, run, block))
        for block in ("a5", "a6")
        for run in ("vgg_bn", "vgg_bn_normal")
    }
    a5 = claims.loc["A5"]
    expected = max(asym[(b, "vgg_bn_normal")] - asym[(b, "vgg_bn")] for b in ("a5", "a6"))
    assert a5["value"] == pytest.approx(expected, rel=1e-9)
    assert a5["holds"] == (expected < 0)
    assert "vgg_bn_normal (normal)" in a5["detail"] and "vgg_bn (ones)" in a5["detail"]
    a6 = claims.loc["A6"]  # every raw-noise block on several runs: a1 too
    a1 = [_raw_asymmetry_by_hand(sweep(workdir, run, "a1")) for run in RUNS]
    assert a6["value"] == pytest.approx(max(*asym.values(), *a1), rel=1e-9)


def test_a9_theory_demos_of_the_mlp(workdir):
    place, epoch = RUNS["mlp"]
    art = store.open(workdir / "results" / place / "theory" / f"epoch{epoch}.h5")
    assert art.inputs["checkpoint"]["path"] == f"results/{place}/checkpoints/epoch{epoch}.pt"
    center = list(art["lambda"]).index(0.0)
    assert art["relu/flip_share"][center] == 0.0
    np.testing.assert_array_equal(art["agreement/agreement"][:, center], [1.0, 1.0])
    loss = art["softmax/loss"]
    assert loss[0, center] == loss[1, center]  # raw and sign-consistent noise at lambda = 0
    figure = workdir / "results" / "figures" / "theory" / place / f"epoch{epoch}.png"
    assert figure.stat().st_size > 10_000
