"""Seeded Dirichlet label skew: which training samples each federated client holds.

:func:`dirichlet_split` follows the split of NIID-Bench and MOON (Li et al., 2021/2022): for each
class ``c`` a share vector ``p_c ~ Dir(alpha * 1_K)`` over the ``K`` clients is drawn, clients
that already hold at least ``N / K`` samples get share 0 for the remaining classes (so no client
takes most of the data), and the samples of class ``c`` (in a seeded random order) are cut at the
cumulative shares. The whole draw is repeated until every client holds at least ``min_size``
samples. A large ``alpha`` gives every client about ``1 / K`` of each class; a small one gives
each client a few classes, often one.

>>> parts = dirichlet_split(np.repeat(np.arange(2), 10), num_clients=2, alpha=100.0, seed=0)
>>> [len(p) for p in parts], sorted(np.concatenate(parts).tolist()) == list(range(20))
([10, 10], True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_DRAWS", "dirichlet_split", "label_counts"]

MAX_DRAWS = 1000


def dirichlet_split(
    labels: Sequence[int] | np.ndarray,
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Positions of ``labels`` per client under Dirichlet(``alpha``) label skew.

    Args:
        labels: The class label of every training sample.
        num_clients: Number of clients ``K``.
        alpha: Concentration of the per-class Dirichlet over clients (> 0).
        seed: Seed of numpy's default generator; the same seed gives the same split.
        min_size: Fewest samples a client may hold; draws are repeated until it holds.

    Returns:
        ``K`` sorted int64 arrays that partition ``range(len(labels))``.

    Raises:
        ValueError: For a non-positive ``alpha`` or ``num_clients``, more clients times
            ``min_size`` than samples, or no draw within :data:`MAX_DRAWS` meeting ``min_size``
            (the message names ``federated.min_client_size``).
    """
    labels = np.asarray(labels).reshape(-1)
    total = labels.size
    if num_clients < 1:
        raise ValueError(f"federated.clients: must be at least 1, got {num_clients}")
    if not alpha > 0:
        raise ValueError(f"federated.alphas: the Dirichlet alpha must be > 0, got {alpha}")
    if num_clients * min_size > total:
        raise ValueError(
            f"federated.min_client_size: {num_clients} clients of at least {min_size} samples "
            f"need {num_clients * min_size}, but the training split has {total}"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(MAX_DRAWS):
        parts = _draw(labels, classes, num_clients, alpha, rng)
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"federated.min_client_size: no Dirichlet(alpha={alpha}) split of {total} samples over "
        f"{num_clients} clients gave every client {min_size} samples in {MAX_DRAWS} draws; "
        "lower min_client_size or the number of clients"
    )


def _draw(
    labels: np.ndarray,
    classes: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[list[int]]:
    """One draw of the split (see the module docstring), without the ``min_size`` check."""
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    cap = labels.size / num_clients
    for c in classes:
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        shares = shares * np.array([len(p) < cap for p in parts])
        if shares.sum() == 0:  # every client is full: spread this class by the raw draw
            shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares / shares.sum()) * members.size).astype(np.int64)[:-1]
        for part, chunk in zip(parts, np.split(members, cuts), strict=True):
            part.extend(chunk.tolist())
    return parts


def label_counts(
    labels: Sequence[int] | np.ndarray, parts: Sequence[np.ndarray], num_classes: int
) -> np.ndarray:
    """Samples of each class per client: a ``(clients, num_classes)`` int64 matrix.

    >>> label_counts([0, 1, 1, 2], [np.array([0, 1]), np.array([2, 3])], 3).tolist()
    [[1, 1, 0], [0, 1, 1]]
    """
    labels = np.asarray(labels).reshape(-1)
    return np.stack(
        [np.bincount(labels[p], minlength=num_classes)[:num_classes] for p in parts]
    ).astype(np.int64)
