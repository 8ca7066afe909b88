"""Special directions (kind ``special``) of the Asymmetric Valley paper (A3): ``theta_0``,
``theta_f``, ``sign(theta_f)``, ``sign(theta_f - mu)`` and ``sgp`` of the last two."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from landscape.directions.base import Direction, Request, aligned, choice, register
from landscape.directions.noise import noise

SPECIALS = (
    "theta_0",
    "theta_f",
    "sign_theta_f",
    "sign_theta_f_mu",
    "sgp_theta_f",
    "sgp_theta_f_mu",
)


def _sgp(x: Tensor, magnitude: Tensor) -> Tensor:
    return magnitude.abs() * torch.sign(x)


def special(
    of: str,
    theta: Mapping[str, Tensor],
    *,
    theta_0: Mapping[str, Tensor] | None = None,
    seed: int = 0,
) -> Direction:
    """The special directions of the Asymmetric Valley paper (A3).

    - ``theta_0``: the initialization ``theta_0`` itself (needs ``theta_0``).
    - ``theta_f``: the parameters ``theta`` themselves.
    - ``sign_theta_f``: ``sign(theta)``.
    - ``sign_theta_f_mu``: ``sign(theta - mu)``, ``mu`` the mean of each parameter tensor.
    - ``sgp_theta_f``: ``sgp(theta)``; ``sgp_theta_f_mu``: ``sgp(theta - mu)``.

    The papers do not define ``sgp``; here ``sgp(x) = |g| * sign(x)`` with ``g ~ N(0, 1)``
    element-wise: Gaussian magnitudes with the sign pattern of ``x``. ``g`` is drawn as
    ``noise(theta, "gaussian", seed)``, i.e. on the CPU from a generator seeded with ``seed``.
    Elements where ``x`` is 0 are 0.

    Args:
        of: One of :data:`SPECIALS`.
        theta: The parameters ``theta_f``.
        theta_0: The initialization (same names and shapes), for ``of="theta_0"`` only.
        seed: Seed of the Gaussian magnitudes of ``sgp``.

    Returns:
        A new direction with the names, dtypes and devices of ``theta``.

    Raises:
        ValueError: for an unknown ``of`` (listing the valid ones), a missing ``theta_0`` or one
            with other names or shapes.
    """
    if of not in SPECIALS:
        raise ValueError(f"of: unknown special direction {of!r}; one of {list(SPECIALS)}")
    if of == "theta_0":
        if theta_0 is None:
            raise ValueError("of 'theta_0': needs the initialization theta_0 (none given)")
        return {n: t.clone() for n, t in aligned(theta_0, theta, "theta_0").items()}
    if of == "theta_f":
        return {n: t.detach().clone() for n, t in theta.items()}
    if of.endswith("_mu"):
        base = {n: (t.double() - t.double().mean()).to(t.dtype) for n, t in theta.items()}
    else:
        base = {n: t.detach() for n, t in theta.items()}
    if of.startswith("sign"):
        return {n: torch.sign(x) for n, x in base.items()}
    g = noise(theta, "gaussian", seed)
    return {n: _sgp(x, g[n]) for n, x in base.items()}


@register("special")
def _build(request: Request) -> Direction:
    of = choice(request.spec, "of", SPECIALS, "theta_f")
    theta_0 = request.reference("theta_0", "of 'theta_0'") if of == "theta_0" else None
    return special(of, request.params, theta_0=theta_0, seed=request.seed)
