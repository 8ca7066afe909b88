"""Tests for landscape.curves: stationary points, curve types, asymmetry, SSR, summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from landscape.curves import (
    CURVE_TYPES,
    analyze_curve,
    asymmetry,
    classify_curve,
    count_stationary,
    maxima,
    minima,
    same_sign_ratio,
    stationary_points,
)

LAM = np.linspace(-1.0, 1.0, 41)
LAM_W = np.linspace(-1.0, 2.0, 61)  # step 0.05: lam = 0 and lam = 1 are grid points


# --------------------------------------------------------------------------- stationary rule


@pytest.mark.parametrize(
    ("y", "expected"),
    [
        ([0.0, 1.0, 0.0, 1.0, 0.0], [1, 2, 3]),
        ([5.0, 0.0, 1.0, 2.0, 3.0], [1]),  # endpoint 0 is higher than its neighbour: not counted
        ([3.0, 2.0, 1.0, 0.0], []),  # monotonic
        ([0.0, 1.0, 0.0], [1]),
        ([0.0, 1.0, 1.0, 0.0], []),  # plateau top: equal neighbours
        ([2.0, 1.0, 1.0, 2.0], []),  # plateau bottom
        ([0.0, 1.0, 1.0, 2.0], []),
        ([3.0, 3.0, 3.0], []),
        ([0.0, 1.0, 2.0], []),
        ([], []),
        ([1.0], []),
        ([1.0, 0.0], []),
        ([0.0, 2.0, 1.0, np.nan, 0.0, 1.0, 0.0], [1, 5]),  # NaN and its neighbours excluded
        ([0.0, np.inf, 0.0, np.inf, 0.0], [1, 2, 3]),
        ([np.inf, np.inf, np.inf], []),  # inf - inf is NaN
    ],
)
def test_stationary_points_rule(y, expected):
    got = stationary_points(y)
    assert got.dtype == np.int64
    assert got.tolist() == expected
    assert count_stationary(y) == len(expected)


def test_stationary_points_agree_with_the_product_rule():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=200).astype(float)  # many ties
    t = np.arange(1, y.size - 1)
    expected = t[(y[t] - y[t + 1]) * (y[t] - y[t - 1]) > 0]
    assert stationary_points(y).tolist() == expected.tolist()


def test_stationary_points_no_underflow():
    # (1e-200) * (1e-200) underflows to 0, but the point is strictly above both neighbours.
    assert stationary_points([0.0, 1e-200, 0.0]).tolist() == [1]


def test_minima_and_maxima_split_stationary_points():
    y = [3.0, 1.0, 2.0, 2.0, 0.0, 4.0, 1.0, 5.0, 5.0]
    assert minima(y).tolist() == [1, 4, 6]
    assert maxima(y).tolist() == [5]
    assert stationary_points(y).tolist() == [1, 4, 5, 6]
    assert minima([1.0, 0.0]).tolist() == maxima([]).tolist() == []


def test_paper_counts_on_analytic_curves():
    assert count_stationary(LAM**2) == 1
    assert count_stationary((LAM**2 - 0.25) ** 2) == 3  # w: two minima and the peak
    assert count_stationary(LAM_W**2 * (LAM_W - 1) ** 2) == 3


def test_stationary_points_rejects_2d():
    with pytest.raises(ValueError, match="1-D"):
        stationary_points(np.zeros((3, 3)))


# --------------------------------------------------------------------------- classification

VVV = 1 - np.cos(3 * np.pi * LAM) + 0.1 * LAM**2

CASES = [
    ("v-basin", LAM, LAM**2),
    ("v-basin", LAM, np.abs(LAM) + 0.3 * LAM),
    ("v-side", LAM, (LAM + 2) ** 2),  # monotonic increasing
    ("v-side", LAM, -LAM),  # monotonic decreasing
    ("v-side", LAM, (LAM - 0.6) ** 2),  # one minimum, away from theta
    ("w-basin", LAM_W, LAM_W**2 * (LAM_W - 1) ** 2),  # theta at the left minimum
    ("w-basin", LAM_W - 1.0, LAM_W**2 * (LAM_W - 1) ** 2),  # theta at the right minimum
    ("w-peak", LAM, (LAM**2 - 0.25) ** 2),
    ("w-peak", LAM, 1 + np.cos(3 * np.pi * LAM)),  # minima at +-1/3, peak at 0
    ("vvv-basin", LAM, VVV),
    ("vvv-basin", LAM, np.cos(8 * np.pi * LAM) * -1 + LAM**2),
    ("other", LAM, ((LAM - 0.2) ** 2 - 0.25) ** 2),  # w, theta on a slope
    ("other", LAM, -(LAM**2)),  # a single hill
    ("other", LAM, 1 - np.cos(3 * np.pi * (LAM - 0.15)) + 0.1 * LAM**2),  # vvv, theta on a slope
    ("other", LAM, np.zeros_like(LAM)),  # constant
    ("other", LAM, np.where(LAM > 0.5, np.nan, LAM**2)),
    ("other", LAM, np.where(LAM > 0.5, np.inf, LAM**2)),
]


@pytest.mark.parametrize(
    ("kind", "lam", "y"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_classify_analytic_curves(kind, lam, y):
    assert kind in CURVE_TYPES
    assert classify_curve(lam, y) == kind


@pytest.mark.parametrize(
    ("kind", "lam", "y"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_small_noise_keeps_the_type(kind, lam, y):
    rng = np.random.default_rng(1)
    assert classify_curve(lam, y + 1e-9 * rng.standard_normal(y.size)) == kind


def test_vvv_curve_has_three_minima_with_theta_in_the_middle():
    lows = minima(VVV)
    assert lows.size == 3 and 20 in lows.tolist()
    assert maxima(VVV).size == 2


def test_noise_on_a_flat_region_is_filtered_but_counted():
    rng = np.random.default_rng(2)
    y = np.maximum(LAM, 0.0) ** 2 + 1e-9 * rng.standard_normal(LAM.size)  # flat, then rising
    assert count_stationary(y) > 3  # the paper's raw count sees the wiggles
    assert classify_curve(LAM, y) == "v-side"
    assert classify_curve(LAM, y, rtol=0.0) == "other"


def test_rtol_decides_whether_a_dent_is_a_minimum():
    y = LAM**2
    y[35] -= 0.1  # 0.4625 below its left neighbour 0.49: prominence 0.0275 of a range of 1
    assert minima(y).tolist() == [20, 35]
    assert classify_curve(LAM, y) == "w-basin"
    assert classify_curve(LAM, y, rtol=0.02) == "w-basin"
    assert classify_curve(LAM, y, rtol=0.03) == "v-basin"


def test_flat_bottom_counts_as_one_minimum():
    lam = np.linspace(-1.0, 1.0, 9)
    y = np.array([3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0])
    assert count_stationary(y) == 0  # the paper's strict rule
    assert classify_curve(lam, y) == "v-basin"
    assert classify_curve(lam, y, rtol=0.0) == "v-basin"
    assert classify_curve(lam, np.roll(y, 3)) == "other"  # [0,1,2,3,3,2,1,0,0]: a hill


def test_theta_between_two_grid_points():
    lam = np.linspace(-1.0, 1.0, 40)  # no grid point at 0: +-1/39 are both nearest
    assert classify_curve(lam, (lam - lam[20]) ** 2) == "v-basin"
    assert classify_curve(lam, (lam - lam[19]) ** 2) == "v-basin"
    assert classify_curve(lam, (lam - lam[22]) ** 2) == "v-side"


def test_short_curve_is_other():
    assert classify_curve([-1.0, 1.0], [1.0, 1.0]) == "other"


@pytest.mark.parametrize(
    "lam",
    [np.linspace(1.0, -1.0, 41), np.linspace(-1.0, 1.0, 40), np.full(41, np.nan)],
)
def test_classify_rejects_bad_grids(lam):
    with pytest.raises(ValueError, match="lam"):
        classify_curve(lam, LAM**2)


def test_classify_rejects_negative_rtol():
    with pytest.raises(ValueError, match="rtol"):
        classify_curve(LAM, LAM**2, rtol=-1.0)


# --------------------------------------------------------------------------- asymmetry


def test_asymmetry_exact_means():
    # lam = k/20, k = 1..20 on the positive side: sum k^2/400 = 2870/400, sum k/20 = 210/20.
    out = asymmetry(LAM, LAM**2 + LAM)
    assert out["mean_pos"] == pytest.approx(0.35875 + 0.525)
    assert out["mean_neg"] == pytest.approx(0.35875 - 0.525)
    assert out["ratio"] == pytest.approx(0.88375 / -0.16625)
    assert out["difference"] == pytest.approx(1.05)
    assert all(type(v) is float for v in out.values())


def test_asymmetry_excludes_lambda_zero():
    lam = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    y = np.array([1.0, 0.5, 100.0, 1.0, 2.0])  # positive side twice as steep; theta ignored
    assert asymmetry(lam, y) == {
        "mean_pos": 1.5,
        "mean_neg": 0.75,
        "ratio": 2.0,
        "difference": 0.75,
    }


def test_asymmetry_degenerate_sides():
    out = asymmetry(LAM, np.maximum(LAM, 0.0))
    assert out["mean_neg"] == 0.0 and math.isnan(out["ratio"])
    assert out["difference"] == pytest.approx(10.5 / 20)
    out = asymmetry([0.5, 1.0], [1.0, 3.0])  # no negative side
    assert out["mean_pos"] == 2.0 and math.isnan(out["mean_neg"]) and math.isnan(out["ratio"])
    with pytest.raises(ValueError, match="shape"):
        asymmetry(LAM, LAM[:-1])


# --------------------------------------------------------------------------- same-sign ratio


def _ssr_pair():
    a = {
        "w": np.array([[1.0, -2.0], [0.0, 3.0]]),
        "b": torch.tensor([-1.0, 1.0], requires_grad=True),
        "z": np.array([0.0, 5.0]),
    }
    b = {
        "w": np.array([[2.0, -1.0], [0.0, -3.0]]),  # same, same, 0 == 0, differ
        "b": torch.tensor([-0.5, -2.0], dtype=torch.bfloat16),  # same, differ
        "z": torch.tensor([1.0, 0.0]),  # zero is its own sign: both differ
    }
    return a, b


def test_same_sign_ratio_overall_and_groups():
    a, b = _ssr_pair()
    out = same_sign_ratio(a, b, {"W": ["w"], "B": ["b"], "Z": ["z"], "WB": ["w", "b"], "E": []})
    assert out["ALL"] == pytest.approx(4 / 8)
    assert out["W"] == 0.75 and out["B"] == 0.5 and out["Z"] == 0.0
    assert out["WB"] == pytest.approx(4 / 6)
    assert math.isnan(out["E"])
    assert list(out) == ["ALL", "W", "B", "Z", "WB", "E"]
    assert same_sign_ratio(a, b) == {"ALL": 0.5}


def test_same_sign_ratio_identical_and_opposite():
    x = {"p": torch.randn(10, 10), "q": torch.randn(7)}
    assert same_sign_ratio(x, x) == {"ALL": 1.0}
    neg = {k: -v for k, v in x.items()}
    assert same_sign_ratio(x, neg, {"ALL": ["p"]}) == {"ALL": 0.0}


def test_same_sign_ratio_nan_never_matches():
    assert same_sign_ratio({"p": np.array([np.nan, 1.0])}, {"p": np.array([np.nan, 1.0])}) == {
        "ALL": 0.5
    }


def test_same_sign_ratio_errors():
    a, b = _ssr_pair()
    with pytest.raises(KeyError):
        same_sign_ratio(a, {"w": b["w"]})
    with pytest.raises(KeyError, match="nope"):
        same_sign_ratio(a, b, {"G": ["w", "nope"]})
    with pytest.raises(ValueError, match="elements"):
        same_sign_ratio({"w": np.ones(3)}, {"w": np.ones(4)})


# --------------------------------------------------------------------------- analyze_curve

FIELDS = ["n_stationary", "stationary", "type", "mean_pos", "mean_neg", "ratio", "difference"]


def test_analyze_curve_keys_and_values():
    metrics = {"test/loss": LAM**2, "test/error": 0.5 * LAM**2, "train/loss": LAM**2 + LAM}
    out = analyze_curve(LAM, metrics)
    assert list(out) == [f"{m}/{f}" for m in metrics for f in FIELDS]
    assert out["test/loss/n_stationary"] == 1 and type(out["test/loss/n_stationary"]) is int
    np.testing.assert_array_equal(out["test/loss/stationary"], [20])
    assert out["test/loss/stationary"].dtype == np.int64
    assert out["test/loss/type"] == "v-basin"
    assert out["test/loss/mean_pos"] == pytest.approx(0.35875)
    assert out["test/loss/mean_neg"] == pytest.approx(0.35875)
    assert out["test/loss/ratio"] == pytest.approx(1.0)
    assert out["test/loss/difference"] == pytest.approx(0.0, abs=1e-12)
    assert out["test/error/mean_pos"] == pytest.approx(0.35875 / 2)
    assert out["train/loss/type"] == "v-side" and out["train/loss/difference"] == pytest.approx(
        1.05
    )
    for key, value in out.items():
        assert isinstance(value, (int, float, str, np.ndarray)), key


def test_analyze_curve_values_fit_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    y = LAM**2
    y[5] = np.nan
    out = analyze_curve(LAM, {"test/loss": y, "test/error": np.ones_like(LAM)})
    with h5py.File(tmp_path / "c.h5", "w") as f:
        for key, value in out.items():
            if isinstance(value, np.ndarray):
                f.create_dataset(key, data=value)
            else:
                f.attrs[key] = value
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f.attrs["test/loss/type"] == "other"
        assert f.attrs["test/error/type"] == "other"
        assert f["test/error/stationary"].shape == (0,)
        assert f["test/loss/stationary"][()].tolist() == [20]


def test_analyze_curve_rejects_mismatched_grid():
    with pytest.raises(ValueError, match="lam"):
        analyze_curve(LAM, {"test/loss": LAM[:-1] ** 2})
