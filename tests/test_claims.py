"""The papers' claims measured on synthetic artifacts written with the store API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from landscape import claims, store
from landscape.evaluate import write_analysis

LAM = np.linspace(-1.0, 1.0, 21)
GAUSSIAN = {"kind": "noise", "distribution": "gaussian", "sign": "none", "normalization": "filter"}
NE1 = {"kind": "eigenvector", "which": "SA", "index": 1, "normalization": "norm"}


def write_direction(path, spec, target=None):
    """A direction file holding only its spec (and a checkpoint target among its inputs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = {}
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"checkpoint")
        inputs["target"] = target
    with store.create(path, kind="direction", spec=spec, inputs=inputs):
        pass
    return path


def write_curve(root, name, spec, epoch, metrics, run="r", target_epoch=None):
    base = root / "d" / "m" / run
    target = base / "checkpoints" / f"epoch{target_epoch}.pt" if target_epoch is not None else None
    direction = write_direction(base / "directions" / f"epoch{epoch}" / f"{name}.h5", spec, target)
    path = base / "curves" / f"epoch{epoch}" / f"{name}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"run": run, "epoch": epoch}
    spec = {"direction": name}
    with store.create(path, "curve", spec, {"direction": direction}, attrs) as w:
        w.scale("lambda", LAM)
        for metric, values in metrics.items():
            w.put(metric, values, dims=("lambda",))
        write_analysis(w, LAM, metrics)
    return path


def loss(values):
    return {"train/loss": values, "test/loss": values}


def row(table, claim):
    return table.set_index("claim").loc[claim]


def test_v_basin_gaussian_curves_hold_and_a_flat_one_fails(tmp_path):
    paths = [write_curve(tmp_path, f"g{i}", GAUSSIAN, 5, loss(LAM**2 + 0.1 * i)) for i in range(4)]
    table = claims.claims_table(paths)
    gmi = row(table, "Gaussian curves are v-basins (GMI)")
    assert gmi["value"] == 1.0 and gmi["holds"] is np.True_
    flat = write_curve(tmp_path, "flat", GAUSSIAN, 5, loss(np.ones_like(LAM)))
    gmi = row(claims.claims_table([*paths, flat]), "Gaussian curves are v-basins (GMI)")
    assert gmi["value"] == pytest.approx(0.8) and gmi["holds"]  # 4 of 5: the threshold
    gmi = row(claims.claims_table([paths[0], flat]), "Gaussian curves are v-basins (GMI)")
    assert gmi["value"] == 0.5 and not gmi["holds"]
    assert "flat: other" in gmi["detail"]


def test_sign_consistent_noise_is_not_gaussian(tmp_path):
    sign = {**GAUSSIAN, "sign": "consistent"}
    path = write_curve(tmp_path, "gauss_sign", sign, 5, loss(np.ones_like(LAM)))
    gmi = row(claims.claims_table([path]), "Gaussian curves are v-basins (GMI)")
    assert pd.isna(gmi["holds"]) and gmi["detail"].startswith("not measured")


def test_absent_families_give_na_with_a_reason(tmp_path):
    path = write_curve(tmp_path, "g", GAUSSIAN, 5, loss(LAM**2))
    table = claims.claims_table([path])
    assert list(table.columns) == claims.CLAIM_COLUMNS
    measured = table["holds"].notna()
    assert measured.tolist() == [True] + [False] * 11  # both papers: 6 + 6 claims
    for detail in table.loc[~measured, "detail"]:
        assert detail.startswith("not measured: ")
    wine = row(table, "N.E. x N.E. surfaces look like a wine bottle's bottom")
    assert "ne1 x ne2" in wine["detail"]


def test_descent_direction_is_read_from_the_target_epoch(tmp_path):
    spec = {"kind": "checkpoint", "scale": 1.0, "target": {"run": None, "epoch": "final"}}
    v_side = loss((LAM - 0.8) ** 2)
    later = write_curve(tmp_path, "to_final", spec, 10, v_side, target_epoch=30)
    earlier = write_curve(tmp_path, "to_first", spec, 10, v_side, target_epoch=0)
    table = claims.claims_table([later, earlier])
    descent = row(table, "descent directions give v-side curves")
    assert descent["value"] == 1.0 and descent["holds"]
    assert "1 of 1" in descent["detail"]  # the direction toward epoch 0 is no descent direction


def test_ne_w_peak_early_and_fading(tmp_path):
    w_peak = (LAM**2 - 0.25) ** 2  # L(0) = 0.0625 above both neighbours, minima at +-0.5
    paths = [
        write_curve(tmp_path, "ne1", NE1, 0, loss(w_peak)),
        write_curve(tmp_path, "ne1", NE1, 30, loss(0.1 * w_peak)),
    ]
    table = claims.claims_table(paths)
    early = row(table, "w-peak curves exist along N.E. directions at early checkpoints")
    assert early["value"] == 1 and early["holds"]
    fades = row(table, "the N.E. w-peak fades at later checkpoints")
    assert fades["value"] == 1.0 and fades["holds"]
    assert "0.0625 -> 0.00625" in fades["detail"]
    paths.append(write_curve(tmp_path, "ne1", NE1, 50, loss(2 * w_peak)))
    fades = row(claims.claims_table(paths), "the N.E. w-peak fades at later checkpoints")
    assert fades["value"] == 0.0 and not fades["holds"]


def test_falls_on_both_sides_uses_the_points_next_to_theta():
    assert claims.falls_on_both_sides(LAM, -np.abs(LAM))
    assert not claims.falls_on_both_sides(LAM, LAM**2)
    assert not claims.falls_on_both_sides(LAM, LAM)  # v-side: falls on one side only
    assert claims.peak_height(LAM, (LAM**2 - 0.25) ** 2) == pytest.approx(0.0625)


