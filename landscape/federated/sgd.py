"""The clients' local optimizer: torch.optim.SGD's update, without torch.optim's start-up cost.

A client trains from the global model with a fresh optimizer every round, so it needs nothing of
torch.optim but the update itself. torch.optim's first ``step`` imports ``torch._dynamo``
(1.5-4 s per process on a 2-core machine, as long as a whole embedded federated run), and every
run of the A10 table is a process of its own. :class:`LocalSGD` performs the update of
``torch.optim.SGD`` (dampening 0, no Nesterov) with the same tensor operations in the same
order: on the CPU the parameters are bitwise those of torch.optim.SGD
(tests/test_federated.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class LocalSGD:
    """SGD with momentum and weight decay: ``g += wd p; b = m b + g (b = g first); p -= lr b``."""

    def __init__(
        self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            if self.momentum != 0:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = grad.detach().clone()
                else:
                    buf.mul_(self.momentum).add_(grad)
                grad = buf
            p.add_(grad, alpha=-self.lr)
