"""A9: the three theory demos of the Asymmetric Valley paper (section "ReLU & Softmax").

Each demo compares noise ``eps`` with random signs (raw) against sign-consistent noise
``|eps| * sign(theta_f)`` along ``theta_f + lambda * eps``:

- :func:`preactivation_shift` (a): for a trained linear layer ``W`` and the hidden
  representations ``H`` feeding it, the distribution of ``(w + lambda |delta| sign(w))^T h`` over
  every unit and sample, before and after ReLU, with ``delta ~ N(0, 1)`` scaled per row to
  ``||w||`` (Filter-NS); histograms on bins shared by every lambda, quantiles, and the share of
  (unit, sample) pairs whose on/off state differs from lambda = 0.
- :func:`activation_agreement` (b): the 2x2 confusion matrix (active/inactive at ``theta_f`` vs
  at the perturbed model) of every ``nn.ReLU`` output element, summed over units and samples, per
  lambda; agreement = trace / total. The models of :mod:`landscape.models` build every ReLU as an
  ``nn.ReLU`` module (ResNet blocks call one module twice: each call counts), so forward hooks
  see them all; a model without an ``nn.ReLU`` module (functional relu only) is refused.
- :func:`softmax_demo` (c): a linear softmax classifier ``logits = x W^T + b`` along
  ``W + lambda eps``: error, cross-entropy, mean ``tr(P_x)`` with ``P_x = diag(p) - p p^T``,
  ``tr(H) = mean(tr(P_x) ||x||^2)`` (the Hessian of the mean cross-entropy in ``W`` is the mean
  of ``P_x kron x x^T``), ``eps^T g`` and ``eps^T H eps``, all in closed form.

Choice for the workflow (:func:`compute_theory`): (a) uses the run's last ``nn.Linear`` (the
classifier) and its input at ``theta_f`` (for the MLP the last post-ReLU hidden layer); (b) the
run's model with Filter-NS Gaussian noise on every weight tensor (biases and other 1-D tensors
zero, the default of noise directions) and its sign-consistent version; (c) a linear softmax
classifier fitted on the flattened inputs of the same training sample by ``steps`` of full-batch
gradient descent from zero in float64 (step ``1 / L`` with ``L`` the Lipschitz bound
``0.5 * lambda_max(mean [x, 1][x, 1]^T)`` of the gradient), deterministic and independent of
the run's network, as the paper's "simple softmax classification" demo. The noise of (a) and (c)
is drawn per row of the weight matrix (Filter-NS: a row is a filter). Every draw is seeded from
the block's ``seed``; (a) and (c) compute in float64 on the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import store
from landscape.data import load_data
from landscape.directions import noise, normalize, sign_consistent, trainable
from landscape.models import classifier_name
from landscape.train import load_model, resolve_device

NOISES: tuple[str, ...] = ("raw", "sign_consistent")
SOFTMAX_METRICS: tuple[str, ...] = ("error", "loss", "trace_p", "trace_h", "eps_g", "eps_h_eps")
QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
DEFAULT_LAMBDAS: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)


# --------------------------------------------------------------------------- noise


def filter_noise(weight: Tensor, seed: int) -> Tensor:
    """Gaussian noise of ``weight``'s shape, each row scaled to that row's norm (Filter-NS).

    Drawn in float64 on the CPU from a generator seeded with ``seed``.
    """
    w = weight.detach().double().cpu()
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(w.shape, generator=g, dtype=torch.float64)
    rows = w.reshape(w.shape[0], -1).norm(dim=1) / delta.reshape(w.shape[0], -1).norm(dim=1)
    return delta * rows.reshape(-1, *([1] * (w.dim() - 1)))


def sign_consistent_like(eps: Tensor, weight: Tensor) -> Tensor:
    """``|eps| * sign(weight)`` (zero where the weight is zero)."""
    return eps.abs() * torch.sign(weight.detach().to(eps))


# --------------------------------------------------------------------------- (a) pre-activations


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts on ``edges`` with every value in a bin (the outermost edges enclose the values)."""
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(idx.ravel(), minlength=len(edges) - 1).astype(np.int64)


