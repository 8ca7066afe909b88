"""Noise directions (kind ``noise``): element-wise draws of one of :data:`NOISE`, and the most
overlapping of several draws with a reference direction (``closest_to``, V6)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from landscape.directions.base import (
    Direction,
    Request,
    aligned,
    angle_degrees,
    cosine,
    global_norm,
    register,
)


def _student_t(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    # Student-t with 3 degrees of freedom: N(0,1) / sqrt(chi2_3 / 3).
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    chi2 = torch.randn((*shape, 3), generator=g, dtype=torch.float64).pow(2).sum(-1)
    return z / torch.sqrt(chi2 / 3)


def _from_uniform(transform: Callable[[Tensor], Tensor]) -> Callable:
    def sample(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
        u = torch.rand(shape, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        return transform(u)

    return sample


NOISE: dict[str, Callable[[tuple[int, ...], torch.Generator], Tensor]] = {
    "gaussian": lambda s, g: torch.randn(s, generator=g, dtype=torch.float64),
    "uniform": _from_uniform(lambda u: 2 * u - 1),
    "rademacher": lambda s, g: torch.randint(0, 2, s, generator=g).double() * 2 - 1,
    "laplace": _from_uniform(lambda u: -torch.sign(u - 0.5) * torch.log1p(-2 * (u - 0.5).abs())),
    "student_t": _student_t,
    "logistic": _from_uniform(lambda u: torch.log(u) - torch.log1p(-u)),
    "cauchy": _from_uniform(lambda u: torch.tan(torch.pi * (u - 0.5))),
}


def noise(params: Mapping[str, Tensor], distribution: str, seed: int) -> Direction:
    """Element-wise noise with the shape, dtype and device of every parameter.

    Raises:
        ValueError: for an unknown distribution.
    """
    return next(noise_stream(params, distribution, seed))


def noise_stream(params: Mapping[str, Tensor], distribution: str, seed: int) -> Iterator[Direction]:
    """Endless noise directions drawn one after the other from one CPU generator seeded with
    ``seed``: the first is :func:`noise` of that seed, each later one a fresh draw.

    Raises:
        ValueError: for an unknown distribution.
    """
    if distribution not in NOISE:
        raise ValueError(f"distribution: unknown {distribution!r}; one of {sorted(NOISE)}")
    g = torch.Generator().manual_seed(seed)
    sample = NOISE[distribution]
    while True:
        yield {
            n: sample(tuple(p.shape), g).to(device=p.device, dtype=p.dtype)
            for n, p in params.items()
        }


def closest_noise(
    params: Mapping[str, Tensor],
    distribution: str,
    seed: int,
    reference: Mapping[str, Tensor],
    candidates: int = 100,
) -> tuple[Direction, dict[str, Any]]:
    """The most overlapping of ``candidates`` noise directions with a reference (V6, Fig. 6).

    The candidates are the first ``candidates`` draws of :func:`noise_stream` (candidate 0 is
    :func:`noise` of ``seed``), compared as drawn, before any transform, by their cosine with
    ``reference`` over all trainable parameters; the largest cosine (the smallest angle) wins,
    the first one on a tie. Candidates are drawn one at a time, so memory holds two of them.

    Args:
        params: The parameters (names, shapes, dtypes, devices of the draws).
        distribution: One of :data:`NOISE`.
        seed: Seed of the stream.
        reference: The direction to overlap with (same names and shapes).
        candidates: How many draws to compare (>= 1).

    Returns:
        The chosen draw and ``{"closest_index", "closest_angle", "candidate_angle_min",
        "candidate_angle_median"}`` (angles in degrees to the reference).

    Raises:
        ValueError: for fewer than one candidate, a zero reference, or a reference of other
            names or shapes.
    """
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"closest_to.candidates: expected an integer >= 1, got {candidates!r}")
    ref = aligned(reference, params, "closest_to: the reference direction")
    if global_norm(ref) == 0:
        raise ValueError("closest_to: the reference direction is zero (no angle to it)")
    best, best_cos, cosines = None, -math.inf, []
    stream = noise_stream(params, distribution, seed)
    for _ in range(candidates):
        draw = next(stream)
        cosines.append(cosine(draw, ref))
        if cosines[-1] > best_cos:
            best, best_cos = draw, cosines[-1]
    angles = [angle_degrees(c) for c in cosines]
    record = {
        "closest_index": cosines.index(best_cos),
        "closest_angle": angle_degrees(best_cos),
        "candidate_angle_min": min(angles),
        "candidate_angle_median": statistics.median(angles),
    }
    return best, record


@register("noise")
def _build(request: Request) -> Direction:
    spec = request.spec
    distribution = spec.get("distribution", "gaussian")
    if "closest_to" not in spec:
        return noise(request.params, distribution, request.seed)
    reference = request.reference("closest_to", "closest_to")
    candidates = spec["closest_to"].get("candidates", 100)
    eps, record = closest_noise(request.params, distribution, request.seed, reference, candidates)
    request.record.update(record)
    return eps
