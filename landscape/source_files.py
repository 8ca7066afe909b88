"""The files of the tensor sources under their ``root`` (torchvision's layouts), without torch.

The loaders (:mod:`landscape.data`) read them; the workflow checks them before any job
(:func:`landscape.config.resolve_stand_ins`), so one table serves both.
"""

from __future__ import annotations

# source: (sub-folder, training files, test file)
FILES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch"),
    "cifar100": ("cifar-100-python", ("train",), "test"),
    "svhn": ("", ("train_32x32.mat",), "test_32x32.mat"),
}


def data_files(source: str) -> tuple[str, ...]:
    """Every file of ``source`` as a path relative to its root, training files first.

    >>> data_files("cifar100")
    ('cifar-100-python/train', 'cifar-100-python/test')
    """
    sub, train, test = FILES[source]
    return tuple(f"{sub}/{name}" if sub else name for name in (*train, test))
