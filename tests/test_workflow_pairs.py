"""The pairs rules (A7, A8) end to end through Snakemake on tiny MLPs (tests/configs/pairs.yaml).

Two runs of one initialization with batch sizes 32 and 512 (A7), and a pre-train fine-tuned twice
with different seeds (A8): the numbers in results/pairs/ agree with the checkpoints they read.
"""

from __future__ import annotations

import numpy as np
import pytest
from workflow_utils import REPO, completed_run

from landscape import store

pytestmark = pytest.mark.workflow
CONFIG = REPO / "tests" / "configs" / "pairs.yaml"
PAIRS = ("a7_batch", "a8_finetunes", "a8_soup_of_one")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return completed_run(tmp_path_factory.mktemp("pairs"), CONFIG) / "results"


def checkpoint(results, run, epoch=2):
    return store.read_checkpoint(results / f"digits/mlp/{run}/checkpoints/epoch{epoch}.pt")


def own_accuracy(results, run, split="test"):
    """The accuracy the run's training recorded for its last checkpoint."""
    return checkpoint(results, run)["meta"]["history"][-1][f"{split}_acc"]


def test_every_pair_file_and_figure_with_checkpoints_as_inputs(results):
    for name in PAIRS:
        art = store.open(results / "pairs" / f"{name}.h5")
        assert art.kind == "pair" and art.attrs["id"] == name[:2].upper()
        assert all(i["path"].endswith(".pt") for i in art.inputs.values())
        assert (results / "figures" / "pairs" / f"{name}.png").stat().st_size > 10_000
    a8 = store.open(results / "pairs" / "a8_finetunes.h5")
    assert a8.inputs["init"]["path"] == "results/digits_04/mlp/pre/checkpoints/epoch2.pt"
    assert a8.inputs["run1_epoch2"]["path"] == "results/digits/mlp/ft1/checkpoints/epoch2.pt"


def test_ssr_of_a_model_with_itself_is_one(results):
    # A7: both runs start from seed 0's initialization; A8: both fine-tunes from the pre-train
    for name in ("a7_batch", "a8_finetunes"):
        art = store.open(results / "pairs" / f"{name}.h5")
        assert art["epoch"].tolist() == [0, 1, 2]
        for variant in ("IA", "IB", "AB"):
            assert art[f"ssr/{variant}"][0] == 1.0, (name, variant)
            assert 0.5 < art[f"ssr/{variant}"][-1] < 1.0, (name, variant)


def test_sign_consistency_and_statistics_match_the_checkpoints(results):
    art = store.open(results / "pairs" / "a7_batch.h5")
    a, b = (checkpoint(results, run)["model"] for run in ("bs32", "bs512"))
    names = ["features.0.weight", "features.0.bias", "classifier.weight", "classifier.bias"]
    same = [np.sign(a[n].numpy()) == np.sign(b[n].numpy()) for n in names]
    assert art["sign_consistency/ALL"] == np.concatenate([s.ravel() for s in same]).mean()
    assert art["sign_consistency/clf_weight"] == same[2].mean()
    assert art["sign_consistency/other_bias"] == same[1].mean()
    w = b["classifier.weight"].double().numpy()
    assert art["statistics/b/clf_weight/mean"] == pytest.approx(w.mean(), rel=1e-12)
    assert art["statistics/b/clf_weight/std"] == pytest.approx(w.std(), rel=1e-12)
    assert art["statistics/b/clf_weight/positive"] == (w > 0).mean()
    assert art["statistics/a/other_weight/count"] == a["features.0.weight"].numel()
    assert art["statistics/a/bn_weight/count"] == 0  # an MLP has no BN


def test_interpolation_endpoints_are_the_models_own_accuracies(results):
    for name, runs, splits in (
        ("a7_batch", ("bs32", "bs512"), ("train", "test")),
        ("a8_finetunes", ("ft0", "ft1"), ("test",)),
    ):
        art = store.open(results / "pairs" / f"{name}.h5")
        assert art["lambda"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
        for split in splits:
            acc = art[f"interpolation/{split}/accuracy"]
            assert acc[0] == pytest.approx(own_accuracy(results, runs[0], split), abs=1e-12)
            assert acc[-1] == pytest.approx(own_accuracy(results, runs[1], split), abs=1e-12)
            for label, run in zip("ab", runs, strict=True):
                own = art[f"interpolation/{split}/own_accuracy_{label}"]
                assert own == pytest.approx(own_accuracy(results, run, split), abs=1e-12)
            gap = (acc[0] + acc[-1]) / 2 - acc[2]
            assert art[f"interpolation/{split}/midpoint_gap"] == pytest.approx(gap, abs=1e-15)


def test_soups(results):
    one = store.open(results / "pairs" / "a8_soup_of_one.h5")
    ft1 = own_accuracy(results, "ft1")
    assert one["soups/uniform"] == one["soups/greedy"] == one["soups/ingredients"][0]
    assert one["soups/ingredients"][0] == pytest.approx(ft1, abs=1e-12)
    art = store.open(results / "pairs" / "a8_finetunes.h5")
    ingredients = art["soups/ingredients"]
    assert ingredients.tolist() == pytest.approx([own_accuracy(results, "ft0"), ft1], abs=1e-12)
    assert art["soups/greedy"] >= ingredients.max()  # by construction, on the held-out split
    assert art["soups/greedy_members"][art["soups/order"][0]]  # the best ingredient starts it
    if art["soups/greedy_members"].all():  # both kept: the greedy soup is the uniform one
        assert art["soups/greedy"] == art["soups/uniform"]
