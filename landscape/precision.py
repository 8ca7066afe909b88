"""CUDA's float32 switches: IEEE float32 or TF32 for matmuls and cuDNN convolutions.

PyTorch runs cuDNN convolutions in TF32 by default (``torch.backends.cudnn.conv.fp32_precision``
is ``"tf32"``; matmuls are IEEE), so "float32" on a GPU is not float32 unless asked for. The grid
engine's ``fp32`` and every Hessian product ask for it (TF32's 10-bit mantissa would bound the
accuracy of eigenvalues near 1e-3).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def float32_precision(mode: str) -> Iterator[None]:
    """CUDA float32 matmuls and cuDNN convolutions in ``mode`` (``ieee`` or ``tf32``) inside.

    Process-wide switches, restored on exit; they do nothing on the CPU.
    """
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision = conv.fp32_precision = mode
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved
