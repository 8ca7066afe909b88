"""Datasets: load one configured dataset into train/test splits ready for iteration.

Small data (digits, CIFAR, SVHN) is held as two tensors on the target device
(:class:`TensorSplit`); batches are index slices, so iteration costs no Python
per-sample work and is identical on CPU and CUDA for a given generator state.
Image-folder data (Flowers-102, CUB-200, CINIC-10, ImageNet) is read lazily
through a :class:`torch.utils.data.DataLoader` (:class:`DatasetSplit`).

Nothing is ever downloaded: paper-scale sources read a local folder ``root``
laid out as torchvision's datasets expect it.

A dataset's ``classes`` keep only the samples of those classes, in both splits, before any
subset is drawn; labels keep their values and ``num_classes`` stays that of the source, so a
model trained on some classes has the head of one trained on all (pre-train, then fine-tune).

Every fixed subset (``max_train``/``max_test``, BN-recompute batches, the Hessian evaluation
set, gradient and mining batches) is :meth:`Split.sample`: a seeded, class-proportional draw
(:func:`stratified_indices`) in a seeded order, never the head of a split, which image folders
sort by class. The seed is the dataset's ``subset_seed`` (:attr:`DataBundle.subset_seed`).

Example:
    >>> bundle = load_data({"source": "digits"}, key="datasets.digits")
    >>> bundle.num_classes, bundle.input_shape, len(bundle.train), len(bundle.test)
    (10, (1, 8, 8), 1347, 450)
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from landscape.augment import CropFlip
from landscape.digits import load_digits, stratified_split
from landscape.source_files import FILES

__all__ = [
    "SOURCES",
    "DataBundle",
    "DatasetError",
    "DatasetSplit",
    "Split",
    "TensorSplit",
    "load_data",
    "stratified_indices",
]

SOURCES: tuple[str, ...] = (
    "digits", "cifar10", "cifar100", "svhn", "flowers102", "imagefolder", "synthetic"
)

# Per-channel normalization constants (mean, std) of the training sets.
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

_FLOWERS_CLASSES = 102


class DatasetError(ValueError):
    """A dataset configuration or its files are wrong; the message names the config key."""


# --------------------------------------------------------------------------- splits


class Split(ABC):
    """One split (train or test) held ready for iteration on a device."""

    device: torch.device

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abstractmethod
    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Iterate over ``(x, y)`` mini-batches already on the split's device.

        Args:
            batch_size: Samples per batch (the last one may be smaller).
            shuffle: Visit samples in the order ``torch.randperm(len(self), generator=generator)``.
            generator: CPU generator driving the shuffle; ``None`` uses the global RNG.
            drop_last: Skip a final batch smaller than ``batch_size``.

        Yields:
            ``(x, y)`` with ``y`` of dtype int64.
        """

    @abstractmethod
    def subset(self, n: int) -> Split:
        """Return a split of the same kind holding the first ``n`` samples.

        Image folders are sorted by class, so the head is a few classes: a fixed subset that
        stands for the split is :meth:`sample`.
        """

    @abstractmethod
    def labels(self) -> np.ndarray:
        """The class label of every sample, in order, as int64 on the CPU (no image is read)."""

    @abstractmethod
    def take(self, indices: np.ndarray) -> Split:
        """Return a split of the same kind holding the samples at ``indices``, in that order."""

    def sample(self, n: int, seed: int) -> Split:
        """A fixed subset of ``n`` samples: :func:`stratified_indices` of the labels.

        Each class keeps its share of the split (within one sample), the samples are in a
        seeded order (consecutive batches mix the classes), and the same ``seed`` gives the
        same subset; ``n >= len(self)`` gives every sample in a seeded order.
        """
        return self.take(stratified_indices(self.labels(), n, seed))


def _check_batch_size(batch_size: int) -> None:
    """Reject a non-positive or non-integer batch size."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _check_subset_size(n: int) -> None:
    """Reject a negative or non-integer subset size."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"subset size must be a non-negative integer, got {n!r}")


