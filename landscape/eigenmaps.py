"""Hessian eigenvalue maps over a 2D plane: the largest and the most negative eigenvalue of the
loss Hessian at every point ``theta + x eps_x + y eps_y`` and their ratio (Li et al. 2018,
Section 7, "convexity" maps).

Each point gets its own :class:`landscape.hessian.HessianLinearOperator` over the evaluation set
of the ``hessian`` block (``split``, ``samples``, ``batch_size``, ``bn_mode``, ``dtype``, ``hvp``)
and two :func:`landscape.hessian.lanczos` runs, ``which="LA"`` and ``"SA"`` with ``k = 1`` (``tol``,
``max_steps``, ``seed`` of the block). The map is sharded like a surface: a shard evaluates a
contiguous run of the flattened ``x`` by ``y`` grid (:func:`landscape.evaluate.shard_indices`),
the merge puts the points on the ``x`` and ``y`` scales. Datasets (``x`` x ``y``):

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
from landscape.data import load_data
from landscape.directions import orthogonalize
from landscape.evaluate import gather_shards, lambda_grid, shard_coordinates
from landscape.hessian import HessianLinearOperator, lanczos
from landscape.train import load_model, resolve_device

FIELDS = ("max_eigenvalue", "min_eigenvalue", "max_residual", "min_residual", "ratio")


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
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    data = load_data(dataset, dev, key=f"datasets.{meta['spec']['dataset_name']}")
    vectors = [
        {n: torch.as_tensor(v, device=dev) for n, v in store.open(p).tensors().items()}
        for p in directions
    ]
    if spec.get("orthogonalize"):
        vectors[1] = orthogonalize(vectors[0], vectors[1])
    index, coords = shard_coordinates(spec, scatteritem)
    values = extreme_eigenvalues(model, vectors, coords, evaluation_batches(data, spec), spec)
    inputs = {"checkpoint": checkpoint, "x": directions[0], "y": directions[1]}
    attrs = {"run": meta["run"], "epoch": meta["epoch"], "subset_seed": data.subset_seed}
    with store.create(out, kind="eigenmap_shard", spec=spec, inputs=inputs, attrs=attrs) as w:
        w.put("index", index)
        for name, v in values.items():
            w.put(name, v)


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


def plot_eigenmap(eigenmap: str | Path, out: str | Path, title: str | None = None) -> None:
    """Three heatmaps: largest and most negative eigenvalue and ``|min / max|``.

    Non-finite values (points not computed) are masked and counted in the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from landscape.plots import save_figure

    art = store.open(eigenmap)
    x, y = art["x"], art["y"]
    panels = (
        ("max_eigenvalue", "largest eigenvalue", "viridis"),
        ("min_eigenvalue", "most negative eigenvalue", "viridis"),
        ("ratio", "|min / max|", "cividis"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    masked = 0
    for ax, (name, label, cmap) in zip(axes, panels, strict=True):
        values = art[name]
        bad = ~np.isfinite(values)
        masked = max(masked, int(bad.sum()))
        mesh = ax.pcolormesh(x, y, np.ma.masked_array(values, bad).T, cmap=cmap, shading="nearest")
        ax.plot(0, 0, "w+", ms=10)
        ax.set(xlabel="x", ylabel="y", title=label)
        fig.colorbar(mesh, ax=ax)
    heading = title or Path(eigenmap).stem
    if masked:
        heading += f"\n{masked} non-finite values masked"
    fig.suptitle(heading, fontsize=10)
    save_figure(fig, out)
