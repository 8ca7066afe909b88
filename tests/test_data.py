"""Tests of landscape.data: digits, batching, and every paper-scale source on tiny fixtures."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from landscape.data import (
    SOURCES,
    DataBundle,
    DatasetError,
    DatasetSplit,
    Split,
    TensorSplit,
    load_data,
    stratified_indices,
)

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data({"source": "digits"}, key="datasets.digits")


def _write_pickle(path: Path, batch: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(batch, fh)


def _cifar_root(
    tmp_path: Path, rng: np.random.Generator, n: int = 20, sort: bool = False
) -> Path:
    """CIFAR-10 layout: 5 train batches of n images, one test batch of n images.

    ``sort`` labels the training images by class (10 per class for n = 20), as image folders are.
    """
    root = tmp_path / "c10"
    folder = root / "cifar-10-batches-py"
    sorted_labels = np.repeat(np.arange(10), 5 * n // 10)
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        if sort:
            labels = sorted_labels[(i - 1) * n : i * n].tolist()
        _write_pickle(folder / f"data_batch_{i}", {b"data": data, b"labels": labels})
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    _write_pickle(folder / "test_batch", {b"data": data, b"labels": labels})
    return root


def _jpeg(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (20, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")


def _flowers_root(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Flowers-102 layout with 8 images; labels 1-based, including the extremes 1 and 102."""
    root = tmp_path / "flowers"
    labels = np.array([1, 102, 5, 1, 7, 102, 3, 50])
    for i in range(1, len(labels) + 1):
        _jpeg(root / "jpg" / f"image_{i:05d}.jpg", (30 * i, 10, 200), size=(24 + i, 18))
    scipy.io.savemat(root / "imagelabels.mat", {"labels": labels[None, :]})
    scipy.io.savemat(
        root / "setid.mat",
        {
            "trnid": np.array([[1, 2, 3]]),
            "valid": np.array([[4, 5]]),
            "tstid": np.array([[6, 7, 8]]),
        },
    )
    return root, labels


def _imagefolder_root(tmp_path: Path, test_dir: str = "val") -> Path:
    """Class folders: train has 3 classes x 2 images, the test folder 3 classes x 1 image."""
    root = tmp_path / "cub"
    colors = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cat": (0, 0, 255)}
    for name, color in colors.items():
        for j in range(2):
            _jpeg(root / "train" / name / f"{j}.jpg", color)
        _jpeg(root / test_dir / name / "0.jpg", color)
    return root


# --------------------------------------------------------------------------- digits


def test_sources_listed() -> None:
    assert SOURCES == (
        "digits", "cifar10", "cifar100", "svhn", "flowers102", "imagefolder", "synthetic"
    )


def test_digits_shapes_and_counts(digits: DataBundle) -> None:
    assert digits.name == "digits"
    assert digits.num_classes == 10
    assert digits.input_shape == (1, 8, 8)
    assert isinstance(digits.train, TensorSplit) and isinstance(digits.test, TensorSplit)
    assert (len(digits.train), len(digits.test)) == (1347, 450)
    assert len(digits.train) + len(digits.test) == 1797
    assert digits.train.x.shape == (1347, 1, 8, 8)
    assert digits.train.x.dtype == torch.float32
    assert digits.train.y.dtype == torch.int64
    assert set(digits.test.y.tolist()) == set(range(10))


def test_digits_split_is_stratified(digits: DataBundle) -> None:
    train = np.bincount(digits.train.y.numpy(), minlength=10)
    test = np.bincount(digits.test.y.numpy(), minlength=10)
    frac = test / (train + test)
    assert np.all(np.abs(frac - 0.25) < 0.02)


def test_digits_deterministic(digits: DataBundle) -> None:
    again = load_data({"source": "digits", "test_fraction": 0.25, "split_seed": 0})
    assert torch.equal(again.train.x, digits.train.x)
    assert torch.equal(again.train.y, digits.train.y)
    assert torch.equal(again.test.x, digits.test.x)
    other = load_data({"source": "digits", "split_seed": 1})
    assert not torch.equal(other.train.y, digits.train.y)


