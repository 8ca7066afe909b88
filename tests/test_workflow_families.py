"""The paper-figure families end to end through Snakemake on a tiny MLP (families.yaml):
every figure is made, and the numbers behind each one show what the paper's figure shows."""

from __future__ import annotations

import numpy as np
import pytest
from workflow_utils import REPO, completed_run

from landscape import store
from landscape.claims import falls_on_both_sides
from landscape.curves import count_stationary, minima

pytestmark = pytest.mark.workflow
CONFIG = REPO / "tests" / "configs" / "families.yaml"
BASE = "digits/mlp/mlp"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return completed_run(tmp_path_factory.mktemp("families"), CONFIG) / "results"


def curve(results, name, epoch):
    art = store.open(results / BASE / f"curves/epoch{epoch}/{name}.h5")
    return art["lambda"], art["train/loss"]


def test_every_family_figure_is_drawn_under_its_id(results):
    figures = ["V2/v2/{}/epoch6.png", "V6/v6/{}/epoch2.png", "V11/v11/{}/epoch0.png"]
    for figure in figures:
        assert (results / "figures" / figure.format(BASE)).stat().st_size > 10_000, figure
    assert not (results / "figures" / "curves").exists()  # every curve says plot: false


def test_gaussian_curves_at_the_trained_checkpoint_are_v_basins_on_theta(results):
    """V2: one stationary point, the minimum, at lambda = 0, under FilNorm and Norm."""
    for name in ("gauss", "gauss_norm"):
        _, loss = curve(results, name, 6)
        assert count_stationary(loss) == 1 and minima(loss).tolist() == [10], name


def test_the_negative_gradient_descends_and_its_closest_gaussian_barely_does(results):
    """V4/V6: the loss falls along -g; the closest of 20 Gaussians (same norm) is nearly flat."""
    _, grad = curve(results, "grad", 2)
    _, gauss = curve(results, "closest", 2)
    assert grad[11] < grad[10] and np.argmin(grad) > 10  # theta on the valley's side
    drop = grad[10] - grad[11:].min()
    assert 0 <= gauss[10] - gauss[11:13].min() < 0.05 * drop
    closest = store.open(results / BASE / "directions/epoch2/closest.h5")
    reference = store.open(results / BASE / "directions/epoch2/grad.h5")
    assert closest.attrs["closest_angle"] < 90 < closest.attrs["candidate_angle_median"] + 1
    assert closest.attrs["direction_norm"] == pytest.approx(reference.attrs["direction_norm"])


def test_the_line_to_an_independent_run_is_a_w_basin(results):
    """V7: minima at theta_1 (lambda 0) and theta_2 (lambda 1), a barrier between them."""
    lam, loss = curve(results, "w_basin", 6)
    assert [lam[i] for i in minima(loss)] == pytest.approx([0.0, 1.0])
    between = loss[(lam > 0) & (lam < 1)]
    assert between.max() > max(loss[lam == 0][0], loss[np.isclose(lam, 1.0)][0])


def test_ne1_falls_on_both_sides_where_the_smallest_eigenvalue_is_negative(results):
    """V8 at the initialization: the most negative eigenvalue is below 0, and so is the curve."""
    spectrum = store.open(results / BASE / "hessian/epoch0/spectrum.h5")
    assert spectrum["SA/eigenvalues"][0] < 0
    lam, loss = curve(results, "ne1", 0)
    assert falls_on_both_sides(lam, loss)


def test_algorithm_2_from_another_run_has_two_minima(results):
    """V10: the mined curve over [-1, 2] keeps the minima at theta and near phi."""
    lam, loss = curve(results, "vvv", 6)
    found = lam[minima(loss)]
    assert found.size == 2 and abs(found[0]) <= 0.1 and 0.8 <= found[1] <= 1.2
    vvv = store.open(results / BASE / "directions/epoch6/vvv.h5")
    assert vvv.attrs["phi_run"] == "mlp_b"


def test_the_ne_ne_surface_is_complete(results):
    """V11: every point of the sharded N.E. x N.E. surface is computed and finite."""
    surface = store.open(results / BASE / "surfaces/epoch0/ne_ne.h5")
    assert surface["train/loss"].shape == (5, 5) and np.isfinite(surface["train/loss"]).all()
