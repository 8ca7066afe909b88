"""Lambda grids of curves and surfaces, and the shards of a 2D grid.

A surface (or an eigenvalue map) evaluates its flattened ``x`` by ``y`` grid in shards of
contiguous points (:func:`shard_indices`, :func:`shard_coordinates`); the merge puts them back on
the grid (:func:`gather_shards`). No torch here: the merge jobs import only this.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landscape import store


def lambda_grid(spec: Mapping[str, Any]) -> np.ndarray:
    """Evenly spaced lambdas from ``min`` to ``max`` inclusive.

    >>> lambda_grid({"min": -1.0, "max": 1.0, "num": 5}).tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]

    Raises:
        ValueError: if ``num < 1`` or ``min > max``.
    """
    lo, hi, num = float(spec["min"]), float(spec["max"]), int(spec["num"])
    if num < 1:
        raise ValueError(f"lambda.num: must be >= 1, got {num}")
    if lo > hi:
        raise ValueError(f"lambda: min ({lo}) must not exceed max ({hi})")
    return np.linspace(lo, hi, num)


def shard_indices(total: int, scatteritem: str) -> np.ndarray:
    """Flat grid indices of shard ``"i-of-n"`` (1-based): contiguous, sizes differ by at most one.

    >>> shard_indices(10, "2-of-3").tolist()
    [4, 5, 6]

    Raises:
        ValueError: for a malformed item or ``i`` outside ``1..n``.
    """
    try:
        i, n = (int(v) for v in scatteritem.split("-of-"))
    except ValueError:
        raise ValueError(f"scatteritem: expected 'i-of-n', got {scatteritem!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"scatteritem: shard {i} is outside 1..{n}")
    return np.array_split(np.arange(total), n)[i - 1]


def shard_coordinates(spec: Mapping[str, Any], scatteritem: str) -> tuple[np.ndarray, np.ndarray]:
    """The flat indices of one shard (``"i-of-n"``) of the ``x`` by ``y`` grid of ``spec`` and
    their ``(x, y)`` coordinates, one row per point."""
    xs, ys = lambda_grid(spec["x"]), lambda_grid(spec["y"])
    index = shard_indices(len(xs) * len(ys), scatteritem)
    return index, np.stack([xs[index // len(ys)], ys[index % len(ys)]], axis=1)


def gather_shards(
    shards: Sequence[str | Path], spec: Mapping[str, Any], what: str
) -> tuple[dict[str, np.ndarray], store.Artifact]:
    """Every dataset of the shards (but ``index``) as a flat ``x`` by ``y`` grid, NaN where no
    shard computed the point, and the last shard read (its inputs and attributes).

    Raises:
        ValueError: if a shard was computed for another spec or from other input files.
    """
    xs, ys = lambda_grid(spec["x"]), lambda_grid(spec["y"])
    grids: dict[str, np.ndarray] = {}
    first = None
    for path in shards:
        shard = store.open(path)
        if shard.spec != json.loads(store.canonical_json(spec)):
            raise ValueError(f"{path}: shard spec differs from the {what}'s spec")
        if first is not None and shard.inputs != first.inputs:
            raise ValueError(f"{path}: shard computed from other inputs than {shards[0]}")
        first = first or shard
        for name, values in shard.data.items():
            if name != "index":
                grid = grids.setdefault(name, np.full(len(xs) * len(ys), np.nan))
                grid[shard["index"]] = values
    return grids, shard
