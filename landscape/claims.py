"""The papers' claims evaluated on a run's artifacts: one row each in ``claims.csv``.

Each claim of Li et al., "Visualizing, Rethinking, and Mining the Loss Landscape of Deep Neural
Networks" is measured on whatever curves, surfaces and s.o.a. files the config made, so the check
reruns unchanged at embedded or paper scale. Which family an artifact belongs to is read from the
``spec`` of its direction file (recorded in the artifact's ``inputs``), never from its name:

- Gaussian: ``kind: noise``, ``distribution: gaussian``, ``sign: none`` (any normalization);
- descent: ``kind: gradient``, or ``kind: checkpoint`` toward a later checkpoint of the same run,
  with a positive ``scale``;
- N.E.: ``kind: eigenvector``, ``which: SA`` (any index);
- MLI: ``kind: checkpoint`` toward epoch 0 of the same run with a negative ``scale``
  (``theta_f + lambda (theta_f - theta_0)``).

A claim whose artifacts the config does not make gets ``holds`` NA and a ``detail`` naming what
to add. Every statistic and threshold is stated in its row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landscape import store
from landscape.claim_rows import CLAIM_COLUMNS, claim_row, not_measured
from landscape.valley_claims import valley_claims

PAPER = "Li et al., Visualizing, Rethinking, and Mining the Loss Landscape of DNNs"
SHARE = 0.8  # the share of a family that must show the paper's shape
SOA_ERROR = 0.1  # largest relative error of the s.o.a. that still "explains" a curve

_row = partial(claim_row, paper=PAPER)
_not_measured = partial(not_measured, paper=PAPER)

_EPOCH_FILE = re.compile(r"epoch(\d+)\.pt$")


@dataclass(frozen=True)
class Artifact:
    """A curve, surface or s.o.a. artifact with the spec of each direction it is taken along.

    Attributes:
        path: the artifact.
        run: its run.
        epoch: its checkpoint's epoch.
        name: its config key (the file stem).
        directions: role (``direction``, or ``x`` and ``y``) to the direction's spec, with
            ``target_epoch`` and ``target_run`` added for checkpoint directions.
        data: its datasets.
    """

    path: Path
    run: str
    epoch: int
    name: str
    directions: dict[str, dict]
    data: dict[str, np.ndarray]


def _direction_spec(path: Path, run: str) -> dict:
    """A direction file's spec, a checkpoint direction's target epoch and run resolved."""
    attrs = store.read_attrs(path)
    spec, inputs = json.loads(attrs["spec"]), json.loads(attrs["inputs"])
    if "target" in inputs:
        match = _EPOCH_FILE.search(inputs["target"]["path"])
        spec["target_epoch"] = int(match.group(1)) if match else None
        spec["target_run"] = (spec.get("target") or {}).get("run") or run
    return spec


def read_artifact(path: str | Path, base: str | Path = ".") -> Artifact:
    """Reads an artifact and the specs of its directions (their paths relative to ``base``).

    Raises:
        FileNotFoundError: if the artifact or a direction file it records is missing.
    """
    art = store.open(path)
    run = str(art.attrs["run"])
    roles = [r for r in ("direction", "x", "y") if r in art.inputs]
    directions = {r: _direction_spec(Path(base, art.inputs[r]["path"]), run) for r in roles}
    return Artifact(
        path=Path(path),
        run=run,
        epoch=int(art.attrs["epoch"]),
        name=Path(path).stem,
        directions=directions,
        data=art.data,
    )


# --------------------------------------------------------------------------- families


def is_gaussian(spec: dict, epoch: int = 0, run: str | None = None) -> bool:
    """A plain Gaussian noise direction: no sign constraint, not chosen for its overlap (V6)."""
    return (
        spec.get("kind") == "noise"
        and spec.get("distribution") == "gaussian"
        and spec.get("sign", "none") == "none"
        and "closest_to" not in spec
    )


def is_descent(spec: dict, epoch: int, run: str | None = None) -> bool:
    """The negative gradient, or the direction to a later checkpoint of the same run."""
    if spec.get("scale", 1.0) <= 0:
        return False
    if spec.get("kind") == "gradient":
        return True
    target = spec.get("target_epoch")
    same_run = run is None or spec.get("target_run") in (None, run)
    return spec.get("kind") == "checkpoint" and same_run and target is not None and target > epoch


def is_negative_eigenvector(spec: dict, epoch: int = 0, run: str | None = None) -> bool:
    """A Hessian eigenvector of the smallest (most negative) eigenvalues (N.E.)."""
    return spec.get("kind") == "eigenvector" and spec.get("which") == "SA"


def is_mli(spec: dict, epoch: int, run: str | None = None) -> bool:
    """``theta_f - theta_0`` read from ``theta_f``: toward epoch 0 with a negative scale."""
    same_run = run is None or spec.get("target_run") in (None, run)
    return (
        spec.get("kind") == "checkpoint"
        and same_run
        and spec.get("target_epoch") == 0
        and epoch > 0
        and spec.get("scale", 1.0) < 0
    )


def _along(artifacts: Sequence[Artifact], family: Callable[..., bool]) -> list[Artifact]:
    """The 1D artifacts whose direction belongs to ``family`` (a predicate of spec, epoch, run)."""
    return [
        art
        for art in artifacts
        if "direction" in art.directions and family(art.directions["direction"], art.epoch, art.run)
    ]


# --------------------------------------------------------------------------- statistics


def _metric(art: Artifact, split: str) -> str:
    """``{split}/loss`` if the artifact holds it, else the other split's loss."""
    for name in (f"{split}/loss", "test/loss", "train/loss"):
        if name in art.data:
            return name
    raise ValueError(f"{art.path}: no train/loss or test/loss")


