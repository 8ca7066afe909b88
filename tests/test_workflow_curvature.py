"""The second-order rule family end to end through Snakemake on a tiny MLP.

Spectrum, density, trace, loss change, s.o.a., angles, eigenvector and mined directions, their
curves and the V9 cosines: every file is made, the files agree with each other, and a change of
one estimator's setting reruns only what reads it.
"""

from __future__ import annotations

import numpy as np
import pytest
from workflow_utils import REPO, changed, completed_run, edit_config, snakemake, snapshot

from landscape import store

pytestmark = pytest.mark.workflow
CONFIG = REPO / "tests" / "configs" / "curvature.yaml"
BASE = "digits/mlp/mlp"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return completed_run(tmp_path_factory.mktemp("curvature"), CONFIG)


def test_every_second_order_artifact(workdir):
    results = workdir / "results"
    kinds = store.catalog(results).groupby("kind").size().to_dict()
    for kind in ("spectrum", "density", "trace", "loss_change", "soa", "angles", "cosines"):
        assert kinds.get(kind) == 1, (kind, kinds)
    assert kinds["direction"] == 4 and kinds["curve"] == 2
    for curve in ("ne1", "mined_wpeak"):  # bn_mode auto: the eval-mode loss's, No UpBN
        art = store.open(results / BASE / f"curves/epoch2/{curve}.h5")
        assert art.spec["bn_mode"] == "keep" and art.attrs["batchnorm"] is False
    logs = workdir / "logs"
    for rule, direction in (("mine_direction", "mined_vvv"), ("make_direction", "ne1")):
        assert (logs / rule / BASE / "epoch2" / f"{direction}.log").exists(), (rule, direction)
    spectrum = store.open(results / BASE / "hessian/epoch2/spectrum.h5")
    assert spectrum["LA/eigenvalues"][0] > 0 > spectrum["SA/eigenvalues"][0]
    trace = store.open(results / BASE / "hessian/epoch2/trace.h5")
    assert spectrum.attrs["hvp"] == trace.attrs["hvp"] == "double_backward"  # 2 batches on CPU
    assert trace.attrs["estimator"] == "ggn" and trace.attrs["stderr"] == 0  # auto, ReLU MLP
    assert trace.attrs["max_diagonal_difference"] < 1e-4
    loss_change = store.open(results / BASE / "hessian/epoch2/loss_change.h5")
    assert loss_change.attrs["trace"] == trace.attrs["trace"]
    figures = [f"figures/hessian/{BASE}/epoch2/{name}.png" for name in ("density", "cosines")]
    figures += [
        f"figures/hessian/{BASE}/epoch2/loss_change.png",  # V13
        f"figures/angles/{BASE}/epoch2.png",  # V5
        "figures/tables/curve_taxonomy.png",  # VT
    ]
    for figure in figures:
        assert (results / figure).stat().st_size > 10_000, figure


def test_cosines_agree_with_the_spectrum(workdir):
    """The eigenvector direction N.E.1 has |cos| 1 with SA rank 1 and 0 with the other vectors."""
    cosines = store.open(workdir / "results" / BASE / "hessian/epoch2/cosines.h5")
    assert list(cosines["direction"]) == ["mined_wpeak", "mined_vvv", "ne1"]
    assert cosines["SA/cosines"].shape == cosines["LA/cosines"].shape == (3, 2)
    ne1 = {which: cosines[f"{which}/cosines"][2] for which in ("LA", "SA")}
    np.testing.assert_allclose(ne1["SA"], [1.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(ne1["LA"], [0.0, 0.0], atol=1e-4)
    for which in ("LA", "SA"):
        table = cosines[f"{which}/cosines"]
        assert np.all((table >= 0) & (table <= 1 + 1e-6))
    spectrum = store.open(workdir / "results" / BASE / "hessian/epoch2/spectrum.h5")
    np.testing.assert_array_equal(cosines["SA/eigenvalues"], spectrum["SA/eigenvalues"])


def test_estimator_settings_rerun_only_their_readers(workdir):
    dry = snakemake(workdir, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr

    edit_config(workdir, lambda c: c["hessian"]["trace"].update(matvecs=30))
    before = snapshot(workdir)
    snakemake(workdir)
    assert changed(before, snapshot(workdir)) == {
        "catalog.csv",
        f"{BASE}/hessian/epoch2/trace.h5",
        f"{BASE}/hessian/epoch2/loss_change.h5",
        f"figures/hessian/{BASE}/epoch2/density.png",
        f"figures/hessian/{BASE}/epoch2/loss_change.png",
    }

    edit_config(workdir, lambda c: c["cosines"].update(directions=["ne1"]))
    before = snapshot(workdir)
    snakemake(workdir)
    assert changed(before, snapshot(workdir)) == {
        "catalog.csv",
        f"{BASE}/hessian/epoch2/cosines.h5",
        f"figures/hessian/{BASE}/epoch2/cosines.png",
    }
