"""scikit-learn's digits and its stratified train/test split, without importing scikit-learn.

Importing scikit-learn takes about a second (it imports scipy.stats), more than evaluating a
default curve: every job that loads the digits paid it. The 1797 images ship with scikit-learn as
``sklearn/datasets/data/digits.csv.gz``; :func:`load_digits` reads that file as
``sklearn.datasets.load_digits`` does, and :func:`stratified_split` draws the indices that
``train_test_split(..., test_size=fraction, random_state=seed, stratify=labels)`` returns, step
by step as scikit-learn's ``StratifiedShuffleSplit`` (``tests/test_data.py`` checks both against
scikit-learn).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np


def digits_file() -> Path:
    """The digits CSV of the installed scikit-learn, found without importing it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("scikit-learn is not installed; the digits dataset ships with it")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: 1797 float64 8x8 images with values 0..16, and int64 labels."""
    data = np.loadtxt(digits_file(), delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Draws per class, ``draws`` in all, in proportion to ``counts``; ties broken by ``rng``."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    remainder = continuous - floored
    for value in np.sort(np.unique(remainder))[::-1]:
        if need <= 0:
            break
        (inds,) = np.where(remainder == value)
        add = min(len(inds), need)
        floored[rng.choice(inds, size=add, replace=False)] += 1
        need -= add
    return floored.astype(int)


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: a seeded split with each class in proportion in both parts.

    ``ceil(fraction * n)`` test samples; the same indices, in the same order, as scikit-learn's
    ``train_test_split(np.arange(n), test_size=fraction, random_state=seed, stratify=labels)``.
    """
    n_test = math.ceil(fraction * labels.size)
    n_train = labels.size - n_test
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for members, n, t in zip(by_class, n_i, t_i, strict=True):
        shuffled = members.take(rng.permutation(members.size), mode="clip")
        train.extend(shuffled[:n])
        test.extend(shuffled[n : n + t])
    return rng.permutation(train), rng.permutation(test)
