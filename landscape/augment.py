"""Training-data augmentation of whole batches on their device: random crop with padding and flip.

The usual CIFAR recipe (torchvision's ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip()``
before normalization) applied to images that are already normalized tensors: the padding is the
normalized value of a black pixel, so the result equals the recipe's. All random numbers of an
epoch are drawn at once on a CPU generator and moved to the device once
(:meth:`CropFlip.for_epoch`); each batch is then cropped and flipped by indexing, with no Python
loop over samples and no host synchronization. The result is the same on every device for the
same generator state.

Example:
    >>> augment = CropFlip(pad=1).for_epoch(4, torch.Generator().manual_seed(0), "cpu")
    >>> augment(torch.arange(8.0).view(2, 1, 2, 2), 2).shape  # samples 2 and 3 of the epoch
    torch.Size([2, 1, 2, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CropFlip", "crop_flip"]


@dataclass(frozen=True)
class CropFlip:
    """A random crop of the input size from the padded image, then a random horizontal flip.

    Attributes:
        pad: Pixels of padding on each side; the crop's offsets lie in ``[0, 2 * pad]``.
        flip: Flip each sample left-right with probability 1/2 (False for digits, e.g. SVHN).
        fill: The value of a padded pixel per channel (the normalized value of black); empty
            pads with zeros.
    """

    pad: int = 4
    flip: bool = True
    fill: tuple[float, ...] = ()

    def draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The random numbers of ``n`` samples: crop offsets ``(n, 2)`` (row, column) and flips.

        The offsets are drawn first, then the flips (all False, drawing nothing, without
        ``flip``); both on the CPU generator, as int64 and bool CPU tensors.
        """
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator)
        if not self.flip:
            return offsets, torch.zeros(n, dtype=torch.bool)
        return offsets, torch.rand(n, generator=generator) < 0.5

    def for_epoch(
        self, n: int, generator: torch.Generator, device: torch.device | str
    ) -> Callable[[Tensor, int], Tensor]:
        """The augmentation of an epoch of ``n`` samples, drawn now and held on ``device``.

        Returns:
            ``augment(x, start)``: :func:`crop_flip` of the batch ``x`` whose first sample is
            the ``start``-th of the epoch, with the numbers drawn for its samples.
        """
        offsets, flips = (t.to(device) for t in self.draw(n, generator))
        fill = torch.tensor(self.fill, device=device) if self.fill else None

        def augment(x: Tensor, start: int) -> Tensor:
            stop = start + x.shape[0]
            return crop_flip(x, offsets[start:stop], flips[start:stop], self.pad, fill)

        return augment


def crop_flip(
    x: Tensor, offsets: Tensor, flips: Tensor, pad: int, fill: Tensor | None = None
) -> Tensor:
    """Crops each sample of ``x`` from its padded copy at its offsets, flipping where asked.

    Sample ``i`` of the result is ``padded[i, :, r:r + H, c:c + W]`` with ``(r, c) =
    offsets[i]``, reversed along the width where ``flips[i]``; ``padded`` is ``x`` with ``pad``
    pixels of ``fill`` (per channel, default 0) on each side.

    Args:
        x: Images ``(B, C, H, W)``.
        offsets: ``(B, 2)`` integers in ``[0, 2 * pad]``, on ``x``'s device.
        flips: ``(B,)`` booleans, on ``x``'s device.
        pad: Padding on each side.
        fill: ``(C,)`` values of the padded pixels, or None for zeros.

    Returns:
        A new contiguous tensor of the shape of ``x``.
    """
    batch, channels, height, width = x.shape
    padded = x.new_zeros(batch, channels, height + 2 * pad, width + 2 * pad)
    if fill is not None:
        padded += fill.view(1, channels, 1, 1)
    padded[:, :, pad : pad + height, pad : pad + width] = x
    rows = offsets[:, :1] + torch.arange(height, device=x.device)
    columns = torch.arange(width, device=x.device)
    columns = torch.where(flips[:, None], width - 1 - columns, columns) + offsets[:, 1:]
    rows = rows.view(batch, 1, height, 1).expand(-1, channels, -1, width + 2 * pad)
    cropped = torch.gather(padded, 2, rows)
    columns = columns.view(batch, 1, 1, width).expand(-1, channels, height, -1)
    return torch.gather(cropped, 3, columns)
