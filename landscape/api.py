"""The library API: curves, surfaces and Hessian quantities of any PyTorch model, loss and data.

No Snakemake, no config, no checkpoint files: give a model, a loss and data, get back the
:class:`landscape.store.Artifact` that :func:`landscape.store.open` returns for the workflow's
files, with the same datasets, scales and attributes (so ``frame()``, ``to_xarray()`` and the
plot functions work on it). The numbers come from the workflow's engines:

- :func:`curve`, :func:`surface`: :class:`landscape.grid.GridEvaluator` evaluates
  ``theta + sum_i c_i d_i`` on a private copy of the model, BN statistics kept (``keep``) or
  re-estimated at every point over fixed batches (``recompute``, the papers' UpBN). Cross-entropy
  (``F.cross_entropy`` or a plain ``nn.CrossEntropyLoss()``) on class labels goes through the
  engine's own metrics (vmap over grid points for models without convolutions); any other loss
  is evaluated point by point on the engine's copy. Directions are
  :func:`landscape.directions.make_direction`'s (filter-normalized seeded Gaussians by default).
- :func:`top_eigenvalues`, :func:`trace`, :func:`density`: a
  :class:`landscape.hessian.HessianLinearOperator` with the user's loss, and the estimators of
  :mod:`landscape.curvature` (Lanczos, exact Gauss-Newton trace or XTrace, SLQ density); they are
  also ``landscape.hessian.top_eigenvalues`` etc.

``data`` is an ``(inputs, targets)`` pair of tensors (cut into batches of ``batch_size``), a
list of ``(inputs, targets)`` batches, or any iterable of them such as a ``DataLoader``; it is
read once, kept as a fixed list of batches on the device, and weighted by batch size (the mean
loss over all samples). ``loss_fn(outputs, targets)`` returns a batch's mean loss. A mapping
``{"train": ..., "test": ...}`` evaluates curves and surfaces on each split; plain data is the
``train`` split. Everything runs on ``device`` (default: the device of the model's parameters).

Each function writes one HDF5 artifact: to ``out`` if given (kept), else to a temporary file
that is read back into memory and deleted (the Artifact's ``path`` then names a file that is
gone; pass ``out`` to plot or export it).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape import curvature, hessian, store
from landscape.data import Split
from landscape.directions import Direction, global_norm, make_direction, trainable
from landscape.evaluate import evaluate_grid, has_batchnorm, write_analysis
from landscape.grid import GridEvaluator
from landscape.lambda_grids import lambda_grid

LossFn = Callable[[Tensor, Tensor], Tensor]
Batch = tuple[Tensor, Tensor]
DTYPES = curvature.DTYPES


# --------------------------------------------------------------------------- data and model


def as_batches(data: Any, device: torch.device | str, batch_size: int = 256) -> list[Batch]:
    """The data as a fixed list of ``(inputs, targets)`` batches on ``device``.

    Args:
        data: an ``(inputs, targets)`` pair of tensors, a list of such batches, or an iterable
            of them (a ``DataLoader``; its extra fields after the first two are dropped).
        device: where the batches go.
        batch_size: batch size for a pair of tensors.

    Raises:
        ValueError: for no batches, a batch that is not an ``(inputs, targets)`` pair, or
            inputs and targets of different lengths.
    """
    if _is_pair(data):
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"data: {len(x)} inputs but {len(y)} targets")
        pairs = [
            (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
        ]
    else:
        pairs = []
        for i, batch in enumerate(data):
            if not (isinstance(batch, Sequence) and len(batch) >= 2):
                raise ValueError(
                    f"data: batch {i} is a {type(batch).__name__}, not (inputs, targets)"
                )
            pairs.append((batch[0], batch[1]))
    if not pairs or not any(len(y) for _, y in pairs):
        raise ValueError("data: no samples")
    return [(x.to(device), y.to(device)) for x, y in pairs if len(y)]


def _is_pair(data: Any) -> bool:
    return (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    )


def _splits(data: Any) -> dict[str, Any]:
    """``{"train": data}``, or the mapping of splits as given."""
    if isinstance(data, Mapping):
        if not data:
            raise ValueError("data: an empty mapping of splits")
        return dict(data)
    return {"train": data}


def _on_device(
    model: nn.Module, device: torch.device | str | None
) -> tuple[nn.Module, torch.device]:
    """The model on ``device`` (a copy if it has to move; the caller's is never changed)."""
    own = next(model.parameters()).device
    dev = own if device is None else torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return (model if dev == own else copy.deepcopy(model).to(dev)), dev


class _Batches(Split):
    """A fixed list of batches as a split of the evaluation engine, evaluated as it is cut."""

    def __init__(self, batches: list[Batch]) -> None:
        self._batches = batches
        self.device = batches[0][0].device

    def __len__(self) -> int:
        return sum(int(y.shape[0]) for _, y in self._batches)

    def batches(self, batch_size, *, shuffle=False, generator=None, drop_last=False):
        return iter(self._batches)

    def labels(self) -> np.ndarray:
        return torch.cat([y for _, y in self._batches]).cpu().numpy()

    def subset(self, n: int) -> Split:
        raise NotImplementedError("a fixed list of batches has no subsets")

    def take(self, indices: np.ndarray) -> Split:
        raise NotImplementedError("a fixed list of batches has no subsets")


# --------------------------------------------------------------------------- directions and grids


def directions_for(
    model: nn.Module,
    directions: Sequence[Any] | None,
    count: int,
    *,
    normalization: str = "filter",
    bias_bn: str = "zero",
    seed: int = 0,
) -> tuple[list[Direction], list[Any]]:
    """``count`` directions of the model, and what the artifact records of each.

    Each entry of ``directions`` is a ``{name: tensor}`` mapping over trainable parameters (used
    as given; a missing name is not perturbed), a flat tensor over all of them (in
    ``named_parameters()`` order), or a direction spec for
    :func:`landscape.directions.make_direction` (e.g. ``{"kind": "noise", "seed": 3,
    "normalization": "layer"}``). None: Gaussian directions of seeds ``seed, seed + 1, ...``
    with ``normalization`` and ``bias_bn`` (Li et al.'s filter normalization by default).

    Raises:
        ValueError: for the wrong number of directions, an unknown parameter name, a wrong
            shape or a bad spec (naming it).
    """
    params = trainable(model)
    if directions is None:
        directions = [
            {"kind": "noise", "seed": seed + i, "normalization": normalization, "bias_bn": bias_bn}
            for i in range(count)
        ]
    if isinstance(directions, Mapping | Tensor) or len(directions) != count:
        raise ValueError(
            f"directions: expected a sequence of {count}, got {type(directions).__name__}"
        )
    out, records = [], []
    for i, d in enumerate(directions):
        if isinstance(d, Tensor):
            out.append(_unflatten(d, params, i))
            records.append({"given": "tensor", "norm": global_norm(out[-1])})
        elif isinstance(d, Mapping) and all(isinstance(v, Tensor) for v in d.values()):
            out.append(_checked(d, params, i))
            records.append({"given": "tensors", "norm": global_norm(out[-1])})
        elif isinstance(d, Mapping):
            out.append(make_direction(d, model))
            records.append(dict(d))
        else:
            raise ValueError(f"directions[{i}]: a {type(d).__name__}, not tensors or a spec")
    return out, records


def _unflatten(flat: Tensor, params: Mapping[str, Tensor], i: int) -> Direction:
    n = sum(p.numel() for p in params.values())
    if flat.dim() != 1 or flat.numel() != n:
        raise ValueError(
            f"directions[{i}]: a flat direction needs {n} elements, got {tuple(flat.shape)}"
        )
    parts = torch.split(flat.detach(), [p.numel() for p in params.values()])
    return {k: t.reshape(p.shape).to(p) for (k, p), t in zip(params.items(), parts, strict=True)}


def _checked(d: Mapping[str, Tensor], params: Mapping[str, Tensor], i: int) -> Direction:
    out = {}
    for name, t in d.items():
        if name not in params:
            raise ValueError(f"directions[{i}]: {name!r} is not a trainable parameter")
        if tuple(t.shape) != tuple(params[name].shape):
            raise ValueError(
                f"directions[{i}][{name!r}]: shape {tuple(t.shape)}, "
                f"parameter {tuple(params[name].shape)}"
            )
        out[name] = t.detach().to(params[name])
    return out


def axis(values: Any, name: str) -> np.ndarray:
    """Grid coordinates: an int ``num`` (``num`` points on [-1, 1]), a ``{"min", "max", "num"}``
    spec (:func:`landscape.lambda_grids.lambda_grid`) or the values themselves.

    Raises:
        ValueError: for coordinates that are not a non-empty 1-D array of finite numbers.
    """
    if isinstance(values, int | np.integer) and not isinstance(values, bool):
        values = {"min": -1.0, "max": 1.0, "num": int(values)}
    grid = lambda_grid(values) if isinstance(values, Mapping) else np.asarray(values, np.float64)
    if grid.ndim != 1 or not len(grid) or not np.all(np.isfinite(grid)):
        raise ValueError(f"{name}: expected a non-empty 1-D array of finite numbers")
    return grid


# --------------------------------------------------------------------------- evaluation


def _is_cross_entropy(loss_fn: LossFn, splits: Mapping[str, list[Batch]]) -> bool:
    """Whether the engine's own metric is ``loss_fn``: mean cross-entropy on class labels."""
    plain = loss_fn is F.cross_entropy or (
        type(loss_fn) is nn.CrossEntropyLoss
        and loss_fn.weight is None
        and loss_fn.reduction == "mean"
        and loss_fn.label_smoothing == 0
        and loss_fn.ignore_index == -100
    )
    labels = [y for batches in splits.values() for _, y in batches]
    return plain and all(
        y.dim() == 1 and y.dtype == torch.int64 and bool((y >= 0).all()) for y in labels
    )


def evaluate_points(
    model: nn.Module,
    loss_fn: LossFn,
    directions: Sequence[Direction],
    coords: np.ndarray,
    splits: Mapping[str, list[Batch]],
    *,
    bn_mode: str = "recompute",
    bn_batches: Sequence[Batch] = (),
    strategy: str = "auto",
) -> dict[str, dict[str, np.ndarray]]:
    """Mean loss (and error, for class labels) at ``theta + coords[p] @ directions``.

    Cross-entropy goes to :func:`landscape.evaluate.evaluate_grid` (its ``strategy``); any other
    loss is evaluated one point at a time on the engine's copy of the model, which the engine's
    pointwise step sets to the point (parameters, and BN statistics for ``recompute``).

    Returns:
        ``{split: {"loss": (P,), "error": (P,)}}`` (``error`` only where every target is a
        1-D integer label and the outputs are ``(batch, classes)``).
    """
    engine = {"bn_mode": bn_mode, "bn_batches": list(bn_batches)}
    size = max(len(y) for batches in splits.values() for _, y in batches)
    if _is_cross_entropy(loss_fn, splits):
        wrapped = {s: _Batches(b) for s, b in splits.items()}
        return evaluate_grid(
            model, directions, coords, wrapped, batch_size=size, strategy=strategy, **engine
        )
    evaluator = GridEvaluator(model, directions, batch_size=size, strategy="pointwise", **engine)
    evaluator._prepare(next(iter(splits.values()))[0][0])
    out = {s: {"loss": np.empty(len(coords)), "error": np.empty(len(coords))} for s in splits}
    classify = True
    with torch.no_grad():
        for p, point in enumerate(np.asarray(coords, dtype=np.float64)):
            evaluator._pointwise(torch.as_tensor(point[None]), {})
            for s, batches in splits.items():
                total, wrong, n = 0, 0, 0  # tensors on the device: no sync per batch
                for x, y in batches:
                    outputs = evaluator.work(x)
                    total = total + loss_fn(outputs, y).double() * len(y)
                    n += len(y)
                    classify = classify and _labels_for(outputs, y)
                    if classify:
                        wrong = wrong + (outputs.argmax(-1) != y).sum()
                out[s]["loss"][p] = float(total) / n
                out[s]["error"][p] = float(wrong) / n
    if not classify:
        for metrics in out.values():
            del metrics["error"]
    return out


def _labels_for(outputs: Tensor, y: Tensor) -> bool:
    return (
        outputs.dim() == 2 and y.dim() == 1 and not y.is_floating_point() and len(y) == len(outputs)
    )


def _inputs(model, data, device, batch_size, bn_mode, bn_batches):
    model, dev = _on_device(model, device)
    splits = {s: as_batches(d, dev, batch_size) for s, d in _splits(data).items()}
    if bn_mode not in ("keep", "recompute"):
        raise ValueError(f"bn_mode: unknown {bn_mode!r}; one of ('keep', 'recompute')")
    bn = next(iter(splits.values()))[:bn_batches] if bn_mode == "recompute" else []
    return model, splits, bn


def _write(
    out: str | Path | None, kind: str, spec: Mapping[str, Any], attrs: Mapping[str, Any], fill
) -> store.Artifact:
    """Writes one artifact (to ``out``, or a temporary file) and reads it back."""
    if out is not None:
        with store.create(out, kind=kind, spec=spec, attrs=attrs) as w:
            fill(w)
        return store.open(out)
    with tempfile.TemporaryDirectory(prefix="landscape-") as tmp:
        path = Path(tmp) / f"{kind}.h5"
        with store.create(path, kind=kind, spec=spec, attrs=attrs) as w:
            fill(w)
        return store.open(path)


def _loss_name(loss_fn: LossFn) -> str:
    return getattr(loss_fn, "__name__", type(loss_fn).__name__)


def _evaluation_attrs(model: nn.Module, splits: Mapping[str, list[Batch]]) -> dict[str, Any]:
    attrs: dict[str, Any] = {"batchnorm": has_batchnorm(model)}
    attrs |= {f"{s}_samples": sum(len(y) for _, y in b) for s, b in splits.items()}
    return attrs


def curve(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    direction: Any = None,
    lambdas: Any = 21,
    normalization: str = "filter",
    bias_bn: str = "zero",
    seed: int = 0,
    bn_mode: str = "recompute",
    bn_batches: int = 4,
    batch_size: int = 256,
    strategy: str = "auto",
    device: torch.device | str | None = None,
    out: str | Path | None = None,
) -> store.Artifact:
    """The 1D loss curve ``L(theta + lambda d)``, as the workflow's curve files hold it.

    Args:
        model: the network at ``theta`` (not modified).
        loss_fn: ``loss_fn(outputs, targets)`` -> the batch's mean loss.
        data: the data (see the module docstring), or ``{split: data}``.
        direction: ``d`` as tensors, a flat tensor or a direction spec
            (:func:`directions_for`); None: a Gaussian of ``seed`` normalized by
            ``normalization`` (``filter``, ``layer``, ``norm``, ``raw``) with ``bias_bn``.
        lambdas: the points: an int (that many on [-1, 1]), ``{"min", "max", "num"}`` or values.
        bn_mode: ``recompute`` (BN statistics re-estimated at every point over the first
            ``bn_batches`` batches of the first split) or ``keep`` (theta's).
        batch_size: batch size for a pair of tensors.
        strategy: the engine's strategy for cross-entropy (``auto``, ``batched``, ``pointwise``).
        device: where to evaluate (default: the model's device).
        out: ``.h5`` path to keep the artifact at.

    Returns:
        An Artifact of kind ``curve``: ``lambda`` scale, ``{split}/loss`` (and ``/error``), and
        the curve analysis (stationary points, type, asymmetry) under ``analysis/``.
    """
    model, splits, bn = _inputs(model, data, device, batch_size, bn_mode, bn_batches)
    lam = axis(lambdas, "lambdas")
    dirs, records = directions_for(
        model, None if direction is None else [direction], 1,
        normalization=normalization, bias_bn=bias_bn, seed=seed,
    )  # fmt: skip
    result = evaluate_points(
        model,
        loss_fn,
        dirs,
        lam[:, None],
        splits,
        bn_mode=bn_mode,
        bn_batches=bn,
        strategy=strategy,
    )
    metrics = {f"{s}/{m}": v for s, by_metric in result.items() for m, v in by_metric.items()}
    spec = {
        "api": "curve",
        "direction": records[0],
        "loss": _loss_name(loss_fn),
        "bn_mode": bn_mode,
    }
    spec |= {"bn_batches": len(bn)}

    def fill(w: store.Writer) -> None:
        w.scale("lambda", lam)
        for name, values in metrics.items():
            w.put(name, values, dims=("lambda",))
        write_analysis(w, lam, metrics)

    return _write(out, "curve", spec, _evaluation_attrs(model, splits), fill)


def surface(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    directions: Sequence[Any] | None = None,
    grid: Any = 11,
    normalization: str = "filter",
    bias_bn: str = "zero",
    seed: int = 0,
    bn_mode: str = "recompute",
    bn_batches: int = 4,
    batch_size: int = 256,
    strategy: str = "auto",
    device: torch.device | str | None = None,
    out: str | Path | None = None,
) -> store.Artifact:
    """The 2D loss surface ``L(theta + x d_x + y d_y)``, as the workflow's surface files hold it.

    Args:
        directions: ``(d_x, d_y)``, each as in :func:`curve`'s ``direction``; None: Gaussians of
            seeds ``seed`` and ``seed + 1``, normalized by ``normalization`` with ``bias_bn``.
        grid: the points of both axes as :func:`curve`'s ``lambdas``, or a pair ``(x, y)`` of
            them, or ``{"x": ..., "y": ...}``.
        Other arguments as in :func:`curve`.

    Returns:
        An Artifact of kind ``surface``: ``x`` and ``y`` scales and ``{split}/loss`` (and
        ``/error``) on ``x`` x ``y`` (``frame()`` tabulates them, ``to_xarray()`` too).
    """
    model, splits, bn = _inputs(model, data, device, batch_size, bn_mode, bn_batches)
    if isinstance(grid, Mapping) and set(grid) == {"x", "y"}:
        xs, ys = axis(grid["x"], "grid.x"), axis(grid["y"], "grid.y")
    elif isinstance(grid, tuple) and len(grid) == 2:
        xs, ys = axis(grid[0], "grid[0]"), axis(grid[1], "grid[1]")
    else:
        xs = ys = axis(grid, "grid")
    dirs, records = directions_for(
        model, directions, 2, normalization=normalization, bias_bn=bias_bn, seed=seed
    )
    coords = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)
    result = evaluate_points(
        model, loss_fn, dirs, coords, splits, bn_mode=bn_mode, bn_batches=bn, strategy=strategy
    )
    spec = {"api": "surface", "x": records[0], "y": records[1], "loss": _loss_name(loss_fn)}
    spec |= {"bn_mode": bn_mode, "bn_batches": len(bn)}

    def fill(w: store.Writer) -> None:
        w.scale("x", xs)
        w.scale("y", ys)
        for s, by_metric in result.items():
            for m, values in by_metric.items():
                w.put(f"{s}/{m}", values.reshape(len(xs), len(ys)), dims=("x", "y"))

    return _write(out, "surface", spec, _evaluation_attrs(model, splits), fill)


