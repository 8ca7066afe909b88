"""What every direction kind builds on: the :data:`Direction` type, the parameters
(:func:`trainable`), norms and angles, the transforms applied after the base vector (sign
transform :func:`sign_consistent`, :func:`normalize`, :func:`match_norm`, :func:`orthogonalize`)
and the registry of kinds.

The registry: each kind module registers its builder with :func:`register`; :func:`builder`
returns the builder of a kind of :data:`KINDS`, importing the module ``landscape.directions.<kind>``
the first time a kind is asked for. The package ``__init__`` imports the kind modules that build on
this package alone; a kind that builds on a module which itself imports this one (``mined`` on
:mod:`landscape.mining`) is imported only when first built, so nothing imports upward. A new kind
is one module that registers a builder, and its name in :data:`KINDS`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from landscape.data import DataBundle

Direction = dict[str, Tensor]

_TINY = 1e-12

NORMALIZATIONS = ("raw", "norm", "layer", "filter")
BIAS_BN = ("zero", "normalize", "raw", "like_weights")
SIGNS = ("none", "consistent")
# Each kind is built by the module of its name in this package (see the module docstring).
KINDS = ("noise", "special", "gradient", "checkpoint", "eigenvector", "mined", "pca")


def trainable(model: nn.Module) -> dict[str, Tensor]:
    """The model's trainable parameters by name, detached."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def global_norm(vectors: Mapping[str, Tensor]) -> float:
    """Euclidean norm of a parameter-space vector, accumulated in float64."""
    return float(torch.sqrt(sum(v.double().pow(2).sum() for v in vectors.values())))


def cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """Cosine of the angle between two parameter-space vectors (same names), in float64; NaN if
    either is zero."""
    dot = sum(float((a[n].double() * b[n].double().to(a[n].device)).sum()) for n in a)
    norms = global_norm(a) * global_norm(b)
    return dot / norms if norms > 0 else math.nan


def angle_degrees(cos: float) -> float:
    """The angle of a cosine, in degrees (the cosine clamped to [-1, 1] against rounding)."""
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def aligned(other: Mapping[str, Tensor], params: Mapping[str, Tensor], what: str) -> Direction:
    """``other``'s tensors for the names of ``params``, on their device and dtype.

    Raises:
        ValueError: naming ``what``, if ``other`` lacks a parameter or has it in another shape.
    """
    out: Direction = {}
    for name, p in params.items():
        if name not in other:
            raise ValueError(f"{what}: has no parameter {name!r}")
        t = other[name]
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(
                f"{what}: parameter {name!r} has shape {tuple(t.shape)}, expected {tuple(p.shape)}"
            )
        out[name] = t.detach().to(device=p.device, dtype=p.dtype)
    return out


