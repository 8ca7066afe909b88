"""The claims of "Exploring and Exploiting the Asymmetric Valley of Deep Neural Networks", measured
on this run's sweeps (A1, A2) and model pairs (A8), as rows of the claims table.

Variants are recognized from their direction specs, not from names: a sign-consistent noise
variant is ``kind: noise`` with ``sign: consistent`` at ratio 1 over all parameters; a ratio sweep
is a sweep that varies ``sign_ratio``; a pre-trained pair is an A8 pair whose common start
(``init``) is a trained checkpoint (epoch > 0), a random pair one that starts at an epoch 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from landscape import store
from landscape.claim_rows import claim_row, not_measured

PAPER = "Li et al., Exploring and Exploiting the Asymmetric Valley of DNNs"
SHARE = 0.8  # the share of variants that must show the paper's shape
RANK_CORRELATION = 0.8  # the Spearman correlation that counts as "grows with"
METRIC = "test/error"  # the paper's curves report the test error

_row = partial(claim_row, paper=PAPER)
_not_measured = partial(not_measured, paper=PAPER)


def _variant_specs(art: store.Artifact) -> list[dict[str, Any]]:
    return [json.loads(spec) for spec in art["direction/spec"]]


def _side_means(art: store.Artifact) -> tuple[np.ndarray, np.ndarray]:
    """Mean test error over lambda > 0 and over lambda < 0, per variant."""
    base = f"analysis/{METRIC}"
    return np.asarray(art[f"{base}/mean_pos"], float), np.asarray(art[f"{base}/mean_neg"], float)


def is_sign_consistent(spec: dict[str, Any]) -> bool:
    """Noise with the signs of theta on every element of every parameter (A1)."""
    return (
        spec.get("kind") == "noise"
        and spec.get("sign") == "consistent"
        and float(spec.get("sign_ratio", 1.0)) == 1.0
        and spec.get("group", "ALL") == "ALL"
    )


def _label(art: store.Artifact, path: str | Path) -> str:
    return f"{art.attrs['run']} epoch {art.attrs['epoch']} {Path(path).stem}"


def claim_flatter_positive_side(sweeps: Sequence[str | Path]) -> dict[str, Any]:
    """Sign-consistent noise gives a flatter +lambda side (A1)."""
    claim, figure = "sign-consistent noise gives a flatter +lambda side", "A1"
    statistic = (
        "share of sign-consistent noise curves whose mean test error over lambda > 0 is below "
        "the mean over lambda < 0"
    )
    threshold = f">= {SHARE}"
    flatter, parts = [], []
    for path in sweeps:
        art = store.open(path)
        pos, neg = _side_means(art)
        chosen = [i for i, spec in enumerate(_variant_specs(art)) if is_sign_consistent(spec)]
        if not chosen:
            continue
        flatter += [bool(pos[i] < neg[i]) for i in chosen]
        parts.append(
            f"{_label(art, path)}: {sum(pos[i] < neg[i] for i in chosen)} of {len(chosen)} "
            f"(mean + {np.mean(pos[chosen]):.3f}, - {np.mean(neg[chosen]):.3f})"
        )
    if not flatter:
        return _not_measured(
            claim, figure, statistic, threshold,
            "no sweep with sign-consistent noise; add one varying sign: [none, consistent] (A1)",
        )  # fmt: skip
    share = sum(flatter) / len(flatter)
    return _row(claim, figure, statistic, share, threshold, share >= SHARE, "; ".join(parts))


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties).

    >>> round(rank_correlation([0, 1, 2, 3], [1.0, 3.0, 2.0, 4.0]), 12)
    0.8
    """

    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(v.size)
        r[order] = np.arange(v.size)
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def claim_grows_with_ratio(sweeps: Sequence[str | Path]) -> dict[str, Any]:
    """The asymmetry grows with the share of sign-consistent elements (A2)."""
    claim, figure = "the asymmetry grows with the sign-change ratio", "A2"
    statistic = (
        "smallest Spearman correlation, over ratio sweeps, between the measured share of "
        "sign-consistent elements and (mean test error over lambda < 0) - (over lambda > 0)"
    )
    threshold = f">= {RANK_CORRELATION}"
    found = {}
    for path in sweeps:
        art = store.open(path)
        if "vary/sign_ratio" not in art.data:
            continue
        pos, neg = _side_means(art)
        found[_label(art, path)] = rank_correlation(art["direction/sign_share"], neg - pos)
    if not found:
        return _not_measured(
            claim, figure, statistic, threshold,
            "no sweep varying sign_ratio; add one (A2)",
        )  # fmt: skip
    worst = min(found.values())
    detail = "; ".join(f"{k}: {v:.3f}" for k, v in found.items())
    return _row(claim, figure, statistic, worst, threshold, bool(worst >= RANK_CORRELATION), detail)


def is_raw_noise(spec: dict[str, Any]) -> bool:
    """Noise with its own signs, over all parameters."""
    return (
        spec.get("kind") == "noise"
        and spec.get("sign", "none") == "none"
        and spec.get("group", "ALL") == "ALL"
    )