def test_digits_standardized_on_train(digits: DataBundle) -> None:
    x = digits.train.x.double()
    assert abs(x.mean().item()) < 1e-5
    assert abs(x.std(unbiased=False).item() - 1.0) < 1e-5
    assert abs(digits.test.x.double().mean().item()) < 0.1


def test_digits_test_fraction_and_limits() -> None:
    b = load_data({"source": "digits", "test_fraction": 0.5, "max_train": 100, "max_test": 7})
    assert (len(b.train), len(b.test)) == (100, 7)
    full = load_data({"source": "digits", "test_fraction": 0.5})
    assert (len(full.train), len(full.test)) == (898, 899)
    keep = stratified_indices(full.train.y.numpy(), 100, 0)
    assert torch.equal(b.train.x, full.train.x[keep]) and torch.equal(b.train.y, full.train.y[keep])
    _assert_proportional(b.train.y, 100, full.train.y)
    _assert_proportional(b.test.y, 7, full.test.y)
    spec = {"source": "digits", "test_fraction": 0.5, "max_train": 100, "subset_seed": 1}
    other = load_data(spec)
    assert not torch.equal(other.train.x, b.train.x)
    assert (b.subset_seed, other.subset_seed) == (0, 1)


def test_digits_bad_test_fraction() -> None:
    with pytest.raises(DatasetError, match=r"datasets\.d\.test_fraction"):
        load_data({"source": "digits", "test_fraction": 1.5}, key="datasets.d")


# --------------------------------------------------------------------------- batching


def _toy(n: int = 10) -> TensorSplit:
    return TensorSplit(torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n) % 3)


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_every_sample_once(digits: DataBundle, shuffle: bool) -> None:
    g = torch.Generator().manual_seed(0)
    seen = []
    sizes = []
    for xb, yb in digits.train.batches(128, shuffle=shuffle, generator=g):
        assert xb.shape[1:] == (1, 8, 8)
        assert xb.shape[0] == yb.shape[0]
        sizes.append(xb.shape[0])
        seen.append(yb)
    assert sizes == [128] * 10 + [67]
    toy = _toy(10)
    ids = torch.cat([xb[:, 0] for xb, _ in toy.batches(3, shuffle=shuffle, generator=g)])
    assert sorted(ids.long().tolist()) == list(range(10))
    assert torch.equal(torch.cat(seen).bincount(), digits.train.y.bincount())


