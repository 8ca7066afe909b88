"""Direction vectors in parameter space: noise families and their normalizations.

A direction is a dict ``{parameter name: tensor}`` over the model's trainable parameters, in
``named_parameters()`` order. Noise is drawn on the CPU from a seeded generator, one parameter
after the other, so a direction is the same on every device.

Normalizations (Li et al. 2018; Li et al., "Visualizing, Rethinking, and Mining", Appendix A.3):

- ``raw``: the noise as drawn.
- ``norm``: ``eps <- ||theta|| eps / ||eps||`` over the whole vector ("Norm", "Norm-Scaled").
- ``layer``: the same per parameter tensor ("LayNorm").
- ``filter``: the same per output filter, i.e. per slice along dim 0 ("FilNorm", "Filter-NS").

One-dimensional tensors (biases, BN weights and biases) follow ``bias_bn``: ``zero`` leaves them
unperturbed (Li et al. 2018's ``ignore='biasbn'``), ``normalize`` scales each such tensor as a
whole to the norm of its parameter, ``raw`` keeps the noise as drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape import store
from landscape.train import load_model, resolve_device

Direction = dict[str, Tensor]

_TINY = 1e-12


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
NORMALIZATIONS = ("raw", "norm", "layer", "filter")
BIAS_BN = ("zero", "normalize", "raw")


def trainable(model: nn.Module) -> dict[str, Tensor]:
    """The model's trainable parameters by name, detached."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def noise(params: Mapping[str, Tensor], distribution: str, seed: int) -> Direction:
    """Element-wise noise with the shape, dtype and device of every parameter.

    Raises:
        ValueError: for an unknown distribution.
    """
    if distribution not in NOISE:
        raise ValueError(f"distribution: unknown {distribution!r}; one of {sorted(NOISE)}")
    g = torch.Generator().manual_seed(seed)
    sample = NOISE[distribution]
    return {
        n: sample(tuple(p.shape), g).to(device=p.device, dtype=p.dtype) for n, p in params.items()
    }


def _rescale(d: Tensor, w: Tensor, dims: tuple[int, ...] | None) -> Tensor:
    if dims is None:
        return d * (w.norm() / (d.norm() + _TINY))
    w_norm = torch.linalg.vector_norm(w, dim=dims, keepdim=True)
    return d * (w_norm / (torch.linalg.vector_norm(d, dim=dims, keepdim=True) + _TINY))


def global_norm(vectors: Mapping[str, Tensor]) -> float:
    """Euclidean norm of a parameter-space vector, accumulated in float64."""
    return float(torch.sqrt(sum(v.double().pow(2).sum() for v in vectors.values())))


def normalize(
    direction: Mapping[str, Tensor],
    params: Mapping[str, Tensor],
    normalization: str,
    bias_bn: str = "zero",
) -> Direction:
    """Scales a direction relative to the parameters (see the module docstring).

    Raises:
        ValueError: for an unknown normalization or ``bias_bn`` treatment.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization: unknown {normalization!r}; one of {NORMALIZATIONS}")
    if bias_bn not in BIAS_BN:
        raise ValueError(f"bias_bn: unknown {bias_bn!r}; one of {BIAS_BN}")
    out: Direction = {}
    for name, d in direction.items():
        w = params[name]
        if d.dim() <= 1 and bias_bn == "zero":
            out[name] = torch.zeros_like(d)
        elif normalization in ("raw", "norm") or (d.dim() <= 1 and bias_bn == "raw"):
            out[name] = d.clone()
        elif normalization == "layer" or d.dim() <= 1:
            out[name] = _rescale(d, w, None)
        else:
            out[name] = _rescale(d, w, tuple(range(1, d.dim())))
    if normalization == "norm":
        scale = global_norm(params) / (global_norm(out) + _TINY)
        out = {n: d * scale for n, d in out.items()}
    return out


def make_direction(spec: Mapping[str, Any], model: nn.Module) -> Direction:
    """Builds the direction described by one ``directions`` config block for a model.

    Raises:
        ValueError: for an unknown ``kind``.
    """
    kind = spec.get("kind", "noise")
    if kind != "noise":
        raise ValueError(f"kind: unknown direction kind {kind!r}")
    params = trainable(model)
    eps = noise(params, spec.get("distribution", "gaussian"), spec.get("seed", 0))
    return normalize(eps, params, spec.get("normalization", "filter"), spec.get("bias_bn", "zero"))


def write_direction(
    checkpoint: str | Path, out: str | Path, spec: Mapping[str, Any], device: str = "cpu"
) -> None:
    """Derives one direction from a checkpoint and writes it as HDF5, one dataset per parameter."""
    model, meta = load_model(checkpoint, resolve_device(device))
    direction = make_direction(spec, model)
    params = trainable(model)
    norms = {"direction_norm": global_norm(direction), "theta_norm": global_norm(params)}
    with store.create(
        out,
        kind="direction",
        spec=spec,
        inputs={"checkpoint": checkpoint},
        attrs={**norms, "run": meta["run"], "epoch": meta["epoch"]},
    ) as w:
        w.put_tensors("params", direction)