def test_wine_bottle_surface():
    x = y = np.linspace(-1.5, 1.5, 31)
    r2 = x[:, None] ** 2 + y[None, :] ** 2
    assert claims.wine_bottle(x, y, (r2 - 1.0) ** 2)  # Dauphin et al.'s gutter
    assert not claims.wine_bottle(x, y, r2)  # a basin
    assert not claims.wine_bottle(x, y, x[:, None] ** 2 - y[None, :] ** 2)  # a saddle


def write_soa(root, name, spec, error, target_epoch=None):
    """An s.o.a. file whose quadratic misses the local loss change by the fraction ``error``."""
    base = root / "d" / "m" / "r"
    target = base / "checkpoints" / f"epoch{target_epoch}.pt" if target_epoch is not None else None
    direction = write_direction(base / "directions" / "epoch30" / f"{name}.h5", spec, target)
    lam, offset = np.linspace(-1.0, 0.0, 3), np.linspace(-0.05, 0.05, 3)
    loss = lam**2
    local = (lam[:, None] + offset[None, :]) ** 2
    quadratic = loss[:, None] + (local - loss[:, None]) * (1 + error)
    path = base / "soa" / "epoch30" / f"{name}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"run": "r", "epoch": 30}
    with store.create(path, "soa", {"direction": name}, {"direction": direction}, attrs) as w:
        w.scale("lambda", lam)
        w.scale("offset", offset)
        w.put("loss", loss, dims=("lambda",))
        w.put("local_loss", local, dims=("lambda", "offset"))
        w.put("quadratic", quadratic, dims=("lambda", "offset"))
    return path


def test_soa_explains_mli_like_gmi(tmp_path):
    mli_spec = {"kind": "checkpoint", "scale": -1.0, "target": {"run": None, "epoch": 0}}
    gmi = write_soa(tmp_path, "gmi", GAUSSIAN, 0.02)
    mli = write_soa(tmp_path, "mli", mli_spec, 0.05, target_epoch=0)
    soa = row(claims.claims_table([], soas=[gmi, mli]), "the s.o.a. explains MLI like GMI")
    assert soa["value"] == pytest.approx(0.05) and soa["holds"]
    assert "MLI r epoch 30 mli: 0.05" in soa["detail"]
    bad = write_soa(tmp_path, "mli", mli_spec, 0.5, target_epoch=0)
    soa = row(claims.claims_table([], soas=[gmi, bad]), "the s.o.a. explains MLI like GMI")
    assert soa["value"] == pytest.approx(0.5) and not soa["holds"]
    soa = row(claims.claims_table([], soas=[gmi]), "the s.o.a. explains MLI like GMI")
    assert pd.isna(soa["holds"]) and "no MLI s.o.a." in soa["detail"]


def write_surface(root, epoch, z, grid):
    base = root / "d" / "m" / "r"
    directions = {
        role: write_direction(base / "directions" / f"epoch{epoch}" / f"ne{i}.h5", NE1)
        for i, role in ((1, "x"), (2, "y"))
    }
    path = base / "surfaces" / f"epoch{epoch}" / "ne_2d.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"run": "r", "epoch": epoch}
    with store.create(path, "surface", {"directions": ["ne1", "ne2"]}, directions, attrs) as w:
        w.scale("x", grid)
        w.scale("y", grid)
        w.put("train/loss", z, dims=("x", "y"))
    return path


def test_wine_bottle_claim_at_the_earliest_checkpoint(tmp_path):
    grid = np.linspace(-1.5, 1.5, 31)
    r2 = grid[:, None] ** 2 + grid[None, :] ** 2
    early = write_surface(tmp_path, 0, (r2 - 1.0) ** 2, grid)
    late = write_surface(tmp_path, 30, r2, grid)  # a basin once converged: not measured
    wine = row(
        claims.claims_table([], surfaces=[late, early]),
        "N.E. x N.E. surfaces look like a wine bottle's bottom",
    )
    assert wine["value"] == 1.0 and wine["holds"]
    assert wine["detail"] == "1 of 1: r epoch 0 ne_2d train/loss: yes"
    early = write_surface(tmp_path, 0, r2, grid)
    wine = row(
        claims.claims_table([], surfaces=[early]),
        "N.E. x N.E. surfaces look like a wine bottle's bottom",
    )
    assert wine["value"] == 0.0 and not wine["holds"]


def test_a_gaussian_chosen_for_its_overlap_is_not_a_gmi_direction():
    from landscape.claims import is_gaussian

    plain = {"kind": "noise", "distribution": "gaussian", "seed": 1}
    assert is_gaussian(plain)
    assert not is_gaussian({**plain, "closest_to": {"direction": "grad", "candidates": 100}})
    assert not is_gaussian({**plain, "sign": "consistent"})


def test_gmi_reads_the_train_loss_that_theta_minimizes(tmp_path):
    """A trained model need not sit at a minimum of the test loss: GMI reads the train loss."""
    shifted = (LAM + 0.1) ** 2  # test minimum one step from theta
    path = write_curve(tmp_path, "g", GAUSSIAN, 5, {"train/loss": LAM**2, "test/loss": shifted})
    gmi = row(claims.claims_table([path]), "Gaussian curves are v-basins (GMI)")
    assert gmi["value"] == 1.0 and gmi["holds"]
    only_test = write_curve(tmp_path, "h", GAUSSIAN, 5, {"test/loss": shifted})
    gmi = row(claims.claims_table([path, only_test]), "Gaussian curves are v-basins (GMI)")
    assert gmi["value"] == 0.5 and "h: v-side" in gmi["detail"]