def preactivation_shift(
    weight: Tensor,
    hidden: Tensor,
    lambdas: Sequence[float],
    seed: int,
    bins: int = 60,
    quantiles: Sequence[float] = QUANTILES,
) -> dict[str, np.ndarray]:
    """Distribution of ``(w + lambda |delta| sign(w))^T h`` over units and samples (demo a).

    Args:
        weight: ``W`` (out x in) of a trained linear layer.
        hidden: ``H`` (samples x in), the representations that feed it.
        lambdas: Perturbation scales.
        seed: Seed of ``delta`` (:func:`filter_noise`).
        bins: Histogram bins, shared by every lambda and by before/after ReLU.
        quantiles: Quantile levels in [0, 1].

    Returns:
        ``lambda``, ``edges`` (bins + 1), ``pre_counts`` and ``post_counts`` (lambda x bins; each
        row sums to samples * out), ``quantile``, ``pre_quantiles`` and ``post_quantiles``
        (lambda x quantile), ``pre_mean``, ``post_mean``, ``flip_share`` (share of (unit, sample)
        pairs whose on/off state, pre-activation > 0, differs from lambda = 0), ``on_to_off`` and
        ``off_to_on`` (the two kinds of change, as shares of all pairs), per lambda.
    """
    w = weight.detach().double().cpu()
    h = hidden.detach().double().cpu().reshape(hidden.shape[0], -1)
    if w.dim() != 2 or h.shape[1] != w.shape[1]:
        raise ValueError(
            f"preactivation_shift: weight {tuple(w.shape)} does not take hidden {tuple(h.shape)}"
        )
    eps = sign_consistent_like(filter_noise(w, seed), w)
    lams = np.asarray(lambdas, dtype=np.float64)
    pre = np.stack([(h @ (w + float(lam) * eps).T).numpy() for lam in lams])
    on0 = (h @ w.T).numpy() > 0
    post = np.maximum(pre, 0.0)
    lo, hi = min(float(pre.min()), 0.0), max(float(pre.max()), 0.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    on = pre > 0
    flat = pre.reshape(len(lams), -1)
    return {
        "lambda": lams,
        "edges": edges,
        "pre_counts": np.stack([_histogram(p, edges) for p in pre]),
        "post_counts": np.stack([_histogram(p, edges) for p in post]),
        "quantile": np.asarray(quantiles, dtype=np.float64),
        "pre_quantiles": np.quantile(flat, quantiles, axis=1).T,
        "post_quantiles": np.quantile(np.maximum(flat, 0.0), quantiles, axis=1).T,
        "pre_mean": flat.mean(axis=1),
        "post_mean": np.maximum(flat, 0.0).mean(axis=1),
        "flip_share": (on != on0).reshape(len(lams), -1).mean(axis=1),
        "on_to_off": (on0 & ~on).reshape(len(lams), -1).mean(axis=1),
        "off_to_on": (~on0 & on).reshape(len(lams), -1).mean(axis=1),
    }


# --------------------------------------------------------------------------- (b) agreement


def relu_modules(model: nn.Module) -> list[nn.Module]:
    """Every ``nn.ReLU`` module of ``model``.

    Raises:
        ValueError: if there is none (a functional relu cannot be hooked).
    """
    found = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no nn.ReLU module: activation agreement hooks nn.ReLU "
            "modules and cannot see a functional relu"
        )
    return found


@contextmanager
def _recorded_activations(model: nn.Module):
    """Collects ``output > 0`` of every ``nn.ReLU`` call (a list, in call order) while open."""
    masks: list[Tensor] = []

    def hook(_module, _inputs, output):
        masks.append((output > 0).reshape(output.shape[0], -1).cpu())

    handles = [m.register_forward_hook(hook) for m in relu_modules(model)]
    try:
        yield masks
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def _activation_masks(model: nn.Module, batches: Sequence[Tensor]) -> Tensor:
    """Concatenated on/off state of every ReLU output element of every sample (one flat vector)."""
    parts = []
    with _recorded_activations(model) as masks:
        for x in batches:
            model(x)
            parts.append(torch.cat([m.reshape(-1) for m in masks]))
            masks.clear()
    return torch.cat(parts)


@contextmanager
def _shifted(model: nn.Module, direction: Mapping[str, Tensor], lam: float):
    """The model's parameters moved to ``theta + lam * direction`` while open, restored after."""
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in direction}
    try:
        with torch.no_grad():
            for n, d in direction.items():
                params[n].add_(d.to(params[n]), alpha=float(lam))
        yield model
    finally:
        with torch.no_grad():
            for n, value in saved.items():
                params[n].copy_(value)


