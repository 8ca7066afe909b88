r"""Mining directions (Algorithms 1 and 2) and the second-order view of 1D curves.

Li et al., "Visualizing, Rethinking, and Mining the Loss Landscape of Deep Neural Networks":

- :func:`mine_wpeak` (Algorithm 1, V9): a direction :math:`\epsilon` along which the loss falls
  on both sides of :math:`\theta` (a w-peak curve), by stochastic gradient descent on
  :math:`\mathbb{E}_{\lambda}[L(\theta + \lambda\epsilon)]` (Eq. 2).
- :func:`mine_vvv` (Algorithm 2, V10): a point :math:`\phi` whose own loss and whose midpoint
  with :math:`\theta` are both low (Eq. 3); :math:`\epsilon = \phi - \theta`.
- :func:`descent_angles` (V5): angles between Gaussian directions and descent directions.
- :func:`cosine_similarity`, :func:`cosine_table` (V9): overlap of mined directions with Hessian
  eigenvectors (P.E./N.E.).
- :func:`soa_curve` (V14): along a curve :math:`\theta + \lambda\epsilon`, the local quadratic
  :math:`L(\theta+\lambda\epsilon) + b\,t + \tfrac12 a\,t^2` with :math:`b = \epsilon^T
  g_{\theta+\lambda\epsilon}`, :math:`a = \epsilon^T H_{\theta+\lambda\epsilon}\epsilon`
  (Appendix B.3).
- :func:`loss_change_samples` (V13): actual and second-order loss changes under Gaussian
  perturbations, against :math:`\tfrac12\lambda^2\sigma^2\operatorname{tr}H` (Eq. 4).

Conventions shared by all functions:

- Data are a list of ``(x, y)`` batches; ``loss(output, y)`` returns a batch's *mean* loss. Where
  a loss over the whole list is meant, it is :math:`L = \sum_b \frac{|B_b|}{N}\bar\ell_b` (each
  batch weighted by its size, as in :mod:`landscape.hessian`). The mining algorithms take one
  SGD step per batch on that batch's mean loss.
- :math:`\theta` is the model's trainable parameters (``requires_grad``), in
  ``named_parameters()`` order; a direction is a :data:`landscape.directions.Direction` over all of
  them (a missing name raises ``ValueError``; extra names are not allowed either).
- The caller's model is never modified: every computation runs through
  ``torch.func.functional_call`` on a deep copy (or on detached copies of the parameters and
  buffers), so its parameters, buffers, ``training`` flags and ``.grad`` stay as they were.
- ``bn_mode="eval"`` (default) evaluates the model in eval mode (BN with the running statistics
  of :math:`\theta`, dropout off): the loss whose Hessian :mod:`landscape.hessian` computes by
  default, so mined directions and eigenvectors describe the same function. ``"train"`` uses the
  statistics of each batch (running statistics neither read nor updated) and enables dropout,
  whose randomness is then seeded too.
- Random numbers (lambdas, batch order, Gaussian directions) come from CPU generators seeded by
  ``seed``, so a result depends on the seed only, not on the device or on the global RNG (which
  is left untouched).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.directions.base import Direction, normalize, trainable
from landscape.directions.gradient import negative_gradient
from landscape.directions.noise import noise
from landscape.hessian import (
    HessianLinearOperator,
    LossFn,
    directional_derivatives,
    make_batch_loss,
    make_grad_and_value,
    soa_loss_change,
)
from landscape.hessian.lanczos import _probe

BN_MODES = ("eval", "train")

_BATCHNORM = nn.modules.batchnorm._BatchNorm
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers


def _check_bn_mode(bn_mode: str) -> None:
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode: unknown {bn_mode!r}; one of {BN_MODES}")


def _aligned(direction: Mapping[str, Tensor], like: Mapping[str, Tensor], what: str) -> Direction:
    """``direction``'s tensors for exactly the names of ``like``, on its device and dtype.

    Raises:
        ValueError: If a name is missing or extra, or a shape differs (naming it).
    """
    missing = [n for n in like if n not in direction]
    extra = [n for n in direction if n not in like]
    if missing or extra:
        raise ValueError(
            f"{what}: names differ from the trainable parameters "
            f"(missing {missing[:5]}, extra {extra[:5]})"
        )
    out: Direction = {}
    for name, ref in like.items():
        t = direction[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(
                f"{what}: {name!r} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}"
            )
        out[name] = t.detach().to(device=ref.device, dtype=ref.dtype)
    return out


def _flat64(direction: Mapping[str, Tensor], names: Sequence[str] | None = None) -> Tensor:
    """A float64 flat copy of a direction, in ``names`` order (default: its own order)."""
    names = list(direction) if names is None else names
    return torch.cat([direction[n].detach().reshape(-1).to(torch.float64) for n in names])


def _angle_degrees(u: Tensor, v: Tensor) -> Tensor:
    r"""Angles in degrees between unit vectors ``u`` (..., n) and ``v`` (..., n), broadcast.

    :math:`\angle(u, v) = 2\operatorname{atan2}(\|u - v\|, \|u + v\|)` (Kahan): accurate near 0
    and 180 degrees, where :math:`\arccos` of the cosine loses half the digits.
    """
    return torch.rad2deg(2 * torch.atan2((u - v).norm(dim=-1), (u + v).norm(dim=-1)))


def _unit(v: Tensor) -> Tensor:
    """``v / ||v||`` along the last axis; a zero vector gives NaNs (its angles are undefined)."""
    norm = v.norm(dim=-1, keepdim=True)
    return v / torch.where(norm > 0, norm, torch.full_like(norm, math.nan))


class _Objective:
    r"""The per-batch loss :math:`\bar\ell_b(\theta')` of a private copy of a model.

    The copy is cast to ``dtype`` and put in the mode of ``bn_mode`` for good (in ``"train"``
    mode its BN layers stop tracking running statistics), so the caller's model is never touched.
    ``theta`` holds detached copies of the trainable parameters; ``grad_and_value(params, b)`` is
    the gradient and value of batch ``b``'s mean loss at ``params``
    (:func:`landscape.hessian.make_grad_and_value`, no ``.grad``).
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[tuple[Tensor, Tensor]],
        loss: LossFn,
        dtype: torch.dtype | None,
        bn_mode: str,
    ) -> None:
        _check_bn_mode(bn_mode)
        params = trainable(model)
        if not params:
            raise ValueError("the model has no trainable parameters")
        self.out_dtype = next(iter(params.values())).dtype
        self.dtype = dtype or self.out_dtype
        if not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {self.dtype}")
        work = copy.deepcopy(model).to(self.dtype).train(bn_mode == "train")
        if bn_mode == "train":
            for m in work.modules():
                if isinstance(m, _BATCHNORM):
                    m.track_running_stats = False
        self.theta = {n: p.detach().clone() for n, p in work.named_parameters() if p.requires_grad}
        self.device = next(iter(self.theta.values())).device
        frozen = {n: p.detach() for n, p in work.named_parameters() if not p.requires_grad}
        buffers = {n: b.detach() for n, b in work.named_buffers()}
        self.batches = [self._prepare(x, y) for x, y in batches]
        if not self.batches:
            raise ValueError("no batches given")
        self._gv = make_grad_and_value(make_batch_loss(work, loss, frozen, buffers))

    def _prepare(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(self.device)
        return (x.to(self.dtype) if x.is_floating_point() else x), y.to(self.device)

    def grad_and_value(self, params: dict[str, Tensor], batch: int) -> tuple[Direction, Tensor]:
        """Gradient (``{name: tensor}``) and value (a 0-d tensor, left on the device so that a
        step needs no host synchronization) of one batch's mean loss at ``params``."""
        g, value = self._gv(params, *self.batches[batch])
        return g, value.detach()

    def align(self, direction: Mapping[str, Tensor], what: str) -> Direction:
        """A direction on the copy's device and dtype (see :func:`_aligned`)."""
        return _aligned(direction, self.theta, what)

    def output(self, direction: Mapping[str, Tensor]) -> Direction:
        """A result in the dtype of the caller's parameters."""
        return {n: t.to(self.out_dtype) for n, t in direction.items()}


def _batch_order(num_batches: int, shuffle: bool, gen: torch.Generator) -> Iterator[int]:
    """Endless batch indices: passes over ``range(num_batches)``, each a fresh permutation
    (``torch.randperm`` from ``gen``) if ``shuffle``. Epochs cut this stream into pieces of
    ``steps_per_epoch``, so a pass over the data may continue into the next epoch."""
    while True:
        order = torch.randperm(num_batches, generator=gen) if shuffle else range(num_batches)
        yield from (int(i) for i in order)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    """One draw from :math:`U[\\text{low}, \\text{high}]` (float64, CPU generator)."""
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _check_schedule(epochs: int, steps_per_epoch: int | None, lr: float) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: must be an integer >= 1, got {epochs!r}")
    if steps_per_epoch is not None and (
        isinstance(steps_per_epoch, bool)
        or not isinstance(steps_per_epoch, int)
        or steps_per_epoch < 1
    ):
        raise ValueError(f"steps_per_epoch: must be None or an integer >= 1, got {steps_per_epoch}")
    if not lr > 0:
        raise ValueError(f"lr: must be > 0, got {lr}")


def _check_finite(what: str, loss: float, epoch: int, epochs: int, lr: float) -> None:
    """Stops a mining run whose loss became NaN or infinite (SGD diverged), naming ``lr``."""
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"{what}: the loss became {loss} in epoch {epoch}/{epochs}: SGD diverged; "
            f"lower lr (now {lr})"
        )


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


