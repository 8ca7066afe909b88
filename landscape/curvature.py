"""Curvature artifacts of one checkpoint: Hessian spectrum, spectral density and trace as HDF5.

The workflow's ``hessian`` block chooses the evaluation set (a fixed class-proportional sample
of ``samples`` examples of a split, :func:`evaluation_batches`, cut into batches of
``batch_size``), the BN mode and the dtype; its ``spectrum``, ``density`` and ``trace``
sub-blocks set each estimator. Every function here loads the checkpoint, builds one
:class:`landscape.hessian.HessianLinearOperator` and writes one file (with the dataset's
``subset_seed`` as an attribute):

- spectrum: per ``which`` (``LA``: top-k, the paper's P.E.; ``SA``: most negative, N.E.) the
  datasets ``{which}/eigenvalues``, ``{which}/residuals`` (``||Hv - lambda v||``) and
  ``{which}/eigenvectors`` (``k x n``, rows in ``named_parameters()`` order of the trainable
  parameters; :func:`landscape.directions.eigenvector` turns a row into a direction).
- density: ``density`` on the ``eigenvalue`` scale, the Ritz values and weights of every run.
- trace: the estimate and its standard error as attributes and scalar datasets; for the exact
  Gauss-Newton trace also its diagonal check under ``check/``.
- cosines: absolute cosines between directions and the spectrum's eigenvectors (V9).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape import gauss_newton, hessian, store
from landscape.data import load_data
from landscape.directions import towards, trainable
from landscape.hessian import block_lanczos
from landscape.lambda_grids import lambda_grid
from landscape.mining import cosine_table, descent_angles, loss_change_samples, soa_curve
from landscape.train import load_model, resolve_device

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
TRACE_ESTIMATORS = {
    "xtrace": hessian.xtrace,
    "hutchpp": hessian.hutchpp,
    "hutchinson": hessian.hutchinson,
}


def evaluation_batches(data, spec: Mapping[str, Any]) -> list:
    """The fixed evaluation set in batches of ``batch_size``.

    ``samples`` examples of ``split`` (all if null), drawn class-proportionally and ordered by
    the dataset's ``subset_seed`` (:meth:`landscape.data.Split.sample`).
    """
    split = getattr(data, spec.get("split", "train"))
    samples = spec.get("samples")
    fixed = split.sample(len(split) if samples is None else samples, data.subset_seed)
    return list(fixed.batches(spec.get("batch_size", 512)))


def operator(model: nn.Module, data, spec: Mapping[str, Any]) -> hessian.HessianLinearOperator:
    """The Hessian over the evaluation set that ``spec`` (the ``hessian`` block) describes."""
    return hessian.HessianLinearOperator(
        model,
        evaluation_batches(data, spec),
        dtype=DTYPES[spec.get("dtype", "float32")],
        bn_mode=spec.get("bn_mode", "eval"),
        method=spec.get("hvp", "auto"),
        block_products=spec.get("block_products", "auto"),
    )


def _model_and_data(checkpoint, dataset, device):
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    data = load_data(dataset, dev, key=f"datasets.{meta['spec']['dataset_name']}")
    return model, data, {**meta, "subset_seed": data.subset_seed}


def _load(checkpoint, spec, dataset, device):
    model, data, meta = _model_and_data(checkpoint, dataset, device)
    return operator(model, data, spec), meta


def _create(out, kind, spec, checkpoint, meta, op, extra=None):
    attrs = {
        "run": meta["run"],
        "epoch": meta["epoch"],
        "num_params": op.shape[0],
        "num_samples": op.num_samples,
        "hvp": op.chosen_method,
        "subset_seed": meta["subset_seed"],
        **(extra or {}),
    }
    return store.create(out, kind=kind, spec=spec, inputs={"checkpoint": checkpoint}, attrs=attrs)


def eigenpairs(op: hessian.HessianLinearOperator, spec: Mapping[str, Any], which: str):
    """Eigenpairs by the configured method: ``lanczos`` on the device, ``block_lanczos`` on
    blocks of ``block_size`` products (:func:`landscape.hessian.block_lanczos`), or
    scipy's ``eigsh``."""
    k, tol, seed = spec.get("k", 5), spec.get("tol", 1e-6), spec.get("seed", 0)
    method = spec.get("method", "lanczos")
    if method == "eigsh":
        return hessian.eigsh_topk(op, k, which=which, tol=tol, seed=seed)
    if method == "block_lanczos":
        size, max_steps = spec.get("block_size"), spec.get("max_steps")
        return block_lanczos(
            op, k, which=which, block_size=size, tol=tol, max_steps=max_steps, seed=seed
        )
    basis = getattr(torch, spec.get("basis", "float64"))
    return hessian.lanczos(
        op, k, which=which, tol=tol, max_steps=spec.get("max_steps"), seed=seed, basis_dtype=basis
    )