def _label(art: Artifact) -> str:
    return f"{art.run} epoch {art.epoch} {art.name}"


def _theta_index(lam: np.ndarray) -> int:
    return int(np.argmin(np.abs(lam)))


def falls_on_both_sides(lam: Any, y: Any) -> bool:
    """Whether the loss at the grid point nearest ``lam = 0`` exceeds both its neighbours."""
    lam, y = np.asarray(lam, float), np.asarray(y, float)
    i = _theta_index(lam)
    return 0 < i < y.size - 1 and bool(y[i - 1] < y[i] > y[i + 1])


def peak_height(lam: Any, y: Any) -> float:
    """``L(0) - min L`` over the curve: how far the loss can fall from ``theta``."""
    lam, y = np.asarray(lam, float), np.asarray(y, float)
    return float(y[_theta_index(lam)] - np.nanmin(y))


def wine_bottle(x: Any, y: Any, z: Any) -> bool:
    """Whether a surface looks like the bottom of a wine bottle around ``(0, 0)``.

    The centre is higher than its 8 grid neighbours (the loss falls in every direction) and the
    mean of the grid's boundary is higher than the centre (it rises again further out).
    """
    z = np.asarray(z, float)
    i, j = _theta_index(np.asarray(x, float)), _theta_index(np.asarray(y, float))
    if not (0 < i < z.shape[0] - 1 and 0 < j < z.shape[1] - 1):
        return False
    around = np.delete(z[i - 1 : i + 2, j - 1 : j + 2].reshape(-1), 4)
    boundary = np.concatenate([z[0], z[-1], z[1:-1, 0], z[1:-1, -1]])
    return bool(np.all(z[i, j] > around) and boundary.mean() > z[i, j])


def soa_relative_error(data: dict[str, np.ndarray]) -> float:
    """How much of the local loss change the s.o.a. misses, over all points and offsets.

    ``sum |quadratic - local_loss| / sum |local_loss - loss|``: 0 when the second-order
    approximation reproduces the actual curve around each point exactly.
    """
    quadratic, local, loss = data["quadratic"], data["local_loss"], data["loss"]
    change = np.abs(local - loss[:, None]).sum()
    return float(np.abs(quadratic - local).sum() / change) if change > 0 else float("nan")


# --------------------------------------------------------------------------- claims


def _share_typed(curves: Sequence[Artifact], shape: str, split: str) -> tuple[float, str]:
    """Share of ``curves`` whose ``split`` loss is typed ``shape``, and the exceptions."""
    types = {_label(c): str(c.data[f"analysis/{_metric(c, split)}/type"]) for c in curves}
    hits = sum(t == shape for t in types.values())
    others = "; ".join(f"{k}: {t}" for k, t in types.items() if t != shape)
    detail = f"{hits} of {len(types)} {shape}" + (f"; others: {others}" if others else "")
    return hits / len(types), detail


def claim_gmi(curves: Sequence[Artifact]) -> dict[str, Any]:
    """Gaussian curves are v-basins (GMI, Fig. 2)."""
    claim, figure = "Gaussian curves are v-basins (GMI)", "Fig. 2 (V2)"
    statistic = (
        "share of curves along Gaussian directions whose train loss (the loss theta minimizes; "
        "the test loss where a curve has no train split) is typed v-basin"
    )
    threshold = f">= {SHARE}"
    gaussian = _along(curves, is_gaussian)
    if not gaussian:
        return _not_measured(
            claim, figure, statistic, threshold,
            "no curve along a Gaussian direction (kind noise, distribution gaussian, sign none); "
            "add one to curves (V2), as config.yaml's gauss_filnorm",
        )  # fmt: skip
    share, detail = _share_typed(gaussian, "v-basin", "train")
    return _row(claim, figure, statistic, share, threshold, share >= SHARE, detail)


