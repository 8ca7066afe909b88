"""Direction vectors in parameter space: how they are made, transformed and normalized.

A direction is a dict ``{parameter name: tensor}`` over the model's trainable parameters, in
``named_parameters()`` order. :func:`make_direction` builds one from a ``directions`` config block
in five steps, in this order: base vector (by ``kind``) -> sign transform -> normalization ->
group restriction -> scale.

Base vectors (``kind``):

- ``noise``: element-wise noise of one of :data:`NOISE`, drawn on the CPU from a seeded generator,
  one parameter after the other, so a direction is the same on every device. With
  ``closest_to``, the most overlapping of ``candidates`` such draws with another direction of
  the checkpoint (V6, Fig. 6); see :func:`closest_noise`.
- ``special`` (Asymmetric Valley paper, A3): ``theta_0`` (the run's initialization), ``theta_f``
  (the parameters themselves), ``sign(theta_f)``, ``sign(theta_f - mu)`` (``mu`` the mean of each
  parameter tensor) and ``sgp`` of the last two; see :func:`special`.
- ``gradient``: the negative gradient of the mean training loss over fixed batches (V4); see
  :func:`negative_gradient` and :func:`gradient_batches`.
- ``checkpoint``: ``theta_target - theta`` towards another checkpoint (V4, V7); see :func:`towards`.
- ``mined``: a direction mined by the paper's Algorithm 1 (``algorithm: wpeak``, a w-peak
  direction, V9) or Algorithm 2 (``vvv``, a vvv-basin direction, V10) over fixed training
  batches (:func:`gradient_batches`); see :mod:`landscape.mining`. Algorithm 2 starts ``phi`` at
  ``theta``, a fresh initialization or another run's checkpoint (:func:`phi_init`).
- ``eigenvector``: a Hessian eigenvector of the checkpoint (``which``: ``LA`` top, the
  paper's P.E.; ``SA`` most negative, N.E.; ``index`` from 1), read from the spectrum file that
  :func:`landscape.curvature.compute_spectrum` wrote (V8, V11); see :func:`eigenvector`. The file
  holds unit vectors, about ``1/||theta||`` of the parameters; by default they are scaled to
  ``||theta||`` (normalization ``norm``, every element kept), as the paper scales its
  perturbation directions (``eps <- ||theta|| eps / ||eps||``, Section 2 and Appendix A.3), so
  that a curve over ``lambda in [-1, 1]`` moves as far as a Gaussian one. The scaling keeps the
  direction (an eigenvector stays one); ``normalization: raw`` keeps the unit vector.

Sign transform (``sign: consistent``, A1/A2): ``eps <- |eps| * sign(theta)`` on a seeded random
fraction ``sign_ratio`` of the elements; see :func:`sign_consistent`.

Normalizations (Li et al. 2018; Li et al., "Visualizing, Rethinking, and Mining", Appendix A.3):

- ``raw``: the vector as it is.
- ``norm``: ``eps <- ||theta|| eps / ||eps||`` over the whole vector ("Norm", "Norm-Scaled").
- ``layer``: the same per parameter tensor ("LayNorm").
- ``filter``: the same per output filter, i.e. per slice along dim 0 ("FilNorm", "Filter-NS").
- ``match`` (with ``closest_to`` only): ``eps <- ||ref|| eps / ||eps||``, the norm of the
  ``closest_to`` reference (Fig. 6 scales its Gaussian to the negative gradient's norm).

One-dimensional tensors (biases, BN weights and biases) follow ``bias_bn``: ``zero`` leaves them
unperturbed (Li et al. 2018's ``ignore='biasbn'``), ``normalize`` scales each such tensor as a
whole to the norm of its parameter, ``raw`` keeps them as they are.

The group restriction (A4) zeroes the direction outside one group of
:data:`landscape.params.GROUPS`; ``scale`` multiplies the finished direction.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from landscape import store
from landscape.config import transform_defaults
from landscape.data import DataBundle, load_data
from landscape.models import build_model
from landscape.params import group_names, restrict
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
KINDS = ("noise", "special", "gradient", "checkpoint", "eigenvector", "mined")
ALGORITHMS = ("wpeak", "vvv")
PHI_INITS = ("theta", "init", "run")
SPECIALS = (
    "theta_0",
    "theta_f",
    "sign_theta_f",
    "sign_theta_f_mu",
    "sgp_theta_f",
    "sgp_theta_f_mu",
)
SIGNS = ("none", "consistent")


def trainable(model: nn.Module) -> dict[str, Tensor]:
    """The model's trainable parameters by name, detached."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def noise(params: Mapping[str, Tensor], distribution: str, seed: int) -> Direction:
    """Element-wise noise with the shape, dtype and device of every parameter.

    Raises:
        ValueError: for an unknown distribution.
    """
    return next(noise_stream(params, distribution, seed))