def compute_spectrum(
    checkpoint: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the extreme eigenpairs of a checkpoint's Hessian, with residuals.

    Eigenvalues and residuals lie on the ``index`` scale (1 = the most extreme of the family),
    eigenvectors on ``index`` x ``parameter`` (flat coordinates, in the order of the ``names``
    attribute; ``shapes`` holds each tensor's shape as JSON), so ``store.open(out).frame()``
    tabulates the eigenvalues and ``store.open(out).unflatten(row)`` turns an eigenvector into
    named tensors.

    Args:
        spec: the ``hessian`` block's evaluation keys plus ``spectrum``: ``k``, ``which`` (a
            list of ``LA``/``SA``), ``method``, ``block_size``, ``tol``, ``max_steps``, ``seed``,
            ``basis`` (``float64``/``float32``, ``lanczos``).
    """
    op, meta = _load(checkpoint, spec, dataset, device)
    sub = spec.get("spectrum", {})
    results = {which: eigenpairs(op, sub, which) for which in sub.get("which", ["LA", "SA"])}
    shapes = store.canonical_json([list(s) for s in op.shapes.values()])
    attrs = {"names": op.names, "shapes": shapes}
    with _create(out, "spectrum", spec, checkpoint, meta, op, attrs) as w:
        w.scale("index", np.arange(1, len(next(iter(results.values())).eigenvalues) + 1))
        w.scale("parameter", np.arange(op.shape[0]))
        for which, pairs in results.items():
            w.put(f"{which}/eigenvalues", pairs.eigenvalues, dims=("index",))
            w.put(f"{which}/residuals", pairs.residuals, dims=("index",))
            vectors = pairs.eigenvectors.T.detach().to("cpu", torch.float64).numpy()
            w.put(f"{which}/eigenvectors", vectors, dims=("index", "parameter"))
        w.file.attrs["num_matvecs"] = op.num_matvecs


def compute_density(
    checkpoint: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the SLQ spectral density (``density`` block: ``steps``, ``runs``, ...).

    The broadening follows PyHessian's ``density_generate`` unless ``density.sigma`` is set
    (:func:`landscape.hessian.slq_density`); attributes ``broadening`` (in words) and ``sigma``
    (the Gaussian standard deviation used) say which.
    """
    op, meta = _load(checkpoint, spec, dataset, device)
    sub = spec.get("density", {})
    result = hessian.slq_density(
        op,
        steps=sub.get("steps", 100),
        runs=sub.get("runs", 5),
        grid_points=sub.get("grid_points", hessian.PYHESSIAN_GRID_POINTS),
        sigma=sub.get("sigma"),
        seed=sub.get("seed", 0),
    )
    lo, hi = result["extreme"]
    extra = {"ritz_min": lo, "ritz_max": hi, "sigma": result["sigma"]}
    extra["broadening"] = result["broadening"]
    with _create(out, "density", spec, checkpoint, meta, op, extra) as w:
        w.scale("eigenvalue", result["grid"])
        w.put("density", result["density"], dims=("eigenvalue",))
        w.put("ritz_values", result["ritz_values"])
        w.put("weights", result["weights"])


def trace_estimate(
    op: hessian.HessianLinearOperator, spec: Mapping[str, Any]
) -> tuple[float, float, dict[str, Any], dict[str, np.ndarray]]:
    """The ``trace`` block's estimate: ``(trace, stderr, attributes, datasets)``.

    ``method: auto`` takes the exact Gauss-Newton trace (:func:`landscape.gauss_newton.ggn_trace`)
    where the model is built of piecewise-linear modules and BN is in eval mode, and XTrace
    otherwise, or where the diagonal check of the Gauss-Newton trace fails (logged).
    """
    method = spec.get("method", "auto")
    matvecs, seed, checks = spec.get("matvecs", 100), spec.get("seed", 0), spec.get("checks", 16)
    if method == "auto":
        method = "ggn" if gauss_newton.refusal(op) is None else "xtrace"
    if method == "ggn":
        try:
            result = gauss_newton.ggn_trace(op, checks=checks, seed=seed)
        except gauss_newton.NotPiecewiseLinearError as err:
            if spec.get("method", "auto") == "ggn":
                raise
            log.warning("%s; falling back to xtrace", err)
            method = "xtrace"
        else:
            attrs = {"estimator": "ggn", "max_diagonal_difference": result.max_difference}
            check = {
                "check/coordinates": result.coordinates,
                "check/hessian_diagonal": result.hessian_diagonal,
                "check/ggn_diagonal": result.ggn_diagonal,
            }
            return result.trace, 0.0, attrs, check
    value, stderr = TRACE_ESTIMATORS[method](op, matvecs, seed=seed)
    return value, stderr, {"estimator": method}, {}


def compute_trace(
    checkpoint: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the trace and its standard error (``trace`` block: ``method``, ...; see
    :func:`trace_estimate`); the ``estimator`` attribute names the method used."""
    op, meta = _load(checkpoint, spec, dataset, device)
    value, stderr, attrs, extra = trace_estimate(op, spec.get("trace", {}))
    attrs |= {"trace": value, "stderr": stderr}
    with _create(out, "trace", spec, checkpoint, meta, op, attrs) as w:
        w.put("trace", np.float64(value))
        w.put("stderr", np.float64(stderr))
        for name, data in extra.items():
            w.put(name, data)


def compute_cosines(
    spectrum: str | Path,
    directions: Mapping[str, str | Path],
    out: str | Path,
    spec: Mapping[str, Any],
) -> None:
    """Writes ``|cos|`` between directions and the Hessian eigenvectors of a spectrum file (V9).

    Fig. 9 of the paper shows it for a mined direction against N.E.1..10 and P.E.10..1.
    Datasets ``{which}/cosines`` (``direction`` x ``rank``, rank 1 the most extreme eigenvalue
    of the family) and ``{which}/eigenvalues`` (``rank``) for every family the spectrum holds.

    Args:
        spectrum: a spectrum file (:func:`compute_spectrum`).
        directions: name to direction file, all at the spectrum's checkpoint; rows in this order.
        spec: the ``cosines`` block, stored as provenance.
    """
    art = store.open(spectrum)
    names = list(art.attrs["names"])
    vectors = [
        {n: torch.as_tensor(v) for n, v in store.open(path).tensors().items()}
        for path in directions.values()
    ]
    families = [which for which in ("LA", "SA") if f"{which}/eigenvectors" in art]
    inputs = {"spectrum": spectrum} | {f"direction:{n}": p for n, p in directions.items()}
    attrs = {"run": art.attrs["run"], "epoch": art.attrs["epoch"]}
    with store.create(out, kind="cosines", spec=spec, inputs=inputs, attrs=attrs) as w:
        w.scale("direction", np.array(list(directions), dtype=str))
        w.scale("rank", np.arange(1, len(art[f"{families[0]}/eigenvalues"]) + 1))
        for which in families:
            eigvecs = torch.as_tensor(art[f"{which}/eigenvectors"]).T
            table = cosine_table(vectors, eigvecs, names=names)
            w.put(f"{which}/cosines", table, dims=("direction", "rank"))
            w.put(f"{which}/eigenvalues", art[f"{which}/eigenvalues"], dims=("rank",))


def _read_direction(path: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    first = next(model.parameters())
    return {
        n: torch.as_tensor(v, device=first.device) for n, v in store.open(path).tensors().items()
    }


def compute_soa(
    checkpoint: str | Path,
    direction: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the second-order approximation of a curve at each of its points (V14).

    ``spec`` holds the evaluation keys of the ``hessian`` block plus the ``soa`` block's
    ``lambda`` grid, ``half_width`` and ``num_local`` (see :func:`landscape.mining.soa_curve`).
    Datasets: ``loss``, ``slope`` (eps^T g), ``curvature`` (eps^T H eps) on the ``lambda`` scale;
    ``quadratic`` (and ``local_loss``) on ``lambda`` x ``offset``.
    """
    model, data, meta = _model_and_data(checkpoint, dataset, device)
    result = soa_curve(
        model,
        evaluation_batches(data, spec),
        _read_direction(direction, model),
        lambda_grid(spec["lambda"]),
        half_width=spec.get("half_width", 0.05),
        num_local=spec.get("num_local", 11),
        local_loss=spec.get("local_loss", True),
        dtype=DTYPES[spec.get("dtype", "float32")],
        bn_mode=spec.get("bn_mode", "eval"),
        hvp=spec.get("hvp", "auto"),
    )
    inputs = {"checkpoint": checkpoint, "direction": direction}
    attrs = {"run": meta["run"], "epoch": meta["epoch"], "subset_seed": meta["subset_seed"]}
    with store.create(out, kind="soa", spec=spec, inputs=inputs, attrs=attrs) as w:
        w.scale("lambda", result["lambdas"])
        w.scale("offset", result["offsets"])
        for name in ("loss", "slope", "curvature"):
            w.put(name, result[name], dims=("lambda",))
        for name in ("quadratic", "local_loss"):
            if name in result:
                w.put(name, result[name], dims=("lambda", "offset"))


def compute_loss_change(
    checkpoint: str | Path,
    trace: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the loss change under Gaussian perturbations against 0.5 lambda^2 sigma^2 tr(H) (V13).

    ``spec`` holds the evaluation keys of the ``hessian`` block plus ``loss_change``:
    ``lambdas``, ``sigma``, ``num_samples``, ``seed`` and ``dtype`` (of the actual change's
    forward passes, float64 by default; attribute ``loss_dtype``; the products use the
    ``hessian`` block's ``dtype``). The trace comes from the trace file of the same checkpoint.
    Datasets on ``sample`` x ``lambda``: ``actual`` and ``soa``; per sample ``slope`` and
    ``curvature``; ``predicted_mean`` per lambda.
    """
    model, data, meta = _model_and_data(checkpoint, dataset, device)
    sub = spec.get("loss_change", {})
    tr = store.open(trace)
    result = loss_change_samples(
        model,
        evaluation_batches(data, spec),
        lambdas=sub.get("lambdas", [0.001, 0.01]),
        sigma=sub.get("sigma", 1.0),
        num_samples=sub.get("num_samples", 100),
        seed=sub.get("seed", 0),
        trace=tr.attrs["trace"],
        dtype=DTYPES[spec.get("dtype", "float32")],
        loss_dtype=DTYPES[sub.get("dtype", "float64")],
        bn_mode=spec.get("bn_mode", "eval"),
        hvp=spec.get("hvp", "auto"),
    )
    attrs = {"run": meta["run"], "epoch": meta["epoch"], "loss0": float(result["loss0"])}
    attrs["subset_seed"] = meta["subset_seed"]
    attrs["loss_dtype"] = sub.get("dtype", "float64")
    attrs |= {"trace": tr.attrs["trace"], "trace_stderr": tr.attrs["stderr"]}
    inputs = {"checkpoint": checkpoint, "trace": trace}
    with store.create(out, kind="loss_change", spec=spec, inputs=inputs, attrs=attrs) as w:
        w.scale("lambda", result["lambdas"])
        w.scale("sample", np.arange(len(result["slope"])))
        for name in ("actual", "soa"):
            w.put(name, result[name], dims=("sample", "lambda"))
        for name in ("slope", "curvature"):
            w.put(name, result[name], dims=("sample",))
        w.put("predicted_mean", result["predicted_mean"], dims=("lambda",))


def compute_angles(
    checkpoint: str | Path,
    target: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the angles between Gaussian directions and descent directions (V5).

    Descent directions: the negative gradients of ``batches`` batches of ``batch_size`` of a
    class-proportional training sample drawn with ``seed`` (:meth:`landscape.data.Split.sample`),
    and ``theta_f - theta_cur`` towards ``target``.
    Dataset ``gaussian`` (``direction`` x ``descent``, degrees) and ``between`` (``descent`` x
    ``descent``); the descent names are the ``descent`` scale's ``names`` attribute.
    """
    model, data, meta = _model_and_data(checkpoint, dataset, device)
    size = spec.get("batch_size", 128)
    fixed = data.train.sample(spec.get("batches", 4) * size, spec.get("seed", 0))
    batches = list(fixed.batches(size))
    params = trainable(model)
    final = store.read_checkpoint(target)["model"]
    final = {n: final[n].to(p.device, p.dtype) for n, p in params.items()}
    result = descent_angles(
        model,
        batches,
        num_directions=spec.get("num_directions", 100),
        seed=spec.get("seed", 0),
        targets={"theta_f - theta_cur": towards(params, final)},
    )
    inputs = {"checkpoint": checkpoint, "target": target}
    attrs = {
        "run": meta["run"],
        "epoch": meta["epoch"],
        "descent_names": [str(n) for n in result["names"]],
    }
    with store.create(out, kind="angles", spec=spec, inputs=inputs, attrs=attrs) as w:
        w.scale("direction", np.arange(result["gaussian"].shape[0]))
        w.scale("descent", np.arange(len(result["names"])))
        w.put("gaussian", result["gaussian"], dims=("direction", "descent"))
        w.put("between", result["between"], dims=("descent", "descent"))
