"""The in-process federated runner: clients, rounds, aggregation and the per-round record.

A run (:func:`simulate`) splits the training set over ``clients`` by
:func:`~landscape.federated.split.dirichlet_split` (seeded with ``seed``), builds the global model
with ``torch.manual_seed(seed)`` (the same initialization for every algorithm of a seed), and
for each of ``rounds`` rounds:

1. draws ``max(1, round(participation * clients))`` clients without replacement (numpy generator
   seeded with ``(seed, round)``);
2. trains each from the global model for ``local_epochs`` epochs of SGD (``lr``, ``momentum``,
   ``weight_decay``; a fresh optimizer each round) on mini-batches of ``batch_size`` in an order
   seeded with ``(seed, round, client, epoch)``, minimizing the algorithm's objective
   (:mod:`landscape.federated.algorithms`);
3. aggregates the client models by the algorithm, weighted by client data size;
4. records the global model's test and train (all clients' data, or a class-proportional sample
   of ``train_eval_samples`` drawn with ``seed``) loss and accuracy, the mean
   cross-entropy of the local steps, and the client-to-global sign consistency: the share of
   parameter elements of a client's trained model whose sign is that of the global model it
   started from (``start``) and of the new global model (``aggregate``), averaged over the
   round's clients.

Round 0 is the initial model (sign consistency NaN). On the CPU the same spec gives the same
numbers bit for bit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape import store
from landscape.data import DataBundle, Split, load_data
from landscape.federated.algorithms import Algorithm, make_algorithm, sign_agreement
from landscape.federated.split import dirichlet_split, label_counts
from landscape.models import build_model
from landscape.sgd import SGD
from landscape.train import evaluate_split, resolve_device

log = logging.getLogger(__name__)

__all__ = [
    "ENGINES",
    "METRICS",
    "FederatedConfig",
    "client_generator",
    "participants",
    "run_federated",
    "simulate",
]

# Flower's simulation (flwr 1.42 with Ray) costs 12-19 s per run before any training, several
# times a whole embedded run: no engine switch (README, A10).
ENGINES: tuple[str, ...] = ("inprocess",)

METRICS: tuple[str, ...] = (
    "test/accuracy",
    "test/loss",
    "train/accuracy",
    "train/loss",
    "local/loss",
    "sign_consistency/start",
    "sign_consistency/aggregate",
)


@dataclass(frozen=True)
class FederatedConfig:
    """One federated run: the settings of the ``federated`` block for one alpha and seed."""

    algorithm: str = "fedavg"
    params: Mapping[str, Any] | None = None
    alpha: float = 1.0
    seed: int = 0
    clients: int = 10
    participation: float = 0.5
    rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    min_client_size: int = 10
    eval_batch_size: int = 1024
    train_eval_samples: int | None = None
    engine: str = "inprocess"

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> FederatedConfig:
        """The config of a run spec's keys of this class (others, e.g. ``dataset``, ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in spec.items() if k in known})


