"""Curve analysis stored with a curve, read back, and gathered into the VT table."""

from __future__ import annotations

import numpy as np
import pytest

from landscape import store
from landscape.curve_table import curve_table, read_analysis
from landscape.evaluate import write_analysis


def write_curve(path, lam, metrics):
    path.parent.mkdir(parents=True, exist_ok=True)
    with store.create(path, kind="curve", spec={}, attrs={"run": "r", "epoch": 3}) as w:
        w.scale("lambda", lam)
        for name, values in metrics.items():
            w.put(name, values, dims=("lambda",))
        write_analysis(w, lam, metrics)


def test_analysis_round_trip(tmp_path):
    lam = np.linspace(-1.0, 1.0, 21)
    metrics = {"test/loss": lam**2 + 0.4 * lam, "test/error": (lam**2 - 0.25) ** 2}
    path = tmp_path / "digits" / "mlp" / "r" / "curves" / "epoch3" / "gauss.h5"
    write_curve(path, lam, metrics)
    art = store.open(path)
    assert art.dims["analysis/test/loss/stationary"] == ("lambda",)
    rows = read_analysis(path).set_index("metric")
    loss, error = rows.loc["test/loss"], rows.loc["test/error"]
    assert loss["type"] == "v-side"  # minimum at lambda = -0.2, theta on its side
    assert loss["stationary"] == pytest.approx([-0.2])
    assert error["type"] == "w-peak" and error["n_stationary"] == 3
    assert error["stationary"] == pytest.approx([-0.5, 0.0, 0.5])
    pos, neg = metrics["test/loss"][lam > 0].mean(), metrics["test/loss"][lam < 0].mean()
    assert loss["mean_pos"] == pytest.approx(pos) and loss["mean_neg"] == pytest.approx(neg)
    assert loss["ratio"] == pytest.approx(pos / neg)
    table = curve_table([path])
    assert table[["dataset", "model", "curve", "run", "epoch"]].iloc[0].tolist() == [
        "digits",
        "mlp",
        "gauss",
        "r",
        3,
    ]


def test_nan_curve_is_other_and_kept(tmp_path):
    lam = np.linspace(-1.0, 1.0, 5)
    loss = np.array([np.inf, 1.0, 0.5, 1.0, np.nan])
    write_curve(tmp_path / "c.h5", lam, {"test/loss": loss})
    row = read_analysis(tmp_path / "c.h5").iloc[0]
    assert row["type"] == "other"
    np.testing.assert_array_equal(store.open(tmp_path / "c.h5")["test/loss"], loss)