def claim_descent(curves: Sequence[Artifact]) -> dict[str, Any]:
    """Descent directions give v-side curves (Fig. 4)."""
    claim, figure = "descent directions give v-side curves", "Fig. 4 (V4)"
    statistic = (
        "share of curves along descent directions (negative gradient, or toward a later "
        "checkpoint) whose test loss is typed v-side"
    )
    threshold = f">= {SHARE}"
    descent = _along(curves, is_descent)
    if not descent:
        return _not_measured(
            claim, figure, statistic, threshold,
            "no curve along a descent direction (kind gradient, or kind checkpoint toward a "
            "later checkpoint of the same run); add one (V4), as config.yaml's to_final",
        )  # fmt: skip
    share, detail = _share_typed(descent, "v-side", "test")
    return _row(claim, figure, statistic, share, threshold, share >= SHARE, detail)


def _by_direction(curves: Sequence[Artifact]) -> dict[tuple[str, str], list[Artifact]]:
    """N.E. curves grouped by run and curve key, each group sorted by epoch."""
    groups: dict[tuple[str, str], list[Artifact]] = {}
    for c in curves:
        groups.setdefault((c.run, c.name), []).append(c)
    return {k: sorted(v, key=lambda c: c.epoch) for k, v in sorted(groups.items())}


_NE_REASON = (
    "no curve along an N.E. direction (kind eigenvector, which SA); add curves along one at "
    "two or more checkpoints (V8), as config.yaml's ne1 at epochs [0, 30]"
)


def claim_ne_wpeak_early(curves: Sequence[Artifact]) -> dict[str, Any]:
    """w-peak curves exist along N.E. directions at early checkpoints (Fig. 8)."""
    claim, figure = "w-peak curves exist along N.E. directions at early checkpoints", "Fig. 8 (V8)"
    statistic = (
        "number of N.E. curves at their run's earliest checkpoint whose train loss falls on both "
        "sides of lambda = 0 (L at the nearest grid points on either side < L(0))"
    )
    threshold = ">= 1"
    groups = _by_direction(_along(curves, is_negative_eigenvector))
    if not groups:
        return _not_measured(claim, figure, statistic, threshold, _NE_REASON)
    early = [g[0] for g in groups.values()]
    peaks = {
        _label(c): falls_on_both_sides(c.data["lambda"], c.data[_metric(c, "train")]) for c in early
    }
    hits = sum(peaks.values())
    detail = f"{hits} of {len(peaks)}: " + "; ".join(
        f"{k}: {'w-peak' if v else 'no'}" for k, v in peaks.items()
    )
    return _row(claim, figure, statistic, hits, threshold, hits >= 1, detail)


def claim_ne_wpeak_fades(curves: Sequence[Artifact]) -> dict[str, Any]:
    """The height of the N.E. peak decreases as the model converges (Fig. 8)."""
    claim, figure = "the N.E. w-peak fades at later checkpoints", "Fig. 8 (V8)"
    statistic = (
        "share of N.E. curve keys, per run, whose train-loss peak height L(0) - min L is smaller "
        "at the latest checkpoint than at the earliest"
    )
    threshold = f">= {SHARE}"
    groups = _by_direction(_along(curves, is_negative_eigenvector))
    pairs = {k: (g[0], g[-1]) for k, g in groups.items() if len(g) > 1}
    if not pairs:
        return _not_measured(
            claim, figure, statistic, threshold,
            _NE_REASON if not groups else "N.E. curves at one checkpoint only; add a later one",
        )  # fmt: skip
    heights = {
        k: tuple(peak_height(c.data["lambda"], c.data[_metric(c, "train")]) for c in pair)
        for k, pair in pairs.items()
    }
    fades = sum(late < early for early, late in heights.values())
    share = fades / len(heights)
    detail = "; ".join(
        f"{run} {name} epoch {pairs[(run, name)][0].epoch} -> {pairs[(run, name)][1].epoch}: "
        f"{early:.3g} -> {late:.3g}"
        for (run, name), (early, late) in heights.items()
    )
    return _row(claim, figure, statistic, share, threshold, share >= SHARE, detail)