# --------------------------------------------------------------------------- Hessian


def hessian_operator(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    dtype: torch.dtype | str = torch.float32,
    bn_mode: str = "eval",
    hvp: str = "auto",
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> hessian.HessianLinearOperator:
    """The Hessian of the mean ``loss_fn`` over ``data`` (one split) at the model's parameters.

    ``bn_mode`` ``eval`` (running statistics) or ``train`` (each batch's statistics); ``hvp``
    the product method of :class:`landscape.hessian.HessianLinearOperator`.
    """
    model, dev = _on_device(model, device)
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    return hessian.HessianLinearOperator(
        model,
        as_batches(data, dev, batch_size),
        loss=loss_fn,
        dtype=dtype,
        bn_mode=bn_mode,
        method=hvp,
    )


def _hessian_attrs(op: hessian.HessianLinearOperator) -> dict[str, Any]:
    return {"num_params": op.shape[0], "num_samples": op.num_samples, "hvp": op.chosen_method}


def _hessian_spec(kind: str, loss_fn: LossFn, op: hessian.HessianLinearOperator, **more) -> dict:
    dtype = str(op.dtype).removeprefix("torch.")
    return {"api": kind, "loss": _loss_name(loss_fn), "bn_mode": op.bn_mode, "dtype": dtype, **more}


def top_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    k: int = 5,
    *,
    which: str | Sequence[str] = "LA",
    method: str = "lanczos",
    tol: float = 1e-6,
    max_steps: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    **operator: Any,
) -> store.Artifact:
    """The ``k`` extreme Hessian eigenpairs, as the workflow's spectrum files hold them.

    Args:
        k: number of eigenpairs per ``which``.
        which: ``LA`` (largest, the default), ``SA`` (most negative), or a list of both.
        method: ``lanczos``, ``block_lanczos`` or ``eigsh``
            (:func:`landscape.curvature.eigenpairs`).
        tol, max_steps, seed: the solver's residual tolerance, Krylov limit and start seed.
        **operator: :func:`hessian_operator`'s ``dtype``, ``bn_mode``, ``hvp``, ``batch_size``,
            ``device``.

    Returns:
        An Artifact of kind ``spectrum``: ``{which}/eigenvalues`` and ``/residuals`` on the
        ``index`` scale (most extreme first), ``{which}/eigenvectors`` on ``index`` x
        ``parameter`` (``unflatten(row)`` gives the tensors), ``num_matvecs``.
    """
    op = hessian_operator(model, loss_fn, data, **operator)
    families = [which] if isinstance(which, str) else list(which)
    sub = {"k": k, "tol": tol, "seed": seed, "method": method, "max_steps": max_steps}
    results = {w: curvature.eigenpairs(op, sub, w) for w in families}
    attrs = _hessian_attrs(op)
    attrs |= {
        "names": op.names,
        "shapes": store.canonical_json([list(s) for s in op.shapes.values()]),
    }
    attrs["num_matvecs"] = op.num_matvecs
    spec = _hessian_spec("top_eigenvalues", loss_fn, op, spectrum={**sub, "which": families})

    def fill(w: store.Writer) -> None:
        w.scale("index", np.arange(1, k + 1))
        w.scale("parameter", np.arange(op.shape[0]))
        for family, pairs in results.items():
            w.put(f"{family}/eigenvalues", pairs.eigenvalues, dims=("index",))
            w.put(f"{family}/residuals", pairs.residuals, dims=("index",))
            vectors = pairs.eigenvectors.T.detach().to("cpu", torch.float64).numpy()
            w.put(f"{family}/eigenvectors", vectors, dims=("index", "parameter"))

    return _write(out, "spectrum", spec, attrs, fill)


def trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    method: str = "auto",
    matvecs: int = 100,
    checks: int = 16,
    seed: int = 0,
    out: str | Path | None = None,
    **operator: Any,
) -> store.Artifact:
    """The Hessian trace, as the workflow's trace files hold it.

    ``method``: ``auto`` (the exact Gauss-Newton trace where the model is piecewise linear and BN
    in eval mode, checked on ``checks`` diagonal entries; XTrace otherwise), ``ggn``, ``xtrace``,
    ``hutchpp`` or ``hutchinson`` with ``matvecs`` products
    (:func:`landscape.curvature.trace_estimate`). ``**operator`` as in :func:`top_eigenvalues`.

    Returns:
        An Artifact of kind ``trace``: ``trace`` and ``stderr`` (0 for the exact trace) as
        datasets and attributes, ``estimator`` the method used.
    """
    op = hessian_operator(model, loss_fn, data, **operator)
    sub = {"method": method, "matvecs": matvecs, "checks": checks, "seed": seed}
    value, stderr, attrs, extra = curvature.trace_estimate(op, sub)
    attrs = {**_hessian_attrs(op), **attrs, "trace": value, "stderr": stderr}

    def fill(w: store.Writer) -> None:
        w.put("trace", np.float64(value))
        w.put("stderr", np.float64(stderr))
        for name, values in extra.items():
            w.put(name, values)

    return _write(out, "trace", _hessian_spec("trace", loss_fn, op, trace=sub), attrs, fill)