def _bn_weight_init(art: store.Artifact, base: str | Path) -> str:
    """The BN weight initialization of the checkpoint a sweep perturbs."""
    meta = store.checkpoint_meta(Path(base, art.inputs["checkpoint"]["path"]))
    return meta["spec"]["model"].get("bn_weight_init", "ones")


def _raw_sides(sweeps: Sequence[str | Path], base: str | Path) -> dict[str, tuple]:
    """Per run: ``(bn_weight_init, pos, neg)``, the mean test errors over lambda > 0 and
    lambda < 0 of each of its raw-noise variants (pass one sweep block's files to compare runs
    along the same directions)."""
    sides: dict[str, tuple] = {}
    for path in sweeps:
        art = store.open(path)
        pos, neg = _side_means(art)
        chosen = [i for i, spec in enumerate(_variant_specs(art)) if is_raw_noise(spec)]
        if not chosen:
            continue
        run = str(art.attrs["run"])
        init, p, n = sides.get(run, (_bn_weight_init(art, base), [], []))
        sides[run] = (init, [*p, *pos[chosen]], [*n, *neg[chosen]])
    return sides


def raw_asymmetry(sweeps: Sequence[str | Path], base: str | Path = ".") -> dict[str, tuple]:
    """Per run: ``(bn_weight_init, mean over its raw-noise curves of |pos - neg| / (pos + neg))``
    with ``pos``, ``neg`` a curve's mean test errors over lambda > 0 and lambda < 0 (0: symmetric
    valleys, 1: one side flat).

    Each curve's asymmetry is taken before averaging: ``d`` and ``-d`` are equally likely raw
    noise, so a sum over directions of signed differences tends to 0 for every model, while
    the asymmetry a single curve shows is what the paper reads from its figures.
    """
    found = {}
    for run, (init, pos, neg) in _raw_sides(sweeps, base).items():
        pos, neg = np.asarray(pos), np.asarray(neg)
        with np.errstate(invalid="ignore", divide="ignore"):
            found[run] = (init, float(np.mean(np.abs(pos - neg) / (pos + neg))))
    return found


def raw_width(sweeps: Sequence[str | Path], base: str | Path = ".") -> dict[str, float]:
    """Per run: the mean test error of its raw-noise variants over both sides (lower: wider)."""
    return {
        run: float(np.mean([*pos, *neg]))
        for run, (_, pos, neg) in _raw_sides(sweeps, base).items()
    }


WIDTH_SPREAD = 1.5  # the ratio of the widest and narrowest valleys that counts as "changes width"
SYMMETRIC = 0.1  # the largest raw asymmetry that still counts as a symmetric valley


def claim_width_not_symmetry(sweeps: Sequence[str | Path], base: str | Path = ".") -> dict:
    """Training settings change how wide a valley is, not whether it is symmetric (A6)."""
    claim = "hyperparameters change the width of the valley, not its symmetry"
    figure = "A6"
    statistic = (
        "per sweep block run on several runs: largest raw asymmetry, and the ratio of the "
        "largest to the smallest width (mean test error over both sides)"
    )
    threshold = f"asymmetry <= {SYMMETRIC} and width ratio >= {WIDTH_SPREAD} in one block"
    worst, ratio, parts = 0.0, 0.0, []
    for block, paths in by_block(sweeps).items():
        asymmetry, width = raw_asymmetry(paths, base), raw_width(paths, base)
        if len(width) < 2:
            continue
        worst = max(worst, *(a for _, a in asymmetry.values()))
        low = min(width.values())
        ratio = max(ratio, max(width.values()) / low if low > 0 else float("inf"))
        parts.append(
            f"{block}: "
            + ", ".join(f"{r} width {width[r]:.3f} asym {asymmetry[r][1]:.3f}" for r in width)
        )
    if not parts:
        return _not_measured(
            claim, figure, statistic, threshold,
            "needs a raw-noise sweep block on at least two runs with different training "
            "settings (A6)",
        )  # fmt: skip
    holds = bool(worst <= SYMMETRIC and ratio >= WIDTH_SPREAD)
    detail = f"largest width ratio {ratio:.2f}; " + "; ".join(parts)
    return _row(claim, figure, statistic, worst, threshold, holds, detail)


def by_block(sweeps: Sequence[str | Path]) -> dict[str, list[str | Path]]:
    """Sweep files grouped by their block (the file name): the runs of one block share its
    directions, so their widths and asymmetries compare."""
    groups: dict[str, list[str | Path]] = {}
    for path in sweeps:
        groups.setdefault(Path(path).stem, []).append(path)
    return groups