def stratified_indices(labels: Sequence[int] | np.ndarray, n: int, seed: int) -> np.ndarray:
    """Positions of a seeded, class-proportional sample of ``n`` of ``labels``, in seeded order.

    Class ``c``, with ``N_c`` of the ``N`` labels, gets ``floor(n N_c / N)`` samples, and the
    classes with the largest remainders one more each (ties broken by the seed), so that every
    count is within one of ``n N_c / N``; the samples of a class are drawn at random. The result
    is then shuffled. ``n >= N`` gives a seeded permutation of all positions.

    Args:
        labels: Integer class labels, one per sample.
        n: Samples to draw.
        seed: Seed of numpy's default generator (PCG64): the same on every platform.

    Returns:
        ``min(n, N)`` distinct positions, int64.

    >>> stratified_indices([0, 0, 0, 0, 1, 1, 1, 1], 4, seed=0).tolist()
    [1, 5, 2, 7]
    """
    _check_subset_size(n)
    labels = np.asarray(labels).reshape(-1)
    total = labels.size
    rng = np.random.default_rng(seed)
    if n >= total:
        return rng.permutation(total).astype(np.int64)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota, remainder = np.divmod(n * counts.astype(np.int64), total)
    short = n - int(quota.sum())
    tie_break = rng.permutation(counts.size)
    quota[np.lexsort((tie_break, -remainder))[:short]] += 1
    by_class = np.lexsort((rng.random(total), inverse))  # each class's samples in random order
    rank = np.empty(total, dtype=np.int64)
    rank[by_class] = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    chosen = np.flatnonzero(rank < quota[inverse])
    return rng.permutation(chosen).astype(np.int64)


def _order(n: int, shuffle: bool, generator: torch.Generator | None) -> Tensor | None:
    """Return the CPU visiting order for ``n`` samples, or ``None`` for the natural order."""
    if not shuffle:
        return None
    return torch.randperm(n, generator=generator)


class TensorSplit(Split):
    """A split held as two tensors on the device; batches are index slices.

    Args:
        x: Inputs, first dimension indexes samples.
        y: Integer class labels, shape ``(N,)``; stored as int64.
        device: Where both tensors live.

    Example:
        >>> s = TensorSplit(torch.arange(5.0).unsqueeze(1), torch.tensor([0, 1, 0, 1, 0]))
        >>> [yb.tolist() for _, yb in s.batches(2)]
        [[0, 1], [0, 1], [0]]
    """

    def __init__(self, x: Tensor, y: Tensor, device: torch.device | str = "cpu") -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(device=self.device, dtype=torch.int64)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return f"TensorSplit(n={len(self)}, x={tuple(self.x.shape)}, device={self.device})"

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """See :meth:`Split.batches`; the permutation is drawn on CPU then moved to the device."""
        _check_batch_size(batch_size)
        n = len(self)
        order = _order(n, shuffle, generator)
        if order is not None:
            order = order.to(self.device)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if drop_last and stop - start < batch_size:
                break
            if order is None:
                yield self.x[start:stop], self.y[start:stop]
            else:
                idx = order[start:stop]
                yield self.x[idx], self.y[idx]

    def subset(self, n: int) -> TensorSplit:
        """Return the first ``n`` samples (all of them if ``n >= len(self)``)."""
        _check_subset_size(n)
        return TensorSplit(self.x[:n], self.y[:n], self.device)

    def labels(self) -> np.ndarray:
        """See :meth:`Split.labels`."""
        return self.y.cpu().numpy()

    def take(self, indices: np.ndarray) -> TensorSplit:
        """See :meth:`Split.take`; the rows are copied."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.device)
        return TensorSplit(self.x[idx], self.y[idx], self.device)


class DatasetSplit(Split):
    """A split read lazily from a map-style dataset through a DataLoader.

    Args:
        dataset: Map-style dataset returning ``(image_tensor, int_label)``.
        device: Where batches are moved (``non_blocking``; memory is pinned on CUDA).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self, dataset: Dataset, device: torch.device | str = "cpu", num_workers: int = 0
    ) -> None:
        self.dataset = dataset
        self.device = torch.device(device)
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"DatasetSplit(n={len(self)}, device={self.device}, num_workers={self.num_workers})"

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """See :meth:`Split.batches`; the shuffled order is passed to the DataLoader as sampler."""
        _check_batch_size(batch_size)
        order = _order(len(self), shuffle, generator)
        loader = DataLoader(
            self.dataset,
            batch_size=batch_size,
            shuffle=False,
            sampler=order.tolist() if order is not None else None,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=drop_last,
        )
        for xb, yb in loader:
            yb = torch.as_tensor(yb, dtype=torch.int64)
            yield xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)

    def subset(self, n: int) -> DatasetSplit:
        """Return the first ``n`` samples (all of them if ``n >= len(self)``)."""
        _check_subset_size(n)
        keep = range(min(n, len(self)))
        return DatasetSplit(Subset(self.dataset, keep), self.device, self.num_workers)

    def labels(self) -> np.ndarray:
        """See :meth:`Split.labels`; see :func:`_dataset_labels` for how they are found."""
        return _dataset_labels(self.dataset)

    def take(self, indices: np.ndarray) -> DatasetSplit:
        """See :meth:`Split.take`; the dataset is wrapped in a Subset."""
        keep = np.asarray(indices, dtype=np.int64).tolist()
        return DatasetSplit(Subset(self.dataset, keep), self.device, self.num_workers)


