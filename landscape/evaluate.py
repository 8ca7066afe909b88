"""Loss and error of perturbed models ``theta + sum_i lambda_i eps_i`` over a grid of lambdas.

The engine (:mod:`landscape.grid`) evaluates many points at once; this module holds the
evaluation jobs and the files they write. The torch-free rest is apart, so that its jobs start
fast: lambda grids and shards (:mod:`landscape.lambda_grids`), the merge of a surface's shards
(:mod:`landscape.surface_merge`) and the curve table (:mod:`landscape.curve_table`).

BN modes (Li et al., Appendix A.2):

- ``keep`` ("No UpBN"): the running statistics of theta are used for every point.
- ``recompute`` ("UpBN"): for every point the running statistics are re-estimated as a
  cumulative average (PyTorch's ``momentum=None``) over a fixed list of training batches
  (:func:`fixed_bn_batches`), then the model is evaluated in eval mode.

The config's ``auto`` is resolved before a job starts (:func:`landscape.config.resolve_bn_mode`);
a curve or surface stores the resolved mode in its spec and whether the model has BN layers as
the attribute ``batchnorm`` (without them both modes are the same function).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import store
from landscape.config import EVALUATION_DEFAULTS
from landscape.curves import analyze_curve
from landscape.data import DataBundle, Split, load_data
from landscape.directions import Direction, orthogonalize
from landscape.grid import GridEvaluator
from landscape.lambda_grids import lambda_grid, shard_coordinates
from landscape.surface_merge import EVALUATION_ATTRS
from landscape.train import load_model, resolve_device

BN_MODES = ("keep", "recompute")


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
            memory_mb, first_layer, compile, precision, channels_last, bn_recompute).

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


def evaluate_with_options(
    model: nn.Module,
    directions: Sequence[Direction],
    coords: np.ndarray,
    splits: Mapping[str, Split],
    engine: Mapping[str, Any],
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """:func:`evaluate_grid` with ``engine``, and the attributes its options call for.

    With every option (``precision``, ``channels_last``, ``compile``, ``bn_recompute``) at its
    default the attributes are empty. Otherwise they record the options and the largest absolute
    and relative loss difference, over the splits, to the default engine at theta (coordinates
    0): the options' engine evaluates theta alongside the grid, the default one evaluates it once.
    """
    options = {k: engine[k] for k in EVALUATION_DEFAULTS if k in engine}
    if all(EVALUATION_DEFAULTS[k] == v for k, v in options.items()):
        return evaluate_grid(model, directions, coords, splits, **engine), {}
    origin = np.zeros((1, len(directions)))
    both = evaluate_grid(model, directions, np.concatenate([coords, origin]), splits, **engine)
    result = {s: {m: v[:-1] for m, v in by.items()} for s, by in both.items()}
    default = {k: v for k, v in engine.items() if k not in EVALUATION_DEFAULTS}
    ref = evaluate_grid(model, directions, origin, splits, **default)
    fast = np.array([both[s]["loss"][-1] for s in splits])
    slow = np.array([ref[s]["loss"][0] for s in splits])
    attrs: dict[str, Any] = {**EVALUATION_DEFAULTS, **options}
    attrs["max_abs_diff_vs_fp32"] = float(np.max(np.abs(fast - slow), initial=0.0))
    attrs["max_rel_diff_vs_fp32"] = float(np.max(np.abs(fast - slow) / np.abs(slow), initial=0.0))
    if attrs["precision"] == "tf32" and next(model.parameters()).device.type == "cpu":
        attrs["evaluation_note"] = "tf32 has no effect on CPU"
    return result, attrs


def fixed_bn_batches(data: DataBundle, spec: Mapping[str, Any]) -> list[tuple[Tensor, Tensor]]:
    """The training batches that re-estimate BN statistics (``bn_mode: recompute``).

    ``bn_batches`` batches of ``batch_size`` of a class-proportional training sample drawn with
    the dataset's ``subset_seed`` (:meth:`landscape.data.Split.sample`): the same for every point,
    shard and curve of a dataset; no batches for ``keep``.
    """
    if spec["bn_mode"] != "recompute":
        return []
    size = spec["batch_size"]
    return list(data.train.sample(spec["bn_batches"] * size, data.subset_seed).batches(size))


def load_plane(
    checkpoint: str | Path,
    directions: Sequence[str | Path],
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> tuple[nn.Module, dict, DataBundle, list[store.Artifact], list[dict[str, Tensor]]]:
    """``(model, meta, data, direction files, direction tensors)`` of a curve, surface or
    eigenvalue-map job, on the device; the second direction orthogonalized to the first where
    ``spec`` says ``orthogonalize``."""
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    data = load_data(dataset, dev, key=f"datasets.{meta['spec']['dataset_name']}")
    arts = [store.open(p) for p in directions]
    vectors = [{n: torch.as_tensor(v, device=dev) for n, v in a.tensors().items()} for a in arts]
    if spec.get("orthogonalize"):
        vectors[1] = orthogonalize(vectors[0], vectors[1])
    return model, meta, data, arts, vectors


def _evaluation(checkpoint, directions, spec, dataset, device):
    """Model, directions, splits and BN batches of one curve or surface job."""
    model, meta, data, arts, vectors = load_plane(checkpoint, directions, spec, dataset, device)
    dev = next(model.parameters()).device
    splits = {s: getattr(data, s) for s in spec["splits"]}
    meta = {**meta, "subset_seed": data.subset_seed, "batchnorm": has_batchnorm(model)}
    engine = {
        "bn_mode": spec["bn_mode"],
        "bn_batches": fixed_bn_batches(data, spec),
        "batch_size": spec["batch_size"],
        **spec.get("evaluation", {}),
    }
    if any("buffers" in a.tensor_groups for a in arts):  # bn_states directions
        stats = [a.tensor_groups.get("buffers", {}) for a in arts]
        engine["buffer_directions"] = [
            {n: torch.as_tensor(v, device=dev) for n, v in s.items()} for s in stats
        ]
    return model, meta, vectors, splits, engine


def has_batchnorm(model: nn.Module) -> bool:
    """Whether the model has BN layers, i.e. whether ``bn_mode`` changes its values."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


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
        dataset: the dataset config block of the checkpoint's run.
        device: ``auto``, ``cpu`` or ``cuda``.
    """
    model, meta, vectors, splits, engine = _evaluation(
        checkpoint, [direction], spec, dataset, device
    )
    lambdas = lambda_grid(spec["lambda"])
    result, options = evaluate_with_options(model, vectors, lambdas[:, None], splits, engine)
    metrics = {f"{s}/{m}": v for s, by_metric in result.items() for m, v in by_metric.items()}
    with store.create(
        out,
        kind="curve",
        spec=spec,
        inputs={"checkpoint": checkpoint, "direction": direction},
        attrs={k: meta[k] for k in EVALUATION_ATTRS} | options,
    ) as w:
        w.scale("lambda", lambdas)
        for name, values in metrics.items():
            w.put(name, values, dims=("lambda",))
        write_analysis(w, lambdas, metrics)


def write_analysis(w: store.Writer, lambdas: np.ndarray, metrics: Mapping[str, Any]) -> None:
    """Stores :func:`landscape.curves.analyze_curve` of every metric under ``analysis/{metric}/``.

    ``stationary`` becomes a boolean mask on the ``lambda`` scale; ``type`` a string; the count
    and the asymmetry fields (``mean_pos``, ``mean_neg``, ``ratio``, ``difference``) scalars.
    """
    for key, value in analyze_curve(lambdas, metrics).items():
        if key.endswith("/stationary"):
            mask = np.zeros(len(lambdas), dtype=bool)
            mask[value] = True
            w.put(f"analysis/{key}", mask, dims=("lambda",))
        else:
            w.put(f"analysis/{key}", value)


def compute_surface_shard(
    checkpoint: str | Path,
    directions: Sequence[str | Path],
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    scatteritem: str,
    device: str = "auto",
) -> None:
    """Evaluates one shard (``"i-of-n"``) of a 2D surface's flattened ``x`` by ``y`` grid."""
    model, meta, vectors, splits, engine = _evaluation(
        checkpoint, directions, spec, dataset, device
    )
    index, coords = shard_coordinates(spec, scatteritem)
    result, options = evaluate_with_options(model, vectors, coords, splits, engine)
    inputs = {"checkpoint": checkpoint, "x": directions[0], "y": directions[1]}
    attrs = {k: meta[k] for k in EVALUATION_ATTRS} | options
    with store.create(out, kind="surface_shard", spec=spec, inputs=inputs, attrs=attrs) as w:
        w.put("index", index)
        for s, by_metric in result.items():
            for m, values in by_metric.items():
                w.put(f"{s}/{m}", values)