def activation_agreement(
    model: nn.Module,
    data: Tensor | Sequence[Tensor],
    direction: Mapping[str, Tensor],
    lambdas: Sequence[float],
) -> dict[str, np.ndarray]:
    """ReLU on/off confusion between ``theta_f`` and ``theta_f + lambda * direction`` (demo b).

    Args:
        model: The model at ``theta_f`` (used in its current train/eval mode; restored after).
        data: Inputs, one tensor or a sequence of batches, on the model's device.
        direction: Parameter name to a tensor (parameters not named stay fixed).
        lambdas: Perturbation scales.

    Returns:
        ``lambda``, ``confusion`` (lambda x 2 x 2 counts; rows: active, inactive at ``theta_f``;
        columns: active, inactive when perturbed) and ``agreement`` (trace / total) per lambda.
    """
    batches = [data] if isinstance(data, Tensor) else list(data)
    base = _activation_masks(model, batches)
    confusion = []
    for lam in lambdas:
        with _shifted(model, direction, lam):
            moved = _activation_masks(model, batches)
        confusion.append(
            [
                [int((base & moved).sum()), int((base & ~moved).sum())],
                [int((~base & moved).sum()), int((~base & ~moved).sum())],
            ]
        )
    conf = np.asarray(confusion, dtype=np.int64).reshape(len(lambdas), 2, 2)
    agreement = np.trace(conf, axis1=1, axis2=2) / conf.sum(axis=(1, 2))
    return {"lambda": np.asarray(lambdas, np.float64), "confusion": conf, "agreement": agreement}


def model_noise(model: nn.Module, seed: int) -> dict[str, dict[str, Tensor]]:
    """Filter-NS Gaussian noise on the model's trainable parameters (1-D tensors zero), raw and
    sign-consistent with ``theta_f``."""
    params = trainable(model)
    raw = normalize(noise(params, "gaussian", seed), params, "filter", "zero")
    return {"raw": raw, "sign_consistent": sign_consistent(raw, params)}


# --------------------------------------------------------------------------- (c) softmax


def _logits(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    z = x @ weight.T
    return z if bias is None else z + bias


def softmax_terms(
    x: Tensor, y: Tensor, weight: Tensor, eps: Tensor, bias: Tensor | None = None
) -> dict[str, float]:
    """The six closed-form softmax metrics at ``weight`` along ``eps`` (the mean over samples).

    ``u = x eps^T`` is each logit's derivative along ``eps``; with ``p`` the probabilities and
    ``e_y`` the one-hot label: ``eps^T g = mean((p - e_y) . u)``,
    ``eps^T H eps = mean(u^T P_x u) = mean(p . u^2 - (p . u)^2)``, ``tr(P_x) = 1 - |p|^2`` and
    ``tr(H) = mean(tr(P_x) |x|^2)``.
    """
    logits = _logits(x, weight, bias)
    logp = torch.log_softmax(logits, dim=1)
    p = logp.exp()
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).to(p)
    u = x @ eps.T
    trace_p = 1.0 - p.pow(2).sum(dim=1)
    pu = (p * u).sum(dim=1)
    return {
        "error": float((logits.argmax(dim=1) != y).double().mean()),
        "loss": float(-(onehot * logp).sum(dim=1).mean()),
        "trace_p": float(trace_p.mean()),
        "trace_h": float((trace_p * x.pow(2).sum(dim=1)).mean()),
        "eps_g": float(((p - onehot) * u).sum(dim=1).mean()),
        "eps_h_eps": float(((p * u.pow(2)).sum(dim=1) - pu.pow(2)).mean()),
    }


def softmax_demo(
    x: Tensor,
    y: Tensor,
    W: Tensor,
    eps: Tensor,
    lambdas: Sequence[float],
    b: Tensor | None = None,
) -> dict[str, np.ndarray]:
    """The softmax metrics of :func:`softmax_terms` along ``W + lambda eps`` (demo c), float64.

    Returns:
        ``lambda`` and one array per name of :data:`SOFTMAX_METRICS` (one value per lambda).
    """
    x, W, eps = x.double().reshape(x.shape[0], -1), W.double(), eps.double()
    b = None if b is None else b.double()
    rows = [softmax_terms(x, y, W + float(lam) * eps, eps, b) for lam in lambdas]
    out = {"lambda": np.asarray(lambdas, np.float64)}
    out.update({k: np.array([r[k] for r in rows]) for k in SOFTMAX_METRICS})
    return out


