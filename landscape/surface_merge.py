"""The merge of a surface's shards into one surface, and the root attributes it carries over.

No torch here: the merge job imports only this (the shards come from
:func:`landscape.evaluate.compute_surface_shard`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from landscape import store
from landscape.config import EVALUATION_DEFAULTS
from landscape.lambda_grids import gather_shards, lambda_grid

# Root attributes of curves and surfaces, besides spec and inputs.
EVALUATION_ATTRS = ("num_classes", "run", "epoch", "subset_seed", "batchnorm")
# Root attributes of curves and surfaces evaluated with non-default engine options.
OPTION_ATTRS = (
    *EVALUATION_DEFAULTS,
    "max_abs_diff_vs_fp32",
    "max_rel_diff_vs_fp32",
    "evaluation_note",
)


def merge_surface(shards: Sequence[str | Path], out: str | Path, spec: Mapping[str, Any]) -> None:
    """Gathers shards into one surface with ``x`` and ``y`` scales; a missing point is NaN.

    The surface records as its ``inputs`` the checkpoint and the x and y directions (paths and
    SHA-256) that its shards record, not the temporary shards themselves.

    Raises:
        ValueError: if a shard was computed for another spec or from other input files.
    """
    xs, ys = lambda_grid(spec["x"]), lambda_grid(spec["y"])
    grids, shard = gather_shards(shards, spec, "surface")
    inputs = shard.inputs
    attrs = {k: shard.attrs[k] for k in EVALUATION_ATTRS if k in shard.attrs}
    attrs |= {k: shard.attrs[k] for k in OPTION_ATTRS if k in shard.attrs}
    attrs |= {f"{k}_sha256": shard.inputs[k]["sha256"] for k in ("checkpoint", "x", "y")}
    with store.create(
        out,
        kind="surface",
        spec=spec,
        inputs=inputs,
        attrs=attrs,
    ) as w:
        w.scale("x", xs)
        w.scale("y", ys)
        for name, grid in sorted(grids.items()):
            w.put(name, grid.reshape(len(xs), len(ys)), dims=("x", "y"))
