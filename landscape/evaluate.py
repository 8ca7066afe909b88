"""Loss and error of perturbed models ``theta + sum_i lambda_i eps_i`` over a grid of lambdas.

The engine (:mod:`landscape.grid`) evaluates many points at once; this module holds the grids,
the workflow entry points and the files they write.

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

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import store
from landscape.config import EVALUATION_DEFAULTS
from landscape.curves import analyze_curve
from landscape.data import DataBundle, Split, load_data
from landscape.directions import Direction, orthogonalize
from landscape.grid import GridEvaluator
from landscape.train import load_model, resolve_device

if TYPE_CHECKING:  # pandas only for the taxonomy table, not in the evaluation jobs
    import pandas as pd

BN_MODES = ("keep", "recompute")
ANALYSIS_FIELDS = ("n_stationary", "mean_pos", "mean_neg", "ratio", "difference")
# Root attributes of curves and surfaces, besides spec and inputs.
EVALUATION_ATTRS = ("num_classes", "run", "epoch", "subset_seed", "batchnorm")
# Root attributes of curves and surfaces evaluated with non-default engine options.
OPTION_ATTRS = (
    *EVALUATION_DEFAULTS,
    "max_abs_diff_vs_fp32",
    "max_rel_diff_vs_fp32",
    "evaluation_note",
)


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


def _evaluation(checkpoint, directions, spec, dataset, device):
    """Model, directions, splits and BN batches of one curve or surface job."""
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    data = load_data(dataset, dev, key=f"datasets.{meta['spec']['dataset_name']}")
    arts = [store.open(p) for p in directions]
    vectors = [{n: torch.as_tensor(v, device=dev) for n, v in a.tensors().items()} for a in arts]
    if spec.get("orthogonalize"):
        vectors[1] = orthogonalize(vectors[0], vectors[1])
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


def read_analysis(path: str | Path) -> pd.DataFrame:
    """The curve analysis of one curve file: one row per metric (``test/loss``, ...).

    Columns: ``metric``, ``type``, ``n_stationary``, ``stationary`` (the lambdas), ``mean_pos``,
    ``mean_neg``, ``ratio``, ``difference``, then the curve's ``run`` and ``epoch``.
    """
    import pandas as pd

    art = store.open(path)
    lambdas = art["lambda"]
    rows = []
    for key in art.data:
        if not (key.startswith("analysis/") and key.endswith("/type")):
            continue
        metric = key[len("analysis/") : -len("/type")]
        field = {f: art[f"analysis/{metric}/{f}"] for f in ANALYSIS_FIELDS}
        rows.append(
            {
                "metric": metric,
                "type": art[key],
                "n_stationary": int(field["n_stationary"]),
                "stationary": np.round(lambdas[art[f"analysis/{metric}/stationary"]], 12).tolist(),
                **{f: float(field[f]) for f in ANALYSIS_FIELDS if f != "n_stationary"},
                "run": art.attrs["run"],
                "epoch": art.attrs["epoch"],
            }
        )
    return pd.DataFrame(rows)


def curve_table(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The curve taxonomy (VT): :func:`read_analysis` of every curve, keyed by its path.

    Paths end in ``{dataset}/{model}/{run}/curves/epoch{E}/{curve}.h5`` (the store's layout).
    """
    import pandas as pd

    frames = []
    for path in paths:
        frame = read_analysis(path)
        dataset, model = Path(path).parts[-6:-4]
        frame.insert(0, "curve", Path(path).stem)
        frame.insert(0, "model", model)
        frame.insert(0, "dataset", dataset)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_curve_table(paths: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Writes :func:`curve_table` as CSV (atomically) and returns it."""
    return store.write_csv(curve_table(paths), out)
