"""Analysis of 1D loss curves: stationary points, curve types, asymmetry and sign agreement.

A 1D curve is a metric ``y[t] = L(theta + lam[t] * eps)`` sampled on a strictly increasing grid
``lam`` (Li et al., "Visualizing, Rethinking, and Mining the Loss Landscape of Deep Neural
Networks", Sect. 2 and Appendix A.3/A.4); ``lam = 0`` is the perturbed model ``theta``.

- :func:`stationary_points` applies the paper's rule: an interior index ``t`` (``1 <= t <= n-2``)
  is stationary when ``(y[t] - y[t+1]) * (y[t] - y[t-1]) > 0``. :func:`count_stationary` is the
  number the paper reports; :func:`minima` and :func:`maxima` split the points by kind.
- :func:`classify_curve` names the shape (:data:`CURVE_TYPES`) after removing low-prominence
  wiggles caused by floating-point noise.
- :func:`asymmetry` compares the mean of a metric on the positive and negative sides of ``theta``
  (Li et al., "Exploring and Exploiting the Asymmetric Valley of DNNs").
- :func:`same_sign_ratio` is the fraction of coordinates on which two parameter-space vectors
  agree in sign (SSR).
- :func:`analyze_curve` gathers all of this for several metrics of one curve into a flat dict.

>>> lam = np.linspace(-1.0, 1.0, 41)
>>> count_stationary(lam**2), classify_curve(lam, lam**2), classify_curve(lam, (lam**2 - 0.25) ** 2)
(1, 'v-basin', 'w-peak')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

CURVE_TYPES: tuple[str, ...] = ("v-basin", "v-side", "w-basin", "w-peak", "vvv-basin", "other")

_MIN, _MAX, _END = "min", "max", "end"


# --------------------------------------------------------------------------- stationary points


def _as_curve(y: Any) -> np.ndarray:
    """Returns ``y`` as a 1-D float64 array, raising ``ValueError`` for any other shape."""
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D curve, got shape {arr.shape}")
    return arr


def _turn_signs(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signs of ``y[t] - y[t-1]`` and ``y[t] - y[t+1]`` for the interior points ``t = 1..n-2``.

    NaN differences give a NaN sign (``np.sign`` semantics), so every later ``> 0`` or ``< 0``
    comparison involving them is false.
    """
    with np.errstate(invalid="ignore"):
        centre = y[1:-1]
        return np.sign(centre - y[:-2]), np.sign(centre - y[2:])


def stationary_points(y: Any) -> np.ndarray:
    """Indices of the stationary points of a sampled curve, by the rule of Li et al. (A.3).

    An index ``t`` with ``1 <= t <= n - 2`` is stationary when

        ``(y[t] - y[t+1]) * (y[t] - y[t-1]) > 0``,

    i.e. ``y[t]`` is strictly larger than both neighbours or strictly smaller than both. The two
    endpoints are never stationary, and neither is a point with an equal neighbour (a plateau).
    The product is evaluated as the product of the two signs, which is the same rule without
    overflow or underflow of the differences. A comparison involving NaN is false, so a point
    that is NaN or has a NaN neighbour is not stationary (``inf - inf`` is NaN as well).

    Args:
        y: 1-D array-like of ``n`` curve values (any ``n``; fewer than 3 gives no points).

    Returns:
        Sorted ``int64`` array of stationary indices.

    Raises:
        ValueError: if ``y`` is not 1-D.

    >>> stationary_points([0.0, 1.0, 0.0, 0.0, 2.0, 3.0]).tolist()
    [1]
    """
    arr = _as_curve(y)
    if arr.size < 3:
        return np.zeros(0, dtype=np.int64)
    left, right = _turn_signs(arr)
    return (np.flatnonzero(left * right > 0) + 1).astype(np.int64)


def count_stationary(y: Any) -> int:
    """Number of stationary points of ``y`` (:func:`stationary_points`), as the paper reports it."""
    return int(stationary_points(y).size)


def minima(y: Any) -> np.ndarray:
    """Stationary points that are strict local minima: ``y[t] < y[t-1]`` and ``y[t] < y[t+1]``."""
    arr = _as_curve(y)
    if arr.size < 3:
        return np.zeros(0, dtype=np.int64)
    left, right = _turn_signs(arr)
    return (np.flatnonzero((left < 0) & (right < 0)) + 1).astype(np.int64)


