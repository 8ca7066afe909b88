"""Sweeps: many 1D curves of one checkpoint in one job and one file.

A sweep varies direction keys over a cartesian product (``vary``) around a ``base`` direction
block and evaluates the 1D curve ``theta + lambda * eps`` along every variant: the Asymmetric
Valley experiments need dozens of curves per model (A1: noise distributions x raw/sign-consistent
x normalizations; A2: sign ratios), and a job per curve would spend most of its time starting.

Every variant's direction is built by :func:`landscape.directions.make_direction` from
:func:`landscape.config.variant_direction_spec` of its block and evaluated by
:func:`landscape.evaluate.evaluate_grid` exactly as :func:`landscape.evaluate.compute_curve`
evaluates a direction file: a sweep's curve equals that curve.

The artifact (kind ``sweep``) holds, besides the curve's root attributes:

- scales ``lambda`` and ``variant`` (labels such as ``distribution=laplace,sign=consistent``);
- ``{split}/loss`` and ``{split}/error`` with dims ``(variant, lambda)``;
- ``vary/{key}``: the value of each varied key per variant;
- ``direction/{field}`` per variant: ``spec`` (canonical JSON of the direction's spec),
  ``normalization``, ``bias_bn``, ``direction_norm``, ``theta_norm``, ``relative_norm``
  (``||eps|| / ||theta||``) and ``sign_share``, the measured share of the perturbed elements
  (``eps != 0``) whose sign is that of theta (:func:`sign_share`);
- ``analysis/{split}/{metric}/{field}`` per variant: :func:`landscape.curves.analyze_curve`
  (``type``, ``n_stationary``, ``mean_pos``, ``mean_neg``, ``ratio``, ``difference``, and
  ``stationary`` as a ``(variant, lambda)`` mask).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape import store
from landscape.config import (
    sweep_variants,
    transform_defaults,
    variant_direction_spec,
    variant_label,
)
from landscape.curve_table import ANALYSIS_FIELDS
from landscape.curves import analyze_curve
from landscape.data import load_data
from landscape.directions import direction_norms, make_direction
from landscape.evaluate import evaluate_grid, fixed_bn_batches, has_batchnorm
from landscape.lambda_grids import lambda_grid
from landscape.surface_merge import EVALUATION_ATTRS
from landscape.sweep_table import vary_in_order
from landscape.train import load_model, resolve_device

# Defaults of the evaluation keys, as the schema's for curves (bn_mode: the papers' UpBN).
EVALUATION_DEFAULTS = {"bn_mode": "recompute", "bn_batches": 4, "batch_size": 512}
DIRECTION_FIELDS = ("direction_norm", "theta_norm", "relative_norm", "sign_share")


def variants(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(label, values, direction spec)`` of every variant of a sweep spec, in sweep order.

    Raises:
        ValueError: (a :class:`landscape.config.ConfigError`) for a ``vary`` key that is no
            direction key or an empty list, naming ``vary.{key}``; for a ``variants`` list (the
            workflow's) that differs from the expansion of ``base`` and ``vary``.
    """
    out = [
        (variant_label(values), values, variant_direction_spec(block))
        for values, block in sweep_variants(spec.get("base", {}), vary_in_order(spec))
    ]
    given = spec.get("variants")
    if given is not None and json.loads(store.canonical_json(given)) != json.loads(
        store.canonical_json([s for _, _, s in out])
    ):
        raise ValueError("variants: differ from the directions that base and vary describe")
    return out


def sign_share(direction: Mapping[str, Tensor], params: Mapping[str, Tensor]) -> float:
    """Share of the perturbed elements (``eps != 0``) whose sign is that of theta.

    ``#{i: eps_i != 0, sign(eps_i) == sign(theta_i)} / #{i: eps_i != 0}``; NaN for a zero
    direction. About 0.5 for noise, 1 for sign-consistent noise.

    >>> theta = {"w": torch.tensor([1.0, 1.0, 1.0, 0.0])}
    >>> sign_share({"w": torch.tensor([1.0, -2.0, 0.0, 3.0])}, theta)
    0.3333333333333333
    """
    same = total = 0
    for name, eps in direction.items():
        moved = eps != 0
        total += int(moved.sum())
        same += int((moved & (torch.sign(eps) == torch.sign(params[name].to(eps)))).sum())
    return same / total if total else math.nan


def _references(
    paths: Mapping[str, str | Path], params: Mapping[str, Tensor]
) -> dict[str, dict[str, Tensor]]:
    """Other checkpoints' trainable parameters by role, on the device and dtype of ``params``."""
    out = {}
    for role, path in paths.items():
        state = store.read_checkpoint(path)["model"]
        missing = [n for n in params if n not in state]
        if missing:
            raise ValueError(f"references[{role!r}] ({path}): has no parameter {missing[0]!r}")
        out[role] = {n: torch.as_tensor(state[n]).to(p) for n, p in params.items()}
    return out


