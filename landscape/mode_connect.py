"""Mode-connecting curves between two independently trained models (Garipov et al. 2018).

A curve ``phi(t)``, ``t`` in [0, 1], joins the trainable parameters of two models, ``phi(0) =
theta_a`` and ``phi(1) = theta_b`` (fixed), through one bend ``theta_1`` (trained), as in
timgaripov/dnn-mode-connectivity with three bends:

- ``bezier``: the quadratic Bezier curve
  ``(1 - t)^2 theta_a + 2 t (1 - t) theta_1 + t^2 theta_b``;
- ``polychain``: the polygonal chain ``theta_a -> theta_1 -> theta_b``, the bend at ``t = 0.5``.

:func:`coefficients` gives the weights of the three points (they sum to one), so
``phi(t) = theta_a + c_1(t) (theta_1 - theta_a) + c_b(t) (theta_b - theta_a)``: a point of the
plane of two directions, evaluated by :class:`landscape.grid.GridEvaluator` exactly as every
curve and surface of this project is. The straight line ``theta_a + t (theta_b - theta_a)``
(V7's ``to_seed1`` curve restricted to [0, 1]) is the same plane at coordinates ``(0, t)``.

Training (:func:`train_bend`), as their ``train.py``: the bend starts at the midpoint of the
endpoints (their ``init_linear``); every batch draws ``t ~ U(0, 1)`` and takes an SGD step on
the cross-entropy of the model at ``phi(t)`` (train mode: BN normalizes by batch statistics) plus
their ``l2_regularizer``, ``0.5 weight_decay ||phi(t)||^2`` (so the bend, the only trained
tensors, is decayed through its coefficient); the learning rate follows their schedule (constant
for the first half, linear down to 1% until 90%, then 1%). The model is called with
:func:`torch.func.functional_call`, so any model of :mod:`landscape.models` (or any
``nn.Module``) works unchanged. BN buffers are not on the curve: every evaluated point, on the
curve and on the line, has its BN running statistics re-estimated over fixed training batches
(their ``update_bn``: a cumulative average from reset statistics).

The workflow entry point is :func:`compute_mode_connect`;
:func:`landscape.mode_connect_plots.plot_mode_connect` draws its file.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from landscape import store
from landscape.data import Split, load_data
from landscape.evaluate import fixed_bn_batches
from landscape.grid import GridEvaluator
from landscape.sgd import SGD
from landscape.train import epoch_generator, load_model, resolve_device

log = logging.getLogger(__name__)

CURVES = ("bezier", "polychain")
EVAL_BATCH_SIZE = 512


# --------------------------------------------------------------------------- parametrization


def coefficients(kind: str, t: float) -> tuple[float, float, float]:
    """Weights ``(c_a, c_1, c_b)`` of ``theta_a``, the bend and ``theta_b`` at ``t``.

    >>> coefficients("bezier", 0.5), coefficients("polychain", 0.25)
    ((0.25, 0.5, 0.25), (0.5, 0.5, 0.0))

    Raises:
        ValueError: for an unknown curve.
    """
    t = float(t)
    if kind == "bezier":
        return ((1.0 - t) ** 2, 2.0 * t * (1.0 - t), t**2)
    if kind == "polychain":
        return (max(0.0, 1.0 - 2.0 * t), 1.0 - abs(2.0 * t - 1.0), max(0.0, 2.0 * t - 1.0))
    raise ValueError(f"curve: unknown {kind!r}; one of {CURVES}")


def curve_point(
    kind: str,
    t: float,
    theta_a: Mapping[str, Tensor],
    bend: Mapping[str, Tensor],
    theta_b: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """``phi(t) = c_a theta_a + c_1 bend + c_b theta_b`` over the names of ``bend``."""
    c_a, c_1, c_b = coefficients(kind, t)
    return {n: c_a * theta_a[n] + c_1 * bend[n] + c_b * theta_b[n] for n in bend}


def init_bend(theta_a: Mapping[str, Tensor], theta_b: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The midpoint ``(theta_a + theta_b) / 2`` (their ``init_linear``): before training, the
    Bezier curve is the straight line and the chain its two halves."""
    return {n: 0.5 * (a + theta_b[n]) for n, a in theta_a.items()}