def test_batches_unshuffled_in_order() -> None:
    toy = _toy(7)
    batches = list(toy.batches(3))
    assert [xb[:, 0].long().tolist() for xb, _ in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [yb.tolist() for _, yb in batches] == [[0, 1, 2], [0, 1, 2], [0]]


def test_shuffle_reproducible() -> None:
    toy = _toy(50)

    def order(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return (
            torch.cat([xb[:, 0] for xb, _ in toy.batches(8, shuffle=True, generator=g)])
            .long()
            .tolist()
        )

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert order(3) != list(range(50))
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(3)).tolist()
    assert order(3) == expected


def test_drop_last() -> None:
    toy = _toy(10)
    assert [xb.shape[0] for xb, _ in toy.batches(4, drop_last=True)] == [4, 4]
    assert [xb.shape[0] for xb, _ in toy.batches(4)] == [4, 4, 2]
    assert [xb.shape[0] for xb, _ in toy.batches(5, drop_last=True)] == [5, 5]
    g = torch.Generator().manual_seed(1)
    got = [xb.shape[0] for xb, _ in toy.batches(4, shuffle=True, generator=g, drop_last=True)]
    assert got == [4, 4]


def test_bad_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        list(_toy().batches(0))


def test_tensor_subset(digits: DataBundle) -> None:
    sub = digits.train.subset(10)
    assert isinstance(sub, TensorSplit) and isinstance(sub, Split)
    assert len(sub) == 10
    assert torch.equal(sub.x, digits.train.x[:10])
    assert len(digits.test.subset(10_000)) == 450


def test_dataset_split_matches_tensor_split() -> None:
    toy = _toy(11)
    ds = DatasetSplit(torch.utils.data.TensorDataset(toy.x, toy.y))
    assert len(ds) == 11
    for shuffle in (False, True):
        ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        a = list(toy.batches(4, shuffle=shuffle, generator=ga, drop_last=True))
        b = list(ds.batches(4, shuffle=shuffle, generator=gb, drop_last=True))
        assert len(a) == len(b) == 2
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            assert yb.dtype == torch.int64
    sub = ds.subset(4)
    assert isinstance(sub, DatasetSplit) and len(sub) == 4
    assert [xb[:, 0].long().tolist() for xb, _ in sub.batches(10)] == [[0, 1, 2, 3]]


# --------------------------------------------------------------------------- CIFAR


def test_cifar10(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = _cifar_root(tmp_path, rng)
    b = load_data({"source": "cifar10", "root": str(root)}, key="datasets.c10")
    assert isinstance(b.train, TensorSplit)
    assert b.num_classes == 10 and b.input_shape == (3, 32, 32) and b.name == "cifar10"
    assert b.train.x.shape == (100, 3, 32, 32) and b.test.x.shape == (20, 3, 32, 32)
    assert b.train.x.dtype == torch.float32
    with (root / "cifar-10-batches-py" / "data_batch_2").open("rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    assert b.train.y[20:40].tolist() == raw[b"labels"]
    # Pixel (channel 1, row 0, col 5) of image 20 is byte 1024 + 5 of row 0 of batch 2.
    value = raw[b"data"][0, 1024 + 5] / 255.0
    expected = (value - 0.4822) / 0.2435
    assert b.train.x[20, 1, 0, 5].item() == pytest.approx(expected, abs=1e-5)
    assert 0 <= b.train.y.min() and b.train.y.max() <= 9


def test_cifar10_max_train(tmp_path: Path) -> None:
    root = _cifar_root(tmp_path, np.random.default_rng(1), sort=True)
    full = load_data({"source": "cifar10", "root": str(root)})
    assert full.train.y.tolist() == sorted(full.train.y.tolist())  # class-sorted like the fixture
    b = load_data({"source": "cifar10", "root": str(root), "max_train": 30, "max_test": 5})
    assert (len(b.train), len(b.test)) == (30, 5)
    keep = stratified_indices(full.train.y.numpy(), 30, 0)
    assert torch.equal(b.train.x, full.train.x[keep])
    _assert_proportional(b.train.y, 30, full.train.y)  # the first 30 would be classes 0-2
    _assert_proportional(b.test.y, 5, full.test.y)


def test_cifar100(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    folder = tmp_path / "c100" / "cifar-100-python"
    fine = np.arange(20) * 5  # 0..95
    for name, n in (("train", 20), ("test", 10)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        batch = {b"data": data, b"fine_labels": fine[:n].tolist(), b"coarse_labels": [0] * n}
        _write_pickle(folder / name, batch)
    b = load_data({"source": "cifar100", "root": str(tmp_path / "c100")}, key="datasets.c100")
    assert b.num_classes == 100
    assert b.train.x.shape == (20, 3, 32, 32) and len(b.test) == 10
    assert b.train.y.tolist() == fine.tolist()
    assert b.test.y.max().item() == 45


def test_cifar_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"datasets\.c10\.root is required"):
        load_data({"source": "cifar10"}, key="datasets.c10")
    with pytest.raises(DatasetError, match=r"datasets\.c10\.root is required"):
        load_data({"source": "cifar10", "root": None}, key="datasets.c10")
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as info:
        load_data({"source": "cifar10", "root": str(missing)}, key="datasets.c10")
    msg = str(info.value)
    assert "datasets.c10.root" in msg and str(missing) in msg and "data_batch_1" in msg


def test_cifar_missing_file(tmp_path: Path) -> None:
    root = _cifar_root(tmp_path, np.random.default_rng(3))
    victim = root / "cifar-10-batches-py" / "data_batch_4"
    victim.unlink()
    with pytest.raises(DatasetError) as info:
        load_data({"source": "cifar10", "root": str(root)}, key="datasets.c10")
    assert "datasets.c10.root" in str(info.value) and str(victim) in str(info.value)


# --------------------------------------------------------------------------- SVHN


def _svhn_root(tmp_path: Path) -> Path:
    root = tmp_path / "svhn"
    root.mkdir()
    rng = np.random.default_rng(4)
    for name, labels in (("train", [10, 1, 2, 10, 9, 5]), ("test", [3, 10, 7])):
        x = rng.integers(0, 256, size=(32, 32, 3, len(labels)), dtype=np.uint8)
        y = np.array(labels, dtype=np.uint8)[:, None]
        scipy.io.savemat(root / f"{name}_32x32.mat", {"X": x, "y": y})
    return root


def test_svhn(tmp_path: Path) -> None:
    root = _svhn_root(tmp_path)
    b = load_data({"source": "svhn", "root": str(root)}, key="datasets.svhn")
    assert b.num_classes == 10 and b.input_shape == (3, 32, 32)
    assert b.train.x.shape == (6, 3, 32, 32) and b.test.x.shape == (3, 3, 32, 32)
    assert b.train.y.tolist() == [0, 1, 2, 0, 9, 5]
    assert b.test.y.tolist() == [3, 0, 7]
    raw = scipy.io.loadmat(root / "train_32x32.mat")["X"]
    expected = (raw[4, 7, 2, 3] / 255.0 - 0.4728) / 0.1970
    assert b.train.x[3, 2, 4, 7].item() == pytest.approx(expected, abs=1e-5)
    small = load_data({"source": "svhn", "root": str(root), "max_train": 3})
    assert len(small.train) == 3 and len(small.test) == 3
    _assert_proportional(small.train.y, 3, b.train.y)  # one of the two 0s, then two of 1, 2, 5, 9
    assert 0 in small.train.y.tolist()


def test_svhn_missing_file(tmp_path: Path) -> None:
    root = _svhn_root(tmp_path)
    (root / "test_32x32.mat").unlink()
    with pytest.raises(DatasetError, match=r"datasets\.svhn\.root.*test_32x32\.mat"):
        load_data({"source": "svhn", "root": str(root)}, key="datasets.svhn")


# --------------------------------------------------------------------------- Flowers-102


def test_flowers102(tmp_path: Path) -> None:
    root, labels = _flowers_root(tmp_path)
    spec = {"source": "flowers102", "root": str(root), "image_size": 16}
    b = load_data(spec, key="datasets.flowers")
    assert isinstance(b.train, DatasetSplit)
    assert b.num_classes == 102 and b.input_shape == (3, 16, 16)
    assert (len(b.train), len(b.test)) == (3, 3)
    [(x, y)] = list(b.train.batches(10))
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    assert y.tolist() == [0, 101, 4]  # 1-based labels of images 1..3 minus one
    [(_, yt)] = list(b.test.batches(10))
    assert yt.tolist() == (labels[5:8] - 1).tolist()
    # Image 1 is a flat colour: after ImageNet normalization the red channel is constant.
    red = (30 / 255 - 0.485) / 0.229
    assert x[0, 0].mean().item() == pytest.approx(red, abs=0.05)


def test_flowers102_train_with_val_and_limits(tmp_path: Path) -> None:
    root, _ = _flowers_root(tmp_path)
    spec = {
        "source": "flowers102",
        "root": str(root),
        "image_size": 8,
        "train_with_val": True,
        "max_test": 2,
        "augment": True,
    }
    b = load_data(spec)
    assert (len(b.train), len(b.test)) == (5, 2)
    ys = torch.cat([y for _, y in b.train.batches(2)]).tolist()
    assert ys == [0, 101, 4, 0, 6]
    x, _ = next(iter(b.train.batches(5)))
    assert x.shape == (5, 3, 8, 8)
    limited = load_data({**spec, "max_train": 4})
    assert len(limited.train) == 4
    labels = torch.cat([y for _, y in limited.train.batches(8)])
    _assert_proportional(labels, 4, torch.tensor([0, 101, 4, 0, 6]))
    assert 0 in labels.tolist()  # the only class with two images keeps one


def test_flowers102_missing_image(tmp_path: Path) -> None:
    root, _ = _flowers_root(tmp_path)
    victim = root / "jpg" / "image_00007.jpg"
    victim.unlink()
    with pytest.raises(DatasetError) as info:
        load_data({"source": "flowers102", "root": str(root)}, key="datasets.fl")
    assert "datasets.fl.root" in str(info.value) and str(victim) in str(info.value)


def test_flowers102_missing_mat(tmp_path: Path) -> None:
    root, _ = _flowers_root(tmp_path)
    (root / "setid.mat").unlink()
    with pytest.raises(DatasetError, match=r"datasets\.fl\.root.*setid\.mat"):
        load_data({"source": "flowers102", "root": str(root)}, key="datasets.fl")


# --------------------------------------------------------------------------- image folders


@pytest.mark.parametrize("test_dir", ["val", "test"])
def test_imagefolder(tmp_path: Path, test_dir: str) -> None:
    root = _imagefolder_root(tmp_path, test_dir)
    spec = {"source": "imagefolder", "root": str(root), "image_size": 12}
    b = load_data(spec, key="datasets.cub")
    assert isinstance(b.train, DatasetSplit) and isinstance(b.test, DatasetSplit)
    assert b.num_classes == 3 and b.input_shape == (3, 12, 12)
    assert (len(b.train), len(b.test)) == (6, 3)
    xs, ys = zip(*b.train.batches(4), strict=True)
    assert [x.shape[0] for x in xs] == [4, 2]
    assert torch.cat(ys).tolist() == [0, 0, 1, 1, 2, 2]
    x, y = next(iter(b.test.batches(3)))
    assert x.shape == (3, 3, 12, 12) and y.tolist() == [0, 1, 2]
    # Class "bee" is pure green: its green channel is the largest after normalization.
    assert x[1, 1].mean() > x[1, 0].mean() and x[1, 1].mean() > x[1, 2].mean()
    limited = load_data({**spec, "max_train": 3})
    assert sorted(torch.cat([y for _, y in limited.train.batches(8)]).tolist()) == [0, 1, 2]


def test_imagefolder_class_mismatch(tmp_path: Path) -> None:
    root = _imagefolder_root(tmp_path)
    _jpeg(root / "train" / "dog" / "0.jpg", (9, 9, 9))
    with pytest.raises(DatasetError, match=r"datasets\.cub\.root.*differ"):
        load_data({"source": "imagefolder", "root": str(root)}, key="datasets.cub")


def test_imagefolder_missing_test_dir(tmp_path: Path) -> None:
    root = tmp_path / "only_train"
    _jpeg(root / "train" / "a" / "0.jpg", (1, 2, 3))
    with pytest.raises(DatasetError, match=r"datasets\.x\.test_dir"):
        load_data({"source": "imagefolder", "root": str(root)}, key="datasets.x")


def test_imagefolder_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"datasets\.cub\.root is required.*imagefolder"):
        load_data({"source": "imagefolder"}, key="datasets.cub")
    with pytest.raises(DatasetError, match=r"datasets\.cub\.root.*does not exist"):
        load_data({"source": "imagefolder", "root": str(tmp_path / "no")}, key="datasets.cub")


# --------------------------------------------------------------------------- errors


def test_unknown_source() -> None:
    with pytest.raises(DatasetError) as info:
        load_data({"source": "mnist"}, key="datasets.m")
    msg = str(info.value)
    assert "datasets.m.source" in msg and "'mnist'" in msg
    assert all(s in msg for s in SOURCES)


def test_bad_max_train() -> None:
    with pytest.raises(DatasetError, match=r"datasets\.d\.max_train"):
        load_data({"source": "digits", "max_train": 0}, key="datasets.d")


def test_dataset_error_is_value_error() -> None:
    assert issubclass(DatasetError, ValueError)


# --------------------------------------------------------------------------- fixed subsets


def _assert_proportional(labels, n: int, population) -> None:
    """Each class holds ``floor`` or ``ceil`` of ``n * N_c / N`` of the ``n`` samples.

    ``N_c`` of the ``N`` labels of ``population`` belong to class ``c``.
    """
    labels, population = np.asarray(labels), np.asarray(population)
    classes = int(max(labels.max(initial=0), population.max())) + 1
    counts = np.bincount(labels, minlength=classes)
    expected = n * np.bincount(population, minlength=classes) / population.size
    assert counts.sum() == n
    assert np.all(np.abs(counts - expected) < 1), (counts.tolist(), expected.tolist())


def _class_sorted(per_class: list[int]) -> TensorSplit:
    """Sample ``i`` has ``x = i``; labels sorted by class, class ``c`` ``per_class[c]`` times."""
    y = torch.repeat_interleave(torch.arange(len(per_class)), torch.tensor(per_class))
    return TensorSplit(torch.arange(len(y), dtype=torch.float32).unsqueeze(1), y)


def _sorted_bundle(subset_seed: int = 0) -> DataBundle:
    """Ten classes sorted by label: 40 training and 5 test samples each."""
    train, test = _class_sorted([40] * 10), _class_sorted([5] * 10)
    return DataBundle("sorted", train, test, 10, (1, 1, 1), subset_seed=subset_seed)


@pytest.mark.parametrize("n", [1, 7, 20, 55, 99])
def test_stratified_indices_are_class_proportional(n: int) -> None:
    labels = np.repeat([0, 1, 2, 3], [30, 10, 50, 10])  # sorted by class, unbalanced
    idx = stratified_indices(labels, n, seed=0)
    assert idx.dtype == np.int64 and len(set(idx.tolist())) == n
    assert 0 <= idx.min() and idx.max() < labels.size
    _assert_proportional(labels[idx], n, labels)
    assert np.array_equal(idx, stratified_indices(labels, n, seed=0))
    if n > 1:
        assert not np.array_equal(idx, stratified_indices(labels, n, seed=1))


def test_stratified_indices_of_the_whole_split_are_a_seeded_permutation() -> None:
    labels = np.repeat(np.arange(4), 5)
    idx = stratified_indices(labels, 20, seed=3)
    assert sorted(idx.tolist()) == list(range(20)) and idx.tolist() != list(range(20))
    assert np.array_equal(stratified_indices(labels, 25, seed=3), idx)
    assert stratified_indices(labels, 0, seed=3).size == 0
    with pytest.raises(ValueError, match="subset size"):
        stratified_indices(labels, -1, seed=0)


def test_sample_of_a_class_sorted_tensor_split() -> None:
    split = _class_sorted([40] * 10)
    sub = split.sample(100, seed=0)
    assert isinstance(sub, TensorSplit) and len(sub) == 100
    assert np.bincount(sub.y.numpy(), minlength=10).tolist() == [10] * 10
    idx = sub.x[:, 0].long()
    assert idx.tolist() == stratified_indices(split.labels(), 100, 0).tolist()
    assert torch.equal(sub.y, split.y[idx])
    assert torch.equal(split.sample(100, seed=0).x, sub.x)
    assert not torch.equal(split.sample(100, seed=1).x, sub.x)
    for _, yb in sub.batches(25):  # the classes are mixed in every batch
        assert len(set(yb.tolist())) >= 5
    assert set(split.subset(100).y.tolist()) == {0, 1, 2}  # the head it replaces
    dataset = DatasetSplit(torch.utils.data.TensorDataset(split.x, split.y))  # read one by one
    [(x, y)] = list(dataset.sample(100, seed=0).batches(100))
    assert torch.equal(x, sub.x) and torch.equal(y, sub.y)


def _no_image(path: str) -> None:
    raise AssertionError(f"read image {path}")


def test_sample_of_a_class_sorted_image_folder_reads_no_image(tmp_path: Path) -> None:
    root = tmp_path / "sorted"
    for c in range(3):
        for j in range(4):
            _jpeg(root / "train" / f"class{c}" / f"{j}.jpg", (60 * c, 0, 0))
        _jpeg(root / "val" / f"class{c}" / "0.jpg", (60 * c, 0, 0))
    spec = {"source": "imagefolder", "root": str(root), "image_size": 8}
    b = load_data(spec)
    folder = b.train.dataset
    loader, folder.loader = folder.loader, _no_image
    assert b.train.labels().tolist() == [0] * 4 + [1] * 4 + [2] * 4
    sub, again, other = (b.train.sample(6, seed=s) for s in (0, 0, 1))
    labels = sub.labels()
    folder.loader = loader
    assert isinstance(sub, DatasetSplit) and sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert torch.cat([y for _, y in sub.batches(4)]).tolist() == labels.tolist()
    assert list(again.dataset.indices) == list(sub.dataset.indices)
    assert list(other.dataset.indices) != list(sub.dataset.indices)
    limited = load_data({**spec, "max_train": 6, "max_test": 3})
    _assert_proportional(limited.train.labels(), 6, b.train.labels())
    assert sorted(limited.test.labels().tolist()) == [0, 1, 2]
    assert list(limited.train.dataset.indices) == list(sub.dataset.indices)


def test_subset_seed_is_read_and_checked() -> None:
    assert load_data({"source": "digits"}).subset_seed == 0
    assert load_data({"source": "digits", "subset_seed": 7}).subset_seed == 7
    with pytest.raises(DatasetError, match=r"datasets\.d\.subset_seed"):
        load_data({"source": "digits", "subset_seed": -1}, key="datasets.d")


def test_hessian_evaluation_set_is_a_fixed_class_proportional_sample() -> None:
    from dataclasses import replace

    from landscape.curvature import evaluation_batches

    bundle = _sorted_bundle()
    spec = {"split": "train", "samples": 100, "batch_size": 30}
    batches = evaluation_batches(bundle, spec)
    assert [len(y) for _, y in batches] == [30, 30, 30, 10]
    x = torch.cat([x for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    assert np.bincount(y.numpy(), minlength=10).tolist() == [10] * 10
    assert torch.equal(x, bundle.train.sample(100, 0).x)
    assert torch.equal(torch.cat([x for x, _ in evaluation_batches(bundle, spec)]), x)
    other = evaluation_batches(replace(bundle, subset_seed=1), spec)
    assert not torch.equal(torch.cat([x for x, _ in other]), x)
    test = torch.cat([y for _, y in evaluation_batches(bundle, {**spec, "split": "test"})])
    assert np.bincount(test.numpy(), minlength=10).tolist() == [5] * 10  # all 50, in some order
    whole = evaluation_batches(bundle, {**spec, "samples": None, "batch_size": 40})
    assert sorted(torch.cat([x[:, 0] for x, _ in whole]).long().tolist()) == list(range(400))
    for _, yb in whole:  # in a seeded order: no batch is one class
        assert len(set(yb.tolist())) > 1


# --------------------------------------------------------------------------- class selection


def test_digits_classes_keep_only_those_labels_as_filtering_by_hand(digits: DataBundle) -> None:
    spec = {"source": "digits", "classes": [0, 1, 2, 3, 4]}
    b = load_data(spec, key="datasets.digits_04")
    assert b.num_classes == 10  # the model head keeps its size; labels keep their values
    for split, full in ((b.train, digits.train), (b.test, digits.test)):
        mask = full.y < 5
        assert set(split.y.tolist()) == {0, 1, 2, 3, 4}
        assert len(split) == int(mask.sum())
        assert torch.equal(split.y, full.y[mask]) and torch.equal(split.x, full.x[mask])


def test_classes_are_selected_before_the_stratified_subset(digits: DataBundle) -> None:
    b = load_data({"source": "digits", "classes": [7, 2], "max_train": 50, "max_test": 9})
    assert (len(b.train), len(b.test)) == (50, 9)
    mask = (digits.train.y == 2) | (digits.train.y == 7)
    by_hand = digits.train.take(np.flatnonzero(mask.numpy())).sample(50, 0)
    assert torch.equal(b.train.y, by_hand.y) and torch.equal(b.train.x, by_hand.x)
    assert sorted(np.bincount(b.train.y.numpy(), minlength=10)[[2, 7]].tolist()) == [25, 25]
    assert set(b.test.y.tolist()) <= {2, 7}


def test_classes_of_tensor_and_image_folder_sources(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = _cifar_root(tmp_path, rng)
    full = load_data({"source": "cifar10", "root": str(root)})
    b = load_data({"source": "cifar10", "root": str(root), "classes": [3, 5, 9]})
    keep = np.isin(full.train.y.numpy(), [3, 5, 9])
    assert torch.equal(b.train.y, full.train.y[keep]) and torch.equal(b.train.x, full.train.x[keep])
    assert b.num_classes == 10
    folder = _imagefolder_root(tmp_path)
    folder_spec = {"source": "imagefolder", "root": str(folder), "image_size": 8}
    whole = load_data(folder_spec)
    kept = load_data({**folder_spec, "classes": [1]})
    assert kept.num_classes == whole.num_classes
    assert kept.train.labels().tolist() == [c for c in whole.train.labels().tolist() if c == 1]
    assert [y.tolist() for _, y in kept.test.batches(10)] == [[1] * len(kept.test)]


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ([0, 10], r"datasets\.digits_04\.classes: .*10.* \[0, 10\)"),
        ([-1], r"datasets\.digits_04\.classes: .*-1"),
        ([], r"datasets\.digits_04\.classes: .*at least one"),
        ([1, 1], r"datasets\.digits_04\.classes: .*twice"),
        ([1.0], r"datasets\.digits_04\.classes: .*integer"),
        ([True], r"datasets\.digits_04\.classes: .*integer"),
        (3, r"datasets\.digits_04\.classes: .*list"),
    ],
)
def test_bad_classes_name_the_key(classes, message) -> None:
    with pytest.raises(DatasetError, match=message):
        load_data({"source": "digits", "classes": classes}, key="datasets.digits_04")


def test_classes_leaving_a_split_empty_name_the_key(tmp_path: Path) -> None:
    root = _cifar_root(tmp_path, np.random.default_rng(0))
    data = np.zeros((4, 3072), dtype=np.uint8)
    _write_pickle(root / "cifar-10-batches-py" / "test_batch", {b"data": data, b"labels": [0] * 4})
    spec = {"source": "cifar10", "root": str(root), "classes": [9]}
    message = r"datasets\.c\.classes: no test samples of classes \[9\]"
    with pytest.raises(DatasetError, match=message):
        load_data(spec, key="datasets.c")


@pytest.mark.parametrize(
    ("fraction", "seed"), [(0.25, 0), (0.25, 3), (0.1, 0), (0.5, 7), (0.33, 1)]
)
def test_digits_without_sklearn_are_sklearns_images_and_split(fraction, seed):
    """The digits and their stratified split, read without importing scikit-learn, are its own."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    from landscape.digits import load_digits, stratified_split

    reference = sklearn_digits()
    images, labels = load_digits()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(labels, reference.target)
    train, test = stratified_split(labels, fraction, seed)
    ref_train, ref_test = train_test_split(
        np.arange(labels.size), test_size=fraction, random_state=seed, stratify=labels
    )
    np.testing.assert_array_equal(train, ref_train)
    np.testing.assert_array_equal(test, ref_test)


def test_loading_the_digits_imports_no_sklearn():
    import subprocess
    import sys

    code = "import sys; from landscape.data import load_data; load_data({'source': 'digits'}); "
    code += "print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