# --------------------------------------------------------------------------- Algorithm 1


def mine_wpeak(
    model: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    *,
    epochs: int = 10,
    steps_per_epoch: int | None = None,
    lr: float = 0.1,
    seed: int = 0,
    loss: LossFn = F.cross_entropy,
    init: Mapping[str, Tensor] | None = None,
    shuffle: bool = True,
    bn_mode: str = "eval",
    dtype: torch.dtype | None = None,
) -> Direction:
    r"""Mines a w-peak direction with the paper's Algorithm 1.

    Solves :math:`\arg\min_\epsilon \mathbb{E}_{\lambda}[L(\theta + \lambda\epsilon)]` (Eq. 2) by
    SGD on :math:`\epsilon`, exactly as the listing::

        eps = 0
        for e = 1..E:
            alpha = e / E
            for each batch:
                lambda ~ U[-alpha, alpha]
                theta_hat = theta + lambda * eps
                eps = eps - lr * lambda * grad L_batch(theta_hat)

    The update is the exact stochastic gradient, since
    :math:`\nabla_\epsilon L(\theta + \lambda\epsilon) = \lambda \nabla L(\hat\theta)`. Near a
    critical point, in expectation over :math:`\lambda` (:math:`\mathbb{E}\lambda = 0`,
    :math:`\mathbb{E}\lambda^2 = \alpha^2/3`) a step is
    :math:`\epsilon \leftarrow (I - \eta\tfrac{\alpha^2}{3} H)\epsilon - \eta\lambda g`: the
    components along negative-curvature eigenvectors of :math:`H` grow, the others shrink, and
    the term :math:`-\eta\lambda g` (zero mean) seeds them.

    At :math:`\epsilon = 0` (the start) :math:`\hat\theta = \theta` and the first step is
    :math:`\epsilon = -\eta\lambda\nabla\bar\ell_b(\theta)`: the algorithm leaves 0 only through
    the batch gradients. If they all vanish (a full-batch loss at an exact critical point),
    :math:`\epsilon` stays 0; pass ``init`` (e.g. small Gaussian noise) to start elsewhere. A zero
    result is reported with a ``RuntimeWarning``.

    Choices the paper leaves open: one step per batch, the batches visited in a fresh seeded
    permutation per pass (``shuffle``), plain SGD (no momentum or weight decay), one
    :math:`\lambda` per step drawn from a seeded CPU generator, and :math:`\epsilon` returned
    unnormalized (Eq. 2 fixes its scale: the curve is meant for :math:`\lambda \in [-1, 1]`).

    Args:
        model: The network at :math:`\theta` (not modified).
        batches: ``(x, y)`` training batches.
        epochs: :math:`E`; :math:`\alpha = e/E` in epoch :math:`e = 1..E`.
        steps_per_epoch: Steps (batches) per epoch; default one pass over ``batches``. Passes
            continue across epochs when it is not a multiple of ``len(batches)``.
        lr: Learning rate :math:`\eta`.
        seed: Seeds the lambdas, the batch order and (``bn_mode="train"``) dropout.
        loss: ``loss(output, y)`` -> mean loss of a batch.
        init: Starting :math:`\epsilon` (default 0, as the paper).
        shuffle: Visit the batches in a random order each pass (else in the given order).
        bn_mode: ``"eval"`` or ``"train"`` (see the module docstring).
        dtype: Computation dtype (default the parameters'); the result has the parameters' dtype.

    Returns:
        :math:`\epsilon` as ``{name: tensor}`` over the trainable parameters.

    Raises:
        ValueError: For bad arguments, no batches, or an ``init`` of other names or shapes.
        FloatingPointError: If the loss becomes NaN or infinite (checked once per epoch).
    """
    _check_schedule(epochs, steps_per_epoch, lr)
    obj = _Objective(model, batches, loss, dtype, bn_mode)
    theta = obj.theta
    eps = (
        {n: torch.zeros_like(t) for n, t in theta.items()}
        if init is None
        else obj.align(init, "init")
    )
    steps = steps_per_epoch or len(obj.batches)
    gen = torch.Generator().manual_seed(seed)
    order = _batch_order(len(obj.batches), shuffle, gen)
    with torch.random.fork_rng(devices=_rng_devices(obj.device)):
        torch.manual_seed(seed)
        for e in range(1, epochs + 1):
            alpha = e / epochs
            total = torch.zeros((), dtype=obj.dtype, device=obj.device)
            for _ in range(steps):
                lam = _uniform(gen, -alpha, alpha)
                theta_hat = {n: theta[n] + lam * eps[n] for n in theta}
                g, value = obj.grad_and_value(theta_hat, next(order))
                eps = {n: eps[n] - (lr * lam) * g[n] for n in eps}
                total += value
            mean = float(total) / steps
            log.info("mine_wpeak: epoch %d/%d alpha %.3g loss %.6g", e, epochs, alpha, mean)
            _check_finite("mine_wpeak", mean, e, epochs, lr)
    if all(not bool(t.any()) for t in eps.values()):
        warnings.warn(
            "mine_wpeak: the mined direction is zero (all batch gradients vanish at theta); "
            "pass a nonzero init",
            RuntimeWarning,
            stacklevel=2,
        )
    return obj.output(eps)


