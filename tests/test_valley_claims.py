"""The asymmetric-valley paper's claims on synthetic sweep and pair files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from landscape import claims, store, valley_claims

CONSISTENT = {"kind": "noise", "sign": "consistent", "sign_ratio": 1.0, "group": "ALL"}
RAW = {"kind": "noise", "sign": "none", "group": "ALL"}


def write_sweep(path, specs, mean_pos, mean_neg, share=None, ratios=None):
    with store.create(path, kind="sweep", spec={}, attrs={"run": "r", "epoch": 3}) as w:
        w.scale("variant", np.array([f"v{i}" for i in range(len(specs))]))
        w.put("direction/spec", np.array([json.dumps(s) for s in specs]), dims=("variant",))
        w.put("analysis/test/error/mean_pos", np.asarray(mean_pos, float), dims=("variant",))
        w.put("analysis/test/error/mean_neg", np.asarray(mean_neg, float), dims=("variant",))
        if share is not None:
            w.put("direction/sign_share", np.asarray(share, float), dims=("variant",))
            w.put("vary/sign_ratio", np.asarray(ratios, float), dims=("variant",))
    return path


def write_pair(path, spec, signs, gap):
    with store.create(path, kind="pair", spec=spec, attrs={"id": "A8"}) as w:
        w.put("sign_consistency/ALL", np.float64(signs))
        w.put("interpolation/test/midpoint_gap", np.float64(gap))
    return path


def row(table, claim):
    return table.set_index("claim").loc[claim]


def test_sign_consistent_variants_with_a_flatter_positive_side_hold(tmp_path):
    path = write_sweep(
        tmp_path / "a1.h5", [RAW, CONSISTENT, CONSISTENT], [0.4, 0.1, 0.5], [0.4, 0.6, 0.2]
    )
    got = valley_claims.claim_flatter_positive_side([path])
    assert got["value"] == 0.5 and not got["holds"]  # the raw variant is not counted
    path = write_sweep(tmp_path / "b.h5", [RAW, CONSISTENT], [0.4, 0.1], [0.4, 0.6])
    assert valley_claims.claim_flatter_positive_side([path])["holds"]
    partial = {**CONSISTENT, "sign_ratio": 0.5}
    assert not valley_claims.is_sign_consistent(partial)
    assert not valley_claims.is_sign_consistent({**CONSISTENT, "group": "BN"})


def test_the_ratio_claim_is_the_rank_correlation_of_share_and_asymmetry(tmp_path):
    share = np.linspace(0, 1, 5)
    grows = write_sweep(
        tmp_path / "a2.h5", [CONSISTENT] * 5, 0.5 - share / 2, 0.2 + share / 4, share, share
    )
    got = valley_claims.claim_grows_with_ratio([grows])
    assert got["value"] == pytest.approx(1.0) and got["holds"]
    flat = write_sweep(
        tmp_path / "f.h5", [CONSISTENT] * 5, [0.3, 0.1, 0.3, 0.1, 0.3], [0.2] * 5, share, share
    )
    got = valley_claims.claim_grows_with_ratio([grows, flat])
    assert got["value"] == pytest.approx(0.0) and not got["holds"]
    assert valley_claims.rank_correlation([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)


def test_pre_trained_pairs_need_more_signs_and_a_smaller_gap_than_random_ones(tmp_path):
    pre = write_pair(tmp_path / "pre.h5", {"init": {"run": "p", "epoch": 30}}, 0.95, -0.01)
    rand = write_pair(tmp_path / "rand.h5", {"init": {"run": "a", "epoch": 0}}, 0.55, 0.40)
    got = valley_claims.claim_pretrained_pairs([pre, rand])
    assert got["holds"] and got["value"] == pytest.approx(0.40)
    worse = write_pair(tmp_path / "worse.h5", {"init": {"run": "p", "epoch": 30}}, 0.95, 0.5)
    assert not valley_claims.claim_pretrained_pairs([worse, rand])["holds"]
    assert "not measured" in valley_claims.claim_pretrained_pairs([pre])["detail"]


def test_soups_compare_the_uniform_soup_with_the_best_ingredient(tmp_path):
    with store.create(tmp_path / "s.h5", kind="pair", spec={}) as w:
        w.put("soups/uniform", np.float64(0.96))
        w.put("soups/greedy", np.float64(0.97))
        w.put("soups/ingredients", np.array([0.95, 0.965, 0.96]))
    got = valley_claims.claim_soups([tmp_path / "s.h5"])
    assert got["value"] == pytest.approx(-0.005) and not got["holds"]
    assert "mean 0.9583" in got["detail"]


def test_both_papers_claims_in_one_table(tmp_path):
    table = claims.claims_table([])
    assert table["paper"].nunique() == 2 and len(table) == 12
    assert table["holds"].isna().all()  # nothing measured without artifacts


def write_checkpoint(path, bn_weight_init):
    meta = {"spec": {"model": {"arch": "vgg", "bn_weight_init": bn_weight_init}}}
    store.write_checkpoint({"meta": meta, "model": {}}, path)
    return path


def test_bn_init_claim_compares_the_raw_asymmetry_of_gaussian_and_positive_inits(tmp_path):
    sweeps = []
    # two raw directions per run (d and one like -d for "ones"), then a sign-consistent one
    runs = [("ones", "ones", [0.1, 0.3], [0.3, 0.1]), ("normal", "normal", [0.2, 0.2], [0.22, 0.2])]
    for run, init, pos, neg in runs:
        ckpt = write_checkpoint(tmp_path / f"{run}.pt", init)
        (tmp_path / run).mkdir()
        path = tmp_path / run / "block.h5"  # one sweep block on several runs
        with store.create(path, kind="sweep", spec={}, inputs={"checkpoint": ckpt},
                          attrs={"run": run, "epoch": 30}) as w:  # fmt: skip
            w.scale("variant", np.array(["raw1", "raw2", "consistent"]))
            specs = [json.dumps(RAW), json.dumps(RAW), json.dumps(CONSISTENT)]
            w.put("direction/spec", np.array(specs), dims=("variant",))
            w.put("analysis/test/error/mean_pos", np.array([*pos, 0.0]), dims=("variant",))
            w.put("analysis/test/error/mean_neg", np.array([*neg, 0.9]), dims=("variant",))
        sweeps.append(path)
    found = valley_claims.raw_asymmetry(sweeps, base="/")
    # each curve's asymmetry, then their mean (a pooled sum would give 0 for "ones")
    assert found["ones"] == ("ones", pytest.approx(0.5))  # the consistent variant not counted
    assert found["normal"] == ("normal", pytest.approx((0.02 / 0.42 + 0.0) / 2))
    got = valley_claims.claim_bn_init(sweeps, base="/")
    assert got["holds"] and got["value"] == pytest.approx(0.01 / 0.42 - 0.5)
    assert "not measured" in valley_claims.claim_bn_init(sweeps[:1], base="/")["detail"]


def test_width_not_symmetry_needs_symmetric_raw_valleys_of_different_widths(tmp_path):
    sweeps = []
    for run, pos, neg in [("narrow", 0.40, 0.42), ("wide", 0.10, 0.11)]:
        ckpt = write_checkpoint(tmp_path / f"{run}.pt", "ones")
        (tmp_path / run).mkdir()
        path = tmp_path / run / "block.h5"  # one sweep block on several runs
        with store.create(path, kind="sweep", spec={}, inputs={"checkpoint": ckpt},
                          attrs={"run": run, "epoch": 30}) as w:  # fmt: skip
            w.scale("variant", np.array(["raw"]))
            w.put("direction/spec", np.array([json.dumps(RAW)]), dims=("variant",))
            w.put("analysis/test/error/mean_pos", np.array([pos]), dims=("variant",))
            w.put("analysis/test/error/mean_neg", np.array([neg]), dims=("variant",))
        sweeps.append(path)
    assert valley_claims.raw_width(sweeps, base="/") == pytest.approx(
        {"narrow": 0.41, "wide": 0.105}
    )
    got = valley_claims.claim_width_not_symmetry(sweeps, base="/")
    assert got["holds"] and got["value"] == pytest.approx(0.01 / 0.21)
    assert "width ratio 3.90" in got["detail"]
    assert "not measured" in valley_claims.claim_width_not_symmetry(sweeps[:1], base="/")["detail"]


def test_the_sweep_table_adds_width_and_asymmetry(tmp_path):
    from landscape.sweep_table import sweep_table

    lam = np.linspace(-1, 1, 5)
    spec = {"vary": {"sign": ["none"]}, "order": ["sign"]}
    with store.create(
        tmp_path / "s.h5", kind="sweep", spec=spec, attrs={"run": "r", "epoch": 1}
    ) as w:
        w.scale("variant", np.array(["sign=none"]))
        w.scale("lambda", lam)
        w.put("vary/sign", np.array(["none"]), dims=("variant",))
        for field, value in (("relative_norm", 1.0), ("sign_share", 0.5)):
            w.put(f"direction/{field}", np.array([value]), dims=("variant",))
        w.put("test/error", np.array([lam**2]), dims=("variant", "lambda"))
        w.put("analysis/test/error/mean_pos", np.array([0.2]), dims=("variant",))
        w.put("analysis/test/error/mean_neg", np.array([0.5]), dims=("variant",))
        w.put("analysis/test/error/type", np.array(["v-basin"]), dims=("variant",))
    table = sweep_table([tmp_path / "s.h5"])
    assert table.loc[0, "sweep"] == "s" and table.loc[0, "test/error/width"] == pytest.approx(0.35)
    assert table.loc[0, "test/error/asymmetry"] == pytest.approx(0.3)