def compute_sweep(
    checkpoint: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
    references: Mapping[str, str | Path] | None = None,
) -> None:
    """Writes the 1D curves of one checkpoint along every variant of a sweep (module docstring).

    Args:
        checkpoint: the checkpoint theta.
        out: sweep HDF5 to write.
        spec: ``base`` (a direction block), ``vary`` (``{direction key: [values]}``, cartesian
            product in order, the first key slowest), ``lambda`` (grid), ``splits``, and
            ``bn_mode`` (``keep``/``recompute``, default recompute), ``bn_batches`` (default 4),
            ``batch_size`` (default 512); the workflow adds ``order`` (the keys of ``vary`` in
            order, :func:`vary_in_order`) and ``variants``, the direction specs it expects
            (checked).
        dataset: the dataset config block of the checkpoint's run.
        device: ``auto``, ``cpu`` or ``cuda``.
        references: role -> checkpoint path: ``theta_0`` (the run's epoch 0) for the special
            direction ``theta_0``; recorded as inputs.

    Raises:
        ValueError: for a bad ``vary`` key (naming it, before anything is loaded), or what
            :func:`~landscape.directions.make_direction` or the engine refuse.
    """
    todo = variants(spec)
    order = list(vary_in_order(spec))
    evaluation = {
        **EVALUATION_DEFAULTS,
        **{k: v for k, v in spec.items() if k in EVALUATION_DEFAULTS},
    }
    lambdas = lambda_grid(spec["lambda"])
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    data = load_data(dataset, dev, key=f"datasets.{meta['spec']['dataset_name']}")
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    refs = _references(references or {}, params)
    splits = {s: getattr(data, s) for s in spec["splits"]}
    bn_batches = fixed_bn_batches(data, evaluation)
    curves: dict[str, list[np.ndarray]] = {
        f"{s}/{m}": [] for s in splits for m in ("loss", "error")
    }
    fields: dict[str, list[Any]] = {f: [] for f in DIRECTION_FIELDS}
    for _, _, direction_spec in todo:
        eps = make_direction(direction_spec, model, references=refs, data=data)
        for key, value in {
            **direction_norms(eps, params),
            "sign_share": sign_share(eps, params),
        }.items():
            fields[key].append(value)
        result = evaluate_grid(
            model,
            [eps],
            lambdas[:, None],
            splits,
            bn_mode=evaluation["bn_mode"],
            bn_batches=bn_batches,
            batch_size=evaluation["batch_size"],
        )
        for s, by_metric in result.items():
            for m, values in by_metric.items():
                curves[f"{s}/{m}"].append(values)
    meta = {**meta, "subset_seed": data.subset_seed, "batchnorm": has_batchnorm(model)}
    with store.create(
        out,
        kind="sweep",
        spec={**spec, "order": order},  # canonical JSON sorts vary's keys
        inputs={"checkpoint": checkpoint, **(references or {})},
        attrs={k: meta[k] for k in EVALUATION_ATTRS},
    ) as w:
        w.scale("lambda", lambdas)
        w.scale("variant", np.array([label for label, _, _ in todo]))
        metrics = {name: np.stack(rows) for name, rows in curves.items()}
        for name, values in metrics.items():
            w.put(name, values, dims=("variant", "lambda"))
        for key in order:
            w.put(f"vary/{key}", _column([values[key] for _, values, _ in todo]), dims=("variant",))
        _write_directions(w, todo, fields)
        _write_analysis(w, lambdas, metrics)


def _column(values: list[Any]) -> np.ndarray:
    """Values of one key as an array: numbers and booleans as such, anything else as text."""
    if all(isinstance(v, bool) for v in values) or all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        return np.asarray(values)
    return np.array([v if isinstance(v, str) else store.canonical_json(v) for v in values])


def _write_directions(w: store.Writer, todo, fields: Mapping[str, list[Any]]) -> None:
    specs = [s for _, _, s in todo]
    w.put("direction/spec", np.array([store.canonical_json(s) for s in specs]), dims=("variant",))
    defaults = [transform_defaults(s.get("kind", "noise")) for s in specs]
    normalization = [s.get("normalization", d[0]) for s, d in zip(specs, defaults, strict=True)]
    bias_bn = [s.get("bias_bn", d[1]) for s, d in zip(specs, defaults, strict=True)]
    w.put("direction/normalization", np.array(normalization), dims=("variant",))
    w.put("direction/bias_bn", np.array(bias_bn), dims=("variant",))
    for key, values in fields.items():
        w.put(f"direction/{key}", np.asarray(values, dtype=np.float64), dims=("variant",))


def _write_analysis(
    w: store.Writer, lambdas: np.ndarray, metrics: Mapping[str, np.ndarray]
) -> None:
    """:func:`~landscape.curves.analyze_curve` of every variant's metrics, stacked per field."""
    count = len(next(iter(metrics.values())))
    rows = [analyze_curve(lambdas, {m: v[i] for m, v in metrics.items()}) for i in range(count)]
    for metric in metrics:
        mask = np.zeros((count, len(lambdas)), dtype=bool)
        for i, row in enumerate(rows):
            mask[i, row[f"{metric}/stationary"]] = True
        w.put(f"analysis/{metric}/stationary", mask, dims=("variant", "lambda"))
        w.put(
            f"analysis/{metric}/type",
            np.array([r[f"{metric}/type"] for r in rows]),
            dims=("variant",),
        )
        for field in ANALYSIS_FIELDS:
            values = np.array([r[f"{metric}/{field}"] for r in rows])
            w.put(f"analysis/{metric}/{field}", values, dims=("variant",))
