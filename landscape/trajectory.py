"""Training trajectories: a run's checkpoints projected onto the plane of a surface, drawn over
its contours (tomgoldstein/loss-landscape's ``plot_trajectory.py``).

The plane is that of a surface whose two directions are the ``pca`` directions of the run
(:mod:`landscape.directions.pca`), made at the surface's checkpoint ``theta``. The trajectory
artifact holds, on the ``epoch`` scale (every projected checkpoint, ``theta``'s included):

- ``coordinates/x``, ``coordinates/y``: least-squares coordinates of ``theta_E - theta`` in the
  directions' lambda units (:func:`landscape.directions.pca.project`; ``theta`` at ``(0, 0)``);
- ``distance``: ``||theta_E - theta||``; ``residual``: the norm of its part off the plane;

and as attributes the directions' ``explained_variance`` and ``explained_variance_ratio`` (of
both components, from the x direction file) and ``plane_fraction``, the share of the
trajectory's total variance (the centred rows) that the two components explain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from landscape import store
from landscape.directions.base import trainable
from landscape.directions.pca import project
from landscape.train import load_model


def _direction(path: str | Path) -> dict[str, torch.Tensor]:
    return {n: torch.as_tensor(v) for n, v in store.open(path).tensors().items()}


def compute_trajectory(
    checkpoint: str | Path,
    directions: Sequence[str | Path],
    checkpoints: Mapping[int, str | Path],
    out: str | Path,
    spec: Mapping,
) -> None:
    """Writes the projection of a run's checkpoints onto the plane of two direction files.

    Args:
        checkpoint: The checkpoint ``theta`` the directions were made at.
        directions: The x and y direction files.
        checkpoints: Epoch -> checkpoint of every point of the trajectory (``theta``'s may be
            among them; it lands at ``(0, 0)``).
        out: The ``.h5`` file.
        spec: Provenance: the surface's directions and the epochs projected.
    """
    model, meta = load_model(checkpoint, "cpu")
    theta = trainable(model)
    epochs = sorted(int(e) for e in checkpoints)
    states = [store.read_checkpoint(checkpoints[e])["model"] for e in epochs]
    x_art = store.open(directions[0])
    coords, distance, residual = project(theta, states, [_direction(p) for p in directions])
    attrs = {"run": meta["run"], "epoch": meta["epoch"]}
    for key in ("explained_variance", "explained_variance_ratio"):
        if key in x_art.attrs:
            attrs[key] = np.asarray(x_art.attrs[key], dtype=np.float64).reshape(-1)
    if "explained_variance_ratio" in attrs:
        attrs["plane_fraction"] = float(np.sum(attrs["explained_variance_ratio"][:2]))
    inputs = {"checkpoint": checkpoint, "x": directions[0], "y": directions[1]}
    inputs |= {f"epoch{e}": checkpoints[e] for e in epochs}
    with store.create(out, kind="trajectory", spec=spec, inputs=inputs, attrs=attrs) as w:
        w.scale("epoch", np.asarray(epochs, dtype=np.int64))
        w.put("coordinates/x", coords[:, 0].numpy(), dims=("epoch",))
        w.put("coordinates/y", coords[:, 1].numpy(), dims=("epoch",))
        w.put("distance", distance.numpy(), dims=("epoch",))
        w.put("residual", residual.numpy(), dims=("epoch",))
