r"""Curvature of one parameter group: top eigenvalues and trace of the Hessian restricted to it.

For a group :math:`g` of :data:`landscape.params.GROUPS` (``ALL``, ``CLF``, ``FEAT``, ``LAYER1``,
``CONV``, ``BN``) with selection matrix :math:`P` (the rows of the identity at the group's flat
coordinates), the restricted Hessian is the principal submatrix :math:`H_{gg} = P H P^T`: the
curvature of the loss when only the group moves. :class:`RestrictedOperator` applies it with one
product of the full operator, :math:`H_{gg} v = P\,H\,(P^T v)`, so :func:`landscape.hessian.lanczos`
and the trace estimators run on it unchanged. Per group and checkpoint:

- ``eigenvalues`` (``k``, largest first) and ``residuals`` by Lanczos (``which="LA"``); NaN past
  the group's size (an empty group, e.g. ``BN`` of an MLP, has only NaN);
- ``trace``: ``method: auto`` takes it exactly, :math:`\sum_j e_j^T H_{gg} e_j`, when the group
  has at most ``matvecs`` coordinates, else XTrace with ``matvecs`` products; ``exact``,
  ``xtrace``, ``hutchpp``, ``hutchinson`` force one; ``stderr`` is 0 for the exact trace. An
  empty group's trace is 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape import hessian, store
from landscape.curvature import operator
from landscape.data import load_data
from landscape.params import GROUPS, param_groups
from landscape.train import load_model, resolve_device

TRACE_METHODS = ("auto", "exact", "xtrace", "hutchpp", "hutchinson")


class RestrictedOperator:
    """The principal submatrix ``H[idx][:, idx]`` of an operator, as an operator.

    Attributes:
        shape: ``(m, m)``, ``m = len(indices)``.
        dtype, device: The full operator's.
        indices: The flat coordinates kept, a long tensor on ``device``.
    """

    def __init__(self, op: hessian.HessianLinearOperator, indices: Tensor) -> None:
        self.op = op
        self.indices = torch.as_tensor(indices, dtype=torch.long, device=op.device)
        self.shape = (len(self.indices), len(self.indices))
        self.dtype, self.device = op.dtype, op.device

    def matvec(self, v: Tensor) -> Tensor:
        """``P H P^T v`` for a vector of the group's coordinates."""
        full = torch.zeros(self.op.shape[0], dtype=self.dtype, device=self.device)
        full[self.indices] = v.to(device=self.device, dtype=self.dtype)
        return self.op.matvec(full)[self.indices]

    def matmat(self, m: Tensor) -> Tensor:
        """``P H P^T M`` column by column for ``M`` of shape ``(m, j)``."""
        cols = [self.matvec(m[:, j]) for j in range(m.shape[1])]
        if not cols:
            return torch.zeros(self.shape[0], 0, dtype=self.dtype, device=self.device)
        return torch.stack(cols, dim=1)

    def __matmul__(self, other: Tensor) -> Tensor:
        return self.matvec(other) if other.dim() == 1 else self.matmat(other)


