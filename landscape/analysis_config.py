"""Config helpers of the analysis rules (``rules/analysis.smk``): trajectories (``pca``
directions), eigenvalue maps, per-group curvature, weight statistics and ``bn_states``.

Like :mod:`landscape.config`, it imports neither torch nor h5py: it runs while the workflow is
parsed. The checks raise :class:`landscape.config.ConfigError` naming the offending key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from landscape.config import (
    ConfigError,
    _check_block,
    _check_selection,
    block_epochs,
    block_runs,
    checkpoint_epochs,
    hessian_evaluation,
    resolve_bn_mode,
)

STATE_KINDS = ("noise", "checkpoint")


def pca_epochs(config: Mapping[str, Any], spec: Mapping[str, Any], run: str) -> list[int]:
    """The checkpoint epochs of ``run`` a ``pca`` direction decomposes (``checkpoints``: ``all``,
    the run's checkpoints, or a list).

    >>> cfg = {"runs": {"r": {"train": {"epochs": 4, "checkpoints": [2]}}}}
    >>> pca_epochs(cfg, {"kind": "pca"}, "r"), pca_epochs(cfg, {"checkpoints": [4, 0]}, "r")
    ([0, 2, 4], [0, 4])
    """
    chosen = spec.get("checkpoints", "all")
    if chosen == "all":
        return checkpoint_epochs(config["runs"][run]["train"])
    return sorted(set(chosen))


def pca_references(
    config: Mapping[str, Any], spec: Mapping[str, Any], run: str, epoch: int | None
) -> dict[str, tuple[str, int]]:
    """``{"trajectory_<E>": (run, E)}`` for every decomposed checkpoint but theta's own."""
    return {f"trajectory_{e}": (run, e) for e in pca_epochs(config, spec, run) if e != epoch}


def pca_surfaces(config: Mapping[str, Any]) -> list[str]:
    """The surfaces whose two directions are both ``pca`` directions (they get a trajectory)."""
    directions = config.get("directions", {})
    return [
        name
        for name, block in config.get("surfaces", {}).items()
        if all(directions.get(d, {}).get("kind") == "pca" for d in block["directions"])
    ]


def trajectory_epochs(config: Mapping[str, Any], surface: str, run: str, epoch: int) -> list[int]:
    """Every checkpoint a trajectory projects: those its directions decompose, and theta's."""
    epochs = {epoch}
    for name in config["surfaces"][surface]["directions"]:
        epochs.update(pca_epochs(config, config["directions"][name], run))
    return sorted(epochs)


def eigenmap_spec(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What an eigenvalue map depends on: the ``hessian`` block's evaluation set and its block
    without the selection."""
    block = config["eigenmaps"][name]
    return {
        **hessian_evaluation(config),
        **{k: v for k, v in block.items() if k not in ("runs", "epochs")},
    }


def group_curvature_spec(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a group-curvature file depends on: the evaluation set and the block's settings."""
    block = config["group_curvature"]
    return {
        **hessian_evaluation(config),
        **{k: v for k, v in block.items() if k not in ("runs", "epochs")},
    }


def weight_stats_spec(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``weight_stats`` block without its run selection."""
    return {k: v for k, v in config["weight_stats"].items() if k != "runs"}


def check_analysis(config: Mapping[str, Any]) -> None:
    """Checks the analysis blocks and the ``pca`` and ``bn_states`` directions.

    Raises:
        ConfigError: naming the key: a ``pca`` direction with checkpoints a run lacks or with
            fewer than three; ``bn_states`` on a kind other than noise and checkpoint, with
            ``closest_to``, in a sweep (whose jobs build directions without statistics), or
            read by a curve or surface whose BN mode is
            ``recompute`` (which re-estimates the statistics, overwriting the perturbation);
            an eigenvalue map naming a missing direction or selecting missing checkpoints; a
            ``group_curvature`` or ``weight_stats`` selection of missing runs or epochs.
    """
    directions = config.get("directions", {})
    for name, block in directions.items():
        if block.get("bn_states"):
            _check_bn_states(config, name, block)
    for name, block in config.get("sweeps", {}).items():
        if "bn_states" in block.get("base", {}) or "bn_states" in block.get("vary", {}):
            raise ConfigError(f"sweeps.{name}: bn_states is not supported in sweeps")
    for family in ("surfaces", "eigenmaps"):
        for name, block in config.get(family, {}).items():
            for d in block["directions"]:
                if directions.get(d, {}).get("kind") == "pca":
                    _check_pca(config, d, block_runs(config, block), f"{family}.{name}")
    for name, block in config.get("eigenmaps", {}).items():
        _check_block(config, "eigenmaps", name, block, ("directions",))
    _check_selection(config, "group_curvature", config.get("group_curvature", _NOTHING))
    for run in config.get("weight_stats", {}).get("runs", []):
        if run not in config["runs"]:
            raise ConfigError(f"weight_stats.runs: '{run}' is not a key of runs")
    for family in ("curves", "surfaces"):
        for name, block in config.get(family, {}).items():
            names = block["directions"] if "directions" in block else [block["direction"]]
            stated = [d for d in names if directions.get(d, {}).get("bn_states")]
            if stated and resolve_bn_mode(config, family, name) == "recompute":
                raise ConfigError(
                    f"{family}.{name}.bn_mode: direction '{stated[0]}' perturbs the BN running "
                    "statistics (bn_states), which recompute re-estimates at every point; set "
                    "bn_mode: keep"
                )


_NOTHING = {"runs": [], "epochs": "final"}


def _check_pca(config: Mapping[str, Any], name: str, runs: list[str], reader: str) -> None:
    key = f"directions.{name}.checkpoints"
    spec = config["directions"][name]
    for run in runs:
        if run not in config["runs"]:
            continue  # the reader's own check names it
        have = checkpoint_epochs(config["runs"][run]["train"])
        missing = sorted(set(pca_epochs(config, spec, run)) - set(have))
        if missing:
            raise ConfigError(
                f"{key}: run '{run}' (read by {reader}) has no checkpoints at epochs {missing} "
                f"(add them to runs.{run}.train.checkpoints)"
            )
        if len(set(pca_epochs(config, spec, run))) < 3:
            raise ConfigError(
                f"{key}: run '{run}' (read by {reader}) gives fewer than 3 checkpoints; two "
                f"principal components need at least 3 (add epochs to runs.{run}.train."
                "checkpoints)"
            )


def _check_bn_states(config: Mapping[str, Any], name: str, block: Mapping[str, Any]) -> None:
    key = f"directions.{name}.bn_states"
    kind = block.get("kind", "noise")
    if kind not in STATE_KINDS:
        raise ConfigError(f"{key}: applies to kinds {list(STATE_KINDS)}, not {kind!r}")
    if "closest_to" in block:
        raise ConfigError(f"{key}: not with closest_to (the chosen draw has no statistics)")


def selection(config: Mapping[str, Any], block: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(run, epoch)`` of every checkpoint a block with ``runs`` and ``epochs`` selects."""
    return [
        (run, epoch)
        for run in block_runs(config, block)
        for epoch in block_epochs(config, block, run)
    ]
