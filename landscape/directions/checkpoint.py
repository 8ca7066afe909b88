"""Checkpoint directions (kind ``checkpoint``): ``theta_target - theta`` towards another
checkpoint (V4, V7)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from landscape.directions.base import Direction, Request, aligned, register


def towards(theta: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> Direction:
    """The direction ``target - theta`` to another checkpoint, over the names of ``theta``.

    ``target`` may hold more tensors (a whole state dict); only ``theta``'s names are used, and
    its tensors are moved to ``theta``'s device and dtype.

    Raises:
        ValueError: if ``target`` lacks a parameter or has it in another shape (naming it).
    """
    other = aligned(target, theta, "target")
    return {n: other[n] - t.detach() for n, t in theta.items()}


@register("checkpoint")
def _build(request: Request) -> Direction:
    return towards(request.params, request.reference("target", "kind 'checkpoint'"))
