"""Synthetic stand-in data: seeded images of a real source's shape with learnable labels.

A dataset block ``{source: synthetic, like: cifar10}`` (or with explicit ``shape``,
``num_classes``, ``n_train``, ``n_test``) loads as a :class:`~landscape.data.DataBundle` of two
:class:`~landscape.data.TensorSplit` of normalized float32 images, as CIFAR and SVHN do. The
workflow substitutes it for a block marked ``stand_in: synthetic`` whose real files are absent
(:func:`landscape.config.resolve_stand_ins`), so that a GPU smoke run needs no dataset.

Every image is ``class pattern + sample noise``, both smooth (a coarse 4x4 grid per channel,
bilinearly upsampled; the pattern is a colour, one value per channel, plus a layout), plus white
pixel noise, scaled to unit variance: a linear classifier beats chance by far without reaching
100%, and a small CNN learns it (the colour survives global pooling), so training curves,
landscapes and Hessians are not degenerate. The labels are balanced (``i mod num_classes``,
shuffled). Everything is drawn on the CPU with :class:`torch.Generator` from ``seed`` (patterns,
labels and each sample from a stream of their own: ``n_train`` does not change the test images,
and a subset costs only its own samples), then moved to the device: the same spec gives the same
bytes on every device.

Example:
    >>> spec = {"source": "synthetic", "like": "cifar10", "n_train": 20, "n_test": 10}
    >>> bundle = load_synthetic(spec, "cpu", key="datasets.c10")
    >>> bundle.num_classes, bundle.input_shape, len(bundle.train), len(bundle.test)
    (10, (3, 32, 32), 20, 10)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from landscape.config import synthetic_layout
from landscape.data import (
    DataBundle,
    DatasetError,
    TensorSplit,
    _classes,
    _crop_flip,
    _int,
    _kept,
    _limits,
    _opt_int,
    _subset_seed,
)

__all__ = ["class_patterns", "load_synthetic", "synthetic_images", "synthetic_labels"]

# Standard deviation of the class pattern relative to the per-sample smooth noise (both on the
# coarse grid) and of the white pixel noise: a nearest-class-mean classifier on 10 classes of
# CIFAR shape gets about 0.65 test accuracy (chance 0.1), on 100 classes about 0.3, and a
# ResNet-8 of width 8 goes from 0.27 to 0.41 in five epochs of 2,000 images.
_SIGNAL = 0.35
_WHITE = 0.5
_COARSE = 4  # side of the coarse grid of patterns and smooth noise
_STREAM_PATTERNS, _STREAM_TRAIN, _STREAM_TEST = 0, 1, 2


def _stream_seed(seed: int, stream: int) -> int:
    """A 63-bit seed of one stream of ``seed`` (independent streams via numpy's SeedSequence)."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)


def _coarse_side(side: int) -> int:
    """Side of the coarse grid along an image side of ``side`` pixels."""
    return min(_COARSE, side)


def _upsampling(height: int, width: int) -> Tensor:
    """``(h * w, height * width)`` bilinear weights of each coarse entry on each pixel."""
    h, w = _coarse_side(height), _coarse_side(width)
    basis = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
    weights = F.interpolate(basis, size=(height, width), mode="bilinear", align_corners=False)
    return weights.reshape(h * w, height * width)


def class_patterns(num_classes: int, coarse: tuple[int, int, int], seed: int) -> Tensor:
    """``(num_classes, C, h, w)`` coarse patterns: a colour plus a layout, of unit variance."""
    generator = torch.Generator().manual_seed(_stream_seed(seed, _STREAM_PATTERNS))
    layout = torch.randn((num_classes, *coarse), generator=generator)
    colour = torch.randn((num_classes, coarse[0], 1, 1), generator=generator)
    return (layout + colour) / math.sqrt(2.0)


def synthetic_labels(n: int, num_classes: int, seed: int, stream: int) -> Tensor:
    """Balanced labels ``i mod num_classes`` of a split, in a seeded order (int64, CPU)."""
    generator = torch.Generator().manual_seed(_stream_seed(seed, stream))
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]