# --------------------------------------------------------------------------- Algorithm 2


def mine_vvv(
    model: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    *,
    alpha: float = 0.0,
    gamma: float = 0.5,
    epochs: int = 10,
    steps_per_epoch: int | None = None,
    lr: float = 0.01,
    seed: int = 0,
    loss: LossFn = F.cross_entropy,
    init: Mapping[str, Tensor] | None = None,
    shuffle: bool = True,
    bn_mode: str = "eval",
    dtype: torch.dtype | None = None,
) -> Direction:
    r"""Mines a vvv-basin direction with the paper's Algorithm 2.

    Solves :math:`\arg\min_\phi \mathbb{E}_{\lambda \sim U[0.5-\alpha, 0.5+\alpha]}
    [L(\phi) + \gamma L((1-\lambda)\theta + \lambda\phi)]` (Eq. 3) by SGD on :math:`\phi`,
    exactly as the listing::

        for e = 1..E:
            for each batch:
                lambda ~ U[0.5 - alpha, 0.5 + alpha]
                phi_hat = (1 - lambda) * theta + lambda * phi
                phi = phi - lr * (grad L_batch(phi) + gamma * lambda * grad L_batch(phi_hat))
        eps = phi - theta

    :math:`\gamma\lambda\nabla L(\hat\phi)` is the exact gradient of the second term with
    respect to :math:`\phi` (chain rule through :math:`\hat\phi`), so this is plain SGD on Eq. 3.
    Both gradients use the same batch. :math:`\alpha` stays fixed (Algorithm 2 has no schedule).
    On a convex quadratic :math:`L(w) = \tfrac12 w^T A w + c^T w` the fixed point is the solution
    of :math:`(1 + \gamma m_2) A\phi = -(1 + \gamma/2) c - \gamma(\tfrac12 - m_2) A\theta` with
    :math:`m_2 = \mathbb{E}\lambda^2 = \tfrac14 + \alpha^2/3`.

    Choices the paper leaves open: the start :math:`\phi_0 = \theta + \text{init}` with
    ``init`` default 0 (then :math:`\phi` starts at :math:`\theta`; to look for a separate basin,
    pass e.g. a fresh initialization minus :math:`\theta`); one step per batch, a fresh seeded
    batch permutation per pass, plain SGD, one :math:`\lambda` per step.

    Args:
        model: The network at the converged :math:`\theta` (not modified).
        batches: ``(x, y)`` training batches.
        alpha: Half width of the interpolation range, in ``[0, 0.5]``.
        gamma: Weight :math:`\gamma \ge 0` of the midpoint loss.
        epochs: Number of epochs :math:`E`.
        steps_per_epoch: Steps per epoch; default one pass over ``batches``.
        lr: Learning rate :math:`\eta`.
        seed: Seeds the lambdas, the batch order and (``bn_mode="train"``) dropout.
        loss: ``loss(output, y)`` -> mean loss of a batch.
        init: :math:`\phi_0 - \theta` (default 0).
        shuffle: Visit the batches in a random order each pass (else in the given order).
        bn_mode: ``"eval"`` or ``"train"`` (see the module docstring).
        dtype: Computation dtype (default the parameters'); the result has the parameters' dtype.

    Returns:
        :math:`\epsilon = \phi - \theta` as ``{name: tensor}``.

    Raises:
        ValueError: For bad arguments, no batches, or an ``init`` of other names or shapes.
        FloatingPointError: If a loss becomes NaN or infinite (checked once per epoch).
    """
    _check_schedule(epochs, steps_per_epoch, lr)
    if not 0.0 <= alpha <= 0.5:
        raise ValueError(f"alpha: must be in [0, 0.5], got {alpha}")
    if not gamma >= 0.0:
        raise ValueError(f"gamma: must be >= 0, got {gamma}")
    obj = _Objective(model, batches, loss, dtype, bn_mode)
    theta = obj.theta
    phi = (
        {n: t.clone() for n, t in theta.items()}
        if init is None
        else {n: theta[n] + d for n, d in obj.align(init, "init").items()}
    )
    steps = steps_per_epoch or len(obj.batches)
    gen = torch.Generator().manual_seed(seed)
    order = _batch_order(len(obj.batches), shuffle, gen)
    with torch.random.fork_rng(devices=_rng_devices(obj.device)):
        torch.manual_seed(seed)
        for e in range(1, epochs + 1):
            totals = torch.zeros(2, dtype=obj.dtype, device=obj.device)
            for _ in range(steps):
                lam = _uniform(gen, 0.5 - alpha, 0.5 + alpha)
                b = next(order)
                phi_hat = {n: (1 - lam) * theta[n] + lam * phi[n] for n in theta}
                g_phi, l_phi = obj.grad_and_value(phi, b)
                g_hat, l_hat = obj.grad_and_value(phi_hat, b)
                phi = {n: phi[n] - lr * (g_phi[n] + (gamma * lam) * g_hat[n]) for n in phi}
                totals += torch.stack([l_phi, l_hat])
            mean = (totals / steps).tolist()
            log.info("mine_vvv: epoch %d/%d loss phi %.6g phi_hat %.6g", e, epochs, *mean)
            _check_finite("mine_vvv", sum(mean), e, epochs, lr)
    return obj.output({n: phi[n] - theta[n] for n in theta})