def client_generator(seed: int, round_: int, client: int, epoch: int) -> torch.Generator:
    """The CPU generator of one client's data order in one local epoch of one round."""
    state = np.random.SeedSequence([seed, round_, client, epoch]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def participants(seed: int, round_: int, clients: int, participation: float) -> list[int]:
    """The sorted clients drawn for ``round_`` (1-based): ``max(1, round(p * K))`` of ``K``."""
    count = min(clients, max(1, round(participation * clients)))
    rng = np.random.default_rng([seed, round_])
    return sorted(int(c) for c in rng.choice(clients, size=count, replace=False))


def train_client(
    algorithm: Algorithm,
    local: nn.Module,
    split: Split,
    cfg: FederatedConfig,
    round_: int,
    client: int,
) -> tuple[float, int]:
    """Local training of one client from the global model already loaded into ``local``.

    Returns:
        ``(sum of per-sample cross-entropy over the local steps, samples seen)``.
    """
    algorithm.begin_client(client, local)
    optimizer = SGD(
        local.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    local.train()
    ce_sum, seen = 0.0, 0
    for epoch in range(cfg.local_epochs):
        order = client_generator(cfg.seed, round_, client, epoch)
        for x, y in split.batches(cfg.batch_size, shuffle=True, generator=order):
            loss, ce = algorithm.loss(local, x, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ce_sum += float(ce.detach()) * len(y)
            seen += len(y)
    algorithm.end_client(client, local)
    return ce_sum, seen


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _params_of(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: state[n] for n, _ in model.named_parameters()}


def simulate(
    cfg: FederatedConfig,
    data: DataBundle,
    build: Callable[[], nn.Module],
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Runs the federation of ``cfg`` on ``data`` in this process.

    Args:
        cfg: The run's settings.
        data: The dataset; its training split is distributed over the clients.
        build: Builds an untrained model (called after ``torch.manual_seed(cfg.seed)`` for the
            global model, then for the local model; both are then set to the global weights).
        progress: Called with ``(round, metrics)`` after each round.

    Returns:
        ``{"metrics": {name: array over rounds 0..R}, "participation": (R, K) bool,
        "client_sizes": (K,), "label_counts": (K, classes), "final_state": state dict}``.
    """
    labels = data.train.labels()
    parts = dirichlet_split(labels, cfg.clients, cfg.alpha, cfg.seed, cfg.min_client_size)
    splits = [data.train.take(p) for p in parts]
    sizes = [len(p) for p in parts]
    algorithm = make_algorithm(cfg.algorithm, cfg.params or {}, cfg.clients, sum(sizes))
    torch.manual_seed(cfg.seed)
    global_model = algorithm.prepare(build())
    local = algorithm.prepare(build())
    local.load_state_dict(global_model.state_dict())
    algorithm.start(global_model)
    train_eval = data.train
    if cfg.train_eval_samples is not None:
        train_eval = data.train.sample(cfg.train_eval_samples, cfg.seed)
    rows = [_evaluate(global_model, data.test, train_eval, cfg, math.nan, math.nan, math.nan)]
    chosen = np.zeros((cfg.rounds, cfg.clients), dtype=bool)
    for r in range(1, cfg.rounds + 1):
        start = _state(global_model)
        states, ce_sum, seen = [], 0.0, 0
        clients = participants(cfg.seed, r, cfg.clients, cfg.participation)
        chosen[r - 1, clients] = True
        for k in clients:
            local.load_state_dict(start)
            loss_sum, n = train_client(algorithm, local, splits[k], cfg, r, k)
            ce_sum, seen = ce_sum + loss_sum, seen + n
            states.append(_state(local))
        new = algorithm.aggregate(start, states, [sizes[k] for k in clients])
        global_model.load_state_dict(new)
        begin, end = _params_of(start, global_model), _params_of(new, global_model)
        at_start = np.mean([sign_agreement(_params_of(s, global_model), begin) for s in states])
        at_end = np.mean([sign_agreement(_params_of(s, global_model), end) for s in states])
        local_loss = ce_sum / max(seen, 1)
        rows.append(
            _evaluate(global_model, data.test, train_eval, cfg, local_loss, at_start, at_end)
        )
        if progress is not None:
            progress(r, rows[-1])
    return {
        "metrics": {m: np.array([row[m] for row in rows], dtype=np.float64) for m in METRICS},
        "participation": chosen,
        "client_sizes": np.array(sizes, dtype=np.int64),
        "label_counts": label_counts(labels, parts, data.num_classes),
        "final_state": _state(global_model),
    }


def _evaluate(
    model: nn.Module,
    test: Split,
    train: Split,
    cfg: FederatedConfig,
    local_loss: float,
    at_start: float,
    at_end: float,
) -> dict[str, float]:
    """The metrics of one round (see :data:`METRICS`)."""
    test_loss, test_acc = evaluate_split(model, test, cfg.eval_batch_size)
    train_loss, train_acc = evaluate_split(model, train, cfg.eval_batch_size)
    return {
        "test/accuracy": test_acc,
        "test/loss": test_loss,
        "train/accuracy": train_acc,
        "train/loss": train_loss,
        "local/loss": local_loss,
        "sign_consistency/start": float(at_start),
        "sign_consistency/aggregate": float(at_end),
    }


def run_federated(
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    model: Mapping[str, Any],
    out: str | Path,
    device: str = "auto",
) -> dict[str, Any]:
    """Runs one (dataset, alpha, algorithm, seed) of the ``federated`` block and writes it.

    ``spec`` is :func:`landscape.config.federated_spec`: the run's settings plus ``dataset`` and
    ``model`` (config keys); ``dataset`` and ``model`` are those blocks. The HDF5 file (kind
    ``federated``) holds the scale ``round`` (0..R) with one dataset per metric of
    :data:`METRICS`, ``participation`` (round 1..R x client), ``clients/sizes`` and
    ``clients/label_counts``; attributes ``dataset``, ``algorithm``, ``alpha``, ``seed``,
    ``final_test_accuracy``.

    Raises:
        ValueError: For an engine not in :data:`ENGINES`.
    """
    cfg = FederatedConfig.from_spec(spec)
    dev = resolve_device(device)
    data = load_data(dataset, dev, key=f"datasets.{spec['dataset']}")

    def build() -> nn.Module:
        net = build_model(model, data.num_classes, data.input_shape, key=f"models.{spec['model']}")
        return net.to(dev)

    def progress(r: int, row: dict[str, float]) -> None:
        log.info("round %d: %s", r, {k: round(v, 4) for k, v in row.items()})

    if cfg.engine != "inprocess":
        raise ValueError(f"federated.engine: {cfg.engine!r} is not one of {list(ENGINES)}")
    result = simulate(cfg, data, build, progress)
    write_result(out, spec, result)
    return result


def write_result(out: str | Path, spec: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """Writes :func:`simulate`'s result as the run's HDF5 artifact (see :func:`run_federated`)."""
    metrics = result["metrics"]
    attrs = {
        "dataset": spec["dataset"],
        "algorithm": spec["algorithm"],
        "alpha": float(spec["alpha"]),
        "seed": int(spec["seed"]),
        "final_test_accuracy": float(metrics["test/accuracy"][-1]),
    }
    with store.create(out, kind="federated", spec=spec, attrs=attrs) as w:
        rounds = len(metrics["test/accuracy"])
        w.scale("round", np.arange(rounds, dtype=np.int64))
        w.scale("client", np.arange(len(result["client_sizes"]), dtype=np.int64))
        w.scale("class", np.arange(result["label_counts"].shape[1], dtype=np.int64))
        w.scale("participation_round", np.arange(1, rounds, dtype=np.int64))
        for name, values in metrics.items():
            w.put(name, values, dims=("round",))
        w.put("participation", result["participation"], dims=("participation_round", "client"))
        w.put("clients/sizes", result["client_sizes"], dims=("client",))
        w.put("clients/label_counts", result["label_counts"], dims=("client", "class"))