def synthetic_images(
    indices: Tensor, labels: Tensor, shape: tuple[int, int, int], patterns: Tensor, seed: int
) -> Tensor:
    """The images of the samples at ``indices`` of a split, on the CPU.

    Sample ``i`` draws its smooth and white noise from a generator seeded with ``seed + i``, so
    that it is the same whichever other samples are drawn (a subset costs its own size only).

    Args:
        indices: Positions in the split, int64.
        labels: Their labels.
        shape: ``(C, H, W)``.
        patterns: ``(num_classes, C, h, w)`` coarse class patterns.
        seed: The split stream's seed (:func:`_stream_seed`).

    Returns:
        float32 ``(len(indices), C, H, W)``, of unit variance over the split.
    """
    channels, height, width = shape
    weights = _upsampling(height, width)
    signal = (patterns.double().flatten(2) @ weights).square().mean() * _SIGNAL**2
    noise = weights.square().sum(0).mean() + _WHITE**2
    scale = float(signal + noise) ** -0.5
    coarse = torch.empty((indices.numel(), *patterns.shape[1:]))
    white = torch.empty((indices.numel(), channels, height, width))
    generator = torch.Generator()
    for row, index in enumerate(indices.tolist()):
        generator.manual_seed((seed + index) % 2**63)
        torch.randn(coarse.shape[1:], generator=generator, out=coarse[row])
        torch.randn(white.shape[1:], generator=generator, out=white[row])
    coarse = (coarse + _SIGNAL * patterns[labels]).flatten(2)
    smooth = (coarse @ weights.to(torch.float32)).reshape(white.shape)
    return (smooth + _WHITE * white).mul_(scale)


def _layout(spec: Mapping[str, Any], key: str) -> tuple[tuple[int, int, int], int, int, int]:
    """``(shape, num_classes, n_train, n_test)`` of a synthetic block, ``like`` filling gaps."""
    layout = synthetic_layout(spec)
    if layout is None:
        raise DatasetError(
            f"{key}.like: {spec.get('like')!r} is not a source synthetic data can imitate "
            "(cifar10, cifar100, svhn)"
        )
    shape = layout.get("shape")
    if (
        not isinstance(shape, list | tuple)
        or len(shape) != 3
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)
    ):
        raise DatasetError(
            f"{key}.shape must be three positive integers [C, H, W] (or give `like`), got {shape!r}"
        )
    counts = []
    for name in ("num_classes", "n_train", "n_test"):
        value = _opt_int(layout, name, key, 1)
        if value is None:
            raise DatasetError(f"{key}.{name} is required for source 'synthetic' (or give `like`)")
        counts.append(value)
    num_classes, n_train, n_test = counts
    return (int(shape[0]), int(shape[1]), int(shape[2])), num_classes, n_train, n_test


def load_synthetic(
    spec: Mapping[str, Any], device: torch.device | str = "cpu", *, key: str = "dataset"
) -> DataBundle:
    """Load a ``source: synthetic`` block (see the module docstring).

    ``classes``, then ``max_train``/``max_test`` (drawn with ``subset_seed``), are applied to
    the full splits as for the real sources, so a subset holds the same images as the full set.
    ``augment: true`` crops and flips training batches as for the source imitated (no flip like
    SVHN), padding with zeros, the data's mean.

    Raises:
        DatasetError: a key is missing or invalid; the message names it.
    """
    shape, num_classes, n_train, n_test = _layout(spec, key)
    seed = _int(spec, "seed", key, 0, 0)
    max_train, max_test = _limits(spec, key)
    subset_seed = _subset_seed(spec, key)
    classes = _classes(spec, key, num_classes)
    coarse = (shape[0], _coarse_side(shape[1]), _coarse_side(shape[2]))
    patterns = class_patterns(num_classes, coarse, seed)

    def split(n: int, stream: int, limit: int | None) -> TensorSplit:
        labels = synthetic_labels(n, num_classes, seed, stream)
        keep = _kept(labels.numpy(), classes, limit, subset_seed)
        indices = torch.arange(n) if keep is None else torch.from_numpy(keep)
        x = synthetic_images(indices, labels[indices], shape, patterns, _stream_seed(seed, stream))
        return TensorSplit(x, labels[indices], device)

    train = split(n_train, _STREAM_TRAIN, max_train)
    test = split(n_test, _STREAM_TEST, max_test)
    unit = ((0.0,) * shape[0], (1.0,) * shape[0])  # the images are normalized already
    augment = _crop_flip(spec, key, unit, flip=spec.get("like") != "svhn")
    return DataBundle("synthetic", train, test, num_classes, shape, augment=augment)
