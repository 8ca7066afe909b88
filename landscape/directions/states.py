"""BN running statistics in a direction (``bn_states: true``): tomgoldstein/loss-landscape's
``states`` directions, which perturb ``running_mean`` and ``running_var`` together with the
weights.

Off by default, as both papers perturb the weights only. With it on, a direction file holds a
second tensor group ``buffers`` with one entry per BN ``running_mean`` and ``running_var``; the
evaluation (:class:`landscape.grid.GridEvaluator`) then sets those buffers to
``theta's + lambda * d`` at every point. The ``params`` group is the same as without the option,
bit for bit, so a curve with and without it shows the effect of the statistics alone.

- ``noise``: the buffers' noise continues the generator of the weights' noise (drawn after every
  parameter, so the weights' draw is unchanged), then is normalized like a weight tensor of the
  same shape: under ``filter`` each element is its own filter, ``d_i <- |s_i| d_i / |d_i|``;
  under ``layer`` per tensor; under ``norm`` the buffers as a whole to their norm; ``raw`` kept.
  (loss-landscape copies the statistics themselves into the direction, ``d = s``.)
- ``checkpoint``: the target's statistics minus theta's, so that ``lambda = 1`` is the target
  model, statistics included.

The group restriction keeps the statistics of the BN layers whose weight is in the group, and
``scale`` multiplies them. Only ``bn_mode: keep`` sees them: ``recompute`` re-estimates every
point's statistics from training batches, overwriting any perturbation (the workflow refuses
that combination, :func:`landscape.config.check_bn_states`). Variances pushed below zero give
NaN losses, stored as computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from landscape.directions.base import Direction, normalize
from landscape.directions.noise import noise_stream
from landscape.params import group_names

STATE_KINDS = ("noise", "checkpoint")
STATS = ("running_mean", "running_var")
_BN = nn.modules.batchnorm._BatchNorm


def bn_statistics(model: nn.Module) -> dict[str, Tensor]:
    """The running means and variances of every BN layer, by buffer name, detached."""
    out: dict[str, Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, _BN) and module.track_running_stats:
            for stat in STATS:
                out[f"{name}.{stat}" if name else stat] = getattr(module, stat).detach()
    return out


def _in_group(model: nn.Module, group: str, stats: Mapping[str, Tensor]) -> set[str]:
    """The statistics of the BN layers whose ``weight`` (or ``bias``) is in a group."""
    names = set(group_names(model, group))
    keep = set()
    for stat in stats:
        layer = stat.rsplit(".", 1)[0] if "." in stat else ""
        prefix = f"{layer}." if layer else ""
        if f"{prefix}weight" in names or f"{prefix}bias" in names:
            keep.add(stat)
    return keep


def state_direction(
    spec: Mapping[str, Any],
    model: nn.Module,
    params: Mapping[str, Tensor],
    target: Mapping[str, Tensor] | None = None,
) -> Direction:
    """The BN-statistics part of a ``bn_states`` direction (see the module docstring).

    Args:
        spec: The direction's config block (``kind``, ``distribution``, ``seed``,
            ``normalization``, ``group``, ``scale``).
        model: The model at ``theta``.
        params: Its trainable parameters (the weights' draw comes first, for ``noise``).
        target: The target checkpoint's state dict (``checkpoint``).

    Returns:
        ``{buffer name: tensor}``, empty for a model without BN.

    Raises:
        ValueError: for another kind, ``closest_to``, ``normalization: match``, or a target
            without the statistics.
    """
    kind = spec.get("kind", "noise")
    if kind not in STATE_KINDS:
        raise ValueError(f"bn_states: applies to kinds {list(STATE_KINDS)}, not {kind!r}")
    if "closest_to" in spec or spec.get("normalization") == "match":
        raise ValueError("bn_states: not with closest_to (the chosen draw has no statistics)")
    stats = bn_statistics(model)
    if not stats:
        return {}
    if kind == "noise":
        stream = noise_stream(
            {**params, **stats}, spec.get("distribution", "gaussian"), spec.get("seed", 0)
        )
        draw = next(stream)
        raw = {n: draw[n] for n in stats}
        d = normalize(raw, stats, spec.get("normalization", "filter"), "like_weights")
    else:
        if target is None:
            raise ValueError("bn_states: kind 'checkpoint' needs the target's state dict")
        missing = [n for n in stats if n not in target]
        if missing:
            raise ValueError(f"bn_states: the target checkpoint has no {missing[0]!r}")
        d = {n: target[n].to(s) - s for n, s in stats.items()}
    group = spec.get("group", "ALL")
    if group != "ALL":
        keep = _in_group(model, group, stats)
        d = {n: t if n in keep else torch.zeros_like(t) for n, t in d.items()}
    scale = float(spec.get("scale", 1.0))
    return {n: t * scale for n, t in d.items()}