def group_indices(op: hessian.HessianLinearOperator, names: Sequence[str]) -> Tensor:
    """The flat coordinates of the named parameters in the operator's order (``op.names``).

    Raises:
        ValueError: for a name that is not a trainable parameter of the operator.
    """
    unknown = sorted(set(names) - set(op.names))
    if unknown:
        raise ValueError(f"group: {unknown} are not trainable parameters of the model")
    wanted, start, parts = set(names), 0, []
    for name, shape in op.shapes.items():
        size = math.prod(shape)
        if name in wanted:
            parts.append(torch.arange(start, start + size))
        start += size
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def restricted_trace(
    sub: RestrictedOperator, method: str = "auto", matvecs: int = 100, seed: int = 0
) -> tuple[float, float, str]:
    """``(trace, stderr, estimator)`` of a restricted operator (see the module docstring).

    Raises:
        ValueError: for an unknown method.
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"trace.method: unknown {method!r}; one of {list(TRACE_METHODS)}")
    m = sub.shape[0]
    if m == 0:
        return 0.0, 0.0, "exact"
    if method == "exact" or (method == "auto" and m <= matvecs):
        total = 0.0
        for j in range(m):
            e = torch.zeros(m, dtype=sub.dtype, device=sub.device)
            e[j] = 1
            total += float(sub.matvec(e)[j])
        return total, 0.0, "exact"
    method = "xtrace" if method == "auto" else method
    budget = matvecs - matvecs % 2 if method == "xtrace" else matvecs
    if method == "xtrace" and budget // 2 >= m:
        budget = 2 * ((m - 1) // 2)  # xtrace needs budget / 2 < m
    estimate = {"xtrace": hessian.xtrace, "hutchpp": hessian.hutchpp}.get(method)
    if estimate is None:
        value, stderr = hessian.hutchinson(sub, budget, seed=seed)
    else:
        value, stderr = estimate(sub, budget, seed=seed)
    return value, stderr, method


def group_curvature(
    op: hessian.HessianLinearOperator,
    groups: Mapping[str, Sequence[str]],
    spec: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Top eigenvalues and trace of ``H_gg`` for every group.

    Args:
        op: The full Hessian.
        groups: Group name -> trainable parameter names.
        spec: ``k`` (default 5), ``tol``, ``max_steps``, ``seed`` of Lanczos; ``trace``:
            ``{method, matvecs, seed}``.

    Returns:
        ``{group: {"num_params", "eigenvalues" (k,), "residuals" (k,), "trace",
        "trace_stderr", "trace_estimator"}}``.
    """
    k = int(spec.get("k", 5))
    trace_spec = spec.get("trace", {})
    out = {}
    for group, names in groups.items():
        sub = RestrictedOperator(op, group_indices(op, names))
        m = sub.shape[0]
        values, residuals = np.full(k, np.nan), np.full(k, np.nan)
        if m > 0:
            pairs = hessian.lanczos(
                sub,
                min(k, m),
                which="LA",
                tol=spec.get("tol"),
                max_steps=spec.get("max_steps"),
                seed=spec.get("seed", 0),
            )
            values[: min(k, m)], residuals[: min(k, m)] = pairs.eigenvalues, pairs.residuals
        trace, stderr, estimator = restricted_trace(
            sub,
            trace_spec.get("method", "auto"),
            trace_spec.get("matvecs", 100),
            trace_spec.get("seed", 0),
        )
        out[group] = {
            "num_params": m,
            "eigenvalues": values,
            "residuals": residuals,
            "trace": trace,
            "trace_stderr": stderr,
            "trace_estimator": estimator,
        }
    return out


def compute_group_curvature(
    checkpoint: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the curvature of every group of ``spec["groups"]`` (default all of :data:`GROUPS`)
    at one checkpoint, over the ``hessian`` block's evaluation set.

    Datasets on the scales ``group`` (the group's position in ``groups``; the names are the
    ``groups`` attribute) and ``index`` (1 = the largest eigenvalue): ``eigenvalues``,
    ``residuals`` (``group`` x ``index``), ``num_params``, ``trace``, ``trace_stderr``
    (``group``); the estimators as the ``trace_estimators`` attribute.
    """
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    data = load_data(dataset, dev, key=f"datasets.{meta['spec']['dataset_name']}")
    op = operator(model, data, spec)
    names = list(spec.get("groups", GROUPS))
    groups = param_groups(op.model)
    result = group_curvature(op, {g: groups[g] for g in names}, spec)
    k = int(spec.get("k", 5))
    attrs = {
        "run": meta["run"],
        "epoch": meta["epoch"],
        "subset_seed": data.subset_seed,
        "num_samples": op.num_samples,
        "groups": names,
        "trace_estimators": [result[g]["trace_estimator"] for g in names],
    }
    inputs = {"checkpoint": checkpoint}
    with store.create(out, kind="group_curvature", spec=spec, inputs=inputs, attrs=attrs) as w:
        w.scale("group", np.arange(len(names)))
        w.scale("index", np.arange(1, k + 1))
        for field in ("eigenvalues", "residuals"):
            w.put(field, np.stack([result[g][field] for g in names]), dims=("group", "index"))
        for field in ("num_params", "trace", "trace_stderr"):
            w.put(field, np.asarray([result[g][field] for g in names]), dims=("group",))
        w.file.attrs["num_matvecs"] = op.num_matvecs