def claim_wine_bottle(surfaces: Sequence[Artifact]) -> dict[str, Any]:
    """N.E. x N.E. surfaces look like the bottom of a bottle of wine (Fig. 11)."""
    claim, figure = "N.E. x N.E. surfaces look like a wine bottle's bottom", "Fig. 11 (V11)"
    statistic = (
        "share of surfaces on two N.E. directions, at their run's earliest checkpoint, whose "
        "loss at (0, 0) is above its 8 grid neighbours and below the mean of the grid's boundary"
    )
    threshold = f">= {SHARE}"
    ne = [
        s
        for s in surfaces
        if all(is_negative_eigenvector(s.directions.get(r, {})) for r in ("x", "y"))
    ]
    if not ne:
        return _not_measured(
            claim, figure, statistic, threshold,
            "no surface on two N.E. directions; add a surface on ne1 x ne2 (V11), "
            "e.g. surfaces: {ne_2d: {directions: [ne1, ne2]}} with an ne2 direction "
            "(kind eigenvector, which SA, index 2)",
        )  # fmt: skip
    earliest: dict[tuple[str, str], Artifact] = {}
    for s in sorted(ne, key=lambda s: s.epoch):  # the peak fades with training, as in Fig. 8
        earliest.setdefault((s.run, s.name), s)
    shapes = {}
    for s in earliest.values():
        metric = _metric(s, "test")
        shapes[f"{_label(s)} {metric}"] = wine_bottle(s.data["x"], s.data["y"], s.data[metric])
    hits = sum(shapes.values())
    share = hits / len(shapes)
    detail = f"{hits} of {len(shapes)}: " + "; ".join(
        f"{k}: {'yes' if v else 'no'}" for k, v in shapes.items()
    )
    return _row(claim, figure, statistic, share, threshold, share >= SHARE, detail)


def claim_soa(soas: Sequence[Artifact]) -> dict[str, Any]:
    """The s.o.a. explains MLI as it explains GMI (Fig. 14)."""
    claim, figure = "the s.o.a. explains MLI like GMI", "Fig. 14 (V14)"
    statistic = (
        "largest relative error of the s.o.a. against the actual loss around each point, "
        "sum|s.o.a. - L| / sum|L - L(point)|, over the MLI and GMI s.o.a. files"
    )
    threshold = f"<= {SOA_ERROR} for MLI and for GMI"
    gmi, mli = _along(soas, is_gaussian), _along(soas, is_mli)
    missing = [name for name, arts in (("GMI", gmi), ("MLI", mli)) if not arts]
    without = [a for a in gmi + mli if "local_loss" not in a.data]
    if missing or without:
        reason = (
            f"no {' or '.join(missing)} s.o.a.; add soa blocks along a Gaussian direction and "
            "along theta_f - theta_0 (kind checkpoint, target epoch 0, scale -1) (V14)"
            if missing
            else "soa.local_loss is false in " + ", ".join(_label(a) for a in without)
        )
        return _not_measured(claim, figure, statistic, threshold, reason)
    errors = {
        f"{family} {_label(a)}": soa_relative_error(a.data)
        for family, arts in (("MLI", mli), ("GMI", gmi))
        for a in arts
    }
    worst = max(errors.values())
    detail = "; ".join(f"{k}: {e:.3g}" for k, e in errors.items())
    return _row(claim, figure, statistic, worst, threshold, bool(worst <= SOA_ERROR), detail)


def claims_table(
    curves: Sequence[str | Path],
    surfaces: Sequence[str | Path] = (),
    soas: Sequence[str | Path] = (),
    base: str | Path = ".",
    sweeps: Sequence[str | Path] = (),
    pairs: Sequence[str | Path] = (),
) -> pd.DataFrame:
    """Every claim of both papers on the given artifacts (direction paths relative to ``base``);
    the asymmetric-valley paper's from ``sweeps`` and ``pairs`` (:mod:`landscape.valley_claims`).
    """
    curve_arts = [read_artifact(p, base) for p in curves]
    surface_arts = [read_artifact(p, base) for p in surfaces]
    soa_arts = [read_artifact(p, base) for p in soas]
    rows = [
        claim_gmi(curve_arts),
        claim_descent(curve_arts),
        claim_ne_wpeak_early(curve_arts),
        claim_ne_wpeak_fades(curve_arts),
        claim_wine_bottle(surface_arts),
        claim_soa(soa_arts),
        *valley_claims(sweeps, pairs, base),
    ]
    frame = pd.DataFrame(rows, columns=CLAIM_COLUMNS)
    frame["holds"] = frame["holds"].astype("boolean")
    return frame


def write_claims(
    out: str | Path,
    curves: Sequence[str | Path],
    surfaces: Sequence[str | Path] = (),
    soas: Sequence[str | Path] = (),
    base: str | Path = ".",
    sweeps: Sequence[str | Path] = (),
    pairs: Sequence[str | Path] = (),
) -> pd.DataFrame:
    """Writes :func:`claims_table` as CSV (atomically) and returns it."""
    return store.write_csv(claims_table(curves, surfaces, soas, base, sweeps, pairs), out)
