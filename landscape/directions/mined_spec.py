"""The parts of a ``mined`` direction spec that are read without mining: the algorithm names and
where Algorithm 2 starts ``phi`` (:func:`phi_init`, :func:`fresh_initialization`). The kind's
builder, which runs the mining, is :mod:`landscape.directions.mined`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from landscape.directions.base import Direction, choice, trainable
from landscape.models import build_model

ALGORITHMS = ("wpeak", "vvv")
PHI_INITS = ("theta", "init", "run")


def phi_init(spec: Mapping[str, Any]) -> str:
    """Where Algorithm 2 starts ``phi`` (``phi_init`` of a ``mined`` spec): ``theta``, ``init``
    or ``run``.

    ``theta`` (default) starts at the checkpoint itself; ``init`` at a fresh initialization of
    the same model (:func:`fresh_initialization` with ``init_seed``), a point in another basin;
    ``run`` at a checkpoint of another, independently trained run of the same architecture
    (``phi_run``, ``phi_epoch``; the workflow passes it as ``references["phi_init"]``), a
    trained point in another basin.

    Raises:
        ValueError: for an unknown value, or ``init`` with Algorithm 1 (which has no ``phi``).
    """
    start = choice(spec, "phi_init", PHI_INITS, "theta")
    if start != "theta" and spec.get("algorithm", "wpeak") != "vvv":
        raise ValueError(f"phi_init: {start!r} applies to algorithm 'vvv' (Algorithm 2) only")
    return start


def fresh_initialization(meta: Mapping[str, Any], seed: int) -> Direction:
    """The trainable parameters of a fresh initialization of a checkpoint's model.

    The model is built from the checkpoint's own metadata (without a pretrained ``weights``
    file: a random initialization) after ``torch.manual_seed(seed)``, on the CPU, as
    :func:`landscape.train.train_model` builds epoch 0: the result is the epoch-0 checkpoint of a
    run of the same model with ``train.seed = seed``. The global random state is restored.
    """
    spec = meta["spec"]
    model_spec = {k: v for k, v in spec["model"].items() if k != "weights"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(
            model_spec,
            meta["num_classes"],
            tuple(meta["input_shape"]),
            key=f"models.{spec.get('model_name', 'model')}",
        )
    return trainable(model)