def maxima(y: Any) -> np.ndarray:
    """Stationary points that are strict local maxima: ``y[t] > y[t-1]`` and ``y[t] > y[t+1]``."""
    arr = _as_curve(y)
    if arr.size < 3:
        return np.zeros(0, dtype=np.int64)
    left, right = _turn_signs(arr)
    return (np.flatnonzero((left > 0) & (right > 0)) + 1).astype(np.int64)


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class _Knot:
    """A turning point of a curve: a run ``y[start..end]`` of equal values of one kind."""

    start: int
    end: int
    value: float
    kind: str


def _as_grid(lam: Any, n: int) -> np.ndarray:
    """Checks that ``lam`` is a finite, strictly increasing 1-D grid of ``n`` points."""
    grid = np.asarray(lam, dtype=np.float64)
    if grid.shape != (n,):
        raise ValueError(f"lam has shape {grid.shape} but the curve has {n} points")
    if not np.all(np.isfinite(grid)) or np.any(np.diff(grid) <= 0):
        raise ValueError("lam must be finite and strictly increasing")
    return grid


def _runs(y: np.ndarray) -> list[tuple[int, int, float]]:
    """Maximal runs of equal consecutive values, as ``(start, end, value)`` with inclusive ends."""
    breaks = np.flatnonzero(np.diff(y) != 0) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks - 1, [y.size - 1]))
    return [(int(s), int(e), float(y[s])) for s, e in zip(starts, ends, strict=True)]


def _knots(y: np.ndarray) -> list[_Knot]:
    """Turning points of a finite curve: both end runs plus every strict extremum run.

    Plateaus are merged into runs first, so a flat-bottomed valley counts as one minimum. Between
    consecutive knots the curve is monotonic, and the interior knots alternate min / max.
    """
    runs = _runs(y)
    knots = [_Knot(*runs[0], _END)]
    for prev, run, nxt in zip(runs, runs[1:], runs[2:], strict=False):
        if prev[2] < run[2] > nxt[2]:
            knots.append(_Knot(*run, _MAX))
        elif prev[2] > run[2] < nxt[2]:
            knots.append(_Knot(*run, _MIN))
    if len(runs) > 1:
        knots.append(_Knot(*runs[-1], _END))
    return knots


def _simplify(knots: list[_Knot], threshold: float) -> list[_Knot]:
    """Removes turning points whose prominence is below ``threshold``.

    The prominence of an extremum is the smaller absolute height difference to its two
    neighbouring turning points (the adjacent extrema, or an endpoint), i.e. for knot values
    ``v[k]``: ``min(|v[k] - v[k-1]|, |v[k] - v[k+1]|)``. Repeatedly, the adjacent pair of knots
    with the smallest difference ``|v[k] - v[k+1]|`` is found; if it is below ``threshold``, both
    knots are dropped when both are interior (a min/max wiggle), or only the interior one when the
    other is an endpoint. Taking the globally smallest pair keeps the surviving knots alternating
    and the curve monotonic between them; a surviving minimum is the lowest point of its basin.
    """
    knots = list(knots)
    while len(knots) > 2:
        gaps = [abs(a.value - b.value) for a, b in pairwise(knots)]
        k = int(np.argmin(gaps))
        if gaps[k] >= threshold:
            break
        drop = {k, k + 1} - {0, len(knots) - 1}
        knots = [knot for i, knot in enumerate(knots) if i not in drop]
    return knots


def _theta_indices(grid: np.ndarray) -> set[int]:
    """Indices of the grid points nearest to ``lam = 0``.

    Two points are both nearest when ``0`` lies midway between them; distances are compared up to
    ``1e-6`` of the smallest grid spacing so that rounding in ``np.linspace`` does not pick one.
    """
    dist = np.abs(grid)
    slack = 1e-6 * float(np.diff(grid).min()) if grid.size > 1 else 0.0
    return {int(i) for i in np.flatnonzero(dist <= dist.min() + slack)}


def _holds(knot: _Knot, indices: set[int]) -> bool:
    """Whether the run of ``knot`` contains one of ``indices``."""
    return any(knot.start <= i <= knot.end for i in indices)


def _name_shape(extrema: list[_Knot], theta: set[int]) -> str:
    """Curve type from the significant interior extrema (in order) and the index set of theta."""
    mins = [k for k in extrema if k.kind == _MIN]
    maxs = [k for k in extrema if k.kind == _MAX]
    at_min = any(_holds(k, theta) for k in mins)
    if not extrema:
        return "v-side"
    if len(mins) == 1 and not maxs:
        return "v-basin" if at_min else "v-side"
    if len(mins) == 2:
        if at_min:
            return "w-basin"
        barrier = [k for k in maxs if mins[0].end < k.start and k.end < mins[1].start]
        return "w-peak" if any(_holds(k, theta) for k in barrier) else "other"
    if len(mins) >= 3 and at_min:
        return "vvv-basin"
    return "other"


