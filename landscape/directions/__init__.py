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
- ``pca``: a principal component (``component`` 1 or 2) of the run's checkpoints ``theta_E -
  theta`` (a training trajectory, tomgoldstein/loss-landscape's PCA directions); see
  :mod:`~landscape.directions.pca`. With ``bn_states`` (noise and checkpoint kinds) a direction
  also moves the BN running statistics; see :mod:`~landscape.directions.states`.
- ``eigenvector``: a Hessian eigenvector of the checkpoint (``which``: ``LA`` top, the
  paper's P.E.; ``SA`` most negative, N.E.; ``index`` from 1), read from the spectrum file that
  :func:`landscape.curvature.compute_spectrum` wrote (V8, V11); see :func:`eigenvector`. The file
  holds unit vectors, about ``1/||theta||`` of the parameters; by default they are scaled to
  ``||theta||`` (normalization ``norm``, every element kept), as the paper scales its
  perturbation directions (``eps <- ||theta|| eps / ||eps||``, Section 2 and Appendix A.3), so
  that a curve over ``lambda in [-1, 1]`` moves as far as a Gaussian one. The scaling keeps the
  direction (an eigenvector stays one); ``normalization: raw`` keeps the unit vector.

Sign transform (``sign: consistent``, A1/A2): ``eps <- |eps| * sign(theta)`` on a seeded random
fraction ``sign_ratio`` of each tensor's elements and ``-|eps| * sign(theta)`` on the others, so
that the share of elements whose sign agrees with ``theta`` is ``sign_ratio``; see
:func:`sign_consistent`.

Normalizations (Li et al. 2018; Li et al., "Visualizing, Rethinking, and Mining", Appendix A.3):

- ``raw``: the vector as it is.
- ``norm``: ``eps <- ||theta|| eps / ||eps||`` over the whole vector ("Norm", "Norm-Scaled").
- ``layer``: the same per parameter tensor ("LayNorm").
- ``filter``: the same per output filter, i.e. per slice along dim 0 ("FilNorm", "Filter-NS").
- ``match`` (with ``closest_to`` only): ``eps <- ||ref|| eps / ||eps||``, the norm of the
  ``closest_to`` reference (Fig. 6 scales its Gaussian to the negative gradient's norm).

One-dimensional tensors (biases, BN weights and biases) follow ``bias_bn``: ``zero`` leaves them
unperturbed (Li et al. 2018's ``ignore='biasbn'``), ``normalize`` scales each such tensor as a
whole to the norm of its parameter, ``raw`` keeps them as they are, ``like_weights`` normalizes
them as every other tensor (the Asymmetric Valley paper perturbs BN parameters, A4, A5): under
``filter`` each element is its own filter, ``eps_i <- |w_i| eps_i / |eps_i|``; under ``norm``
they are part of the global vector; under ``layer`` each is scaled as a whole.

The group restriction (A4) zeroes the direction outside one group of
:data:`landscape.params.GROUPS`; ``scale`` multiplies the finished direction.

Layout: :mod:`~landscape.directions.base` holds the :data:`Direction` type, the transforms and the
registry of kinds (a dict kind -> builder that each kind module fills); one module per kind
(:mod:`~landscape.directions.noise`, :mod:`~landscape.directions.special`,
:mod:`~landscape.directions.gradient`, :mod:`~landscape.directions.checkpoint`,
:mod:`~landscape.directions.eigenvector`, :mod:`~landscape.directions.mined`, with
:mod:`~landscape.directions.mined_spec` for what the workflow reads of a ``mined`` spec);
:mod:`~landscape.directions.build` reads the registry (:func:`make_direction`,
:func:`write_direction`). Modules import only downwards: :mod:`landscape.mining` imports from
``base``, ``noise`` and ``gradient``, and only ``mined`` imports :mod:`landscape.mining`, so this
``__init__`` does not import ``mined``; the registry imports it when a ``mined`` direction is first
built. This package re-exports the public names of those modules.
"""

from landscape.directions.base import (
    BIAS_BN,
    BUILDERS,
    KINDS,
    NORMALIZATIONS,
    SIGNS,
    Direction,
    Request,
    angle_degrees,
    builder,
    cosine,
    direction_norms,
    global_norm,
    match_norm,
    normalize,
    orthogonalize,
    register,
    sign_consistent,
    trainable,
)
from landscape.directions.build import (
    make_direction,
    needs_data,
    normalization_of,
    read_reference_direction,
    required_references,
    write_direction,
)
from landscape.directions.checkpoint import towards
from landscape.directions.eigenvector import eigenvector
from landscape.directions.gradient import gradient_batches, negative_gradient
from landscape.directions.mined_spec import (
    ALGORITHMS,
    PHI_INITS,
    fresh_initialization,
    phi_init,
)
from landscape.directions.noise import NOISE, closest_noise, noise, noise_stream
from landscape.directions.pca import principal_components, project, trajectory_matrix
from landscape.directions.special import SPECIALS, special

__all__ = [
    "ALGORITHMS",
    "BIAS_BN",
    "BUILDERS",
    "KINDS",
    "NOISE",
    "NORMALIZATIONS",
    "PHI_INITS",
    "SIGNS",
    "SPECIALS",
    "Direction",
    "Request",
    "angle_degrees",
    "builder",
    "closest_noise",
    "cosine",
    "direction_norms",
    "eigenvector",
    "fresh_initialization",
    "global_norm",
    "gradient_batches",
    "make_direction",
    "match_norm",
    "needs_data",
    "negative_gradient",
    "noise",
    "noise_stream",
    "normalization_of",
    "normalize",
    "orthogonalize",
    "phi_init",
    "principal_components",
    "project",
    "read_reference_direction",
    "register",
    "required_references",
    "sign_consistent",
    "special",
    "towards",
    "trainable",
    "trajectory_matrix",
    "write_direction",
]