def claim_bn_init(sweeps: Sequence[str | Path], base: str | Path = ".") -> dict[str, Any]:
    """Gaussian BN weight initialization gives near-symmetric valleys, all-positive ones do not."""
    claim = "Gaussian BN initialization gives near-symmetric valleys, all-positive ones do not"
    figure = "A5"
    statistic = (
        "mean over the raw-noise curves of one sweep block of each curve's asymmetry "
        "|mean test error at +lambda - at -lambda| / their sum: largest N(0, 0.1)-initialized "
        "run minus smallest all-positive one"
    )
    threshold = "< 0 in every sweep block run on both kinds"
    values, parts = [], []
    for block, paths in by_block(sweeps).items():
        found = raw_asymmetry(paths, base)
        normal = [a for init, a in found.values() if init == "normal"]
        positive = [a for init, a in found.values() if init in ("ones", "uniform")]
        if normal and positive:
            values.append(max(normal) - min(positive))
            runs = ", ".join(f"{run} ({init}) {a:.3f}" for run, (init, a) in found.items())
            parts.append(f"{block}: {runs}")
    if not values:
        return _not_measured(
            claim, figure, statistic, threshold,
            "needs a raw-noise sweep block on runs with bn_weight_init normal and ones or "
            "uniform (A5)",
        )  # fmt: skip
    value = max(values)
    return _row(claim, figure, statistic, value, threshold, bool(value < 0), "; ".join(parts))


def _pair_summary(art: store.Artifact) -> tuple[float, float]:
    """Sign consistency over all parameters and the test interpolation gap at lambda = 0.5."""
    return float(art["sign_consistency/ALL"]), float(art["interpolation/test/midpoint_gap"])


def claim_pretrained_pairs(pairs: Sequence[str | Path]) -> dict[str, Any]:
    """Pre-trained pairs share more signs and interpolate better (A8)."""
    claim, figure = "pre-trained pairs share more signs and interpolate better", "A8"
    statistic = (
        "sign consistency and midpoint interpolation gap (mean end accuracy - accuracy at "
        "lambda = 0.5) of pairs fine-tuned from one pre-trained model against pairs from a "
        "random start"
    )
    threshold = "more signs shared and a smaller gap, every pre-trained vs every random pair"
    pretrained, random = {}, {}
    for path in pairs:
        art = store.open(path)
        if (
            "sign_consistency/ALL" not in art.data
            or "interpolation/test/midpoint_gap" not in art.data
        ):
            continue
        if art.attrs.get("id") != "A8":
            continue
        trained_start = art.spec.get("init", {}).get("epoch", 0) > 0
        (pretrained if trained_start else random)[Path(path).stem] = _pair_summary(art)
    if not pretrained or not random:
        return _not_measured(
            claim, figure, statistic, threshold,
            "needs A8 pair blocks of fine-tunes of one pre-trained run (init at a trained "
            "checkpoint) and of runs from random initializations, computing statistics and "
            "interpolation on the test split",
        )  # fmt: skip
    holds = all(p[0] > r[0] and p[1] < r[1] for p in pretrained.values() for r in random.values())
    value = min(p[0] for p in pretrained.values()) - max(r[0] for r in random.values())
    detail = "; ".join(
        f"{name} ({kind}): signs {signs:.3f}, gap {gap:+.4f}"
        for kind, group in (("pre-trained", pretrained), ("random start", random))
        for name, (signs, gap) in group.items()
    )
    return _row(claim, figure, statistic, value, threshold, holds, detail)


def claim_soups(pairs: Sequence[str | Path]) -> dict[str, Any]:
    """A uniform soup of fine-tuned models beats its best ingredient (A8, Wortsman et al.)."""
    claim, figure = "soups of fine-tuned models beat their members", "A8"
    statistic = "uniform soup's held-out accuracy minus its best ingredient's (smallest over soups)"
    threshold = ">= 0"
    found = {}
    for path in pairs:
        art = store.open(path)
        if "soups/uniform" in art.data:
            found[Path(path).stem] = (
                float(art["soups/uniform"]),
                float(art["soups/greedy"]),
                np.asarray(art["soups/ingredients"], float),
            )
    if not found:
        return _not_measured(
            claim, figure, statistic, threshold,
            "no pair block computing soups; add one over several fine-tunes (A8)",
        )  # fmt: skip
    margin = min(uniform - ingredients.max() for uniform, _, ingredients in found.values())
    detail = "; ".join(
        f"{name}: uniform {u:.4f}, greedy {g:.4f}, ingredients "
        + ", ".join(f"{a:.4f}" for a in ing)
        + f" (mean {ing.mean():.4f})"
        for name, (u, g, ing) in found.items()
    )
    return _row(claim, figure, statistic, margin, threshold, bool(margin >= 0), detail)


def valley_claims(
    sweeps: Sequence[str | Path] = (), pairs: Sequence[str | Path] = (), base: str | Path = "."
) -> list[dict[str, Any]]:
    """Every claim of the asymmetric-valley paper, in the paper's order (checkpoint paths that
    the artifacts record are relative to ``base``)."""
    return [
        claim_flatter_positive_side(sweeps),
        claim_grows_with_ratio(sweeps),
        claim_bn_init(sweeps, base),
        claim_width_not_symmetry(sweeps, base),
        claim_pretrained_pairs(pairs),
        claim_soups(pairs),
    ]