def _dataset_labels(dataset: Dataset) -> np.ndarray:
    """The labels of a map-style dataset, from its label list where it has one.

    Subsets are followed down; ``labels`` (:class:`_ImageFiles`) and ``targets`` (torchvision's
    ImageFolder) are read without opening an image. Any other dataset is read sample by sample.
    """
    if isinstance(dataset, Subset):
        return _dataset_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    for name in ("labels", "targets"):
        listed = getattr(dataset, name, None)
        size = len(dataset)  # type: ignore[arg-type]
        if isinstance(listed, list | tuple | np.ndarray | Tensor) and len(listed) == size:
            return np.asarray(listed, dtype=np.int64).reshape(-1)
    items = (int(dataset[i][1]) for i in range(len(dataset)))  # type: ignore[arg-type]
    return np.fromiter(items, dtype=np.int64)


@dataclass(frozen=True)
class DataBundle:
    """A loaded dataset: both splits plus what a model needs to know about them.

    ``subset_seed`` (the dataset's config key) seeds every fixed subset drawn from the splits.
    ``augment`` is the crop and flip that training applies to its batches of a tensor source
    (``augment: true``; :func:`landscape.train.train_epoch`), None without; image folders
    augment in their transforms instead.
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    subset_seed: int = 0
    augment: CropFlip | None = None


# --------------------------------------------------------------------------- spec helpers


def _opt_int(spec: Mapping[str, Any], name: str, key: str, minimum: int) -> int | None:
    """Read an optional integer ``spec[name]`` (``None`` allowed) of at least ``minimum``."""
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DatasetError(f"{key}.{name} must be an integer >= {minimum} or null, got {value!r}")
    return value


def _int(spec: Mapping[str, Any], name: str, key: str, default: int, minimum: int) -> int:
    """Read an integer ``spec[name]`` with a default."""
    value = _opt_int(spec, name, key, minimum)
    return default if value is None else value


def _bool(spec: Mapping[str, Any], name: str, key: str, default: bool) -> bool:
    """Read a boolean ``spec[name]`` with a default."""
    value = spec.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise DatasetError(f"{key}.{name} must be true or false, got {value!r}")
    return value


def _root(spec: Mapping[str, Any], key: str, source: str, expected: str) -> Path:
    """Return the existing root folder of a paper-scale source.

    Args:
        spec: The dataset block.
        key: Its config path, for messages.
        source: The source name, for messages.
        expected: Human description of the files expected under the root.
    """
    raw = spec.get("root")
    if raw is None or raw == "":
        raise DatasetError(f"{key}.root is required for source '{source}'")
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"{key}.root: directory {str(root)!r} does not exist "
            f"(source '{source}' expects {expected} there; nothing is downloaded)"
        )
    return root


def _require_file(path: Path, key: str) -> Path:
    """Return ``path`` if it is a file, else raise a DatasetError naming ``key.root``."""
    if not path.is_file():
        raise DatasetError(f"{key}.root: expected file {str(path)!r} is missing")
    return path


def _limits(spec: Mapping[str, Any], key: str) -> tuple[int | None, int | None]:
    """Return ``(max_train, max_test)``."""
    return _opt_int(spec, "max_train", key, 1), _opt_int(spec, "max_test", key, 1)


def _subset_seed(spec: Mapping[str, Any], key: str) -> int:
    """Return ``subset_seed`` (default 0), the seed of every fixed subset of the dataset."""
    return _int(spec, "subset_seed", key, 0, 0)


def _classes(spec: Mapping[str, Any], key: str, num_classes: int) -> np.ndarray | None:
    """Return the ``classes`` to keep as a sorted int64 array, or None (every class).

    Raises:
        DatasetError: not a list of distinct integers in ``[0, num_classes)``; names the key.
    """
    value = spec.get("classes")
    if value is None:
        return None
    where = f"{key}.classes"
    if not isinstance(value, list | tuple):
        raise DatasetError(f"{where}: must be a list of class labels or null, got {value!r}")
    if not value:
        raise DatasetError(f"{where}: must list at least one class (null keeps every class)")
    for label in value:
        if isinstance(label, bool) or not isinstance(label, int | np.integer):
            raise DatasetError(f"{where}: {label!r} is not an integer class label")
        if not 0 <= label < num_classes:
            raise DatasetError(
                f"{where}: class {label} is outside [0, {num_classes}) (the source's labels)"
            )
    twice = sorted({int(c) for c in value if list(value).count(c) > 1})
    if twice:
        raise DatasetError(f"{where}: classes {twice} are listed twice")
    return np.array(sorted(int(c) for c in value), dtype=np.int64)


def _kept(
    labels: np.ndarray, classes: np.ndarray | None, limit: int | None, seed: int
) -> np.ndarray | None:
    """Positions kept by ``classes``, then ``max_train``/``max_test``; None keeps all.

    The samples of ``classes`` stay in stored order; the limit then draws its fixed
    class-proportional sample (:func:`stratified_indices`) from them.
    """
    if classes is None and limit is None:
        return None
    keep = np.arange(labels.size) if classes is None else np.flatnonzero(np.isin(labels, classes))
    if limit is not None:
        keep = keep[stratified_indices(labels[keep], limit, seed)]
    return keep.astype(np.int64)


def _normalize_uint8(images: np.ndarray, stats: tuple[Sequence[float], Sequence[float]]) -> Tensor:
    """Scale ``(N, C, H, W)`` uint8 images to [0, 1] and normalize per channel (float32)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    mean = torch.tensor(stats[0], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(stats[1], dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def _tensor_split(
    images: np.ndarray,
    labels: np.ndarray,
    stats: tuple[Sequence[float], Sequence[float]],
    classes: np.ndarray | None,
    limit: int | None,
    seed: int,
    device: torch.device | str,
) -> TensorSplit:
    """Build a normalized TensorSplit from uint8 images of ``classes`` (:func:`_kept`)."""
    keep = _kept(labels, classes, limit, seed)
    if keep is not None:
        images, labels = images[keep], labels[keep]
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return TensorSplit(_normalize_uint8(images, stats), y, device)


def _crop_flip(
    spec: Mapping[str, Any],
    key: str,
    stats: tuple[Sequence[float], Sequence[float]] | None,
    flip: bool,
) -> CropFlip | None:
    """The training augmentation of a tensor source with ``augment: true``, else None.

    A random crop of the image's size from the image padded by 4 black pixels (torchvision's
    ``RandomCrop(32, padding=4)`` before normalization by ``stats``: the fill is black
    normalized; zeros without ``stats``), then with ``flip`` a random horizontal flip.
    """
    if not _bool(spec, "augment", key, False):
        return None
    if stats is None:
        return CropFlip(pad=4, flip=flip)
    black = tuple(-m / s for m, s in zip(stats[0], stats[1], strict=True))
    return CropFlip(pad=4, flip=flip, fill=black)


# --------------------------------------------------------------------------- digits


def _load_digits(spec: Mapping[str, Any], device: torch.device | str, key: str) -> DataBundle:
    """Load scikit-learn's 8x8 digits with a fixed stratified split, standardized on train.

    The mean and standard deviation are those of the whole training split, whatever ``classes``
    and ``max_train`` keep: the inputs of a run on some classes are those of a run on all.
    """
    fraction = spec.get("test_fraction", 0.25)
    if fraction is None:
        fraction = 0.25
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not 0.0 < float(fraction) < 1.0
    ):
        raise DatasetError(f"{key}.test_fraction must be a number in (0, 1), got {fraction!r}")
    seed = _int(spec, "split_seed", key, 0, 0)
    max_train, max_test = _limits(spec, key)
    subset_seed = _subset_seed(spec, key)
    classes = _classes(spec, key, 10)

    images, labels = load_digits()
    images = images / 16.0
    idx_train, idx_test = stratified_split(labels, float(fraction), seed)
    mean = images[idx_train].mean()
    std = images[idx_train].std()
    images = ((images - mean) / std).astype(np.float32)[:, None, :, :]

    def split(idx: np.ndarray, limit: int | None) -> TensorSplit:
        keep = _kept(labels[idx], classes, limit, subset_seed)
        idx = idx if keep is None else idx[keep]
        x = torch.from_numpy(np.ascontiguousarray(images[idx]))
        return TensorSplit(x, torch.from_numpy(labels[idx]), device)

    return DataBundle(
        "digits", split(idx_train, max_train), split(idx_test, max_test), 10, (1, 8, 8)
    )


# --------------------------------------------------------------------------- CIFAR


def _read_pickle(path: Path, key: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python-pickle batch as ``(N, 3, 32, 32)`` uint8 images and labels."""
    with _require_file(path, key).open("rb") as fh:
        try:
            batch = pickle.load(fh, encoding="bytes")
        except Exception as exc:  # any unpickling failure is a data problem
            raise DatasetError(f"{key}.root: cannot read CIFAR batch {str(path)!r}: {exc}") from exc
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DatasetError(f"{key}.root: {str(path)!r} lacks the keys b'data' and {label_key!r}")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{key}.root: {str(path)!r} has data {data.shape} and {labels.shape[0]} labels; "
            "expected N x 3072 and N labels"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _read_pickles(
    paths: Sequence[Path], key: str, label_key: bytes
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate several CIFAR batches."""
    parts = [_read_pickle(p, key, label_key) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _load_cifar(
    spec: Mapping[str, Any], device: torch.device | str, key: str, source: str
) -> DataBundle:
    """Load CIFAR-10 or CIFAR-100 from torchvision's python-pickle layout under ``root``."""
    sub, train_names, test_name = FILES[source]
    if source == "cifar10":
        label_key, stats, classes = b"labels", _CIFAR10_STATS, 10
    else:
        label_key, stats, classes = b"fine_labels", _CIFAR100_STATS, 100
    expected = f"{sub}/{{{','.join([*train_names, test_name])}}}"
    root = _root(spec, key, source, expected)
    max_train, max_test = _limits(spec, key)
    seed = _subset_seed(spec, key)
    kept_classes = _classes(spec, key, classes)
    folder = root / sub
    x_train, y_train = _read_pickles([folder / n for n in train_names], key, label_key)
    x_test, y_test = _read_pickle(folder / test_name, key, label_key)
    train = _tensor_split(x_train, y_train, stats, kept_classes, max_train, seed, device)
    test = _tensor_split(x_test, y_test, stats, kept_classes, max_test, seed, device)
    augment = _crop_flip(spec, key, stats, flip=True)
    return DataBundle(source, train, test, classes, (3, 32, 32), augment=augment)


# --------------------------------------------------------------------------- SVHN


def _read_svhn(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN ``*_32x32.mat`` file as ``(N, 3, 32, 32)`` uint8 images and 0-9 labels."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(_require_file(path, key)))
    except DatasetError:
        raise
    except Exception as exc:  # any parse failure is a data problem
        raise DatasetError(f"{key}.root: cannot read {str(path)!r}: {exc}") from exc
    if "X" not in mat or "y" not in mat:
        raise DatasetError(f"{key}.root: {str(path)!r} lacks the variables 'X' and 'y'")
    images = np.asarray(mat["X"], dtype=np.uint8)
    labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    if images.ndim != 4 or images.shape[2] != 3 or images.shape[3] != labels.shape[0]:
        raise DatasetError(
            f"{key}.root: {str(path)!r} has X {images.shape} and {labels.shape[0]} labels; "
            "expected 32 x 32 x 3 x N and N labels"
        )
    labels = np.where(labels == 10, 0, labels)
    return np.transpose(images, (3, 2, 0, 1)), labels


def _load_svhn(spec: Mapping[str, Any], device: torch.device | str, key: str) -> DataBundle:
    """Load SVHN (cropped digits) from ``train_32x32.mat`` and ``test_32x32.mat``."""
    (train_name,), test_name = FILES["svhn"][1:]
    root = _root(spec, key, "svhn", f"{train_name} and {test_name}")
    max_train, max_test = _limits(spec, key)
    seed = _subset_seed(spec, key)
    classes = _classes(spec, key, 10)
    x_train, y_train = _read_svhn(root / train_name, key)
    x_test, y_test = _read_svhn(root / test_name, key)
    train = _tensor_split(x_train, y_train, _SVHN_STATS, classes, max_train, seed, device)
    test = _tensor_split(x_test, y_test, _SVHN_STATS, classes, max_test, seed, device)
    augment = _crop_flip(spec, key, _SVHN_STATS, flip=False)  # a flipped digit is another digit
    return DataBundle("svhn", train, test, 10, (3, 32, 32), augment=augment)


# --------------------------------------------------------------------------- image folders


def _transforms(image_size: int, augment: bool) -> tuple[Callable, Callable]:
    """Return ``(train_transform, test_transform)`` with ImageNet normalization."""
    from torchvision import transforms as T

    normalize = T.Normalize(*_IMAGENET_STATS)
    evaluation = T.Compose(
        [
            T.Resize(round(image_size * 256 / 224)),
            T.CenterCrop(image_size),
            T.ToTensor(),
            normalize,
        ]
    )
    if not augment:
        return evaluation, evaluation
    training = T.Compose(
        [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize]
    )
    return training, evaluation


class _ImageFiles(Dataset):
    """Images listed by path with integer labels, read with PIL and converted to RGB."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], transform: Callable) -> None:
        self.files = list(files)
        self.labels = [int(v) for v in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        with Image.open(self.files[index]) as img:
            image = img.convert("RGB")
        return self.transform(image), self.labels[index]


def _image_options(spec: Mapping[str, Any], key: str) -> tuple[int, bool, int]:
    """Return ``(image_size, augment, num_workers)`` of an image-folder source."""
    image_size = _int(spec, "image_size", key, 224, 8)
    augment = _bool(spec, "augment", key, False)
    num_workers = _int(spec, "num_workers", key, 0, 0)
    return image_size, augment, num_workers


def _limited(
    dataset: Dataset, classes: np.ndarray | None, limit: int | None, seed: int
) -> Dataset:
    """Keep the samples of ``classes`` then a fixed sample of ``limit`` (:func:`_kept`)."""
    keep = _kept(_dataset_labels(dataset), classes, limit, seed)
    return dataset if keep is None else Subset(dataset, keep.tolist())


def _mat_ids(path: Path, name: str, key: str) -> np.ndarray:
    """Read the 1-based integer vector ``name`` from a .mat file."""
    from scipy.io import loadmat

    mat = loadmat(str(_require_file(path, key)))
    if name not in mat:
        raise DatasetError(f"{key}.root: {str(path)!r} lacks the variable {name!r}")
    return np.asarray(mat[name], dtype=np.int64).reshape(-1)


def _flowers_split(
    root: Path, ids: np.ndarray, labels: np.ndarray, key: str, transform: Callable
) -> _ImageFiles:
    """Build the dataset of the 1-based image ``ids`` with 0-based labels."""
    if ids.size and (ids.min() < 1 or ids.max() > labels.size):
        raise DatasetError(
            f"{key}.root: setid.mat refers to image ids outside 1..{labels.size} "
            "(the number of entries of imagelabels.mat)"
        )
    files = [root / "jpg" / f"image_{i:05d}.jpg" for i in ids]
    for path in files:
        _require_file(path, key)
    return _ImageFiles(files, (labels[ids - 1] - 1).tolist(), transform)


def _load_flowers(spec: Mapping[str, Any], device: torch.device | str, key: str) -> DataBundle:
    """Load Oxford Flowers-102 from the official ``jpg/``, ``imagelabels.mat``, ``setid.mat``."""
    root = _root(spec, key, "flowers102", "jpg/image_*.jpg, imagelabels.mat and setid.mat")
    max_train, max_test = _limits(spec, key)
    seed = _subset_seed(spec, key)
    classes = _classes(spec, key, _FLOWERS_CLASSES)
    image_size, augment, num_workers = _image_options(spec, key)
    with_val = _bool(spec, "train_with_val", key, False)
    labels = _mat_ids(root / "imagelabels.mat", "labels", key)
    if labels.size and (labels.min() < 1 or labels.max() > _FLOWERS_CLASSES):
        raise DatasetError(f"{key}.root: imagelabels.mat labels must lie in 1..{_FLOWERS_CLASSES}")
    setid = root / "setid.mat"
    train_ids = _mat_ids(setid, "trnid", key)
    if with_val:
        train_ids = np.concatenate([train_ids, _mat_ids(setid, "valid", key)])
    test_ids = _mat_ids(setid, "tstid", key)
    train_tf, test_tf = _transforms(image_size, augment)
    train = _flowers_split(root, train_ids, labels, key, train_tf)
    test = _flowers_split(root, test_ids, labels, key, test_tf)
    return DataBundle(
        "flowers102",
        DatasetSplit(_limited(train, classes, max_train, seed), device, num_workers),
        DatasetSplit(_limited(test, classes, max_test, seed), device, num_workers),
        _FLOWERS_CLASSES,
        (3, image_size, image_size),
    )


def _test_dir(root: Path, spec: Mapping[str, Any], key: str) -> Path:
    """Resolve the test sub-folder: ``test_dir`` (default ``val``, falling back to ``test``)."""
    name = spec.get("test_dir") or "val"
    if not isinstance(name, str):
        raise DatasetError(f"{key}.test_dir must be a string, got {name!r}")
    path = root / name
    if path.is_dir():
        return path
    if name == "val" and (root / "test").is_dir():
        return root / "test"
    tried = "'val' or 'test'" if name == "val" else repr(name)
    raise DatasetError(
        f"{key}.test_dir: no test folder {tried} under {str(root)!r} "
        "(expected <root>/<test_dir>/<class>/<image>)"
    )


def _image_folder(path: Path, key: str, transform: Callable) -> Any:
    """Open a torchvision ImageFolder, turning its errors into DatasetErrors."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise DatasetError(f"{key}.root: cannot read image folder {str(path)!r}: {exc}") from exc


def _load_imagefolder(spec: Mapping[str, Any], device: torch.device | str, key: str) -> DataBundle:
    """Load a class-folder dataset: ``root/train/<class>/*`` and ``root/<test_dir>/<class>/*``."""
    root = _root(spec, key, "imagefolder", "train/<class>/<image> and val/ (or test/)")
    max_train, max_test = _limits(spec, key)
    seed = _subset_seed(spec, key)
    image_size, augment, num_workers = _image_options(spec, key)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetError(f"{key}.root: expected folder {str(train_dir)!r} is missing")
    test_dir = _test_dir(root, spec, key)
    train_tf, test_tf = _transforms(image_size, augment)
    train = _image_folder(train_dir, key, train_tf)
    test = _image_folder(test_dir, key, test_tf)
    if list(train.classes) != list(test.classes):
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise DatasetError(
            f"{key}.root: class folders of {str(train_dir)!r} and {str(test_dir)!r} differ "
            f"(only in train: {only_train[:5]}, only in test: {only_test[:5]})"
        )
    classes = _classes(spec, key, len(train.classes))
    return DataBundle(
        root.name or "imagefolder",
        DatasetSplit(_limited(train, classes, max_train, seed), device, num_workers),
        DatasetSplit(_limited(test, classes, max_test, seed), device, num_workers),
        len(train.classes),
        (3, image_size, image_size),
    )


# --------------------------------------------------------------------------- entry point


def load_data(
    spec: Mapping[str, Any], device: torch.device | str = "cpu", *, key: str = "dataset"
) -> DataBundle:
    """Load one configured dataset.

    Args:
        spec: The dataset's config block (``source`` plus source-specific keys).
        device: Where TensorSplit data lives and DatasetSplit batches are moved.
        key: Config path of ``spec`` (e.g. ``"datasets.c10"``), used in error messages.

    Returns:
        The train and test splits with ``num_classes``, ``input_shape`` ``(C, H, W)`` and the
        ``subset_seed`` of the fixed subsets (``classes``, then ``max_train``/``max_test``,
        already applied; ``num_classes`` is the source's, whatever ``classes`` keeps).

    Raises:
        DatasetError: The spec is invalid or the files under ``root`` are missing or malformed.
    """
    if not isinstance(spec, Mapping):
        raise DatasetError(f"{key} must be a mapping, got {type(spec).__name__}")
    source = spec.get("source")
    if source not in SOURCES:
        raise DatasetError(f"{key}.source must be one of {', '.join(SOURCES)}; got {source!r}")
    device = torch.device(device)
    seed = _subset_seed(spec, key)
    if source == "digits":
        bundle = _load_digits(spec, device, key)
    elif source in ("cifar10", "cifar100"):
        bundle = _load_cifar(spec, device, key, source)
    elif source == "svhn":
        bundle = _load_svhn(spec, device, key)
    elif source == "flowers102":
        bundle = _load_flowers(spec, device, key)
    elif source == "synthetic":
        from landscape.synthetic import load_synthetic  # it imports this module

        bundle = load_synthetic(spec, device, key=key)
    else:
        bundle = _load_imagefolder(spec, device, key)
    if spec.get("classes") is not None:
        for split, data in (("train", bundle.train), ("test", bundle.test)):
            if len(data) == 0:
                raise DatasetError(
                    f"{key}.classes: no {split} samples of classes {list(spec['classes'])}"
                )
    return replace(bundle, subset_seed=seed)
