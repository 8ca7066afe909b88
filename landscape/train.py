"""Deterministic SGD training, resumable from any checkpoint.

A run's checkpoints form a chain: epoch 0 is the seeded initialization, and every later checkpoint
continues training from the previous one. Each checkpoint carries the optimizer state and the
history so far, and the data order of epoch ``e`` depends only on ``(seed, e)``, so training
0 -> 10 -> 30 in two segments gives bitwise the same weights as 0 -> 30 in one. The learning rate
of the cosine schedule depends on ``epochs``, so changing ``epochs`` changes every checkpoint after
epoch 0; the kept ``checkpoints`` change no weights. A checkpoint's bytes depend only on its
content (see :func:`landscape.store.write_checkpoint`).

Options for paper scale, each off by default and left out of a run's spec when off (so
existing runs retrain nothing): ``augment`` of a CIFAR/SVHN dataset (random crop and
flip of the training batches on the device, from a generator of ``(seed, epoch)`` of its own,
see :mod:`landscape.augment`), ``train.precision: bf16`` (autocast around forward and loss),
``train.channels_last`` and ``train.eval_every`` (the history's evaluation every n-th epoch).
An epoch waits for the device once, at its end: the data order moves to the device once, and
the loss is summed there.

A run with ``train.init`` (fine-tuning) starts at epoch 0 from the parameters and buffers (BN
running statistics) of another run's checkpoint instead of a seeded initialization; its optimizer
starts fresh (no momentum), and its schedule and data order are its own.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape import store
from landscape.augment import CropFlip
from landscape.data import DataBundle, Split, load_data
from landscape.models import build_model
from landscape.sgd import SGD

log = logging.getLogger(__name__)


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` block of a run (see ``schemas/config.schema.yaml``)."""

    epochs: int = 20
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    seed: int = 0
    checkpoints: tuple[int, ...] = (0,)
    eval_batch_size: int = 1024
    init: Mapping[str, Any] | None = None
    precision: str = "fp32"
    channels_last: bool = False
    eval_every: int = 1

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> TrainConfig:
        """Builds the config from a spec dict, rejecting unknown keys.

        Raises:
            ValueError: for an unknown key or a checkpoint epoch beyond ``epochs``.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"train: unknown key(s) {unknown}; known: {sorted(known)}")
        values = dict(spec)
        for key in ("milestones", "checkpoints"):
            if key in values:
                values[key] = tuple(values[key])
        cfg = cls(**values)
        late = [e for e in cfg.checkpoints if e > cfg.epochs]
        if late:
            raise ValueError(f"train.checkpoints: epochs {late} exceed train.epochs={cfg.epochs}")
        if cfg.schedule not in ("constant", "cosine", "step"):
            raise ValueError(f"train.schedule: unknown schedule {cfg.schedule!r}")
        if cfg.precision not in PRECISIONS:
            raise ValueError(
                f"train.precision: unknown precision {cfg.precision!r} ({', '.join(PRECISIONS)})"
            )
        if not isinstance(cfg.channels_last, bool):
            raise ValueError(
                f"train.channels_last: expected true or false, got {cfg.channels_last!r}"
            )
        every = cfg.eval_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"train.eval_every: expected an integer >= 1, got {every!r}")
        if cfg.init is not None:
            _check_init(cfg.init)
        return cfg


PRECISIONS = ("fp32", "bf16")


_INIT_KEYS = ("run", "epoch", "spec")


def _check_init(init: Any) -> None:
    """Rejects a ``train.init`` that is not ``{run: name, epoch: final | int[, spec: {...}]}``."""
    if not isinstance(init, Mapping) or "run" not in init:
        raise ValueError(f"train.init: expected {{run: <run>, epoch: final | <int>}}, got {init!r}")
    unknown = sorted(set(init) - set(_INIT_KEYS))
    if unknown:
        raise ValueError(f"train.init: unknown key(s) {unknown}; known: {list(_INIT_KEYS)}")
    epoch = init.get("epoch", "final")
    if epoch != "final" and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        raise ValueError(f"train.init.epoch: expected 'final' or an epoch >= 0, got {epoch!r}")


def checkpoint_epochs(cfg: TrainConfig) -> list[int]:
    """The epochs at which a run keeps checkpoints: the configured ones plus 0 and the last.

    >>> checkpoint_epochs(TrainConfig(epochs=30, checkpoints=(10,)))
    [0, 10, 30]
    """
    return sorted(set(cfg.checkpoints) | {0, cfg.epochs})


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate used while training epoch ``epoch`` (0-based).

    >>> learning_rate(TrainConfig(lr=0.1, schedule="step", milestones=(2,), gamma=0.5), 2)
    0.05
    """
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * epoch / max(cfg.epochs, 1)))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for the data order of one epoch, independent of all other epochs."""
    return _generator(seed, epoch)


def augment_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for the augmentation of one epoch, independent of its data order."""
    return _generator(seed, epoch, 1)


