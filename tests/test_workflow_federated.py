"""The A10 rules end to end through Snakemake on a tiny MLP (tests/configs/federated.yaml).

Eight runs (FedAvg and FedSign, two alphas, two seeds), the table and both figures; the table's
numbers are those of the run files, and a changed FedSign gamma reruns only FedSign's runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from workflow_utils import REPO, changed, edit_config, fingerprint, snakemake

from landscape import store

pytestmark = pytest.mark.workflow
CONFIG = REPO / "tests" / "configs" / "federated.yaml"
TARGETS = (
    "results/tables/federated.csv",
    "results/figures/federated/table.png",
    "results/figures/federated/accuracy_digits.png",
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("federated")
    (directory / "config.yaml").write_text(CONFIG.read_text())
    snakemake(directory, *TARGETS)
    return directory


def run_file(workdir, alpha, algorithm, seed):
    return workdir / f"results/federated/digits/alpha{alpha}/{algorithm}/seed{seed}.h5"


def test_every_run_and_the_table_agree(workdir):
    table = pd.read_csv(workdir / "results/tables/federated.csv")
    assert len(table) == 4 and (table["seeds"] == 2).all() and (table["rounds"] == 3).all()
    for row in table.itertuples():
        finals = []
        for seed in (0, 1):
            art = store.open(run_file(workdir, row.alpha, row.algorithm, seed))
            params = {"fedavg": {}, "fedsign": {"gamma": 1000.0, "loss": "hinge"}}[row.algorithm]
            assert art.kind == "federated" and art.spec["params"] == params
            assert art.spec["algorithm"] == row.algorithm and art.spec["seed"] == seed
            assert art["round"].tolist() == [0, 1, 2, 3]
            assert art["participation"].sum(1).tolist() == [2, 2, 2]
            finals.append(art["test/accuracy"][-1])
        assert row.final_accuracy_mean == pytest.approx(np.mean(finals), abs=1e-12)
        assert row.final_accuracy_std == pytest.approx(np.std(finals, ddof=1), abs=1e-12)
    for target in TARGETS[1:]:
        assert (workdir / target).stat().st_size > 10_000


def test_one_seed_shares_split_and_start_across_algorithms(workdir):
    a, b = (store.open(run_file(workdir, 0.1, name, 0)) for name in ("fedavg", "fedsign"))
    np.testing.assert_array_equal(a["clients/label_counts"], b["clients/label_counts"])
    np.testing.assert_array_equal(a["participation"], b["participation"])
    assert a["test/accuracy"][0] == b["test/accuracy"][0]  # the same initial model


def test_changing_gamma_reruns_only_fedsign(workdir):
    before = fingerprint(workdir / "results")
    edit_config(workdir, lambda c: c["federated"]["algorithms"]["fedsign"].update(gamma=10.0))
    snakemake(workdir, *TARGETS)
    redone = {p for p in changed(before, fingerprint(workdir / "results")) if p.endswith(".h5")}
    assert redone == {
        f"federated/digits/alpha{a}/fedsign/seed{s}.h5" for a in ("1.0", "0.1") for s in (0, 1)
    }
