"""SGD with momentum: torch.optim.SGD's update and checkpoint format, without its start-up cost.

``torch.optim.Optimizer`` imports ``torch._dynamo`` in its constructor (``add_param_group`` is
wrapped by ``torch._disable_dynamo``): 1.2-1.5 s per process here, and 1.5-4 s on a loaded
2-core machine, paid by every training job of the workflow (each is a process of its own, most
of them a few seconds of actual training at the embedded scale). :class:`SGD` performs
``torch.optim.SGD``'s update (dampening 0, not maximizing) with the ``torch._foreach_*`` tensor
operations of its multi-tensor implementation, in the same order, so on the CPU the parameters
are bitwise those of ``torch.optim.SGD`` (either implementation; tests/test_sgd.py), and on a GPU
it is one kernel per operation over all parameters with no host synchronization, as
torch.optim's default there. Its :meth:`~SGD.state_dict` is ``torch.optim.SGD``'s, so a
checkpoint written by one is resumed by the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor


class SGD:
    """``torch.optim.SGD`` with ``dampening=0``: per step, with ``d`` the gradient,
    ``d += weight_decay * p``; ``b = momentum * b + d`` (``b = d`` at a parameter's first step);
    ``p -= lr * (d + momentum * b if nesterov else b)``.

    One parameter group, ``param_groups[0]``, whose ``"lr"`` may be set between steps (a
    schedule), as with torch.optim. Parameters whose ``.grad`` is None are skipped (no momentum
    buffer is made for them).

    Raises:
        ValueError: for a negative ``lr``, ``momentum`` or ``weight_decay``, or Nesterov without
            momentum (torch.optim's checks).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"SGD: lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, "
                f"{weight_decay}"
            )
        if nesterov and momentum <= 0:
            raise ValueError("SGD: Nesterov momentum requires momentum > 0")
        self.params = list(params)
        self.param_groups = [
            {
                "params": self.params,
                "lr": lr,
                "momentum": momentum,
                "dampening": 0,
                "weight_decay": weight_decay,
                "nesterov": nesterov,
                "maximize": False,
                "foreach": None,
                "differentiable": False,
                "fused": None,
            }
        ]
        self.buffers: list[Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drops every parameter's gradient (``set_to_none=False`` zeroes it in place)."""
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        group = self.param_groups[0]
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        index = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not index:
            return
        params = [self.params[i] for i in index]
        grads = [p.grad for p in params]
        if weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
        if momentum != 0:
            bufs = [self.buffers[i] for i in index]
            old = [k for k, b in enumerate(bufs) if b is not None]
            if old:
                kept = [bufs[k] for k in old]
                torch._foreach_mul_(kept, momentum)
                torch._foreach_add_(kept, [grads[k] for k in old], alpha=1)
            for k, i in enumerate(index):
                if bufs[k] is None:
                    bufs[k] = self.buffers[i] = torch.clone(grads[k]).detach()
            if group["nesterov"]:
                grads = torch._foreach_add(grads, bufs, alpha=momentum)
            else:
                grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.SGD.state_dict()``'s layout: momentum buffers by parameter index."""
        state = {i: {"momentum_buffer": b} for i, b in enumerate(self.buffers) if b is not None}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self.params)))
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Loads a state of :meth:`state_dict` or of a ``torch.optim.SGD`` over the same
        parameters: momentum buffers (cast to each parameter's device and dtype) and, as
        torch.optim does, the saved hyperparameters.

        Raises:
            ValueError: if the state is not one group over as many parameters, or it uses
                dampening or maximization.
        """
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            sizes = [len(g["params"]) for g in groups]
            raise ValueError(
                f"SGD state: parameter groups of {sizes} parameters for one group of "
                f"{len(self.params)}"
            )
        saved = groups[0]
        if saved.get("dampening", 0) != 0 or saved.get("maximize", False):
            raise ValueError("SGD state: dampening and maximize are not supported")
        # the saved group itself, as torch.optim keeps it: a checkpoint written after a resume
        # then pickles to the same bytes as torch.optim's (pickle memoizes by object)
        group = {**saved, "params": self.params}
        for key, value in self.param_groups[0].items():
            group.setdefault(key, value)
        self.param_groups[0] = group
        position = {pid: i for i, pid in enumerate(saved["params"])}
        self.buffers = [None] * len(self.params)
        for pid, entry in state_dict["state"].items():
            i, buf = position[pid], entry.get("momentum_buffer")
            if buf is not None:
                p = self.params[i]
                self.buffers[i] = buf.detach().to(device=p.device, dtype=p.dtype, copy=True)