def density(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    steps: int = 100,
    runs: int = 5,
    grid_points: int = hessian.PYHESSIAN_GRID_POINTS,
    sigma: float | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    **operator: Any,
) -> store.Artifact:
    """The Hessian's spectral density by stochastic Lanczos quadrature
    (:func:`landscape.hessian.slq_density`: ``runs`` probes of ``steps`` Lanczos steps, PyHessian's
    Gaussian broadening unless ``sigma``). ``**operator`` as in :func:`top_eigenvalues`.

    Returns:
        An Artifact of kind ``density``: ``density`` on the ``eigenvalue`` scale (integrates to
        1), ``ritz_values`` and ``weights`` (runs x steps), ``ritz_min``/``ritz_max``.
    """
    op = hessian_operator(model, loss_fn, data, **operator)
    sub = {"steps": steps, "runs": runs, "grid_points": grid_points, "sigma": sigma, "seed": seed}
    result = hessian.slq_density(op, **sub)
    lo, hi = result["extreme"]
    attrs = {**_hessian_attrs(op), "ritz_min": lo, "ritz_max": hi, "sigma": result["sigma"]}
    attrs["broadening"] = result["broadening"]
    spec = _hessian_spec("density", loss_fn, op, density=sub)

    def fill(w: store.Writer) -> None:
        w.scale("eigenvalue", result["grid"])
        w.put("density", result["density"], dims=("eigenvalue",))
        w.put("ritz_values", result["ritz_values"])
        w.put("weights", result["weights"])

    return _write(out, "density", spec, attrs, fill)


__all__ = [
    "as_batches",
    "axis",
    "curve",
    "density",
    "directions_for",
    "evaluate_points",
    "hessian_operator",
    "surface",
    "top_eigenvalues",
    "trace",
]