def classify_curve(lam: Any, y: Any, *, rtol: float = 1e-3) -> str:
    """Names the shape of a 1D curve, one of :data:`CURVE_TYPES` (Li et al., Sect. 2).

    ``theta`` is the grid point nearest to ``lam = 0`` (both, if two are equally near). First,
    runs of equal values are merged (a flat-bottomed valley is one minimum, and ``theta`` is "at"
    it when it lies anywhere in the run), and extrema whose prominence is below
    ``rtol * (max(y) - min(y))`` are removed (see :func:`_simplify`: prominence is the smaller
    height difference to the neighbouring turning points, an endpoint counting as one). With the
    remaining minima ``m`` and maxima, in order along ``lam``:

    - ``"v-side"``: no extremum (monotonic over the range), or one minimum, no maximum, and
      ``theta`` not at it (the model lies on the valley side).
    - ``"v-basin"``: one minimum, no maximum, ``theta`` at the minimum (increasing on both sides).
    - ``"w-basin"``: two minima (hence one maximum, the barrier, between them), ``theta`` at one.
    - ``"w-peak"``: two minima and ``theta`` at the maximum between them (the loss decreases on
      both sides of ``theta``).
    - ``"vvv-basin"``: three or more minima, ``theta`` at one of them.
    - ``"other"``: anything else: a non-finite value (NaN or inf), a constant curve, fewer than 3
      points, or a shape above with ``theta`` neither at a minimum nor at the barrier (e.g. a
      single hill, or a basin with an extra hill beside it).

    Args:
        lam: 1-D, finite, strictly increasing grid of the same length as ``y``.
        y: 1-D curve values.
        rtol: relative prominence threshold; ``0`` keeps every extremum (plateaus still merged).

    Returns:
        The curve type.

    Raises:
        ValueError: if ``y`` is not 1-D or ``lam`` is not a valid grid for it, or ``rtol < 0``.
    """
    arr = _as_curve(y)
    grid = _as_grid(lam, arr.size)
    if rtol < 0:
        raise ValueError(f"rtol must be non-negative, got {rtol}")
    if arr.size < 3 or not np.all(np.isfinite(arr)):
        return "other"
    span = float(arr.max() - arr.min())
    if span == 0:
        return "other"
    knots = _simplify(_knots(arr), rtol * span)
    return _name_shape(knots[1:-1], _theta_indices(grid))


# --------------------------------------------------------------------------- asymmetry and SSR


def _side_mean(values: np.ndarray) -> float:
    """Mean of ``values``, NaN for an empty side."""
    return float(values.mean()) if values.size else float("nan")


def asymmetry(lam: Any, y: Any) -> dict[str, float]:
    """Positive-side versus negative-side average of one metric (Asymmetric Valley paper).

    With ``P = {t: lam[t] > 0}`` and ``N = {t: lam[t] < 0}`` (``lam == 0`` belongs to neither):

    - ``mean_pos = sum_{t in P} y[t] / |P|``, ``mean_neg = sum_{t in N} y[t] / |N|``
      (NaN for an empty side),
    - ``ratio = mean_pos / mean_neg`` (NaN when ``mean_neg`` is 0 or NaN),
    - ``difference = mean_pos - mean_neg``.

    NaN or inf values in ``y`` propagate into the means.

    Args:
        lam: 1-D grid of the same length as ``y`` (need not be sorted here).
        y: 1-D curve values.

    Returns:
        ``{"mean_pos", "mean_neg", "ratio", "difference"}`` as python floats.

    Raises:
        ValueError: if the shapes differ or are not 1-D.
    """
    arr = _as_curve(y)
    grid = np.asarray(lam, dtype=np.float64)
    if grid.shape != arr.shape:
        raise ValueError(f"lam has shape {grid.shape} but the curve has shape {arr.shape}")
    pos, neg = _side_mean(arr[grid > 0]), _side_mean(arr[grid < 0])
    ratio = pos / neg if neg != 0 and not np.isnan(neg) else float("nan")
    return {"mean_pos": pos, "mean_neg": neg, "ratio": float(ratio), "difference": pos - neg}


def _signs(x: Any) -> np.ndarray:
    """``sign(x)`` as a flat numpy array; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach"):  # a torch tensor, read without importing torch
        t = x.detach().cpu()
        return np.sign((t.double() if t.is_floating_point() else t).numpy()).reshape(-1)
    return np.sign(np.asarray(x)).reshape(-1)


def _agreement(a: Any, b: Any, name: str) -> tuple[int, int]:
    """``(number of equal signs, number of elements)`` of one parameter's two arrays."""
    sa, sb = _signs(a), _signs(b)
    if sa.shape != sb.shape:
        raise ValueError(f"{name}: {sa.size} elements in a but {sb.size} in b")
    return int(np.count_nonzero(sa == sb)), int(sa.size)