def match_norm(direction: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> Direction:
    """``direction`` scaled as a whole to the norm of ``reference`` (normalization ``match``)."""
    scale = global_norm(reference) / (global_norm(direction) + _TINY)
    return {n: d * scale for n, d in direction.items()}


def _rescale(d: Tensor, w: Tensor, dims: tuple[int, ...] | None) -> Tensor:
    """``d`` scaled to the norm of ``w``: as a whole (``dims`` None), per slice over ``dims``,
    or per element (``dims`` empty: a 1-D tensor's filters are its elements)."""
    if dims is None:
        return d * (w.norm() / (d.norm() + _TINY))
    if not dims:  # vector_norm would reduce over every dimension
        return d * (w.abs() / (d.abs() + _TINY))
    w_norm = torch.linalg.vector_norm(w, dim=dims, keepdim=True)
    return d * (w_norm / (torch.linalg.vector_norm(d, dim=dims, keepdim=True) + _TINY))


def normalize(
    direction: Mapping[str, Tensor],
    params: Mapping[str, Tensor],
    normalization: str,
    bias_bn: str = "zero",
) -> Direction:
    """Scales a direction relative to the parameters (see the :mod:`landscape.directions`
    docstring).

    ``bias_bn`` treats the tensors of at most one dimension (biases, BN weights and biases):
    ``zero`` zeroes them, ``raw`` keeps them, ``normalize`` scales each as a whole to the norm of
    its parameter (under ``layer`` and ``filter``; under ``norm`` they are part of the global
    vector), ``like_weights`` normalizes them as every other tensor: under ``filter`` each
    element is its own filter (a slice along dim 0), ``eps_i <- |w_i| eps_i / |eps_i|``; under
    ``layer`` per tensor; under ``norm`` part of the global vector; under ``raw`` kept.

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
        special_1d = d.dim() <= 1 and bias_bn != "like_weights"
        if special_1d and bias_bn == "zero":
            out[name] = torch.zeros_like(d)
        elif normalization in ("raw", "norm") or (special_1d and bias_bn == "raw"):
            out[name] = d.clone()
        elif normalization == "layer" or special_1d:
            out[name] = _rescale(d, w, None)
        else:
            out[name] = _rescale(d, w, tuple(range(1, d.dim())))
    if normalization == "norm":
        scale = global_norm(params) / (global_norm(out) + _TINY)
        out = {n: d * scale for n, d in out.items()}
    return out


def sign_consistent(
    eps: Mapping[str, Tensor], theta: Mapping[str, Tensor], ratio: float = 1.0, seed: int = 0
) -> Direction:
    """Sets the signs of a direction's elements so that a fraction ``ratio`` of them agree with
    the signs of the parameters and the rest disagree; the magnitudes ``|eps|`` are kept.

    The chosen elements become ``|eps| * sign(theta)``, the others ``-|eps| * sign(theta)``, so
    the share of elements whose sign agrees with ``theta`` is ``ratio``: ``ratio=1`` is the
    sign-consistent noise ``|eps| * sign(theta_f)`` of the Asymmetric Valley paper (A1),
    ``ratio=0`` the fully sign-inconsistent ``-|eps| * sign(theta_f)``, values between sweep the
    "sign change ratio" (A2) with the fraction of elements whose sign was set to match
    ``theta_f`` on the x-axis (the paper's own transform leaves the unchosen elements at their
    random signs, so about half of them agree too: a share of ``0.5 + ratio / 2``).

    An element agrees when ``sign(eps) == sign(theta)``. Where ``theta`` is 0 the element becomes
    0 and agrees; such elements count towards the chosen ones, so exactly ``round(ratio * n)``
    (Python rounding) of the ``n`` elements of every tensor agree, unless ``theta`` has more zeros
    than that (then all its zeros agree and nothing else). Where ``eps`` is 0 the element stays 0.

    The choice is made per tensor: the elements with nonzero ``theta``, taken in the order of a
    permutation drawn with ``torch.randperm`` from a CPU generator seeded with ``seed``, tensor
    after tensor. Every ratio draws the same permutations, so for one seed the elements that
    agree at a smaller ratio agree at a larger one too, and the choice is the same on every
    device.

    Args:
        eps: The direction.
        theta: The parameters (same names and shapes).
        ratio: Fraction of elements whose sign agrees with ``theta``, in ``[0, 1]``.
        seed: Seed of the choice.

    Returns:
        A new direction with the dtypes and devices of ``eps``.

    Raises:
        ValueError: for a ratio outside ``[0, 1]`` or a parameter missing from ``theta`` or of
            another shape.
    """
    ratio = float(ratio)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"sign_ratio: must be in [0, 1], got {ratio}")
    ref = aligned(theta, eps, "sign_consistent: theta")
    g = torch.Generator().manual_seed(seed)
    out: Direction = {}
    for name, e in eps.items():
        sign = torch.sign(ref[name]).reshape(-1)
        n = e.numel()
        order = torch.randperm(n, generator=g).to(e.device)
        nonzero = order[sign[order] != 0]  # theta's zeros agree whatever is chosen
        agreeing = max(0, round(ratio * n) - (n - len(nonzero)))
        signs = -sign + 0.0  # +0.0, not -0.0, where theta is 0
        signs[nonzero[:agreeing]] = sign[nonzero[:agreeing]]
        out[name] = (e.abs().reshape(-1) * signs).view(e.shape)
    return out


def orthogonalize(d1: Mapping[str, Tensor], d2: Mapping[str, Tensor]) -> Direction:
    """Gram-Schmidt of ``d2`` against ``d1`` over the flat vectors, keeping the norm of ``d2``.

    ``d2' = d2 - (<d2, d1> / <d1, d1>) d1``, rescaled to ``||d2||``; inner products and the
    result are computed in float64, then cast to ``d2``'s dtypes. A zero ``d1`` leaves ``d2``.

    Raises:
        ValueError: if the names differ, or ``d2`` is parallel to ``d1`` (nothing is left).
    """
    if list(d1) != list(d2):
        raise ValueError("orthogonalize: d1 and d2 must have the same parameter names in order")
    a = torch.cat([t.double().reshape(-1) for t in d1.values()])
    b = torch.cat([t.double().reshape(-1).to(a.device) for t in d2.values()])
    aa = torch.dot(a, a)
    if aa == 0:
        return {n: t.clone() for n, t in d2.items()}
    c = b - (torch.dot(b, a) / aa) * a
    c_norm = c.norm()
    if c_norm <= 1e-12 * b.norm() or c_norm == 0:
        raise ValueError("orthogonalize: d2 is parallel to d1")
    c = c * (b.norm() / c_norm)
    out: Direction = {}
    start = 0
    for name, t in d2.items():
        out[name] = c[start : start + t.numel()].view(t.shape).to(device=t.device, dtype=t.dtype)
        start += t.numel()
    return out


def direction_norms(direction: Mapping[str, Tensor], params: Mapping[str, Tensor]) -> dict:
    """``direction_norm`` ``||eps||``, ``theta_norm`` ``||theta||`` and their ratio
    ``relative_norm`` ``||eps|| / ||theta||`` (how far ``lambda = 1`` moves, relative to the
    parameters; NaN for zero parameters).

    >>> direction_norms({"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([0.0, 10.0])})
    {'direction_norm': 5.0, 'theta_norm': 10.0, 'relative_norm': 0.5}
    """
    eps, theta = global_norm(direction), global_norm(params)
    ratio = eps / theta if theta > 0 else math.nan
    return {"direction_norm": eps, "theta_norm": theta, "relative_norm": ratio}


def choice(spec: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    """``spec[key]`` (``default`` if absent), checked to be one of ``choices``.

    Raises:
        ValueError: naming the key and listing the choices, for another value.
    """
    value = spec.get(key, default)
    if value not in choices:
        raise ValueError(f"{key}: unknown {value!r}; one of {list(choices)}")
    return value


def reference(
    references: Mapping[str, Mapping[str, Tensor]] | None, role: str, why: str
) -> Mapping[str, Tensor]:
    """``references[role]``.

    Raises:
        ValueError: naming ``why`` and the role, if it was not given.
    """
    if references is None or role not in references:
        raise ValueError(f"{why}: needs references[{role!r}] (that checkpoint's parameters)")
    return references[role]


# --------------------------------------------------------------------------- registry of kinds


@dataclass(frozen=True)
class Request:
    """What a kind's builder gets: the spec, the model at ``theta`` and its parameters, the
    references and data :func:`landscape.directions.make_direction` was given, and ``record``,
    a dict that receives what the direction file records about the construction."""

    spec: Mapping[str, Any]
    model: nn.Module
    params: Direction
    references: Mapping[str, Mapping[str, Tensor]] | None
    data: DataBundle | None
    record: dict[str, Any]

    @property
    def seed(self) -> int:
        """The spec's ``seed`` (default 0)."""
        return self.spec.get("seed", 0)

    def reference(self, role: str, why: str) -> Mapping[str, Tensor]:
        """:func:`reference` of this request's references."""
        return reference(self.references, role, why)


Builder = Callable[[Request], Direction]
BUILDERS: dict[str, Builder] = {}


def register(kind: str) -> Callable[[Builder], Builder]:
    """Decorator registering a function as the builder of the base vector of ``kind``."""

    def decorate(build: Builder) -> Builder:
        BUILDERS[kind] = build
        return build

    return decorate


def builder(kind: str) -> Builder:
    """The builder of a kind of :data:`KINDS`, its module imported on first use.

    Raises:
        ValueError: for a kind not in :data:`KINDS` (listing them).
    """
    choice({"kind": kind}, "kind", KINDS, "noise")
    if kind not in BUILDERS:
        importlib.import_module(f"{__package__}.{kind}")
    return BUILDERS[kind]
