"""Hessian eigenvalue maps over a 2D plane: the largest and the most negative eigenvalue of the
loss Hessian at every point ``theta + x eps_x + y eps_y`` and their ratio (Li et al. 2018,
Section 7, "convexity" maps).

Each point gets its own :class:`landscape.hessian.HessianLinearOperator` over the evaluation set
of the ``hessian`` block (``split``, ``samples``, ``batch_size``, ``bn_mode``, ``dtype``, ``hvp``)
and two :func:`landscape.hessian.lanczos` runs, ``which="LA"`` and ``"SA"`` with ``k = 1`` (``tol``,
``max_steps``, ``seed`` of the block). The map is sharded like a surface: a shard evaluates a
contiguous run of the flattened ``x`` by ``y`` grid (:func:`landscape.lambda_grids.shard_indices`),
the merge (:mod:`landscape.eigenmap_merge`) puts the points on the ``x`` and ``y`` scales and
:mod:`landscape.eigenmap_plots` draws the map. Datasets (``x`` x ``y``):

- ``max_eigenvalue``, ``min_eigenvalue``: the extreme eigenvalues; ``max_residual``,
  ``min_residual``: their Lanczos residuals ``||Hv - lambda v||``;
- ``ratio``: ``|min_eigenvalue / max_eigenvalue|``, Li et al.'s map: near 0 where the loss is
  locally convex (no negative curvature of note), large where negative curvature is comparable to
  the positive one. Where ``min_eigenvalue`` is positive the point is convex and ``ratio`` still
  reads ``|min / max|``; ``min_eigenvalue`` tells the two apart.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import store
from landscape.curvature import DTYPES, evaluation_batches
from landscape.eigenmap_merge import FIELDS
from landscape.evaluate import load_plane
from landscape.hessian import HessianLinearOperator, lanczos
from landscape.lambda_grids import shard_coordinates


def extreme_eigenvalues(
    model: nn.Module,
    directions: Sequence[Mapping[str, Tensor]],
    coords: np.ndarray,
    batches: Sequence[tuple[Tensor, Tensor]],
    spec: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """The extreme Hessian eigenvalues at ``theta + coords[p] @ directions`` for every ``p``.

    Args:
        model: The model at ``theta`` (not modified).
        directions: k directions over its trainable parameters (missing names: 0).
        coords: ``(P, k)`` lambda values.
        batches: The evaluation set.
        spec: ``dtype``, ``bn_mode``, ``hvp``, ``tol``, ``max_steps``, ``seed`` (all optional).

    Returns:
        ``{field: (P,) float64}`` for every field of :data:`FIELDS`.
    """
    work = copy.deepcopy(model)
    params = {n: p for n, p in work.named_parameters() if p.requires_grad}
    base = {n: p.detach().clone() for n, p in params.items()}
    out = {f: np.empty(len(coords)) for f in FIELDS}
    lanczos_args = {
        "tol": spec.get("tol"),
        "max_steps": spec.get("max_steps"),
        "seed": spec.get("seed", 0),
    }
    for i, c in enumerate(np.asarray(coords, dtype=np.float64)):
        with torch.no_grad():
            for name, p in params.items():
                step = sum(
                    float(ci) * d[name].to(p)
                    for ci, d in zip(c, directions, strict=True)
                    if name in d
                )
                p.copy_(base[name] + step)
        op = HessianLinearOperator(
            work,
            batches,
            dtype=DTYPES[spec.get("dtype", "float32")],
            bn_mode=spec.get("bn_mode", "eval"),
            method=spec.get("hvp", "auto"),
        )
        top = lanczos(op, 1, which="LA", **lanczos_args)
        bottom = lanczos(op, 1, which="SA", **lanczos_args)
        out["max_eigenvalue"][i], out["max_residual"][i] = top.eigenvalues[0], top.residuals[0]
        out["min_eigenvalue"][i], out["min_residual"][i] = (
            bottom.eigenvalues[0],
            bottom.residuals[0],
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ratio"] = np.abs(out["min_eigenvalue"] / out["max_eigenvalue"])
    return out


def compute_eigenmap_shard(
    checkpoint: str | Path,
    directions: Sequence[str | Path],
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    scatteritem: str,
    device: str = "auto",
) -> None:
    """Evaluates one shard (``"i-of-n"``) of an eigenvalue map's flattened ``x`` by ``y`` grid."""
    model, meta, data, _, vectors = load_plane(checkpoint, directions, spec, dataset, device)
    index, coords = shard_coordinates(spec, scatteritem)
    values = extreme_eigenvalues(model, vectors, coords, evaluation_batches(data, spec), spec)
    inputs = {"checkpoint": checkpoint, "x": directions[0], "y": directions[1]}
    attrs = {"run": meta["run"], "epoch": meta["epoch"], "subset_seed": data.subset_seed}
    with store.create(out, kind="eigenmap_shard", spec=spec, inputs=inputs, attrs=attrs) as w:
        w.put("index", index)
        for name, v in values.items():
            w.put(name, v)