def _fraction(counts: Mapping[str, tuple[int, int]], names: Sequence[str]) -> float:
    """Pooled fraction of equal signs over ``names`` (NaN when they hold no element)."""
    same = sum(counts[n][0] for n in names)
    total = sum(counts[n][1] for n in names)
    return same / total if total else float("nan")


def same_sign_ratio(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, float]:
    """Same-sign ratio (SSR): the fraction of elements where ``sign(a) == sign(b)``.

    For a set of names ``S``, ``SSR(S) = #{i in S: sign(a_i) == sign(b_i)} / #{i in S}``, pooled
    over all elements of all the named arrays. Signs follow ``np.sign``: ``-1``, ``0`` or ``+1``,
    so zero only matches zero; a NaN element never matches. Use it between two models or between
    a noise direction and ``theta_f``.

    Args:
        a: ``{parameter name: array}``, numpy or torch (any device, any dtype).
        b: the same names (extra names are ignored) with arrays of the same sizes.
        groups: optional ``{group: [parameter names]}``, e.g. from
            :func:`landscape.params.param_groups`.

    Returns:
        ``{"ALL": SSR over every name in a, group: SSR over its names, ...}``; an empty selection
        gives NaN. A group named ``"ALL"`` replaces the overall value with its own names'.

    Raises:
        KeyError: if ``b`` lacks a name of ``a``, or a group names a parameter not in ``a``.
        ValueError: if two arrays of one name differ in size.
    """
    counts = {name: _agreement(a[name], b[name], name) for name in a}
    out = {"ALL": _fraction(counts, list(counts))}
    for group, names in (groups or {}).items():
        missing = [n for n in names if n not in counts]
        if missing:
            raise KeyError(f"group {group!r} names parameters not in a: {missing}")
        out[group] = _fraction(counts, names)
    return out


# --------------------------------------------------------------------------- summary


def _metric_summary(grid: np.ndarray, y: Any, rtol: float) -> dict[str, Any]:
    """Stationary points, curve type and asymmetry of one metric, keyed by field name."""
    points = stationary_points(y)
    summary: dict[str, Any] = {
        "n_stationary": int(points.size),
        "stationary": points,
        "type": classify_curve(grid, y, rtol=rtol),
    }
    summary.update(asymmetry(grid, y))
    return summary


def analyze_curve(
    lam: Any, metrics: Mapping[str, Any], *, rtol: float = 1e-3
) -> dict[str, int | float | str | np.ndarray]:
    """Summarises every metric of one 1D curve into a flat dict.

    For each metric name ``m`` (e.g. ``"test/loss"``) the keys are

    - ``f"{m}/n_stationary"``: ``int``, :func:`count_stationary` (the paper's raw count);
    - ``f"{m}/stationary"``: ``np.ndarray`` of ``int64`` indices, :func:`stationary_points`;
    - ``f"{m}/type"``: ``str``, :func:`classify_curve` with ``rtol``;
    - ``f"{m}/mean_pos"``, ``f"{m}/mean_neg"``, ``f"{m}/ratio"``, ``f"{m}/difference"``:
      ``float``, :func:`asymmetry` (may be NaN).

    Values are python scalars or numpy arrays, so a writer can store every non-array value as an
    HDF5 attribute and every ``np.ndarray`` (possibly empty) as a dataset under the key's path.

    Args:
        lam: 1-D, finite, strictly increasing grid.
        metrics: ``{metric name: 1-D values on lam}``.
        rtol: passed to :func:`classify_curve`.

    Returns:
        The flat dict, metrics in input order, fields in the order listed above.

    Raises:
        ValueError: if ``lam`` is not a valid grid for a metric.

    >>> lam = np.linspace(-1.0, 1.0, 5)
    >>> out = analyze_curve(lam, {"test/loss": lam**2})
    >>> out["test/loss/type"], out["test/loss/stationary"].tolist(), out["test/loss/ratio"]
    ('v-basin', [2], 1.0)
    """
    out: dict[str, int | float | str | np.ndarray] = {}
    for name, values in metrics.items():
        grid = _as_grid(lam, _as_curve(values).size)
        for field, value in _metric_summary(grid, values, rtol).items():
            out[f"{name}/{field}"] = value
    return out
