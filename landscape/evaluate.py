"""Loss and error of perturbed models ``theta + sum_i lambda_i eps_i`` over a grid of lambdas.

This is the plain per-point evaluator: one working copy of the model, parameters overwritten in
place for every grid point. It is the reference that faster evaluators are checked against.

BN modes (Li et al., Appendix A.2):

- ``keep`` ("No UpBN"): the running statistics of theta are used for every point.
- ``recompute`` ("UpBN"): for every point the running statistics are reset and re-estimated with
  a cumulative average (``momentum=None``) over a fixed list of training batches, then the model
  is evaluated in eval mode.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from landscape import store
from landscape.data import Split, load_data
from landscape.directions import Direction
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


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_bn(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]]) -> None:
    """Re-estimates BN running statistics as the cumulative average over ``batches``."""
    layers = _bn_layers(model)
    if not layers:
        return
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x, _ in batches:
        model(x)
    model.eval()


@torch.no_grad()
def split_metrics(model: nn.Module, split: Split, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and error rate over a split, accumulated in float64 per sample.

    A NaN or infinite loss is returned as it came.
    """
    model.eval()
    loss_sum, wrong = 0.0, 0
    for x, y in split.batches(batch_size):
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double().item()
        wrong += (logits.argmax(1) != y).sum().item()
    n = len(split)
    return loss_sum / n, wrong / n


@torch.no_grad()
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

    Returns:
        ``{split: {"loss": (P,), "error": (P,)}}`` as float64 arrays.

    Raises:
        ValueError: for a bad BN mode or coordinates that do not match the directions.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode: unknown {bn_mode!r}; one of {BN_MODES}")
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != len(directions):
        raise ValueError(
            f"coords: shape {coords.shape} does not match {len(directions)} directions"
        )
    if bn_mode == "recompute" and _bn_layers(model) and not bn_batches:
        raise ValueError("bn_mode 'recompute' needs at least one batch in bn_batches")
    work = copy.deepcopy(model).eval()
    params = dict(work.named_parameters())
    base = {n: p.detach().clone() for n, p in params.items()}
    buffers = {n: b.clone() for n, b in work.named_buffers()}
    out = {s: {"loss": np.empty(len(coords)), "error": np.empty(len(coords))} for s in splits}
    for p, point in enumerate(tqdm(coords, disable=not progress, desc="grid", unit="pt")):
        for name, param in params.items():
            param.copy_(base[name])
            for lam, d in zip(point, directions, strict=True):
                if name in d:
                    param.add_(d[name], alpha=float(lam))
        for name, b in work.named_buffers():
            b.copy_(buffers[name])
        if bn_mode == "recompute":
            recompute_bn(work, bn_batches)
        for s, split in splits.items():
            out[s]["loss"][p], out[s]["error"][p] = split_metrics(work, split, batch_size)
    return out


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