def fit_softmax(
    x: Tensor, y: Tensor, num_classes: int, steps: int = 300
) -> tuple[Tensor, Tensor, dict[str, float]]:
    """A linear softmax classifier fitted by full-batch gradient descent from zero, float64.

    The step is ``1 / L`` with ``L = 0.5 * lambda_max(mean [x, 1][x, 1]^T)``, a bound on the
    Lipschitz constant of the mean cross-entropy's gradient, so the loss decreases every step.

    Returns:
        ``(W, b, info)`` with ``info`` the step size and final training loss and error.
    """
    x = x.double().reshape(x.shape[0], -1)
    xb = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    lipschitz = 0.5 * float(torch.linalg.eigvalsh(xb.T @ xb / x.shape[0])[-1])
    lr = 1.0 / lipschitz
    theta = torch.zeros(num_classes, xb.shape[1], dtype=x.dtype)
    onehot = torch.nn.functional.one_hot(y, num_classes).to(x)
    for _ in range(steps):
        p = torch.softmax(xb @ theta.T, dim=1)
        theta -= lr * (p - onehot).T @ xb / x.shape[0]
    W, b = theta[:, :-1].clone(), theta[:, -1].clone()
    final = softmax_terms(x, y, W, torch.zeros_like(W), b)
    return W, b, {"lr": lr, "loss": final["loss"], "error": final["error"]}


# --------------------------------------------------------------------------- workflow


def _last_linear_input(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The classifier's weight and the input it receives for ``x`` (at the current parameters)."""
    layer = model.get_submodule(classifier_name(model))
    seen: list[Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return layer.weight.detach(), seen[0]


def compute_theory(
    checkpoint: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the three demos for one checkpoint (kind ``theory``; see the module docstring).

    ``spec`` is the ``theory`` block without ``runs``/``epochs``: ``lambdas``, ``seed``,
    ``samples`` (a class-proportional training sample drawn with ``seed``), ``bins`` and
    ``steps``. Datasets: ``relu/*`` (a), ``agreement/confusion`` and ``agreement/agreement``
    (noise x lambda [x 2 x 2]) (b), ``softmax/{metric}`` (noise x lambda) (c); the ``noise``
    scale is 0 = raw, 1 = sign-consistent (attribute ``noise_names``).
    """
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    data = load_data(dataset, dev, key=f"datasets.{meta['spec']['dataset_name']}")
    lambdas = list(spec.get("lambdas", DEFAULT_LAMBDAS))
    seed = int(spec.get("seed", 0))
    fixed = data.train.sample(spec.get("samples", 512), seed)
    x, y = (torch.cat(t) for t in zip(*fixed.batches(512), strict=True))

    weight, hidden = _last_linear_input(model, x)
    shift = preactivation_shift(weight, hidden, lambdas, seed, bins=spec.get("bins", 60))
    directions = model_noise(model, seed)
    agree = {k: activation_agreement(model, x, d, lambdas) for k, d in directions.items()}
    xs, ys = x.detach().double().cpu().reshape(x.shape[0], -1), y.cpu()
    W, b, fit = fit_softmax(xs, ys, data.num_classes, spec.get("steps", 300))
    raw = filter_noise(W, seed)
    eps = {"raw": raw, "sign_consistent": sign_consistent_like(raw, W)}
    soft = {k: softmax_demo(xs, ys, W, e, lambdas, b) for k, e in eps.items()}

    attrs = {
        "run": meta["run"],
        "epoch": meta["epoch"],
        "noise_names": list(NOISES),
        "num_samples": int(x.shape[0]),
        "layer": classifier_name(model),
        "relu_elements": int(agree["raw"]["confusion"][0].sum()),
        "softmax_lr": fit["lr"],
        "softmax_train_loss": fit["loss"],
        "softmax_train_error": fit["error"],
    }
    inputs = {"checkpoint": checkpoint}
    with store.create(out, kind="theory", spec=spec, inputs=inputs, attrs=attrs) as w:
        w.scale("lambda", np.asarray(lambdas, np.float64))
        w.scale("noise", np.arange(len(NOISES)))
        w.scale("edge", shift["edges"])
        w.scale("bin", 0.5 * (shift["edges"][1:] + shift["edges"][:-1]))
        w.scale("quantile", shift["quantile"])
        for name in ("pre_counts", "post_counts"):
            w.put(f"relu/{name}", shift[name], dims=("lambda", "bin"))
        for name in ("pre_quantiles", "post_quantiles"):
            w.put(f"relu/{name}", shift[name], dims=("lambda", "quantile"))
        for name in ("pre_mean", "post_mean", "flip_share", "on_to_off", "off_to_on"):
            w.put(f"relu/{name}", shift[name], dims=("lambda",))
        w.put("agreement/confusion", np.stack([agree[k]["confusion"] for k in NOISES]))
        w.put(
            "agreement/agreement",
            np.stack([agree[k]["agreement"] for k in NOISES]),
            dims=("noise", "lambda"),
        )
        for name in SOFTMAX_METRICS:
            values = np.stack([soft[k][name] for k in NOISES])
            w.put(f"softmax/{name}", values, dims=("noise", "lambda"))
