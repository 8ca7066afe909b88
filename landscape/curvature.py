"""Curvature artifacts of one checkpoint: Hessian spectrum, spectral density and trace as HDF5.

The workflow's ``hessian`` block chooses the evaluation set (the first ``samples`` examples of a
split, in fixed order, cut into batches of ``batch_size``), the BN mode and the dtype; its
``spectrum``, ``density`` and ``trace`` sub-blocks set each estimator. Every function here loads
the checkpoint, builds one :class:`landscape.hessian.HessianLinearOperator` and writes one file:

- spectrum: per ``which`` (``LA``: top-k, the paper's P.E.; ``SA``: most negative, N.E.) the
  datasets ``{which}/eigenvalues``, ``{which}/residuals`` (``||Hv - lambda v||``) and
  ``{which}/eigenvectors`` (``k x n``, rows in ``named_parameters()`` order of the trainable
  parameters; :func:`landscape.directions.eigenvector` turns a row into a direction).
- density: ``density`` on the ``eigenvalue`` scale, the Ritz values and weights of every run.
- trace: the estimate and its standard error as attributes and scalar datasets.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape import hessian, store
from landscape.data import load_data
from landscape.train import load_model, resolve_device

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def operator(model: nn.Module, data, spec: Mapping[str, Any]) -> hessian.HessianLinearOperator:
    """The Hessian over the evaluation set that ``spec`` (the ``hessian`` block) describes."""
    split = getattr(data, spec.get("split", "train"))
    samples = spec.get("samples")
    if samples is not None and samples < len(split):
        split = split.subset(samples)
    return hessian.HessianLinearOperator(
        model,
        split.batches(spec.get("batch_size", 512)),
        dtype=DTYPES[spec.get("dtype", "float32")],
        bn_mode=spec.get("bn_mode", "eval"),
    )


def _load(checkpoint, spec, dataset, device):
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    data = load_data(dataset, dev, key=f"datasets.{meta['spec']['dataset_name']}")
    return operator(model, data, spec), meta


def _create(out, kind, spec, checkpoint, meta, op, extra=None):
    attrs = {
        "run": meta["run"],
        "epoch": meta["epoch"],
        "num_params": op.shape[0],
        "num_samples": op.num_samples,
        **(extra or {}),
    }
    return store.create(out, kind=kind, spec=spec, inputs={"checkpoint": checkpoint}, attrs=attrs)


def eigenpairs(op: hessian.HessianLinearOperator, spec: Mapping[str, Any], which: str):
    """Eigenpairs by the configured method (``lanczos`` on the device, or scipy's ``eigsh``)."""
    k, tol, seed = spec.get("k", 5), spec.get("tol", 1e-6), spec.get("seed", 0)
    if spec.get("method", "lanczos") == "eigsh":
        return hessian.eigsh_topk(op, k, which=which, tol=tol, seed=seed)
    return hessian.lanczos(op, k, which=which, tol=tol, max_steps=spec.get("max_steps"), seed=seed)


def compute_spectrum(
    checkpoint: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the extreme eigenpairs of a checkpoint's Hessian, with residuals.

    Args:
        spec: the ``hessian`` block's evaluation keys plus ``spectrum``: ``k``, ``which`` (a
            list of ``LA``/``SA``), ``method``, ``tol``, ``max_steps``, ``seed``.
    """
    op, meta = _load(checkpoint, spec, dataset, device)
    sub = spec.get("spectrum", {})
    results = {which: eigenpairs(op, sub, which) for which in sub.get("which", ["LA", "SA"])}
    with _create(out, "spectrum", spec, checkpoint, meta, op, {"names": op.names}) as w:
        for which, pairs in results.items():
            w.put(f"{which}/eigenvalues", pairs.eigenvalues)
            w.put(f"{which}/residuals", pairs.residuals)
            vectors = pairs.eigenvectors.T.detach().to("cpu", torch.float64).numpy()
            w.put(f"{which}/eigenvectors", vectors)
        w.file.attrs["num_matvecs"] = op.num_matvecs


def compute_density(
    checkpoint: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the SLQ spectral density (``density`` block: ``steps``, ``runs``, ...)."""
    op, meta = _load(checkpoint, spec, dataset, device)
    sub = spec.get("density", {})
    result = hessian.slq_density(
        op,
        steps=sub.get("steps", 100),
        runs=sub.get("runs", 5),
        grid_points=sub.get("grid_points", 1000),
        sigma=sub.get("sigma"),
        seed=sub.get("seed", 0),
    )
    lo, hi = result["extreme"]
    extra = {"ritz_min": lo, "ritz_max": hi, "sigma": result["sigma"]}
    with _create(out, "density", spec, checkpoint, meta, op, extra) as w:
        w.scale("eigenvalue", result["grid"])
        w.put("density", result["density"], dims=("eigenvalue",))
        w.put("ritz_values", result["ritz_values"])
        w.put("weights", result["weights"])


def compute_trace(
    checkpoint: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes a trace estimate and its standard error (``trace`` block: ``method``, ...)."""
    op, meta = _load(checkpoint, spec, dataset, device)
    sub = spec.get("trace", {})
    matvecs, seed = sub.get("matvecs", 100), sub.get("seed", 0)
    if sub.get("method", "hutchpp") == "hutchpp":
        value, stderr = hessian.hutchpp(op, matvecs, seed=seed)
    else:
        value, stderr = hessian.hutchinson(op, matvecs, seed=seed)
    with _create(out, "trace", spec, checkpoint, meta, op, {"trace": value, "stderr": stderr}) as w:
        w.put("trace", np.float64(value))
        w.put("stderr", np.float64(stderr))
