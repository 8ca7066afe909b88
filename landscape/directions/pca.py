"""Trajectory directions (kind ``pca``): principal components of a run's checkpoints, and the
projection of those checkpoints onto a plane (tomgoldstein/loss-landscape's ``projection.py``).

The trajectory is the sequence of a run's checkpoints ``theta_E``; the direction is made at one of
them, ``theta`` (usually the final one). The rows of the trajectory matrix are the flat differences
``theta_E - theta`` over the trainable parameters, ``theta``'s own (zero) row included, as
loss-landscape includes the final model among its ``model_files``. The components are those of
scikit-learn's ``PCA`` that loss-landscape fits: the right singular vectors of the row-centred
matrix (unit vectors, orthogonal), the explained variance ``s_i^2 / (m - 1)`` and its ratio to the
total variance of the ``m`` rows. Differences from loss-landscape:

- The sign of a component is fixed (its entry of largest magnitude is positive, as scikit-learn's
  ``svd_flip`` does), so the same checkpoints give the same direction on every machine.
- ``bias_bn: zero`` (loss-landscape's ``ignore='biasbn'``) drops the one-dimensional tensors
  (biases, BN weights and biases) *before* the decomposition, so the components stay unit vectors
  and orthogonal; zeroing them afterwards would not.
- Checkpoints are projected by least squares onto the two stored direction files
  (:func:`project`): ``theta_E - theta ~ x u + y v``, so the coordinates are in the surface's own
  lambda units for any directions, not only for orthonormal ones (loss-landscape's default
  ``cos`` projection ``<d, u> / ||u||`` is off by ``||u||`` otherwise), and ``theta`` itself is at
  ``(0, 0)``.
- Only trainable parameters enter (BN running statistics are no parameters; loss-landscape's
  ``states`` variant mixes them in, including the integer ``num_batches_tracked``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from landscape.directions.base import Direction, Request, aligned, register

TRAJECTORY_ROLE = "trajectory_"


class Components(NamedTuple):
    """Principal components of a trajectory matrix.

    Attributes:
        vectors: ``(k, n)`` float64 unit rows, orthogonal.
        explained_variance: ``(k,)`` ``s_i^2 / (m - 1)``.
        explained_variance_ratio: ``(k,)`` each over the total variance of the rows.
        singular_values: ``(k,)`` of the centred matrix.
    """

    vectors: Tensor
    explained_variance: Tensor
    explained_variance_ratio: Tensor
    singular_values: Tensor


def trajectory_matrix(
    theta: Mapping[str, Tensor],
    checkpoints: Sequence[Mapping[str, Tensor]],
    skip_1d: bool = False,
) -> Tensor:
    """The rows ``theta_E - theta`` (float64, flat over ``theta``'s names), ``theta``'s zero row
    first.

    Args:
        theta: The parameters the direction is made at.
        checkpoints: The other checkpoints' tensors (state dicts; only ``theta``'s names read).
        skip_1d: Zero the tensors of at most one dimension (``bias_bn: zero``).

    Raises:
        ValueError: if a checkpoint lacks a parameter or has it in another shape.
    """
    rows = [torch.zeros(sum(t.numel() for t in theta.values()), dtype=torch.float64)]
    for i, other in enumerate(checkpoints):
        ref = aligned(other, theta, f"trajectory checkpoint {i}")
        parts = [
            torch.zeros(t.numel(), dtype=torch.float64)
            if skip_1d and t.dim() <= 1
            else (ref[n].double() - t.double()).reshape(-1).cpu()
            for n, t in theta.items()
        ]
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def principal_components(matrix: Tensor, k: int = 2) -> Components:
    """The first ``k`` principal components of the rows of ``matrix`` (centred, float64).

    Raises:
        ValueError: for fewer than ``k + 1`` rows (``m`` centred rows span at most ``m - 1``
            dimensions) or a trajectory with fewer than ``k`` independent moves.
    """
    m = matrix.shape[0]
    if m < k + 1:
        raise ValueError(
            f"pca: {m} checkpoints (theta's included) span at most {m - 1} dimensions; "
            f"{k} components need at least {k + 1} checkpoints"
        )
    centred = matrix.double() - matrix.double().mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    if s[k - 1] <= 1e-12 * max(float(s[0]), 1e-300):
        raise ValueError(f"pca: the checkpoints move along fewer than {k} independent directions")
    variance = s.pow(2) / (m - 1)
    vectors = vh[:k].clone()
    for row in vectors:  # scikit-learn's svd_flip: the largest entry of each component positive
        if row[row.abs().argmax()] < 0:
            row.neg_()
    return Components(vectors, variance[:k], variance[:k] / variance.sum(), s[:k])


def as_direction(vector: Tensor, like: Mapping[str, Tensor]) -> Direction:
    """A flat vector cut into the names and shapes of ``like``, in its dtypes and devices."""
    out: Direction = {}
    start = 0
    for name, t in like.items():
        part = vector[start : start + t.numel()].view(t.shape)
        out[name] = part.to(device=t.device, dtype=t.dtype)
        start += t.numel()
    return out


def trajectory_references(references: Mapping[str, Mapping[str, Tensor]] | None) -> list:
    """The checkpoints of a ``pca`` request: the references whose role starts with
    ``trajectory_``, ordered by the epoch that follows (``trajectory_10`` -> 10)."""
    roles = [r for r in (references or {}) if r.startswith(TRAJECTORY_ROLE)]
    roles.sort(key=lambda r: int(r[len(TRAJECTORY_ROLE) :]))
    return [references[r] for r in roles]


@register("pca")
def _build(request: Request) -> Direction:
    spec = request.spec
    component = int(spec.get("component", 1))
    checkpoints = trajectory_references(request.references)
    if not checkpoints:
        raise ValueError("kind 'pca': needs references['trajectory_<epoch>'] (the checkpoints)")
    skip_1d = spec.get("bias_bn", "raw") == "zero"
    matrix = trajectory_matrix(request.params, checkpoints, skip_1d)
    pcs = principal_components(matrix, max(2, component))
    request.record.update(pca_record(pcs, component, len(checkpoints) + 1))
    return as_direction(pcs.vectors[component - 1], request.params)


def pca_record(pcs: Components, component: int, count: int) -> dict[str, Any]:
    """What a ``pca`` direction file records: the component, the number of checkpoints and the
    explained variance (and ratio, singular values) of every computed component."""
    return {
        "component": component,
        "num_checkpoints": count,
        "explained_variance": pcs.explained_variance.tolist(),
        "explained_variance_ratio": pcs.explained_variance_ratio.tolist(),
        "singular_values": pcs.singular_values.tolist(),
    }


def project(
    theta: Mapping[str, Tensor],
    checkpoints: Sequence[Mapping[str, Tensor]],
    directions: Sequence[Mapping[str, Tensor]],
) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares coordinates of every ``theta_E - theta`` in the plane of the directions.

    Solves ``min_c ||sum_i c_i d_i - (theta_E - theta)||`` in float64 for each checkpoint.

    Returns:
        ``(coords (m, k), distance (m,), residual (m,))``: the coordinates, ``||theta_E - theta||``
        and the norm of the part of it off the plane.

    Raises:
        ValueError: if the directions are linearly dependent or a checkpoint lacks a parameter.
    """
    basis = torch.stack(
        [torch.cat([d[n].double().reshape(-1).cpu() for n in theta]) for d in directions], 1
    )
    if torch.linalg.matrix_rank(basis) < basis.shape[1]:
        raise ValueError("project: the directions are linearly dependent (no plane)")
    diffs = trajectory_matrix(theta, checkpoints)[1:].T  # (n, m)
    coords = torch.linalg.lstsq(basis, diffs, driver="gelsd").solution
    residual = (basis @ coords - diffs).norm(dim=0)
    return coords.T, diffs.norm(dim=0), residual
