"""Weight statistics across a run's checkpoints: per-layer norms and histograms with fixed bins
(tomgoldstein/loss-landscape's ``plot_weight_norm.py`` and ``plot_weight_histogram.py``).

For every checkpoint ``E`` of a run and every trainable parameter tensor ``p`` (a "layer"):

- ``norms`` (``epoch`` x ``parameter``): ``||p_E||_2``, in float64; ``total_norm`` (``epoch``):
  the norm of all of them together;
- ``counts`` (``epoch`` x ``parameter`` x ``bin``): how many elements of ``p_E`` fall in each of
  ``bins`` equal bins on ``[-range, range]`` (``numpy.histogram``'s convention: half-open bins,
  the last one closed), the same edges for every epoch and tensor so that counts compare;
  ``underflow`` and ``overflow`` (``epoch`` x ``parameter``) count the elements outside.
  ``range`` null takes the largest ``|w|`` over every checkpoint and tensor, so nothing falls
  outside.

The parameter names are the ``names`` attribute (``parameter`` is their position); the bin edges
the dataset ``bin_edges``, the centres the ``bin`` scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape import store


def trainable_state(checkpoint: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """A checkpoint's trainable parameters (float64 numpy, in ``named_parameters()`` order) and
    its metadata; BN running statistics and other buffers are left out."""
    from landscape.train import load_model

    model, meta = load_model(checkpoint, "cpu")
    params = {
        n: p.detach().to(torch.float64).numpy()
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    return params, meta


def histogram_edges(
    states: Sequence[Mapping[str, np.ndarray]], bins: int, limit: float | None
) -> np.ndarray:
    """``bins + 1`` equal edges on ``[-limit, limit]``; ``limit`` None: the largest ``|w|``.

    Raises:
        ValueError: for ``bins < 1`` or a limit that is not positive.
    """
    if bins < 1:
        raise ValueError(f"weight_stats.bins: must be >= 1, got {bins}")
    if limit is None:
        limit = max(float(np.abs(t).max(initial=0.0)) for s in states for t in s.values())
        limit = limit if limit > 0 else 1.0
    if not limit > 0:
        raise ValueError(f"weight_stats.range: must be > 0, got {limit}")
    return np.linspace(-limit, limit, bins + 1)


def weight_statistics(
    states: Sequence[Mapping[str, np.ndarray]], edges: np.ndarray
) -> dict[str, np.ndarray]:
    """Norms, histogram counts, underflow and overflow of every tensor of every state (see the
    module docstring), all tensors of one state over the same names."""
    names = list(states[0])
    shape = (len(states), len(names))
    out = {
        "norms": np.zeros(shape),
        "counts": np.zeros((*shape, len(edges) - 1), dtype=np.int64),
        "underflow": np.zeros(shape, dtype=np.int64),
        "overflow": np.zeros(shape, dtype=np.int64),
    }
    for e, state in enumerate(states):
        for j, name in enumerate(names):
            values = np.asarray(state[name], dtype=np.float64).reshape(-1)
            out["norms"][e, j] = np.linalg.norm(values)
            out["counts"][e, j] = np.histogram(values, bins=edges)[0]
            out["underflow"][e, j] = int(np.sum(values < edges[0]))
            out["overflow"][e, j] = int(np.sum(values > edges[-1]))
    out["total_norm"] = np.sqrt(np.sum(out["norms"] ** 2, axis=1))
    return out


def compute_weight_stats(
    checkpoints: Mapping[int, str | Path], out: str | Path, spec: Mapping[str, Any]
) -> None:
    """Writes the weight statistics of a run's checkpoints (epoch -> path).

    Args:
        checkpoints: Every checkpoint to describe, by epoch.
        out: The ``.h5`` file.
        spec: ``bins`` (default 50) and ``range`` (default null: the largest ``|w|``).
    """
    epochs = sorted(int(e) for e in checkpoints)
    loaded = [trainable_state(checkpoints[e]) for e in epochs]
    states = [s for s, _ in loaded]
    meta = loaded[-1][1]
    edges = histogram_edges(states, int(spec.get("bins", 50)), spec.get("range"))
    stats = weight_statistics(states, edges)
    names = list(states[0])
    attrs = {"run": meta["run"], "names": names}
    inputs = {f"epoch{e}": checkpoints[e] for e in epochs}
    with store.create(out, kind="weight_stats", spec=spec, inputs=inputs, attrs=attrs) as w:
        w.scale("epoch", np.asarray(epochs, dtype=np.int64))
        w.scale("parameter", np.arange(len(names)))
        w.scale("bin", (edges[:-1] + edges[1:]) / 2)
        w.put("bin_edges", edges)
        w.put("norms", stats["norms"], dims=("epoch", "parameter"))
        w.put("counts", stats["counts"], dims=("epoch", "parameter", "bin"))
        w.put("underflow", stats["underflow"], dims=("epoch", "parameter"))
        w.put("overflow", stats["overflow"], dims=("epoch", "parameter"))
        w.put("total_norm", stats["total_norm"], dims=("epoch",))
