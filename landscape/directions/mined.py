"""Mined directions (kind ``mined``): a w-peak direction of Algorithm 1 (``algorithm: wpeak``,
V9) or a vvv-basin direction of Algorithm 2 (``vvv``, V10), mined by :mod:`landscape.mining` over
fixed training batches (:func:`landscape.directions.gradient.gradient_batches`).

:mod:`landscape.mining` imports the package's primitives, so this module is not imported by the
package ``__init__``: :func:`landscape.directions.base.builder` imports it when a ``mined``
direction is first built.
"""

from __future__ import annotations

from landscape.directions.base import Direction, Request, aligned, choice, register
from landscape.directions.gradient import gradient_batches
from landscape.directions.mined_spec import ALGORITHMS, phi_init
from landscape.mining import mine_vvv, mine_wpeak


@register("mined")
def _build(request: Request) -> Direction:
    spec, model = request.spec, request.model
    batches = list(gradient_batches(spec, request.data))
    algorithm = choice(spec, "algorithm", ALGORITHMS, "wpeak")
    start = phi_init(spec)
    common = {"epochs": spec.get("epochs", 10), "seed": spec.get("seed", 0)}
    if algorithm == "wpeak":
        return mine_wpeak(model, batches, lr=spec.get("lr", 0.1), **common)
    init = None
    if start != "theta":
        phi_0 = aligned(
            request.reference("phi_init", f"phi_init {start!r}"), request.params, "phi_init"
        )
        init = {n: phi_0[n] - t for n, t in request.params.items()}
    return mine_vvv(
        model,
        batches,
        lr=spec.get("lr", 0.01),
        alpha=spec.get("alpha", 0.0),
        gamma=spec.get("gamma", 0.5),
        init=init,
        **common,
    )
