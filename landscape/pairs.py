"""Statistics of pairs and sets of models: parameter groups, signs, interpolation, model soups.

Li et al., "Exploring and Exploiting the Asymmetric Valley of DNNs", A7 and A8:

- A7 :func:`group_statistics`: per parameter group (:data:`PAIR_GROUPS`, :func:`pair_groups`)
  the mean, standard deviation (population, ``ddof=0``), element count and share of positive
  elements; :func:`sign_consistency` the share of equal signs of two models per group, with the
  rules of :func:`landscape.curves.same_sign_ratio` (``np.sign``: zero matches only zero).
- A8 :func:`interpolate` ``(1 - lam) theta_a + lam theta_b`` of every floating tensor of two
  state dicts (parameters and BN buffers; integer buffers such as ``num_batches_tracked`` come
  from ``theta_a`` for ``lam < 0.5``, else from ``theta_b``); exact at ``lam`` 0 and 1.
  :func:`interpolation_curve` evaluates it over lambdas. BN statistics (``bn_mode``):
  ``recompute`` (default, what interpolation papers do) re-estimates the running statistics of
  every evaluated model, the endpoints included, over fixed training batches
  (:func:`landscape.evaluate.fixed_bn_batches`, as the curves' UpBN), so every point is
  evaluated the same way; ``interpolate`` keeps the interpolated buffers. Without BN both are
  the same (the file also keeps each model's accuracy with its own statistics,
  ``interpolation/{split}/own_accuracy_{a,b}``). The interpolation gap
  (:func:`interpolation_gap`) is ``mean(acc(lam=0), acc(lam=1)) - acc(lam=0.5)``: positive where
  the midpoint is worse than its endpoints (a barrier); per lambda, :func:`gap_curve` is
  ``mean(acc(0), acc(1)) - acc(lam)``.
  :func:`ssr_over_epochs` gives SSR-IA, SSR-IB (a shared start I against models A and B) and
  SSR-AB over the checkpoints of two runs.
- Model soups (Wortsman et al. 2022, :func:`model_soups`): the uniform soup averages every
  ingredient (parameters and buffers, then BN as ``bn_mode``); the greedy soup visits the
  ingredients by held-out accuracy, best first, and adds one when the soup's held-out accuracy
  does not drop. Every model, ingredient or soup, is evaluated the same way, so the greedy soup
  is at least as accurate as the best ingredient on the held-out split by construction.

- A5 :func:`bn_weights`: the BN weights of every run at its initialization (epoch 0) and at its
  epoch, for histograms of initial and converged BN weights per BN initialization.

The workflow entry point is :func:`compute_pair`; :func:`landscape.pair_plots.plot_pair` draws
its file.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import store
from landscape.config import pair_input_name
from landscape.curves import same_sign_ratio
from landscape.data import Split, load_data
from landscape.evaluate import fixed_bn_batches
from landscape.grid import GridEvaluator
from landscape.pair_layout import PAIR_GROUPS, SSR_VARIANTS
from landscape.params import param_groups
from landscape.train import load_model, resolve_device

log = logging.getLogger(__name__)

BN_MODES = ("recompute", "interpolate")
COMPUTE = ("statistics", "interpolation", "ssr", "soups", "bn_weights")


# --------------------------------------------------------------------------- A7 statistics


def pair_groups(model: nn.Module) -> dict[str, list[str]]:
    """The trainable parameters of :data:`PAIR_GROUPS`, in ``named_parameters()`` order.

    From :func:`landscape.params.param_groups`: ``bn_*`` are the ``BN`` group's weights (BN
    scales) and biases (shifts), ``clf_*`` the ``CLF`` group's (the final ``nn.Linear``), and
    ``other_*`` every other trainable parameter, split by shape: ``other_weight`` the tensors of
    two or more dimensions (convolution and linear weights), ``other_bias`` the 1-D ones
    (biases, and scales of other normalizations if a model has them). Every trainable parameter
    is in exactly one group.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    >>> pair_groups(net)
    ... # doctest: +NORMALIZE_WHITESPACE
    {'bn_weight': ['1.weight'], 'bn_bias': ['1.bias'], 'clf_weight': ['3.weight'],
     'clf_bias': ['3.bias'], 'other_weight': ['0.weight'], 'other_bias': ['0.bias']}
    """
    groups = param_groups(model)
    shapes = {n: p.dim() for n, p in model.named_parameters()}
    bn, clf = set(groups["BN"]), set(groups["CLF"])
    out: dict[str, list[str]] = {g: [] for g in PAIR_GROUPS}
    for name in groups["ALL"]:
        family = "bn" if name in bn else "clf" if name in clf else "other"
        if family == "other":
            kind = "weight" if shapes[name] >= 2 else "bias"
        else:
            kind = "bias" if name.rsplit(".", 1)[-1] == "bias" else "weight"
        out[f"{family}_{kind}"].append(name)
    return out


def trainable(model: nn.Module, state: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
    """``{name: tensor}`` of the model's trainable parameters, from ``state`` if given.

    Raises:
        KeyError: if ``state`` lacks a trainable parameter of the model.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if state is None:
        return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n in names if n not in state]
    if missing:
        raise KeyError(f"state lacks the model's parameters {missing}")
    return {n: torch.as_tensor(state[n]) for n in names}


def _values(params: Mapping[str, Any], names: Sequence[str]) -> np.ndarray:
    if not names:
        return np.empty(0)
    return np.concatenate(
        [torch.as_tensor(params[n]).detach().cpu().double().reshape(-1).numpy() for n in names]
    )


def group_statistics(
    model_or_params: nn.Module | Mapping[str, Any],
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, count and share of positive elements per parameter group.

    Args:
        model_or_params: a model (its trainable parameters; groups from :func:`pair_groups`
            unless given) or ``{name: tensor}`` (then ``groups`` is required).
        groups: ``{group: [parameter names]}``; default :func:`pair_groups` of the model.

    Returns:
        ``{group: {"mean", "std", "count", "positive"}}`` in float64: ``std`` with ``ddof=0``,
        ``positive`` the share of elements ``> 0``; an empty group has count 0 and NaN values.

    Raises:
        ValueError: for parameters without ``groups``.
    """
    if isinstance(model_or_params, nn.Module):
        params = trainable(model_or_params)
        groups = pair_groups(model_or_params) if groups is None else groups
    else:
        if groups is None:
            raise ValueError("group_statistics: parameters without a model need groups")
        params = model_or_params
    out = {}
    for group, names in groups.items():
        v = _values(params, names)
        empty = v.size == 0
        out[group] = {
            "mean": np.nan if empty else float(v.mean()),
            "std": np.nan if empty else float(v.std()),
            "count": float(v.size),
            "positive": np.nan if empty else float((v > 0).mean()),
        }
    return out


def sign_consistency(
    params_a: nn.Module | Mapping[str, Any],
    params_b: nn.Module | Mapping[str, Any],
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, float]:
    """Share of elements with equal signs in two models, overall (``ALL``) and per group.

    Args:
        params_a, params_b: two models (their trainable parameters) or ``{name: tensor}``.
        groups: ``{group: [parameter names]}``; default :func:`pair_groups` of ``params_a``
            when it is a model, else none (``ALL`` only).

    Returns:
        ``{"ALL": share, group: share, ...}`` by the rules of
        :func:`landscape.curves.same_sign_ratio`; ``ALL`` pools every name of ``params_a``, an
        empty group gives NaN.
    """
    if groups is None and isinstance(params_a, nn.Module):
        groups = pair_groups(params_a)
    a, b = (trainable(p) if isinstance(p, nn.Module) else p for p in (params_a, params_b))
    return same_sign_ratio(a, b, groups)


# --------------------------------------------------------------------------- A8 interpolation


def interpolate(
    theta_a: Mapping[str, Tensor], theta_b: Mapping[str, Tensor], lam: float
) -> dict[str, Tensor]:
    """``(1 - lam) theta_a + lam theta_b`` of every floating tensor of two state dicts.

    Integer tensors (``num_batches_tracked``) are taken from ``theta_a`` for ``lam < 0.5`` and
    from ``theta_b`` otherwise. ``lam`` 0 gives ``theta_a`` and 1 gives ``theta_b`` exactly.

    Raises:
        ValueError: if the two differ in names or shapes.
    """
    if list(theta_a) != list(theta_b):
        raise ValueError(
            f"interpolate: the models differ in tensors: {sorted(set(theta_a) ^ set(theta_b))}"
        )
    out = {}
    for name, a in theta_a.items():
        b = theta_b[name]
        if a.shape != b.shape:
            raise ValueError(
                f"interpolate: {name} has shapes {tuple(a.shape)} and {tuple(b.shape)}"
            )
        if a.is_floating_point():
            out[name] = torch.lerp(a, b.to(a), float(lam))
        else:
            out[name] = (a if lam < 0.5 else b).clone()
    return out


def average(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The uniform average of several state dicts (sums in float64; integer tensors of the first).

    The average of one state is that state exactly.

    Raises:
        ValueError: for no states or states that differ in names.
    """
    if not states:
        raise ValueError("average: no states")
    first = states[0]
    for other in states[1:]:
        if list(other) != list(first):
            raise ValueError("average: the states differ in tensor names")
    out = {}
    for name, t in first.items():
        if t.is_floating_point():
            total = sum(s[name].double() for s in states)
            out[name] = (total / len(states)).to(t.dtype)
        else:
            out[name] = t.clone()
    return out


def evaluate_state(
    model: nn.Module,
    state: Mapping[str, Tensor],
    splits: Mapping[str, Split],
    *,
    bn_mode: str = "recompute",
    bn_batches: Sequence[tuple[Tensor, Tensor]] = (),
    batch_size: int = 512,
) -> dict[str, dict[str, float]]:
    """Loss and accuracy of ``model`` with the tensors of ``state`` on each split.

    Args:
        model: a model of the state's architecture (not modified).
        state: a full state dict (parameters and buffers).
        splits: ``{split name: split}``.
        bn_mode: ``recompute``: BN running statistics re-estimated over ``bn_batches`` (as
            :class:`landscape.grid.GridEvaluator`'s UpBN); ``interpolate``: the state's own.
        bn_batches: the fixed training batches of ``recompute``.
        batch_size: evaluation batch size.

    Returns:
        ``{split: {"loss": mean cross-entropy, "accuracy": 1 - error}}``.

    Raises:
        ValueError: for an unknown ``bn_mode``.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode: unknown {bn_mode!r}; one of {BN_MODES}")
    work = copy.deepcopy(model)
    work.load_state_dict(state)
    evaluator = GridEvaluator(
        work,
        [{}],  # one all-zero direction: the model itself, evaluated at coordinate 0
        bn_mode="recompute" if bn_mode == "recompute" else "keep",
        bn_batches=bn_batches,
        batch_size=batch_size,
        strategy="pointwise",
        first_layer=False,
    )
    result = evaluator(np.zeros((1, 1)), splits)
    return {
        s: {"loss": float(r["loss"][0]), "accuracy": float(1.0 - r["error"][0])}
        for s, r in result.items()
    }


def interpolation_curve(
    model: nn.Module,
    theta_a: Mapping[str, Tensor],
    theta_b: Mapping[str, Tensor],
    lambdas: Sequence[float],
    splits: Mapping[str, Split],
    **evaluation: Any,
) -> dict[str, dict[str, np.ndarray]]:
    """Loss and accuracy of :func:`interpolate` ``(theta_a, theta_b, lam)`` for every lambda.

    Args:
        model: a model of the two states' architecture.
        theta_a, theta_b: full state dicts.
        lambdas: interpolation coefficients (0 is ``theta_a``, 1 is ``theta_b``).
        splits: ``{split name: split}``.
        **evaluation: ``bn_mode``, ``bn_batches``, ``batch_size`` of :func:`evaluate_state`.

    Returns:
        ``{split: {"loss": (L,), "accuracy": (L,)}}`` as float64 arrays.
    """
    points = [
        evaluate_state(model, interpolate(theta_a, theta_b, lam), splits, **evaluation)
        for lam in lambdas
    ]
    return {
        s: {m: np.array([p[s][m] for p in points]) for m in ("loss", "accuracy")} for s in splits
    }


def _index_of(lambdas: np.ndarray, value: float) -> int:
    hits = np.flatnonzero(np.isclose(lambdas, value, rtol=0.0, atol=1e-9))
    if not len(hits):
        raise ValueError(f"lambda: the grid {lambdas.tolist()} has no point at {value}")
    return int(hits[0])


def interpolation_gap(lambdas: Sequence[float], accuracy: Sequence[float]) -> float:
    """``mean(acc(lam=0), acc(lam=1)) - acc(lam=0.5)``: positive when the midpoint is worse.

    >>> interpolation_gap([0.0, 0.5, 1.0], [1.0, 0.5, 0.5])
    0.25

    Raises:
        ValueError: if the grid lacks 0, 0.5 or 1.
    """
    lam, acc = np.asarray(lambdas, dtype=float), np.asarray(accuracy, dtype=float)
    ends = 0.5 * (acc[_index_of(lam, 0.0)] + acc[_index_of(lam, 1.0)])
    return float(ends - acc[_index_of(lam, 0.5)])


def gap_curve(lambdas: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """``mean(acc(lam=0), acc(lam=1)) - acc(lam)`` at every lambda of the grid."""
    lam, acc = np.asarray(lambdas, dtype=float), np.asarray(accuracy, dtype=float)
    return 0.5 * (acc[_index_of(lam, 0.0)] + acc[_index_of(lam, 1.0)]) - acc


def ssr_over_epochs(
    init: Mapping[str, Any],
    run_a: Mapping[int, Mapping[str, Any]],
    run_b: Mapping[int, Mapping[str, Any]],
) -> dict[str, np.ndarray]:
    """SSR-IA, SSR-IB and SSR-AB (:func:`landscape.curves.same_sign_ratio`, all parameters).

    Args:
        init: the parameters I both runs start from (``{name: tensor}``).
        run_a, run_b: ``{epoch: parameters}`` of models A and B; the epochs both have are used.

    Returns:
        ``{"epoch": (E,), "IA": (E,), "IB": (E,), "AB": (E,)}``, epochs ascending:
        ``IA[e] = SSR(I, A_e)``, ``IB[e] = SSR(I, B_e)``, ``AB[e] = SSR(A_e, B_e)``.

    Raises:
        ValueError: if the runs share no epoch.
    """
    epochs = sorted(set(run_a) & set(run_b))
    if not epochs:
        raise ValueError(f"ssr: the runs share no epoch ({sorted(run_a)} and {sorted(run_b)})")
    out = {"epoch": np.array(epochs, dtype=np.int64)}
    pairs = {"IA": lambda e: (init, run_a[e]), "IB": lambda e: (init, run_b[e])}
    pairs["AB"] = lambda e: (run_a[e], run_b[e])
    for variant, of in pairs.items():
        out[variant] = np.array([same_sign_ratio(*of(e))["ALL"] for e in epochs])
    return out


def bn_weights(model: nn.Module, state: Mapping[str, Any] | None = None) -> np.ndarray:
    """Every BN weight (the ``bn_weight`` group) of ``model`` or of ``state``, in order."""
    names = pair_groups(model)["bn_weight"]
    return _values(trainable(model, state), names)


# --------------------------------------------------------------------------- model soups


def model_soups(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    heldout: Split,
    **evaluation: Any,
) -> dict[str, Any]:
    """Uniform and greedy soups of ``states`` (Wortsman et al. 2022), on a held-out split.

    Args:
        model: a model of the ingredients' architecture.
        states: the ingredients' full state dicts (fine-tuned from one start).
        heldout: the split that ranks ingredients and accepts greedy additions.
        **evaluation: ``bn_mode``, ``bn_batches``, ``batch_size`` of :func:`evaluate_state`.

    Returns:
        ``{"ingredients": (N,) accuracies, "uniform": accuracy of the uniform soup,
        "greedy": accuracy of the greedy soup, "order": ingredient indices by accuracy (best
        first, ties by index), "greedy_members": (N,) bool, in ingredient order}``.

    Raises:
        ValueError: for no ingredients.
    """
    if not states:
        raise ValueError("model_soups: no ingredients")

    def accuracy(state):
        return evaluate_state(model, state, {"heldout": heldout}, **evaluation)["heldout"][
            "accuracy"
        ]

    ingredients = np.array([accuracy(s) for s in states])
    order = sorted(range(len(states)), key=lambda i: (-ingredients[i], i))
    members, best = [order[0]], ingredients[order[0]]
    for i in order[1:]:
        candidate = accuracy(average([states[j] for j in [*members, i]]))
        log.info("greedy soup: + ingredient %d -> %.4f (soup %.4f)", i, candidate, best)
        if candidate >= best:
            members.append(i)
            best = candidate
    chosen = np.zeros(len(states), dtype=bool)
    chosen[members] = True
    return {
        "ingredients": ingredients,
        "uniform": accuracy(average(states)),
        "greedy": float(best),
        "order": np.array(order, dtype=np.int64),
        "greedy_members": chosen,
    }


# --------------------------------------------------------------------------- workflow


def _state(path: str | Path, device: torch.device) -> dict[str, Tensor]:
    return {n: t.to(device) for n, t in store.read_checkpoint(path)["model"].items()}


def compute_pair(
    spec: Mapping[str, Any],
    checkpoints: Mapping[str, str | Path],
    out: str | Path,
    dataset: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Writes the statistics of one ``pairs`` block as HDF5 (kind ``pair``).

    Args:
        spec: the block as :func:`landscape.config.pair_spec` resolves it: ``id``, ``runs``,
            ``epochs`` (one per run), ``init`` (``{run, epoch}``), ``ssr_epochs``, ``compute``,
            ``dataset``, ``lambda``, ``splits``, ``bn_mode``, ``bn_batches``, ``batch_size``.
        checkpoints: ``{input name: path}`` of :func:`landscape.config.pair_checkpoints`:
            ``init`` and runs 0 and 1 at every ``ssr_epochs`` (with ``ssr``), and
            ``pair_input_name(i, e)`` of every run ``i`` at its epoch ``e``.
        out: the HDF5 file to write; its inputs are these checkpoints.
        dataset: the config block of ``spec["dataset"]``.
        device: ``auto``, ``cpu`` or ``cuda``.
    """
    dev = resolve_device(device)
    epochs = list(spec["epochs"])
    model, _ = load_model(checkpoints[pair_input_name(0, epochs[0])], dev)
    states = [_state(checkpoints[pair_input_name(i, e)], dev) for i, e in enumerate(epochs)]
    compute = set(spec["compute"])
    data = load_data(dataset, dev, key=f"datasets.{spec['dataset']}")
    evaluation = {}
    if compute & {"interpolation", "soups"}:
        recompute = spec["bn_mode"] == "recompute"
        evaluation = {
            "bn_mode": spec["bn_mode"],
            "bn_batches": fixed_bn_batches(data, spec) if recompute else [],
            "batch_size": spec["batch_size"],
        }
    with store.create(
        out,
        kind="pair",
        spec=spec,
        inputs=dict(checkpoints),
        attrs={"id": spec["id"], "subset_seed": data.subset_seed},
    ) as w:
        if "statistics" in compute:
            _write_statistics(w, model, states[:2])
        if "interpolation" in compute:
            _write_interpolation(w, model, states[:2], spec, data, evaluation)
        if "ssr" in compute:
            _write_ssr(w, model, spec, checkpoints, dev)
        if "soups" in compute:
            _write_soups(w, model, states, data, evaluation)
        if "bn_weights" in compute:
            _write_bn_weights(w, model, spec, checkpoints, dev)


def _write_statistics(w: store.Writer, model: nn.Module, states: Sequence[Mapping]) -> None:
    groups = pair_groups(model)
    params = [trainable(model, s) for s in states]
    for label, p in zip("ab", params, strict=True):
        for group, stats in group_statistics(p, groups).items():
            for name, value in stats.items():
                w.put(f"statistics/{label}/{group}/{name}", value)
    for group, value in sign_consistency(params[0], params[1], groups).items():
        w.put(f"sign_consistency/{group}", value)


def _write_interpolation(w, model, states, spec, data, evaluation) -> None:
    lambdas = np.linspace(spec["lambda"]["min"], spec["lambda"]["max"], spec["lambda"]["num"])
    splits = {s: getattr(data, s) for s in spec["splits"]}
    curve = interpolation_curve(model, states[0], states[1], lambdas, splits, **evaluation)
    w.scale("lambda", lambdas)
    for split, metrics in curve.items():
        for metric, values in metrics.items():
            w.put(f"interpolation/{split}/{metric}", values, dims=("lambda",))
        w.put(
            f"interpolation/{split}/gap", gap_curve(lambdas, metrics["accuracy"]), dims=("lambda",)
        )
        w.put(
            f"interpolation/{split}/midpoint_gap", interpolation_gap(lambdas, metrics["accuracy"])
        )
    # A and B with their own BN running statistics: the accuracies their training recorded
    own = {**evaluation, "bn_mode": "interpolate"}
    for label, state in zip("ab", states, strict=True):
        for split, metrics in evaluate_state(model, state, splits, **own).items():
            w.put(f"interpolation/{split}/own_accuracy_{label}", metrics["accuracy"])


def _write_ssr(w, model, spec, checkpoints, dev) -> None:
    init = trainable(model, _state(checkpoints["init"], dev))
    by_run = [
        {
            e: trainable(model, _state(checkpoints[pair_input_name(i, e)], dev))
            for e in spec["ssr_epochs"]
        }
        for i in range(2)
    ]
    ssr = ssr_over_epochs(init, *by_run)
    w.scale("epoch", ssr["epoch"])
    for variant in SSR_VARIANTS:
        w.put(f"ssr/{variant}", ssr[variant], dims=("epoch",))


def _write_bn_weights(w, model, spec, checkpoints, dev) -> None:
    stages = {"initial": [0] * len(spec["runs"]), "final": spec["epochs"]}
    values = {
        stage: np.stack(
            [
                bn_weights(model, _state(checkpoints[pair_input_name(i, e)], dev))
                for i, e in enumerate(epochs)
            ]
        )
        for stage, epochs in stages.items()
    }
    w.scale("run", np.array(spec["runs"]))
    w.scale("bn_element", np.arange(values["initial"].shape[1]))
    for stage, array in values.items():
        w.put(f"bn_weights/{stage}", array, dims=("run", "bn_element"))


def _write_soups(w, model, states, data, evaluation) -> None:
    soups = model_soups(model, states, data.test, **evaluation)
    w.file.attrs["heldout"] = "test"
    for key, values in soups.items():
        w.put(f"soups/{key}", values)
