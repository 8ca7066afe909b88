"""The merge of an eigenvalue map's shards (:func:`landscape.eigenmaps.compute_eigenmap_shard`)
into one map on the ``x`` and ``y`` scales. No torch here: the merge job imports only this."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from landscape import store
from landscape.lambda_grids import gather_shards, lambda_grid

FIELDS = ("max_eigenvalue", "min_eigenvalue", "max_residual", "min_residual", "ratio")


def merge_eigenmap(shards: Sequence[str | Path], out: str | Path, spec: Mapping[str, Any]) -> None:
    """Gathers shards into one map on the ``x`` and ``y`` scales; a missing point is NaN.

    Raises:
        ValueError: if a shard was computed for another spec or from other inputs.
    """
    xs, ys = lambda_grid(spec["x"]), lambda_grid(spec["y"])
    grids, shard = gather_shards(shards, spec, "eigenvalue map")
    attrs = {k: shard.attrs[k] for k in ("run", "epoch", "subset_seed")}
    with store.create(out, kind="eigenmap", spec=spec, inputs=shard.inputs, attrs=attrs) as w:
        w.scale("x", xs)
        w.scale("y", ys)
        for f in FIELDS:
            w.put(f, grids[f].reshape(len(xs), len(ys)), dims=("x", "y"))
