"""The Snakemake workflow end to end on a tiny config, in a temporary directory.

Proves the caching contract: a second run does nothing; a changed direction reruns that
direction and what reads it, not the training; a changed run reruns only that run's descendants.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from workflow_utils import REPO, TINY, changed, completed_run, edit_config, snakemake, snapshot

from landscape import store
from landscape.claims import CLAIM_COLUMNS

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return completed_run(tmp_path_factory.mktemp("workflow"), TINY)


def test_default_config_parses():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def planned_jobs(*args: str) -> dict[str, int]:
    """Jobs per rule of a dry run of the default workflow from scratch, with extra arguments."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "rules", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.MULTILINE)
    return {rule: int(count) for rule, count in rows}


def test_full_embedded_set_merges_into_the_default():
    """config/embedded_full.yaml on top of config.yaml adds curves (five seeds, P.E./N.E.1-5,
    seven view scales) that the merged figures draw: the merged config passes every check."""
    full = planned_jobs("--configfile", "config.yaml", "config/embedded_full.yaml")
    default = planned_jobs()
    assert full["compute_curve"] >= default["compute_curve"] + 20
    # V6 on VGG-BN, V12 Gau. x Mine, V2 with BN states
    assert full["plot_figure"] == default["plot_figure"] + 3
    for rule in ("compute_trajectory", "merge_eigenmap", "compute_mode_connect"):
        assert full[rule] >= 1 and default.get(rule, 0) == 0


def test_outputs_and_catalog(workdir):
    results = workdir / "results"
    for run, model in (("mlp", "mlp"), ("vgg_bn", "vgg_bn")):
        base = results / "digits" / model / run
        assert (base / "history.h5").exists()
        curve = store.open(base / "curves" / "epoch2" / "gauss_filnorm.h5")
        assert curve.kind == "curve"
        np.testing.assert_allclose(curve["lambda"], np.linspace(-1, 1, 5))
        assert set(curve.data) >= {"train/loss", "train/error", "test/loss", "test/error"}
        assert np.all(np.isfinite(curve["test/loss"]))
        # the curve is a v-basin around the trained model
        assert curve["test/loss"][2] < min(curve["test/loss"][0], curve["test/loss"][4])
        assert curve.inputs["checkpoint"]["sha256"] == store.sha256_file(
            base / "checkpoints" / "epoch2.pt"
        )
        assert (
            results / "figures" / "curves" / "digits" / model / run / "epoch2" / "gauss_filnorm.png"
        ).stat().st_size > 1000
    catalog = store.catalog(results)
    kinds = catalog.groupby("kind").size().to_dict()
    assert kinds == {"checkpoint": 5, "history": 2, "direction": 3, "curve": 2, "surface": 1}
    surface = store.open(results / "digits/vgg_bn/vgg_bn/surfaces/epoch2/plane.h5")
    assert surface["test/loss"].shape == (3, 2)
    assert np.isfinite(surface["test/loss"]).all()
    assert not list(results.rglob("*.shards/*.h5")), "shards are temporary"
    assert (results / "catalog.csv").exists()
    claims = pd.read_csv(results / "tables" / "claims.csv").set_index("claim")
    assert claims.columns.tolist() == CLAIM_COLUMNS[1:]
    gmi = claims.loc["Gaussian curves are v-basins (GMI)"]
    taxonomy = pd.read_csv(results / "tables" / "curve_taxonomy.csv")
    gauss = taxonomy[(taxonomy["curve"] == "gauss_filnorm") & (taxonomy["metric"] == "train/loss")]
    assert gmi["value"] == pytest.approx((gauss["type"] == "v-basin").mean())
    # no descent, N.E., N.E. x N.E. or s.o.a. artifacts, and none of the asymmetric-valley paper
    assert claims["holds"].isna().sum() == 5 + 6
    assert claims["detail"].dropna().str.startswith("not measured").sum() == 5 + 6


def test_caching_reruns_only_what_changed(workdir):
    dry = snakemake(workdir, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr

    before = snapshot(workdir)
    snakemake(workdir)
    assert changed(before, snapshot(workdir)) == set()

    edit_config(workdir, lambda c: c["directions"]["gauss_filnorm"].update(seed=7))
    before = snapshot(workdir)
    snakemake(workdir)
    expected = {
        "catalog.csv",
        "tables/curve_taxonomy.csv",
        "tables/claims.csv",
        "figures/tables/curve_taxonomy.png",
    }
    for run in ("mlp", "vgg_bn"):
        expected |= {
            f"digits/{run}/{run}/directions/epoch2/gauss_filnorm.h5",
            f"digits/{run}/{run}/curves/epoch2/gauss_filnorm.h5",
            f"figures/curves/digits/{run}/{run}/epoch2/gauss_filnorm.png",
        }
    expected |= {
        "digits/vgg_bn/vgg_bn/surfaces/epoch2/plane.h5",
        "digits/vgg_bn/vgg_bn/surfaces/epoch2/plane.vtp",
        "figures/surfaces/digits/vgg_bn/vgg_bn/epoch2/plane.png",
        "figures/surfaces/digits/vgg_bn/vgg_bn/epoch2/plane.html",
    }
    expected |= {
        f"figures/surfaces/digits/vgg_bn/vgg_bn/epoch2/plane/{view}.png"
        for view in ("contour", "contourf", "heatmap", "surface3d")
    }
    assert changed(before, snapshot(workdir)) == expected

    edit_config(workdir, lambda c: c["runs"]["mlp"]["train"].update(lr=0.05))
    before = snapshot(workdir)
    snakemake(workdir)
    expected = {
        "catalog.csv",
        "tables/curve_taxonomy.csv",
        "tables/claims.csv",
        "figures/tables/curve_taxonomy.png",
        "digits/mlp/mlp/checkpoints/epoch0.pt",
        "digits/mlp/mlp/checkpoints/epoch1.pt",
        "digits/mlp/mlp/checkpoints/epoch2.pt",
        "digits/mlp/mlp/history.h5",
        "digits/mlp/mlp/directions/epoch2/gauss_filnorm.h5",
        "digits/mlp/mlp/curves/epoch2/gauss_filnorm.h5",
        "figures/curves/digits/mlp/mlp/epoch2/gauss_filnorm.png",
    }
    assert changed(before, snapshot(workdir)) == expected


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(colour="red"), "colour"),
        (lambda c: c["runs"]["mlp"]["train"].update(epochs=-1), "epochs"),
        (lambda c: c["runs"]["mlp"].update(dataset="imagenet"), "runs.mlp.dataset"),
        (lambda c: c["curves"]["gauss_filnorm"].update(direction="nope"), "curves.gauss_filnorm"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, edit, message):
    shutil.copy(TINY, tmp_path / "config.yaml")
    edit_config(tmp_path, edit)
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
