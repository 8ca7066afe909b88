"""Loss and error of perturbed models ``theta + sum_i lambda_i eps_i`` over a grid of lambdas.

The engine (:mod:`landscape.grid`) evaluates many points at once; this module holds the grids,
the workflow entry points and the files they write.

BN modes (Li et al., Appendix A.2):

- ``keep`` ("No UpBN"): the running statistics of theta are used for every point.
- ``recompute`` ("UpBN"): for every point the running statistics are re-estimated as a
  cumulative average (PyTorch's ``momentum=None``) over a fixed list of training batches, then
  the model is evaluated in eval mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import store
from landscape.data import Split, load_data
from landscape.directions import Direction
from landscape.grid import GridEvaluator
from landscape.train import load_model, resolve_device

BN_MODES = ("keep", "recompute")


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


def evaluate_grid(
    model: nn.Module,
    directions: Sequence[Direction],
    coords: np.ndarray,
    splits: Mapping[str, Split],
    *,
    bn_mode: str = "recompute",
    bn_batches: Sequence[tuple[Tensor, Tensor]] = (),
    batch_size: int = 512,
    progress: bool = False,
    **engine: Any,
) -> dict[str, dict[str, np.ndarray]]:
    """Loss and error at ``theta + coords[p] @ directions`` for every grid point ``p``.

    Args:
        model: the base model theta; it is not modified.
        directions: k directions over the model's trainable parameters.
        coords: array of shape ``(P, k)`` of lambda values.
        splits: data splits to evaluate, by name.
        bn_mode: ``keep`` or ``recompute``.
        bn_batches: the fixed batches that re-estimate BN statistics (``recompute``).
        batch_size: evaluation batch size.
        progress: show a progress bar.
        **engine: options of :class:`landscape.grid.GridEvaluator` (strategy, chunk_size,
            memory_mb, first_layer, compile).

    Returns:
        ``{split: {"loss": (P,), "error": (P,)}}`` as float64 arrays; NaN and inf as computed.

    Raises:
        ValueError: for a bad BN mode or coordinates that do not match the directions.
    """
    evaluator = GridEvaluator(
        model,
        directions,
        bn_mode=bn_mode,
        bn_batches=bn_batches,
        batch_size=batch_size,
        **engine,
    )
    return evaluator(coords, splits, progress=progress)


def compute_curve(
    checkpoint: str | Path,
    direction: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the 1D curve ``theta + lambda * eps`` of one checkpoint along one direction.

    Args:
        checkpoint: the checkpoint theta.
        direction: direction HDF5 written by ``make_direction``.
        out: curve HDF5 to write.
        spec: the curve's config block (``lambda``, ``splits``, ``bn_mode``, ...).
        dataset: the dataset config block of the checkpoint's run (``spec['dataset_name']``).
        device: ``auto``, ``cpu`` or ``cuda``.
    """
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    data = load_data(dataset, dev, key=f"datasets.{meta['spec']['dataset_name']}")
    eps = {n: torch.as_tensor(v, device=dev) for n, v in store.open(direction).tensors().items()}
    lambdas = lambda_grid(spec["lambda"])
    bn_batches = list(islice(data.train.batches(spec["batch_size"]), spec["bn_batches"]))
    splits = {s: getattr(data, s) for s in spec["splits"]}
    result = evaluate_grid(
        model,
        [eps],
        lambdas[:, None],
        splits,
        bn_mode=spec["bn_mode"],
        bn_batches=bn_batches,
        batch_size=spec["batch_size"],
    )
    with store.create(
        out,
        kind="curve",
        spec=spec,
        inputs={"checkpoint": checkpoint, "direction": direction},
        attrs={"num_classes": meta["num_classes"], "run": meta["run"], "epoch": meta["epoch"]},
    ) as w:
        w.scale("lambda", lambdas)
        for s, metrics in result.items():
            for metric, values in metrics.items():
                w.put(f"{s}/{metric}", values, dims=("lambda",))