# --------------------------------------------------------------------------- angles (V5)


def descent_angles(
    model: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    *,
    num_directions: int = 100,
    seed: int = 0,
    targets: Mapping[str, Mapping[str, Tensor]] | None = None,
    loss: LossFn = F.cross_entropy,
    normalization: str = "raw",
    bias_bn: str = "raw",
    bn_mode: str = "eval",
) -> dict[str, np.ndarray]:
    r"""Angles (degrees) between Gaussian directions and descent directions (V5, Fig. 5).

    Descent directions, in this order: the negative gradient of each batch,
    :math:`-\nabla\bar\ell_b(\theta)` (named ``g_batch[b]``; pass the random batches the gradients
    should be taken on), then each of ``targets`` (e.g. ``{"theta_f - theta_cur": ...}`` from
    :func:`landscape.directions.towards`). Gaussian directions are
    :math:`\epsilon_i \sim \mathcal{N}(0, I)` over all trainable parameters
    (:func:`landscape.directions.noise`, seeds from ``numpy.random.SeedSequence(seed)``), then
    ``normalize(eps, theta, normalization, bias_bn)``; the default ``raw`` keeps them isotropic,
    for which :math:`\cos\angle(\epsilon, d)` has mean 0 and variance :math:`1/n` for any fixed
    :math:`d`, i.e. angles :math:`90° \pm 57.3°/\sqrt n`.

    Angles are :math:`2\operatorname{atan2}(\|u - v\|, \|u + v\|)` of the unit vectors, in
    float64 (exactly 0 for a vector with itself, accurate for tiny angles where
    :math:`\arccos` returns 0); targets are used in float64 as given; a zero vector gives NaN.

    Args:
        model: The network at :math:`\theta_\text{cur}` (not modified).
        batches: Batches whose gradients are descent directions (one each).
        num_directions: Number :math:`N` of Gaussian directions.
        seed: Seeds the Gaussian directions.
        targets: Further descent directions by name, over all trainable parameters.
        loss: ``loss(output, y)`` -> mean loss of a batch.
        normalization: See :func:`landscape.directions.normalize`.
        bias_bn: See :func:`landscape.directions.normalize`.
        bn_mode: ``"eval"`` or ``"train"`` for the gradients.

    Returns:
        ``names`` ``(D,)`` of the descent directions, ``gaussian`` ``(N, D)`` angles between
        Gaussian direction :math:`i` and descent direction :math:`j`, ``between`` ``(D, D)``
        angles among the descent directions.

    Raises:
        ValueError: For a target of other names or shapes, or bad options.
    """
    _check_bn_mode(bn_mode)
    params = trainable(model)
    names = list(params)
    descents: dict[str, Tensor] = {}
    for b, batch in enumerate(batches):
        g = negative_gradient(model, [batch], loss, train_mode=bn_mode == "train")
        descents[f"g_batch[{b}]"] = _flat64(g, names)
    device = next(iter(params.values())).device
    for key, target in (targets or {}).items():
        _aligned(target, params, f"targets[{key!r}]")  # names and shapes
        descents[key] = _flat64(target, names).to(device)  # in float64, not the model's dtype
    if not descents:
        raise ValueError("descent_angles: no batches and no targets (no descent directions)")
    units = _unit(torch.stack(list(descents.values())))
    between = _angle_degrees(units[:, None, :], units[None, :, :])
    seeds = np.random.SeedSequence(seed).generate_state(num_directions)
    rows = []
    for s in seeds:
        eps = normalize(noise(params, "gaussian", int(s)), params, normalization, bias_bn)
        rows.append(_angle_degrees(_unit(_flat64(eps, names))[None, :], units))
    gaussian = torch.stack(rows) if rows else torch.empty(0, len(descents), dtype=torch.float64)
    return {
        "names": np.asarray(list(descents), dtype=str),
        "gaussian": gaussian.cpu().numpy(),
        "between": between.cpu().numpy(),
    }