def trainable_names(model: nn.Module) -> list[str]:
    """The names of the model's trainable parameters: the tensors the curve joins."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def learning_rate(base_lr: float, epoch: int, total_epochs: int) -> float:
    """Their schedule at 1-based ``epoch``: ``base_lr`` up to half, then linear down to
    ``0.01 base_lr`` at 90%, then ``0.01 base_lr``.

    >>> [round(learning_rate(1.0, e, 10), 4) for e in (5, 7, 10)]
    [1.0, 0.505, 0.01]
    """
    alpha = epoch / total_epochs
    if alpha <= 0.5:
        factor = 1.0
    elif alpha <= 0.9:
        factor = 1.0 - (alpha - 0.5) / 0.4 * 0.99
    else:
        factor = 0.01
    return factor * base_lr


# --------------------------------------------------------------------------- training


def train_bend(
    model: nn.Module,
    theta_a: Mapping[str, Tensor],
    theta_b: Mapping[str, Tensor],
    train: Split,
    *,
    curve: str,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
) -> tuple[dict[str, Tensor], dict[str, np.ndarray]]:
    """Trains the bend of a curve from the midpoint (see the module docstring).

    Args:
        model: a model of the endpoints' architecture; its buffers (BN statistics of theta_a,
            say) are copied and never written back; the model itself is not modified.
        theta_a, theta_b: the endpoints' trainable parameters.
        train: the training split.
        curve: ``bezier`` or ``polychain``.
        epochs, lr, momentum, weight_decay, batch_size: SGD on the bend; ``weight_decay`` is
            the coefficient of ``0.5 ||phi(t)||^2``.
        seed: seeds the data order of each epoch (:func:`landscape.train.epoch_generator`), the
            ``t`` of each batch and any other randomness of the forward pass.

    Returns:
        ``(bend, history)``: the trained bend ``{name: tensor}`` and ``{"loss": (E,) mean
        training cross-entropy at the sampled t, "lr": (E,)}``.
    """
    coefficients(curve, 0.0)  # fails early for an unknown curve
    names = list(theta_a)
    fixed_a = {n: theta_a[n].detach() for n in names}
    fixed_b = {n: theta_b[n].detach() for n in names}
    bend = {n: t.clone().requires_grad_(True) for n, t in init_bend(fixed_a, fixed_b).items()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    optimizer = SGD(bend.values(), lr=lr, momentum=momentum, weight_decay=0.0)
    sampler = torch.Generator().manual_seed(seed)
    was_training = model.training
    history = {"loss": np.empty(epochs), "lr": np.empty(epochs)}
    devices = [fixed_a[names[0]].device] if fixed_a[names[0]].is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.train()
        try:
            for epoch in range(1, epochs + 1):
                rate = learning_rate(lr, epoch, epochs)
                for group in optimizer.param_groups:
                    group["lr"] = rate
                order = epoch_generator(seed, epoch)
                total, seen = 0.0, 0
                for x, y in train.batches(batch_size, shuffle=True, generator=order):
                    t = float(torch.rand((), generator=sampler))
                    point = curve_point(curve, t, fixed_a, bend, fixed_b)
                    logits = functional_call(model, (point, buffers), (x,))
                    loss = F.cross_entropy(logits, y)
                    penalty = sum(p.pow(2).sum() for p in point.values())
                    optimizer.zero_grad(set_to_none=True)
                    (loss + 0.5 * weight_decay * penalty).backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(y)
                    seen += len(y)
                history["loss"][epoch - 1] = total / max(seen, 1)
                history["lr"][epoch - 1] = rate
                log.info("curve epoch %d/%d lr %.4g loss %.4f", epoch, epochs, rate, total / seen)
        finally:
            model.train(was_training)
    return {n: t.detach() for n, t in bend.items()}, history


# --------------------------------------------------------------------------- evaluation


def evaluate_along(
    model: nn.Module,
    theta_a: Mapping[str, Tensor],
    bend: Mapping[str, Tensor],
    theta_b: Mapping[str, Tensor],
    ts: Sequence[float],
    splits: Mapping[str, Split],
    *,
    curve: str,
    bn_batches: Sequence[tuple[Tensor, Tensor]],
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Loss and error along the curve and along the straight line at every ``t``.

    Args:
        model: a model of the endpoints' architecture whose buffers are used where BN is not
            recomputed (a model without BN); not modified.
        theta_a, bend, theta_b: the curve's three points over the trainable parameters.
        ts: the evaluated ``t`` values.
        splits: ``{split name: split}``.
        curve: ``bezier`` or ``polychain``.
        bn_batches: fixed training batches; every point's BN statistics are re-estimated over
            them (ignored without BN).
        batch_size: evaluation batch size.

    Returns:
        ``{"curve" | "line": {split: {"loss": (T,), "error": (T,)}}}`` as float64.
    """
    work = _at(model, theta_a)
    directions = [
        {n: bend[n] - theta_a[n] for n in bend},
        {n: theta_b[n] - theta_a[n] for n in bend},
    ]
    evaluator = GridEvaluator(  # without BN, recompute is keep
        work,
        directions,
        bn_mode="recompute",
        bn_batches=bn_batches,
        batch_size=batch_size,
    )
    coords = {
        "curve": np.array([coefficients(curve, t)[1:] for t in ts]),
        "line": np.array([[0.0, float(t)] for t in ts]),
    }
    return {path: evaluator(c, splits) for path, c in coords.items()}