def _generator(*entropy: int) -> torch.Generator:
    state = np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def resolve_device(name: str) -> torch.device:
    """Maps the config's ``device`` (auto/cpu/cuda) to a torch device.

    Raises:
        ValueError: if CUDA is asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch.cuda.is_available() is False")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device: unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)


@torch.no_grad()
def evaluate_split(model: nn.Module, split: Split, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split, weighted per sample."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=_device_of(model))
    correct = torch.zeros((), dtype=torch.int64, device=loss_sum.device)
    for x, y in split.batches(batch_size):
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    n = len(split)
    return loss_sum.item() / n, correct.item() / n


def train_epoch(
    model: nn.Module,
    optimizer: SGD,
    split: Split,
    cfg: TrainConfig,
    epoch: int,
    augment: CropFlip | None = None,
) -> float:
    """One epoch of SGD; returns the mean training loss seen during the epoch (may be NaN).

    ``augment`` crops and flips each training batch with the numbers drawn for the epoch from
    :func:`augment_generator`, indexed by the sample's position in the epoch's order. With
    ``cfg.precision == "bf16"`` forward and loss run under bf16 autocast; with
    ``cfg.channels_last`` 4-D batches are made channels-last (the model should be too). The only
    wait for the device is the returned loss, at the end.
    """
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(cfg, epoch)
    model.train()
    device = _device_of(model)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    augment_batch = None
    if augment is not None:
        augment_batch = augment.for_epoch(len(split), augment_generator(cfg.seed, epoch), device)
    seen = 0
    for x, y in split.batches(
        cfg.batch_size, shuffle=True, generator=epoch_generator(cfg.seed, epoch)
    ):
        size = y.shape[0]
        if augment_batch is not None:
            x = augment_batch(x, seen)
        if cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(cfg.precision, device):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().double() * size
        seen += size
    return loss_sum.item() / max(seen, 1)


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision == "bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(
    model_spec: Mapping[str, Any],
    data: DataBundle,
    cfg: TrainConfig,
    device: torch.device,
    key: str = "model",
) -> nn.Module:
    """The seeded initialization of a run's model on ``device``, channels-last if configured."""
    torch.manual_seed(cfg.seed)
    model = build_model(model_spec, data.num_classes, data.input_shape, key=key).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def time_epoch(
    model_spec: Mapping[str, Any],
    data: DataBundle,
    cfg: TrainConfig,
    device: str | torch.device = "cpu",
    *,
    epochs: int = 1,
    warmup: int = 1,
) -> float:
    """Seconds per training epoch of ``model_spec`` on ``data`` with ``cfg``, as training runs it.

    Trains a fresh model ``warmup`` epochs untimed (kernel selection, allocator, caches), then
    ``epochs`` epochs timed (epochs ``warmup`` on of the schedule, with the bundle's ``augment``);
    returns the mean. The per-epoch history evaluation of a run is not included.
    """
    dev = torch.device(device)
    model = prepare_model(model_spec, data, cfg, dev)
    optimizer = make_optimizer(model, cfg)
    for e in range(warmup):
        train_epoch(model, optimizer, data.train, cfg, e, augment=data.augment)
    _synchronize(dev)
    start = time.perf_counter()
    for e in range(warmup, warmup + epochs):
        train_epoch(model, optimizer, data.train, cfg, e, augment=data.augment)
    _synchronize(dev)
    return (time.perf_counter() - start) / max(epochs, 1)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> SGD:
    """SGD with momentum and weight decay on every parameter (:class:`landscape.sgd.SGD`:
    torch.optim.SGD's update and checkpoint state without torch.optim's start-up cost)."""
    return SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )


def history_due(cfg: TrainConfig, done: int, checkpoint: int) -> bool:
    """Whether the history gets a row after ``done`` epochs: at epoch 0, every ``eval_every``-th
    epoch and the epoch of the checkpoint being written.

    >>> [e for e in range(11) if history_due(TrainConfig(epochs=10, eval_every=4), e, 10)]
    [0, 4, 8, 10]
    """
    return done % cfg.eval_every == 0 or done == checkpoint


def history_row(model: nn.Module, data: DataBundle, cfg: TrainConfig, epoch: int) -> dict:
    """Train/test loss and accuracy of the model after ``epoch`` epochs."""
    train_loss, train_acc = evaluate_split(model, data.train, cfg.eval_batch_size)
    test_loss, test_acc = evaluate_split(model, data.test, cfg.eval_batch_size)
    return {
        "epoch": epoch,
        "lr": learning_rate(cfg, max(epoch - 1, 0)),
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
    }


def train_model(
    out: str | Path,
    spec: Mapping[str, Any],
    epoch: int,
    previous: str | Path | None = None,
    device: str = "auto",
    init: str | Path | None = None,
) -> dict:
    """Writes the checkpoint of ``spec['run']`` at ``epoch``, continuing from ``previous``.

    Args:
        out: checkpoint path to write (atomically).
        spec: ``{"run": name, "dataset": {...}, "model": {...}, "train": {...}}``.
        epoch: the epoch of the checkpoint to write; 0 is the initialization.
        previous: checkpoint of an earlier epoch of the same run (required for ``epoch > 0``).
        device: ``auto``, ``cpu`` or ``cuda``.
        init: for epoch 0 of a run with ``train.init``, the checkpoint it names (see
            :func:`load_init`); recorded as ``inputs.init`` of the checkpoint.

    Returns:
        The checkpoint dict that was saved.

    Raises:
        DivergenceError: if the training loss becomes NaN or infinite; names run and epoch.
        ValueError: for an inconsistent chain of checkpoints, or an ``init`` checkpoint that is
            not the one ``train.init`` names (the message names ``runs.<run>.train.init``).
    """
    run = spec["run"]
    cfg = TrainConfig.from_spec(spec["train"])
    if init is not None and epoch != 0:
        raise ValueError(f"runs.{run}.train.init: read only at epoch 0, not at epoch {epoch}")
    dev = resolve_device(device)
    data = load_data(spec["dataset"], dev, key=f"datasets.{spec['dataset_name']}")
    model = prepare_model(spec["model"], data, cfg, dev, key=f"models.{spec['model_name']}")
    optimizer = make_optimizer(model, cfg)
    if epoch == 0:
        if cfg.init is not None or init is not None:
            load_init(model, spec, init, data)
        start, history = 0, [history_row(model, data, cfg, 0)]
    else:
        if previous is None:
            raise ValueError(f"run '{run}': epoch {epoch} needs a previous checkpoint")
        state = store.read_checkpoint(previous)
        start, history = state["meta"]["epoch"], list(state["meta"]["history"])
        if start >= epoch:
            raise ValueError(f"run '{run}': previous checkpoint {previous} is at epoch {start}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    for e in range(start, epoch):
        train_loss = train_epoch(model, optimizer, data.train, cfg, e, augment=data.augment)
        if not math.isfinite(train_loss):
            raise DivergenceError(
                f"run '{run}': training loss became {train_loss} in epoch {e + 1} "
                f"(lr={learning_rate(cfg, e)}); no checkpoint written for epoch {epoch}"
            )
        if history_due(cfg, e + 1, epoch):
            history.append(history_row(model, data, cfg, e + 1))
            log.info("run %s epoch %d: %s", run, e + 1, history[-1])
        else:
            log.info("run %s epoch %d: train loss seen %.6g", run, e + 1, train_loss)
    checkpoint = {
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "optimizer": _to_cpu(optimizer.state_dict()),
        "meta": {
            "kind": "checkpoint",
            "schema_version": store.SCHEMA_VERSION,
            "inputs": _inputs(previous, init),
            "run": run,
            "epoch": epoch,
            "spec": dict(spec),
            "num_classes": data.num_classes,
            "input_shape": list(data.input_shape),
            "history": history,
            "versions": store.versions(),
        },
    }
    store.write_checkpoint(checkpoint, out)
    return checkpoint


def load_init(
    model: nn.Module, spec: Mapping[str, Any], source: str | Path | None, data: DataBundle
) -> None:
    """Sets every parameter and buffer of ``model`` to those of the checkpoint ``source``.

    ``source`` must be the checkpoint that ``spec["train"]["init"]`` names: its run, its epoch
    (``final``: the source run's last), its spec when ``init`` records one (the workflow's
    :func:`landscape.config.run_spec` does), and the same model on data of the same shape.

    Raises:
        ValueError: naming ``runs.<run>.train.init``, for a missing or mismatching checkpoint.
    """
    run, wanted = spec["run"], spec["train"].get("init")
    if wanted is None:
        raise ValueError(f"run '{run}': a checkpoint to start from was given, but no train.init")
    key = f"runs.{run}.train.init"
    epoch = wanted.get("epoch", "final")
    if source is None:
        raise ValueError(
            f"{key}: epoch 0 starts from the checkpoint of run '{wanted['run']}' at epoch "
            f"{epoch}, but none was given"
        )
    state = store.read_checkpoint(source)
    meta = state["meta"]
    final = meta["spec"]["train"]["epochs"]
    if meta["run"] != wanted["run"] or meta["epoch"] != (final if epoch == "final" else epoch):
        raise ValueError(
            f"{key}: {source} is the checkpoint of run '{meta['run']}' at epoch {meta['epoch']}, "
            f"not of run '{wanted['run']}' at epoch {epoch}"
        )
    if "spec" in wanted and store.canonical_json(meta["spec"]) != store.canonical_json(
        wanted["spec"]
    ):
        raise ValueError(
            f"{key}: {source} was trained with another spec than run '{wanted['run']}' has now "
            "(train it again first)"
        )
    theirs = (_architecture(meta["spec"]), meta["num_classes"], list(meta["input_shape"]))
    ours = (_architecture(spec), data.num_classes, list(data.input_shape))
    if store.canonical_json(theirs) != store.canonical_json(ours):
        raise ValueError(
            f"{key}: the model of run '{wanted['run']}' (model, classes, input shape = {theirs}) "
            f"differs from this run's ({ours}); fine-tuning needs the same architecture"
        )
    model.load_state_dict(state["model"])


def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuilds the model of a checkpoint from its own metadata; returns ``(model, meta)``."""
    state = store.read_checkpoint(checkpoint)
    meta = state["meta"]
    spec = meta["spec"]
    # The checkpoint holds every tensor: pretrained weights need not be read again.
    model_spec = {k: v for k, v in spec["model"].items() if k != "weights"}
    model = build_model(
        model_spec,
        meta["num_classes"],
        tuple(meta["input_shape"]),
        key=f"models.{spec['model_name']}",
    )
    model.load_state_dict(state["model"])
    return model.to(device).eval(), meta


def _architecture(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A run spec's model block without pretrained ``weights`` (which only initialize it)."""
    return {k: v for k, v in spec["model"].items() if k != "weights"}


def _inputs(previous: str | Path | None, init: str | Path | None) -> dict:
    """A checkpoint's recorded inputs: the one it continues from, or at epoch 0 its ``init``."""
    if init is not None:
        return {"init": _provenance(init)}
    return {"previous": _provenance(previous)} if previous else {}


def _provenance(path: str | Path) -> dict[str, str]:
    return {"path": str(path), "sha256": store.sha256_file(path)}


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().contiguous()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def chain(epochs: Iterable[int], epoch: int) -> int | None:
    """The checkpoint epoch that training to ``epoch`` resumes from, or None for epoch 0.

    >>> chain([0, 10, 30], 30), chain([0, 10, 30], 0)
    (10, None)
    """
    earlier = [e for e in epochs if e < epoch]
    return max(earlier) if earlier else None
