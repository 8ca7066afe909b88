"""Eigenvector directions (kind ``eigenvector``): a Hessian eigenvector of the checkpoint, read
from the spectrum file that :func:`landscape.curvature.compute_spectrum` wrote (V8, V11)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from landscape import store
from landscape.directions.base import Direction, Request, register


def eigenvector(
    params: Mapping[str, Tensor], spectrum: str | Path, which: str, index: int
) -> Direction:
    """The ``index``-th (from 1) eigenvector of family ``which`` in a spectrum file.

    Args:
        params: The parameters the spectrum was computed at (names, order, dtype, device).
        spectrum: HDF5 with ``{which}/eigenvectors`` (``k x n``) and a ``names`` attribute.
        which: ``LA`` or ``SA``.
        index: 1-based rank.

    Raises:
        ValueError: naming the file, if it lacks ``which``, holds fewer than ``index`` vectors,
            or was computed for other parameters.
    """
    art = store.open(spectrum)
    key = f"{which}/eigenvectors"
    if key not in art:
        raise ValueError(
            f"{spectrum}: no {which!r} eigenvectors (add {which} to hessian.spectrum.which)"
        )
    vectors = art[key]
    if not 1 <= index <= len(vectors):
        raise ValueError(
            f"{spectrum}: eigenvector {which} {index} asked for, the file holds {len(vectors)} "
            "(raise hessian.spectrum.k)"
        )
    if list(params) != list(art.attrs["names"]):
        raise ValueError(f"{spectrum}: computed for other parameters than the checkpoint's")
    out, start = {}, 0
    for name, p in params.items():
        chunk = vectors[index - 1, start : start + p.numel()]
        out[name] = torch.as_tensor(chunk, dtype=p.dtype, device=p.device).view(p.shape)
        start += p.numel()
    return out


@register("eigenvector")
def _build(request: Request) -> Direction:
    return dict(request.reference("eigenvector", "kind 'eigenvector'"))
