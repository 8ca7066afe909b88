"""Building a direction from its config block (:func:`make_direction`) and writing it from a
checkpoint (:func:`write_direction`): the base vector from the kind's registered builder
(:func:`landscape.directions.base.builder`), then the transforms shared by every kind."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape import store
from landscape.config import transform_defaults
from landscape.data import DataBundle, load_data
from landscape.directions.base import (
    KINDS,
    SIGNS,
    Direction,
    Request,
    aligned,
    angle_degrees,
    builder,
    choice,
    cosine,
    direction_norms,
    global_norm,
    match_norm,
    normalize,
    reference,
    sign_consistent,
    trainable,
)
from landscape.directions.eigenvector import eigenvector
from landscape.directions.mined_spec import fresh_initialization, phi_init
from landscape.directions.states import state_direction
from landscape.params import group_names, restrict
from landscape.train import load_model, resolve_device


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
      ``references["phi_init"]``, see :func:`phi_init`) or ``pca`` (``component`` of the
      checkpoints ``references["trajectory_<epoch>"]``, :mod:`landscape.directions.pca`).
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
    kind = choice(spec, "kind", KINDS, "noise")
    params = trainable(model)
    if "closest_to" in spec and kind != "noise":
        raise ValueError(f"closest_to: applies to kind 'noise' only, not {kind!r}")
    record: dict[str, Any] = {}
    eps = builder(kind)(Request(spec, model, params, references, data, record))
    if choice(spec, "sign", SIGNS, "none") == "consistent":
        eps = sign_consistent(eps, params, spec.get("sign_ratio", 1.0), spec.get("seed", 0))
    eps = _normalized(spec, eps, params, references)
    group = spec.get("group", "ALL")
    if group != "ALL":  # group_names rejects an unknown group
        eps = restrict(eps, group_names(model, group))
    scale = float(spec.get("scale", 1.0))
    eps = eps if scale == 1.0 else {n: d * scale for n, d in eps.items()}
    if "closest_to" in spec:
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
    target = reference(references, "closest_to", "normalization 'match'")
    return match_norm(normalize(eps, params, "raw", bias_bn), target)


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
    return aligned(tensors, params, f"closest_to ({path})")


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
    metadata), for ``closest_to`` the choice and for ``pca`` the explained variance
    (:func:`make_direction`'s ``attrs``). With ``bn_states`` the file also holds the tensor group
    ``buffers`` (:func:`landscape.directions.states.state_direction`) and ``bn_states_norm``.
    """
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    params = trainable(model)
    paths = dict(references or {})
    attrs: dict[str, Any] = {}
    refs = {}
    states = {}
    for role, path in paths.items():
        state = store.read_checkpoint(path)
        states[role] = state["model"]
        what = f"references[{role!r}] ({path})"
        if role == "phi_init":
            what = f"phi_run {spec.get('phi_run')!r} ({path})"
            attrs.update(phi_run=state["meta"]["run"], phi_epoch=state["meta"]["epoch"])
        refs[role] = aligned(state["model"], params, what)
    if reference_direction is not None:
        refs["closest_to"] = read_reference_direction(reference_direction, params, meta)
        paths["closest_to"] = reference_direction
    if spectrum is not None:
        which, index = spec.get("which", "LA"), spec.get("index", 1)
        refs["eigenvector"] = eigenvector(params, spectrum, which, index)
        paths["spectrum"] = spectrum
    if spec.get("kind") == "mined" and phi_init(spec) == "init":
        attrs["init_seed"] = spec.get("init_seed", 1)
        refs["phi_init"] = aligned(
            fresh_initialization(meta, attrs["init_seed"]), params, "phi_init"
        )
    data = load_data(dataset, dev) if dataset is not None and needs_data(spec) else None
    direction = make_direction(spec, model, references=refs, data=data, attrs=attrs)
    attrs.update(direction_norms(direction, params))
    buffers = {}
    if spec.get("bn_states"):  # BN running statistics too (landscape.directions.states)
        buffers = state_direction(spec, model, params, states.get("target"))
        attrs["bn_states_norm"] = global_norm(buffers)
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
        if buffers:
            w.put_tensors("buffers", buffers)
