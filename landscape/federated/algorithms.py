"""The six federated algorithms: a client-side objective and a server-side aggregation each.

Every client minimizes ``CE(model(x), y) + R(theta)`` by SGD from the global model ``theta_g``
of the round; the regularizers ``R`` (functions of this module, checked by hand in the tests):

- FedAvg (McMahan et al., 2017): ``R = 0``; the server averages the client models weighted by
  their data size (:func:`weighted_average`, buffers such as BN statistics included).
- FedProx (Li et al., 2020): ``R = mu / 2 * ||theta - theta_g||^2`` (:func:`proximal_term`).
- MOON (Li et al., 2021): ``R = mu * l_con``, the model-contrastive loss
  ``l_con = -log(e^{cos(z, z_g) / tau} / (e^{cos(z, z_g) / tau} + e^{cos(z, z_p) / tau}))``
  averaged over the batch (:func:`contrastive_term`), with ``z`` the input of the classifier
  (the representation) under the local model, ``z_g`` under the global model and ``z_p`` under
  the client's previous local model (kept per client; at a client's first round the global
  model, which makes the term's gradient zero). The global and previous models run in eval mode.
- FedDyn (Acar et al., 2021): ``R = -<g_k, theta> + alpha / 2 * ||theta - theta_g||^2``
  (:func:`dynamic_term`) with the client state ``g_k`` (zero at first), updated after local
  training to ``g_k - alpha (theta_k - theta_g)``. The server keeps
  ``h <- h - alpha * sum_k (n_k / N) (theta_k - theta_g)`` over the round's clients (``N`` the
  samples of all clients) and sends ``sum_k (n_k / n_P) theta_k - h / alpha``.
- FedPAN (Li et al., CVPR 2022): position-aware neurons; a fixed periodic encoding
  ``e_c = A sin(2 pi T c / C)`` of the channel index ``c`` of ``C`` is added to each channel
  (``additive``) or multiplies it as ``1 + e_c`` (``multiplicative``) after every BN layer (after
  every conv and hidden linear layer in a model without BN), in clients and server alike
  (:func:`attach_pan`); aggregation as FedAvg.
- FedSign (this project's reading of the Asymmetric Valley paper): keep the client's signs
  consistent with the global model's,
  ``R = gamma * mean_i relu(-sign(theta_g,i) * theta_i)`` over every parameter element
  (``loss: hinge``, the default), or ``gamma * mean_i relu(-sign(theta_g,i) * theta_i)^2``
  (``loss: squared_hinge``); elements where ``theta_g`` is 0 are free. Aggregation as FedAvg.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.federated.algorithm_names import ALGORITHMS
from landscape.models import classifier_name

__all__ = [
    "ALGORITHMS",
    "FEDSIGN_LOSSES",
    "PAN_MODES",
    "Algorithm",
    "attach_pan",
    "contrastive_term",
    "dynamic_term",
    "make_algorithm",
    "pan_encoding",
    "pan_layers",
    "proximal_term",
    "sign_agreement",
    "sign_term",
    "weighted_average",
]

FEDSIGN_LOSSES: tuple[str, ...] = ("hinge", "squared_hinge")
PAN_MODES: tuple[str, ...] = ("additive", "multiplicative")

# Each algorithm's parameters and their defaults (the schema's `federated.algorithms` block).
DEFAULTS: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "fedprox": {"mu": 0.01},
    "moon": {"mu": 1.0, "tau": 0.5},
    "feddyn": {"alpha": 0.01},
    "fedpan": {"mode": "additive", "amplitude": 0.1, "periods": 1.0},
    "fedsign": {"gamma": 1000.0, "loss": "hinge"},
}

Params = Mapping[str, Tensor]


# --------------------------------------------------------------------------- loss terms


def proximal_term(params: Params, anchor: Params, mu: float) -> Tensor:
    """FedProx: ``mu / 2 * sum_i (theta_i - anchor_i)^2`` over every tensor of ``params``."""
    return 0.5 * mu * sum(((p - anchor[n]) ** 2).sum() for n, p in params.items())


def contrastive_term(z: Tensor, z_global: Tensor, z_previous: Tensor, tau: float) -> Tensor:
    """MOON's model-contrastive loss, averaged over the batch (see the module docstring).

    Args:
        z: Representations under the local model, ``(B, D)`` (flattened beyond dim 1).
        z_global: Under the global model (the positive pair).
        z_previous: Under the client's previous local model (the negative pair).
        tau: Temperature.
    """
    z, z_global, z_previous = (t.flatten(1) for t in (z, z_global, z_previous))
    positive = F.cosine_similarity(z, z_global, dim=1) / tau
    negative = F.cosine_similarity(z, z_previous, dim=1) / tau
    logits = torch.stack([positive, negative], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(z), dtype=torch.int64, device=z.device))


def dynamic_term(params: Params, anchor: Params, grad_state: Params, alpha: float) -> Tensor:
    """FedDyn: ``-sum_i g_i theta_i + alpha / 2 * sum_i (theta_i - anchor_i)^2``."""
    linear = sum((grad_state[n] * p).sum() for n, p in params.items())
    return -linear + proximal_term(params, anchor, alpha)


def sign_term(params: Params, anchor: Params, gamma: float, loss: str = "hinge") -> Tensor:
    """FedSign: ``gamma`` times the mean over all elements of ``relu(-sign(anchor) * theta)``
    (``hinge``) or of its square (``squared_hinge``).

    Raises:
        ValueError: For a ``loss`` not in :data:`FEDSIGN_LOSSES`.
    """
    if loss not in FEDSIGN_LOSSES:
        raise ValueError(
            f"federated.algorithms.fedsign.loss: {loss!r} is not one of {FEDSIGN_LOSSES}"
        )
    flat = torch.cat([p.reshape(-1) for p in params.values()])
    signs = torch.cat([torch.sign(anchor[n]).reshape(-1) for n in params])
    violation = F.relu(-signs * flat)
    return gamma * (violation if loss == "hinge" else violation**2).mean()


# --------------------------------------------------------------------------- FedPAN


def pan_encoding(channels: int, amplitude: float, periods: float, mode: str) -> Tensor:
    """FedPAN's fixed encoding of ``channels`` neurons: ``A sin(2 pi T c / C)``, plus 1 when
    multiplicative.

    >>> pan_encoding(4, 0.5, 1.0, "additive").tolist()
    [0.0, 0.5, 0.0, -0.5]
    """
    if mode not in PAN_MODES:
        raise ValueError(f"federated.algorithms.fedpan.mode: {mode!r} is not one of {PAN_MODES}")
    index = torch.arange(channels, dtype=torch.float64)
    wave = amplitude * torch.sin(2 * math.pi * periods * index / channels)
    wave = torch.where(wave.abs() < 1e-12, torch.zeros_like(wave), wave)
    return (wave if mode == "additive" else 1.0 + wave).float()


def pan_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose outputs carry position encodings: every BN layer; in a model without
    BN, every conv and every linear layer but the classifier."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        return norms
    head = model.get_submodule(classifier_name(model))
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear) and m is not head]


def attach_pan(model: nn.Module, amplitude: float, periods: float, mode: str) -> nn.Module:
    """Adds FedPAN's encoding to the outputs of :func:`pan_layers` (forward hooks; no
    parameters, so aggregation is unchanged). Returns ``model``."""
    for layer in pan_layers(model):
        channels = layer.num_features if hasattr(layer, "num_features") else layer.weight.shape[0]
        code = pan_encoding(channels, amplitude, periods, mode)

        def hook(_module, _inputs, out, code=code):
            shape = (1, -1) + (1,) * (out.dim() - 2)
            c = code.to(out).reshape(shape)
            return out + c if mode == "additive" else out * c

        layer.register_forward_hook(hook)
    return model


# --------------------------------------------------------------------------- server side


def weighted_average(states: Sequence[Params], weights: Sequence[float]) -> dict[str, Tensor]:
    """``sum_k w_k state_k`` per tensor (weights normalized to sum 1), in float64 and cast back;
    integer tensors (BN's ``num_batches_tracked``) are rounded."""
    total = float(sum(weights))
    out = {}
    for name, first in states[0].items():
        acc = sum(float(w) / total * s[name].double() for s, w in zip(states, weights, strict=True))
        out[name] = (acc.round() if not first.is_floating_point() else acc).to(first.dtype)
    return out


def sign_agreement(a: Params, b: Params) -> float:
    """Share of elements of the tensors of ``a`` with the sign of ``b``'s (0 matches only 0)."""
    same = sum(int((torch.sign(t) == torch.sign(b[n])).sum()) for n, t in a.items())
    return same / sum(t.numel() for t in a.values())


def _parameters(model: nn.Module) -> dict[str, Tensor]:
    return dict(model.named_parameters())


def _detached(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


class Algorithm:
    """FedAvg, and the base of the others: the hooks the runner calls, in order.

    ``prepare`` each model built; ``start`` once with the global model; per participating client
    ``begin_client`` (the global model), ``loss`` on each batch, ``end_client`` (the trained local
    model); per round ``aggregate`` of the client states.

    Args:
        params: The algorithm's block of ``federated.algorithms`` (defaults filled in).
        num_clients: Clients in the federation.
        total_samples: Training samples over all clients.
    """

    name = "fedavg"

    def __init__(self, params: Mapping[str, Any], num_clients: int, total_samples: int) -> None:
        self.params = {**DEFAULTS[self.name], **params}
        self.num_clients = num_clients
        self.total_samples = total_samples
        self.anchor: dict[str, Tensor] = {}

    def prepare(self, model: nn.Module) -> nn.Module:
        """Changes a freshly built model's architecture where the algorithm needs it."""
        return model

    def start(self, global_model: nn.Module) -> None:
        """Sets up the server state from the initial global model."""
        self.global_model = global_model

    def begin_client(self, client: int, local: nn.Module) -> None:
        """Called with the local model just set to the global one, before local training."""
        self.anchor = _detached(local)

    def penalty(self, local: nn.Module) -> Tensor | None:
        """The regularizer ``R`` of the local objective (None for none)."""
        return None

    def loss(self, local: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(objective, cross-entropy)`` of one batch under the local model."""
        ce = F.cross_entropy(local(x), y)
        extra = self.penalty(local)
        return (ce if extra is None else ce + extra), ce

    def end_client(self, client: int, local: nn.Module) -> None:
        """Updates the client's state after its local training."""

    def aggregate(
        self, global_state: Params, states: Sequence[Params], sizes: Sequence[int]
    ) -> dict[str, Tensor]:
        """The next global state dict from the round's client state dicts and data sizes."""
        return weighted_average(states, sizes)


class FedProx(Algorithm):
    """FedProx: :func:`proximal_term` with ``mu``."""

    name = "fedprox"

    def penalty(self, local: nn.Module) -> Tensor | None:
        return proximal_term(_parameters(local), self.anchor, self.params["mu"])


class Moon(Algorithm):
    """MOON: :func:`contrastive_term` with ``mu`` and ``tau``; a previous local model per client."""

    name = "moon"

    def start(self, global_model: nn.Module) -> None:
        super().start(global_model)
        self.previous_states: dict[int, dict[str, Tensor]] = {}
        self.previous = None

    def begin_client(self, client: int, local: nn.Module) -> None:
        super().begin_client(client, local)
        if self.previous is None:
            import copy

            self.previous = copy.deepcopy(self.global_model)
        state = self.previous_states.get(client, self.global_model.state_dict())
        self.previous.load_state_dict(state)
        self.previous.eval()
        self.global_model.eval()

    def loss(self, local: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        z, logits = _representation(local, x)
        ce = F.cross_entropy(logits, y)
        with torch.no_grad():
            z_global, _ = _representation(self.global_model, x)
            z_previous, _ = _representation(self.previous, x)
        con = contrastive_term(z, z_global, z_previous, self.params["tau"])
        return ce + self.params["mu"] * con, ce

    def end_client(self, client: int, local: nn.Module) -> None:
        self.previous_states[client] = {
            k: v.detach().clone() for k, v in local.state_dict().items()
        }


class FedDyn(Algorithm):
    """FedDyn: :func:`dynamic_term` with ``alpha``; client gradient states, the server's ``h``."""

    name = "feddyn"

    def start(self, global_model: nn.Module) -> None:
        super().start(global_model)
        zeros = {n: torch.zeros_like(p) for n, p in _detached(global_model).items()}
        self.h = zeros
        self.grads: dict[int, dict[str, Tensor]] = {}

    def begin_client(self, client: int, local: nn.Module) -> None:
        super().begin_client(client, local)
        self.client = client
        if client not in self.grads:
            self.grads[client] = {n: torch.zeros_like(p) for n, p in self.anchor.items()}

    def penalty(self, local: nn.Module) -> Tensor | None:
        grads = self.grads[self.client]
        return dynamic_term(_parameters(local), self.anchor, grads, self.params["alpha"])

    def end_client(self, client: int, local: nn.Module) -> None:
        alpha, grads = self.params["alpha"], self.grads[client]
        for n, p in local.named_parameters():
            grads[n] = grads[n] - alpha * (p.detach() - self.anchor[n])

    def aggregate(
        self, global_state: Params, states: Sequence[Params], sizes: Sequence[int]
    ) -> dict[str, Tensor]:
        alpha = self.params["alpha"]
        mean = weighted_average(states, sizes)
        for n in self.h:
            drift = sum(
                size / self.total_samples * (s[n].double() - global_state[n].double())
                for s, size in zip(states, sizes, strict=True)
            )
            self.h[n] = (self.h[n].double() - alpha * drift).to(self.h[n].dtype)
            mean[n] = (mean[n].double() - self.h[n].double() / alpha).to(mean[n].dtype)
        return mean


class FedPan(Algorithm):
    """FedPAN: :func:`attach_pan` with ``mode``, ``amplitude`` and ``periods``; FedAvg otherwise."""

    name = "fedpan"

    def prepare(self, model: nn.Module) -> nn.Module:
        p = self.params
        return attach_pan(model, p["amplitude"], p["periods"], p["mode"])


class FedSign(Algorithm):
    """FedSign: :func:`sign_term` with ``gamma`` and ``loss``."""

    name = "fedsign"

    def penalty(self, local: nn.Module) -> Tensor | None:
        return sign_term(_parameters(local), self.anchor, self.params["gamma"], self.params["loss"])


_CLASSES = {c.name: c for c in (Algorithm, FedProx, Moon, FedDyn, FedPan, FedSign)}


def make_algorithm(
    name: str, params: Mapping[str, Any], num_clients: int, total_samples: int
) -> Algorithm:
    """The algorithm ``name`` (one of :data:`ALGORITHMS`) with its parameters.

    Raises:
        ValueError: For an unknown name or parameter, naming ``federated.algorithms``.
    """
    if name not in _CLASSES:
        raise ValueError(f"federated.algorithms: {name!r} is not one of {list(ALGORITHMS)}")
    unknown = sorted(set(params) - set(DEFAULTS[name]))
    if unknown:
        raise ValueError(
            f"federated.algorithms.{name}: unknown key(s) {unknown}; "
            f"known: {sorted(DEFAULTS[name])}"
        )
    return _CLASSES[name](params, num_clients, total_samples)


def _representation(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(input of the classifier, logits)`` of one forward pass."""
    head = model.get_submodule(classifier_name(model))
    seen: list[Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return seen[0], logits