def noise_stream(
    params: Mapping[str, Tensor], distribution: str, seed: int
) -> Iterator[Direction]:
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


def cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """Cosine of the angle between two parameter-space vectors (same names), in float64; NaN if
    either is zero."""
    dot = sum(float((a[n].double() * b[n].double().to(a[n].device)).sum()) for n in a)
    norms = global_norm(a) * global_norm(b)
    return dot / norms if norms > 0 else math.nan


def angle_degrees(cos: float) -> float:
    """The angle of a cosine, in degrees (the cosine clamped to [-1, 1] against rounding)."""
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


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
    ref = _aligned(reference, params, "closest_to: the reference direction")
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


def match_norm(direction: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> Direction:
    """``direction`` scaled as a whole to the norm of ``reference`` (normalization ``match``)."""
    scale = global_norm(reference) / (global_norm(direction) + _TINY)
    return {n: d * scale for n, d in direction.items()}


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


def _aligned(other: Mapping[str, Tensor], params: Mapping[str, Tensor], what: str) -> Direction:
    """``other``'s tensors for the names of ``params``, on their device and dtype."""
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


def sign_consistent(
    eps: Mapping[str, Tensor], theta: Mapping[str, Tensor], ratio: float = 1.0, seed: int = 0
) -> Direction:
    """Sets the sign of a fraction of a direction's elements to the sign of the parameters.

    On the chosen elements ``eps`` becomes ``|eps| * sign(theta)`` (0 where ``theta`` is 0); the
    others keep their value. ``ratio=1`` is the sign-consistent noise ``|eps| * sign(theta_f)``
    of the Asymmetric Valley paper (A1), ``ratio=0`` the identity, values between sweep the
    "sign change ratio" (A2).

    The choice is made per tensor: exactly ``round(ratio * n)`` (Python rounding) of the ``n``
    elements of every tensor, the first ones of a permutation drawn with ``torch.randperm`` from a
    CPU generator seeded with ``seed``, tensor after tensor. Every ratio strictly between 0 and 1
    draws the same permutations, so for one seed the elements chosen at a smaller ratio are among
    those chosen at a larger one, and the choice is the same on every device.

    Args:
        eps: The direction.
        theta: The parameters (same names and shapes).
        ratio: Fraction of elements to make sign-consistent, in ``[0, 1]``.
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
    ref = _aligned(theta, eps, "sign_consistent: theta")
    g = torch.Generator().manual_seed(seed)
    out: Direction = {}
    for name, e in eps.items():
        target = e.abs() * torch.sign(ref[name])
        n = e.numel()
        if ratio == 1.0:
            out[name] = target
            continue
        if ratio == 0.0:
            out[name] = e.clone()
            continue
        chosen = torch.randperm(n, generator=g)[: round(ratio * n)].to(e.device)
        flat = e.reshape(-1).clone()
        flat[chosen] = target.reshape(-1)[chosen]
        out[name] = flat.view(e.shape)
    return out


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
        return {n: t.clone() for n, t in _aligned(theta_0, theta, "theta_0").items()}
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


def negative_gradient(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    *,
    train_mode: bool = False,
) -> Direction:
    """The negative gradient of the mean loss over some batches, ``-grad L(theta)``.

    ``L`` is the mean per-sample loss over all samples of all batches: each batch's mean loss is
    weighted by its size, so batches of different sizes give the gradient of one full batch.
    The model is left as it was: parameters, buffers (BN running statistics, also in training
    mode), train/eval flags, and no ``.grad`` is set (the gradient is taken with
    ``torch.autograd.grad`` through ``torch.func.functional_call`` on detached leaves and copies of
    the buffers).

    Args:
        model: The model, on the device of the batches.
        batches: ``(x, y)`` pairs.
        loss: ``loss(logits, y)`` -> the batch's mean loss (default cross-entropy).
        train_mode: Evaluate in training mode (BN with batch statistics, dropout on) instead of
            eval mode.

    Returns:
        ``{name: -dL/dparam}`` over the trainable parameters (float64 accumulation, then the
        parameters' dtypes); parameters the loss does not reach get zeros.

    Raises:
        ValueError: if ``batches`` is empty.
    """
    leaves = {n: p.detach().requires_grad_(True) for n, p in trainable(model).items()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    flags = {m: m.training for m in model.modules()}
    total = 0
    acc = {n: torch.zeros(p.shape, dtype=torch.float64, device=p.device) for n, p in leaves.items()}
    try:
        model.train(train_mode)
        with torch.enable_grad():
            for x, y in batches:
                value = loss(functional_call(model, (leaves, buffers), (x,)), y) * len(y)
                grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
                for (name, _), grad in zip(leaves.items(), grads, strict=True):
                    if grad is not None:
                        acc[name] += grad.double()
                total += len(y)
    finally:
        for module, flag in flags.items():
            module.training = flag
    if total == 0:
        raise ValueError("negative_gradient: no batches (no samples) given")
    return {n: (-acc[n] / total).to(p.dtype) for n, p in leaves.items()}


def towards(theta: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> Direction:
    """The direction ``target - theta`` to another checkpoint, over the names of ``theta``.

    ``target`` may hold more tensors (a whole state dict); only ``theta``'s names are used, and
    its tensors are moved to ``theta``'s device and dtype.

    Raises:
        ValueError: if ``target`` lacks a parameter or has it in another shape (naming it).
    """
    other = _aligned(target, theta, "target")
    return {n: other[n] - t.detach() for n, t in theta.items()}


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


def eigenvector(
    params: Mapping[str, Tensor], spectrum: str | Path, which: str, index: int
) -> Direction:
    """The ``index``-th (from 1) eigenvector of family ``which`` in a spectrum file.

    Args:
        params: The parameters the spectrum was computed at (names, order, dtype, device).
        spectrum: HDF5 with ``{which}/eigenvectors`` (``k x n``) and a ``names`` attribute.
        which: ``LA`` or ``SA``.
        index: 1-based rank.

    Raises:
        ValueError: naming the file, if it lacks ``which``, holds fewer than ``index`` vectors,
            or was computed for other parameters.
    """
    art = store.open(spectrum)
    key = f"{which}/eigenvectors"
    if key not in art:
        raise ValueError(
            f"{spectrum}: no {which!r} eigenvectors (add {which} to hessian.spectrum.which)"
        )
    vectors = art[key]
    if not 1 <= index <= len(vectors):
        raise ValueError(
            f"{spectrum}: eigenvector {which} {index} asked for, the file holds {len(vectors)} "
            "(raise hessian.spectrum.k)"
        )
    if list(params) != list(art.attrs["names"]):
        raise ValueError(f"{spectrum}: computed for other parameters than the checkpoint's")
    out, start = {}, 0
    for name, p in params.items():
        chunk = vectors[index - 1, start : start + p.numel()]
        out[name] = torch.as_tensor(chunk, dtype=p.dtype, device=p.device).view(p.shape)
        start += p.numel()
    return out


def required_references(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Other checkpoints a direction spec is derived from, by role.

    Returns:
        ``{"theta_0": {"run": None, "epoch": 0}}`` (the same run's initialization) for
        ``kind: special, of: theta_0``; ``{"target": {"run": ..., "epoch": ...}}`` (``run`` None
        for the same run, ``epoch`` "final" or an integer; defaults filled in) for
        ``kind: checkpoint``; ``{"phi_init": {"run": phi_run, "epoch": phi_epoch}}`` for
        ``kind: mined`` with ``phi_init: run`` (``epoch`` None without ``phi_epoch``: the
        workflow takes theta's epoch if that run has it, else its last,
        :func:`landscape.config.direction_references`); ``{}`` otherwise. A direction file that
        ``closest_to`` names is not a checkpoint and not listed here.

    >>> required_references({"kind": "checkpoint", "target": {"epoch": 3}})
    {'target': {'run': None, 'epoch': 3}}
    """
    kind = spec.get("kind", "noise")
    if kind == "special" and spec.get("of", "theta_f") == "theta_0":
        return {"theta_0": {"run": None, "epoch": 0}}
    if kind == "checkpoint":
        target = spec.get("target") or {}
        return {"target": {"run": target.get("run"), "epoch": target.get("epoch", "final")}}
    if kind == "mined" and spec.get("phi_init") == "run":
        return {"phi_init": {"run": spec.get("phi_run"), "epoch": spec.get("phi_epoch")}}
    return {}


def needs_data(spec: Mapping[str, Any]) -> bool:
    """Whether a direction spec reads training data (``kind: gradient`` or ``mined``)."""
    return spec.get("kind", "noise") in ("gradient", "mined")


def _choice(spec: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = spec.get(key, default)
    if value not in choices:
        raise ValueError(f"{key}: unknown {value!r}; one of {list(choices)}")
    return value


def _reference(references: Mapping[str, Mapping[str, Tensor]] | None, role: str, why: str):
    if references is None or role not in references:
        raise ValueError(f"{why}: needs references[{role!r}] (that checkpoint's parameters)")
    return references[role]


def gradient_batches(spec: Mapping[str, Any], data: DataBundle | None):
    """The fixed training batches of a ``gradient`` or ``mined`` direction, as an iterator.

    ``batches`` (an integer, or ``"all"``: the whole split) batches of ``batch_size`` of a
    class-proportional training sample drawn with the dataset's ``subset_seed``
    (:meth:`landscape.data.Split.sample`).

    Raises:
        ValueError: without data, or for a bad ``batches``.
    """
    if data is None:
        raise ValueError(
            f"kind {spec.get('kind')!r}: needs data (a DataBundle with the training split)"
        )
    count = spec.get("batches", 1)
    if count != "all" and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"batches: expected an integer >= 1 or 'all', got {count!r}")
    size = spec.get("batch_size", 128)
    samples = len(data.train) if count == "all" else count * size
    return data.train.sample(samples, data.subset_seed).batches(size)


def phi_init(spec: Mapping[str, Any]) -> str:
    """Where Algorithm 2 starts ``phi`` (``phi_init`` of a ``mined`` spec): ``theta``, ``init``
    or ``run``.

    ``theta`` (default) starts at the checkpoint itself; ``init`` at a fresh initialization of
    the same model (:func:`fresh_initialization` with ``init_seed``), a point in another basin;
    ``run`` at a checkpoint of another, independently trained run of the same architecture
    (``phi_run``, ``phi_epoch``; the workflow passes it as ``references["phi_init"]``), a
    trained point in another basin.

    Raises:
        ValueError: for an unknown value, or ``init`` with Algorithm 1 (which has no ``phi``).
    """
    start = _choice(spec, "phi_init", PHI_INITS, "theta")
    if start != "theta" and spec.get("algorithm", "wpeak") != "vvv":
        raise ValueError(f"phi_init: {start!r} applies to algorithm 'vvv' (Algorithm 2) only")
    return start


def fresh_initialization(meta: Mapping[str, Any], seed: int) -> Direction:
    """The trainable parameters of a fresh initialization of a checkpoint's model.

    The model is built from the checkpoint's own metadata (without a pretrained ``weights``
    file: a random initialization) after ``torch.manual_seed(seed)``, on the CPU, as
    :func:`landscape.train.train_model` builds epoch 0: the result is the epoch-0 checkpoint of a
    run of the same model with ``train.seed = seed``. The global random state is restored.
    """
    spec = meta["spec"]
    model_spec = {k: v for k, v in spec["model"].items() if k != "weights"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(
            model_spec,
            meta["num_classes"],
            tuple(meta["input_shape"]),
            key=f"models.{spec.get('model_name', 'model')}",
        )
    return trainable(model)


def _mined(
    spec: Mapping[str, Any],
    model: nn.Module,
    batches: list,
    references: Mapping[str, Mapping[str, Tensor]] | None,
) -> Direction:
    from landscape import mining  # mining builds on this module

    algorithm = _choice(spec, "algorithm", ALGORITHMS, "wpeak")
    start = phi_init(spec)
    common = {"epochs": spec.get("epochs", 10), "seed": spec.get("seed", 0)}
    if algorithm == "wpeak":
        return mining.mine_wpeak(model, batches, lr=spec.get("lr", 0.1), **common)
    init = None
    if start != "theta":
        params = trainable(model)
        phi_0 = _reference(references, "phi_init", f"phi_init {start!r}")
        phi_0 = _aligned(phi_0, params, "phi_init")
        init = {n: phi_0[n] - t for n, t in params.items()}
    return mining.mine_vvv(
        model,
        batches,
        lr=spec.get("lr", 0.01),
        alpha=spec.get("alpha", 0.0),
        gamma=spec.get("gamma", 0.5),
        init=init,
        **common,
    )


def normalization_of(spec: Mapping[str, Any]) -> tuple[str, str]:
    """The ``(normalization, bias_bn)`` a direction spec is normalized with, defaults filled in
    (:func:`landscape.config.transform_defaults`).

    >>> normalization_of({"kind": "eigenvector"}), normalization_of({"kind": "mined"})
    (('norm', 'raw'), ('raw', 'raw'))
    """
    normalization, bias_bn = transform_defaults(spec.get("kind", "noise"))
    return spec.get("normalization", normalization), spec.get("bias_bn", bias_bn)


def make_direction(
    spec: Mapping[str, Any],
    model: nn.Module,
    *,
    references: Mapping[str, Mapping[str, Tensor]] | None = None,
    data: DataBundle | None = None,
    attrs: dict[str, Any] | None = None,
) -> Direction:
    """Builds the direction described by one ``directions`` config block for a model.

    Steps, in order: base vector -> sign transform -> normalization -> group restriction ->
    scale. Keys (all optional):

    - ``kind``: ``noise`` (default; ``distribution`` default gaussian, ``seed`` default 0;
      with ``closest_to: {direction, candidates}`` the most overlapping of ``candidates``
      draws with ``references["closest_to"]``, :func:`closest_noise`, V6),
      ``special`` (``of``, one of :data:`SPECIALS`, default ``theta_f``; ``seed`` for sgp),
      ``gradient`` (``batches``: fixed training batches, :func:`gradient_batches`, an integer
      >= 1 or ``"all"``, default 1; ``batch_size`` default 128; eval-mode loss) or ``checkpoint``
      (``target - theta``; ``target`` names the checkpoint for the workflow, the library uses
      ``references["target"]``), ``eigenvector`` (``references["eigenvector"]``, see
      :func:`eigenvector`) or ``mined`` (``algorithm`` wpeak or vvv, ``epochs``, ``lr``,
      ``alpha``, ``gamma``, ``seed``, over ``batches`` of ``batch_size`` like ``gradient``;
      Algorithm 2 starts ``phi`` at ``theta`` or, with ``phi_init: init`` or ``run``, at
      ``references["phi_init"]``, see :func:`phi_init`).
    - ``sign``: ``none`` (default) or ``consistent`` with ``sign_ratio`` (default 1.0) and the
      spec's ``seed``: :func:`sign_consistent` against the model's parameters.
    - ``normalization``: see :func:`normalize`; default ``filter`` for noise, ``norm`` for
      eigenvectors, ``raw`` otherwise (:func:`normalization_of`). ``match`` (with
      ``closest_to`` only): after ``bias_bn`` the whole vector is scaled to the norm of the
      ``closest_to`` reference (:func:`match_norm`; the paper scales its most overlapping
      Gaussian "to that of the negative gradient").
    - ``bias_bn``: see :func:`normalize`; default ``zero`` for noise, ``raw`` otherwise (so that
      e.g. a checkpoint direction reaches the target in every parameter).
    - ``group``: one of :data:`landscape.params.GROUPS` (default ``ALL``): zero outside it.
    - ``scale``: multiplier of the finished direction (default 1.0).

    Args:
        spec: The config block.
        model: The model at ``theta`` (its trainable parameters are ``theta``).
        references: Other checkpoints' parameters by role: ``"theta_0"`` (the run's epoch-0
            checkpoint) for ``special`` ``theta_0``, ``"target"`` for ``checkpoint``,
            ``"phi_init"`` (:func:`fresh_initialization`, or the other run's checkpoint) for
            ``mined`` with ``phi_init: init`` or ``run``; and the direction ``"closest_to"``
            for ``closest_to``.
        data: The dataset, for ``gradient``; batches must be on the model's device.
        attrs: If given, receives what the file records about the construction: for
            ``closest_to`` the :func:`closest_noise` record and ``angle_to_reference``, the
            angle (degrees) of the finished direction to the reference.

    Raises:
        ValueError: for an unknown ``kind``, ``of``, ``sign``, ``normalization``, ``bias_bn`` or
            ``group`` (listing the valid values), or a missing reference or data (naming it).
    """
    kind = _choice(spec, "kind", KINDS, "noise")
    params = trainable(model)
    seed = spec.get("seed", 0)
    if "closest_to" in spec and kind != "noise":
        raise ValueError(f"closest_to: applies to kind 'noise' only, not {kind!r}")
    record: dict[str, Any] = {}
    if kind == "noise" and "closest_to" in spec:
        reference = _reference(references, "closest_to", "closest_to")
        candidates = spec["closest_to"].get("candidates", 100)
        distribution = spec.get("distribution", "gaussian")
        eps, record = closest_noise(params, distribution, seed, reference, candidates)
    elif kind == "noise":
        eps = noise(params, spec.get("distribution", "gaussian"), seed)
    elif kind == "special":
        of = _choice(spec, "of", SPECIALS, "theta_f")
        theta_0 = _reference(references, "theta_0", "of 'theta_0'") if of == "theta_0" else None
        eps = special(of, params, theta_0=theta_0, seed=seed)
    elif kind == "gradient":
        eps = negative_gradient(model, gradient_batches(spec, data))
    elif kind == "eigenvector":
        eps = dict(_reference(references, "eigenvector", "kind 'eigenvector'"))
    elif kind == "mined":
        eps = _mined(spec, model, list(gradient_batches(spec, data)), references)
    else:
        eps = towards(params, _reference(references, "target", "kind 'checkpoint'"))
    if _choice(spec, "sign", SIGNS, "none") == "consistent":
        eps = sign_consistent(eps, params, spec.get("sign_ratio", 1.0), seed)
    eps = _normalized(spec, eps, params, references)
    group = spec.get("group", "ALL")
    if group != "ALL":  # group_names rejects an unknown group
        eps = restrict(eps, group_names(model, group))
    scale = float(spec.get("scale", 1.0))
    eps = eps if scale == 1.0 else {n: d * scale for n, d in eps.items()}
    if record:
        record["angle_to_reference"] = angle_degrees(cosine(eps, references["closest_to"]))
    if attrs is not None:
        attrs.update(record)
    return eps


def _normalized(
    spec: Mapping[str, Any],
    eps: Direction,
    params: Mapping[str, Tensor],
    references: Mapping[str, Mapping[str, Tensor]] | None,
) -> Direction:
    normalization, bias_bn = normalization_of(spec)
    if normalization != "match":
        return normalize(eps, params, normalization, bias_bn)
    if "closest_to" not in spec:
        raise ValueError(
            "normalization: 'match' needs closest_to (the direction whose norm it takes)"
        )
    reference = _reference(references, "closest_to", "normalization 'match'")
    return match_norm(normalize(eps, params, "raw", bias_bn), reference)


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


def read_reference_direction(
    path: str | Path, params: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> Direction:
    """A direction file's tensors, on the device and dtype of ``params``, checked to be a
    direction of the checkpoint whose metadata is ``meta`` (same run and epoch).

    Raises:
        ValueError: naming the file, for a direction of another checkpoint or other parameters.
    """
    art = store.open(path)
    run, epoch = art.attrs.get("run"), art.attrs.get("epoch")
    if (run, epoch) != (meta["run"], meta["epoch"]):
        raise ValueError(
            f"{path}: a direction of run {run!r} epoch {epoch}, not of the checkpoint "
            f"(run {meta['run']!r} epoch {meta['epoch']})"
        )
    tensors = {n: torch.as_tensor(v) for n, v in art.tensors("params").items()}
    return _aligned(tensors, params, f"closest_to ({path})")


def write_direction(
    checkpoint: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    device: str = "cpu",
    *,
    references: Mapping[str, str | Path] | None = None,
    dataset: Mapping[str, Any] | None = None,
    spectrum: str | Path | None = None,
    reference_direction: str | Path | None = None,
) -> None:
    """Derives one direction from a checkpoint and writes it as HDF5, one dataset per parameter.

    Args:
        checkpoint: The checkpoint at ``theta``.
        out: The ``.h5`` file.
        spec: The direction's config block.
        device: ``auto``, ``cpu`` or ``cuda``.
        references: Role (``theta_0``, ``target``, ``phi_init``) -> checkpoint path, see
            :func:`required_references`; recorded as inputs of the artifact.
        dataset: The dataset config block, read only when the spec needs data (``gradient``,
            ``mined``); its ``subset_seed`` is then stored as an attribute.
        spectrum: The checkpoint's spectrum file (``kind: eigenvector``).
        reference_direction: The direction file ``closest_to`` names, of the same checkpoint;
            recorded as the input ``closest_to``.

    Besides ``run`` and ``epoch``, the file's attributes hold :func:`direction_norms` (``||eps||``,
    ``||theta||``, ``relative_norm``), the ``normalization`` and ``bias_bn`` applied
    (:func:`normalization_of`), for ``phi_init: init`` the ``init_seed`` of the start, for
    ``phi_init: run`` the ``phi_run`` and ``phi_epoch`` of the start checkpoint (from its
    metadata), and for ``closest_to`` the choice (:func:`make_direction`'s ``attrs``).
    """
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    params = trainable(model)
    paths = dict(references or {})
    attrs: dict[str, Any] = {}
    refs = {}
    for role, path in paths.items():
        state = store.read_checkpoint(path)
        what = f"references[{role!r}] ({path})"
        if role == "phi_init":
            what = f"phi_run {spec.get('phi_run')!r} ({path})"
            attrs.update(phi_run=state["meta"]["run"], phi_epoch=state["meta"]["epoch"])
        refs[role] = _aligned(state["model"], params, what)
    if reference_direction is not None:
        refs["closest_to"] = read_reference_direction(reference_direction, params, meta)
        paths["closest_to"] = reference_direction
    if spectrum is not None:
        which, index = spec.get("which", "LA"), spec.get("index", 1)
        refs["eigenvector"] = eigenvector(params, spectrum, which, index)
        paths["spectrum"] = spectrum
    if spec.get("kind") == "mined" and phi_init(spec) == "init":
        attrs["init_seed"] = spec.get("init_seed", 1)
        refs["phi_init"] = _aligned(
            fresh_initialization(meta, attrs["init_seed"]), params, "phi_init"
        )
    data = load_data(dataset, dev) if dataset is not None and needs_data(spec) else None
    direction = make_direction(spec, model, references=refs, data=data, attrs=attrs)
    attrs.update(direction_norms(direction, params))
    attrs["normalization"], attrs["bias_bn"] = normalization_of(spec)
    attrs.update(run=meta["run"], epoch=meta["epoch"])
    if data is not None:  # the seed of its fixed batches
        attrs["subset_seed"] = data.subset_seed
    with store.create(
        out,
        kind="direction",
        spec=spec,
        inputs={"checkpoint": checkpoint, **paths},
        attrs=attrs,
    ) as w:
        w.put_tensors("params", direction)