def _at(model: nn.Module, params: Mapping[str, Tensor]) -> nn.Module:
    work = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in work.named_parameters():
            if n in params:
                p.copy_(params[n])
    return work


def barrier(ts: Sequence[float], values: Sequence[float]) -> float:
    """``max_t [v(t) - ((1 - t) v(0) + t v(1))]``: the height above the endpoints' chord.

    >>> barrier([0.0, 0.5, 1.0], [1.0, 3.0, 2.0])
    1.5
    """
    t, v = np.asarray(ts, dtype=float), np.asarray(values, dtype=float)
    return float(np.max(v - ((1.0 - t) * v[0] + t * v[-1])))


# --------------------------------------------------------------------------- workflow


def compute_mode_connect(
    spec: Mapping[str, Any],
    checkpoints: Mapping[str, str | Path],
    out: str | Path,
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Trains the curve of one ``mode_connect`` block and writes it as HDF5 (kind
    ``mode_connect``).

    Args:
        spec: the block as :func:`landscape.config.mode_connect_spec` resolves it.
        checkpoints: ``{"a": path, "b": path}`` of the two endpoints.
        out: the HDF5 file to write; its inputs are the two checkpoints (with sha256).
        dataset: the config block of ``spec["dataset"]``.
        device: ``auto``, ``cpu`` or ``cuda``.
    """
    dev = resolve_device(device)
    model, _ = load_model(checkpoints["a"], dev)
    names = trainable_names(model)
    states = {k: store.read_checkpoint(checkpoints[k])["model"] for k in ("a", "b")}
    theta_a, theta_b = ({n: states[k][n].to(dev) for n in names} for k in ("a", "b"))
    data = load_data(dataset, dev, key=f"datasets.{spec['dataset']}")
    bend, history = train_bend(
        model,
        theta_a,
        theta_b,
        data.train,
        curve=spec["curve"],
        **{k: spec[k] for k in ("epochs", "lr", "momentum", "weight_decay", "batch_size")},
        seed=spec["seed"],
    )
    ts = np.linspace(0.0, 1.0, spec["points"])
    bn = {k: spec[k] for k in ("bn_batches", "batch_size")} | {"bn_mode": "recompute"}
    splits = {s: getattr(data, s) for s in spec["splits"]}
    paths = evaluate_along(
        model,
        theta_a,
        bend,
        theta_b,
        ts,
        splits,
        curve=spec["curve"],
        bn_batches=fixed_bn_batches(data, bn),
    )
    with store.create(
        out,
        kind="mode_connect",
        spec=spec,
        inputs=dict(checkpoints),
        attrs={"name": spec["name"], "curve": spec["curve"], "subset_seed": data.subset_seed},
    ) as w:
        w.scale("t", ts)
        w.scale("epoch", np.arange(1, spec["epochs"] + 1))
        for path, by_split in paths.items():
            for split, metrics in by_split.items():
                for metric, values in metrics.items():
                    w.put(f"{path}/{split}/{metric}", values, dims=("t",))
                    w.put(f"{path}/{split}/{metric}_barrier", barrier(ts, values))
                    w.put(f"{path}/{split}/{metric}_max", float(np.max(values)))
                    log.info(
                        "%s %s %s: max %.4f barrier %.4f",
                        path,
                        split,
                        metric,
                        np.max(values),
                        barrier(ts, values),
                    )
        for key, values in history.items():
            w.put(f"training/{key}", values, dims=("epoch",))
        w.put_tensors("bend", {n: t.cpu() for n, t in bend.items()})


def read_curve(path: str | Path) -> dict[str, Any]:
    """The three points and the curve kind of a ``mode_connect`` file, to re-evaluate it:
    ``{"curve", "bend", "theta_a", "theta_b"}`` (tensors on the CPU, endpoints read from the
    checkpoints the file names as inputs)."""
    art = store.open(path)
    bend = {n: torch.as_tensor(v) for n, v in art.tensors("bend").items()}
    points = {}
    for key in ("a", "b"):
        state = store.read_checkpoint(art.inputs[key]["path"])["model"]
        points[f"theta_{key}"] = {n: state[n].cpu() for n in bend}
    return {"curve": art.attrs["curve"], "bend": bend, **points}