# --------------------------------------------------------------------------- cosines (V9)


def cosine_similarity(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    r"""Cosine :math:`a^T b / (\|a\| \|b\|)` of two directions over the same names (float64).

    >>> cosine_similarity({"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([1.0, 1.0])})
    0.7071067811865475

    Returns:
        The signed cosine; NaN if either vector is zero.

    Raises:
        ValueError: If the names differ.
    """
    if set(a) != set(b):
        raise ValueError("cosine_similarity: the directions have different parameter names")
    names = list(a)
    u = _flat64(a, names)
    v = _flat64(b, names).to(u.device)
    denom = float(u.norm() * v.norm())
    return float(u @ v) / denom if denom > 0 else math.nan


def cosine_table(
    mined: Sequence[Mapping[str, Tensor]],
    eigvecs: Sequence[Mapping[str, Tensor]] | Tensor,
    *,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    r"""Absolute cosines :math:`|\cos\angle(\epsilon_i, v_j)|` between mined directions and
    eigenvectors (V9, Fig. 9's bars: the caller orders the columns, e.g. N.E.1..N.E.10 then
    P.E.10..P.E.1).

    Args:
        mined: Directions :math:`\epsilon_i` (``{name: tensor}``).
        eigvecs: Eigenvectors as directions, or as a flat ``(n, k)`` tensor with unit columns
            (``Eigenpairs.eigenvectors`` of :mod:`landscape.hessian`).
        names: For a flat ``eigvecs``: the parameter order of its rows (the operator's
            ``names``); required then, since a direction read from a file may be in another order.

    Returns:
        ``(len(mined), k)`` float64 array; NaN where a vector is zero.

    Raises:
        ValueError: For a flat ``eigvecs`` without ``names`` or of the wrong length, or
            directions with different names.
    """
    if isinstance(eigvecs, Tensor):
        if names is None:
            raise ValueError("cosine_table: a flat eigvecs tensor needs names (the row order)")
        if eigvecs.dim() != 2:
            raise ValueError(f"cosine_table: eigvecs must be (n, k), got {tuple(eigvecs.shape)}")
        columns = eigvecs.detach().to(torch.float64).T
        order = list(names)
    else:
        if not eigvecs:
            return np.zeros((len(mined), 0))
        order = list(names) if names is not None else list(eigvecs[0])
        columns = torch.stack([_flat64(v, order) for v in eigvecs])
    rows = []
    for i, eps in enumerate(mined):
        if set(eps) != set(order):
            raise ValueError(f"cosine_table: mined[{i}] has other parameter names")
        flat = _flat64(eps, order).to(columns.device)
        if flat.numel() != columns.shape[1]:
            raise ValueError(
                f"cosine_table: mined[{i}] has {flat.numel()} elements, eigvecs {columns.shape[1]}"
            )
        rows.append((_unit(columns) @ _unit(flat)).abs())
    if not rows:
        return np.zeros((0, columns.shape[0]))
    return torch.stack(rows).cpu().numpy()


# --------------------------------------------------------------------------- s.o.a. (V14)


def soa_curve(
    model: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    direction: Mapping[str, Tensor],
    lambdas: Sequence[float] | None = None,
    *,
    half_width: float = 0.05,
    num_local: int = 11,
    local_loss: bool = False,
    loss: LossFn = F.cross_entropy,
    dtype: torch.dtype | None = None,
    bn_mode: str = "eval",
    hvp: str = "auto",
) -> dict[str, np.ndarray]:
    r"""The second-order approximation of a curve at each of its points (V14, Fig. 14).

    At every :math:`\lambda` of ``lambdas`` (default 11 points on :math:`[-1, 0]`, i.e. GMI with
    a Gaussian :math:`\epsilon` or MLI with :math:`\epsilon = \theta_f - \theta_0` around
    :math:`\theta = \theta_f`), with :math:`\theta_\lambda = \theta + \lambda\epsilon`:

    .. math::

        L(\theta_\lambda + t\epsilon) \approx L(\theta_\lambda) + b\,t + \tfrac12 a\,t^2,
        \qquad b = \epsilon^T \nabla L(\theta_\lambda), \quad
        a = \epsilon^T \nabla^2 L(\theta_\lambda)\, \epsilon,

    for :math:`t \in [-h, h]` (the paper's :math:`\tfrac12 a(x-\lambda)^2 + b(x-\lambda)`,
    :math:`x = \lambda + t`, plus the loss at the point). :math:`a, b` come from
    :func:`landscape.hessian.directional_derivatives` on a
    :class:`~landscape.hessian.HessianLinearOperator` built at :math:`\theta_\lambda` (on a deep
    copy of the model whose parameters are set to :math:`\theta_\lambda` in ``dtype``); the loss
    is the size-weighted loss over ``batches``.

    Args:
        model: The network at :math:`\theta` (not modified).
        batches: ``(x, y)`` evaluation batches.
        direction: :math:`\epsilon` over all trainable parameters.
        lambdas: Points of the curve (default ``numpy.linspace(-1, 0, 11)``).
        half_width: :math:`h`.
        num_local: Points of the local grid :math:`t \in` ``linspace(-h, h, num_local)``.
        local_loss: Also evaluate the actual loss on the local grids (``num_local`` forward
            passes over ``batches`` per point).
        loss: ``loss(output, y)`` -> mean loss of a batch.
        dtype: Computation dtype (default the parameters'; float64 for checks).
        bn_mode: ``"eval"`` (BN with :math:`\theta`'s running statistics at every point) or
            ``"train"``.
        hvp: The operator's product ``method`` (:class:`~landscape.hessian.HessianLinearOperator`).

    Returns:
        ``lambdas`` ``(L,)``, ``loss`` ``(L,)`` :math:`L(\theta_\lambda)`, ``slope`` ``(L,)``
        :math:`b`, ``curvature`` ``(L,)`` :math:`a`, ``offsets`` ``(M,)`` :math:`t`, ``x``
        ``(L, M)`` :math:`\lambda + t`, ``quadratic`` ``(L, M)`` the approximation, and with
        ``local_loss`` ``local_loss`` ``(L, M)`` the actual :math:`L(\theta + x\epsilon)`.

    Raises:
        ValueError: For a direction of other names or shapes, ``num_local < 1`` or a negative
            ``half_width``.
    """
    _check_bn_mode(bn_mode)
    if num_local < 1 or not half_width >= 0:
        raise ValueError(
            f"soa_curve: needs num_local >= 1 and half_width >= 0, got {num_local}, {half_width}"
        )
    lam = np.linspace(-1.0, 0.0, 11) if lambdas is None else np.asarray(lambdas, dtype=np.float64)
    batches = list(batches)
    params = trainable(model)
    dtype = dtype or next(iter(params.values())).dtype
    work = copy.deepcopy(model).to(dtype)
    theta = {n: p.detach().clone() for n, p in work.named_parameters() if p.requires_grad}
    eps = _aligned(direction, theta, "direction")
    offsets = np.linspace(-half_width, half_width, num_local)
    values, slope, curvature = np.zeros(len(lam)), np.zeros(len(lam)), np.zeros(len(lam))
    local = np.full((len(lam), num_local), np.nan)
    for i, point in enumerate(lam):
        with torch.no_grad():
            for n, p in work.named_parameters():
                if n in theta:
                    p.copy_(theta[n] + float(point) * eps[n])
        op = HessianLinearOperator(
            work,
            batches,
            loss=loss,
            dtype=dtype,
            bn_mode=bn_mode,
            check_deterministic=i == 0,
            method=hvp,
        )
        values[i] = op.loss_value()
        slope[i], curvature[i] = directional_derivatives(op, eps)
        if local_loss:
            base, flat = op.params(), op.flatten(eps)
            local[i] = [op.loss_at(base + float(t) * flat) for t in offsets]
    out = {
        "lambdas": lam,
        "loss": values,
        "slope": slope,
        "curvature": curvature,
        "offsets": offsets,
        "x": lam[:, None] + offsets[None, :],
        "quadratic": (
            values[:, None]
            + slope[:, None] * offsets[None, :]
            + 0.5 * curvature[:, None] * offsets[None, :] ** 2
        ),
    }
    if local_loss:
        out["local_loss"] = local
    return out


# --------------------------------------------------------------------------- loss change (V13)


def loss_change_samples(
    model: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    *,
    lambdas: Sequence[float] = (0.001, 0.01),
    sigma: float = 1.0,
    num_samples: int = 100,
    seed: int = 0,
    trace: float | None = None,
    loss: LossFn = F.cross_entropy,
    dtype: torch.dtype | None = None,
    loss_dtype: torch.dtype | None = torch.float64,
    bn_mode: str = "eval",
    hvp: str = "auto",
) -> dict[str, np.ndarray | float]:
    r"""Loss changes under Gaussian perturbations, actual and second-order (V13, Fig. 13).

    For :math:`\epsilon_s \sim \mathcal{N}(0, \sigma^2 I)`, :math:`s = 1..S`:

    .. math::

        \delta L_s(\lambda) = L(\theta + \lambda\epsilon_s) - L(\theta)
        \approx \lambda\,\epsilon_s^T g + \tfrac12\lambda^2 \epsilon_s^T H \epsilon_s,
        \qquad \mathbb{E}_\epsilon[\delta L] \approx \tfrac12 \lambda^2\sigma^2
        \operatorname{tr} H \quad (\text{Eq. 4}),

    the right-hand side from :func:`landscape.hessian.soa_loss_change` (one Hessian-vector
    product per sample), the actual change from forward passes at the same :math:`\epsilon_s`
    (regenerated from ``seed`` as ``soa_loss_change`` draws them, and checked against its
    :math:`\epsilon_s^T g`). At :math:`\lambda = 0.001` the actual change is of the order of
    :math:`10^{-6}\operatorname{tr}H`, at or below the rounding of a float32 loss: the forward
    passes of the actual change run on a copy of model and data in ``loss_dtype`` (float64 by
    default), at the perturbations drawn in ``dtype`` and cast exactly.

    Args:
        model: The network at :math:`\theta` (not modified).
        batches: ``(x, y)`` evaluation batches (size-weighted loss).
        lambdas: Step sizes :math:`\lambda`.
        sigma: Noise scale :math:`\sigma`.
        num_samples: :math:`S`.
        seed: Seeds the perturbations.
        trace: :math:`\operatorname{tr} H` (e.g. from :func:`landscape.hessian.hutchinson`) for
            the predicted mean.
        loss: ``loss(output, y)`` -> mean loss of a batch.
        dtype: Dtype of the products and perturbations (default the parameters').
        loss_dtype: Dtype of the actual change's forward passes; None: ``dtype``.
        bn_mode: ``"eval"`` or ``"train"``.
        hvp: The operator's product ``method`` (:class:`~landscape.hessian.HessianLinearOperator`).

    Returns:
        ``lambdas`` ``(L,)``, ``loss0`` :math:`L(\theta)` (in ``loss_dtype``), ``actual``
        ``(S, L)``, ``soa`` ``(S, L)``, ``slope`` ``(S,)`` :math:`\epsilon_s^T g`, ``curvature``
        ``(S,)`` :math:`\epsilon_s^T H\epsilon_s`, ``predicted_mean`` ``(L,)``
        :math:`\tfrac12\lambda^2\sigma^2\operatorname{tr}H` (NaN without ``trace``).

    Raises:
        RuntimeError: If the regenerated perturbations do not match ``soa_loss_change``'s.
    """
    dtype = dtype or next(iter(trainable(model).values())).dtype
    batches = list(batches)
    op = HessianLinearOperator(model, batches, loss=loss, dtype=dtype, bn_mode=bn_mode, method=hvp)
    soa = soa_loss_change(op, lambdas, num_samples=num_samples, sigma=sigma, seed=seed)
    lam = soa["lambdas"]
    g = op.gradient()
    exact = op
    if loss_dtype is not None and loss_dtype != dtype:
        exact = HessianLinearOperator(
            model, batches, loss=loss, dtype=loss_dtype, bn_mode=bn_mode, check_deterministic=False
        )
    theta = exact.params()
    loss0 = exact.loss_at(theta)
    gen = torch.Generator().manual_seed(seed)  # the stream soa_loss_change draws from
    actual = np.zeros((num_samples, len(lam)))
    for s in range(num_samples):
        eps = sigma * _probe(op.shape[0], gen, "gaussian", op.dtype, op.device)
        slope = float(eps @ g)
        if not math.isclose(slope, soa["b"][s], rel_tol=1e-6, abs_tol=1e-9 * float(g.norm())):
            raise RuntimeError(
                "loss_change_samples: perturbations differ from soa_loss_change's "
                f"(eps.g {slope} vs {soa['b'][s]})"
            )
        eps = eps.to(exact.dtype)
        actual[s] = [exact.loss_at(theta + float(t) * eps) - loss0 for t in lam]
    predicted = (
        np.full(len(lam), np.nan) if trace is None else 0.5 * lam**2 * sigma**2 * float(trace)
    )
    return {
        "lambdas": lam,
        "loss0": loss0,
        "actual": actual,
        "soa": soa["delta"],
        "slope": soa["b"],
        "curvature": soa["a"],
        "predicted_mean": predicted,
    }


__all__ = [
    "BN_MODES",
    "cosine_similarity",
    "cosine_table",
    "descent_angles",
    "loss_change_samples",
    "mine_vvv",
    "mine_wpeak",
    "soa_curve",
]
