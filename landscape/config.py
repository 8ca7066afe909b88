"""Config helpers used while the workflow is parsed: cross-references, spec slices, targets.

The JSON schema (``schemas/config.schema.yaml``) checks types, ranges and enums of every key;
this module checks what a schema cannot: that names refer to existing blocks and that epochs
exist. It imports neither torch nor h5py, so building the DAG stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


class ConfigError(ValueError):
    """A config value that the schema accepts but that refers to something missing."""


def canonical(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): equal specs give equal strings.

    >>> canonical({"b": 1, "a": [1.0, "x"]})
    '{"a":[1.0,"x"],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def checkpoint_epochs(train: Mapping[str, Any]) -> list[int]:
    """Sorted checkpoint epochs of a run's ``train`` block: the listed ones, 0 and the last.

    >>> checkpoint_epochs({"epochs": 30, "checkpoints": [10]})
    [0, 10, 30]
    """
    return sorted(set(train.get("checkpoints", [])) | {0, train["epochs"]})


def final_epoch(config: Mapping[str, Any], run: str) -> int:
    """The last epoch of a run."""
    return config["runs"][run]["train"]["epochs"]


def check_references(config: Mapping[str, Any]) -> None:
    """Checks every name that points at another block, and every epoch.

    Raises:
        ConfigError: naming the offending key, e.g. ``runs.mlp.dataset``.
    """
    for name, run in config["runs"].items():
        for section in ("dataset", "model"):
            if run[section] not in config[f"{section}s"]:
                raise ConfigError(
                    f"runs.{name}.{section}: '{run[section]}' is not a key of {section}s "
                    f"(known: {sorted(config[f'{section}s'])})"
                )
        train = run["train"]
        late = sorted(e for e in train["checkpoints"] if e > train["epochs"])
        if late:
            raise ConfigError(
                f"runs.{name}.train.checkpoints: epochs {late} exceed "
                f"runs.{name}.train.epochs = {train['epochs']}"
            )
    for name, direction in config.get("directions", {}).items():
        if direction.get("kind") == "checkpoint":
            _check_target(config, f"directions.{name}.target", direction.get("target", {}))
    for family, keys in (("curves", ("direction",)), ("surfaces", ("directions",))):
        for name, block in config.get(family, {}).items():
            _check_block(config, family, name, block, keys)


def _check_target(config: Mapping[str, Any], key: str, target: Mapping[str, Any]) -> None:
    run, epoch = target.get("run"), target.get("epoch", "final")
    if run is not None and run not in config["runs"]:
        raise ConfigError(f"{key}.run: '{run}' is not a key of runs")
    if epoch != "final" and run is not None:
        have = checkpoint_epochs(config["runs"][run]["train"])
        if epoch not in have:
            raise ConfigError(f"{key}.epoch: run '{run}' has no checkpoint at epoch {epoch}")


def _check_block(config, family: str, name: str, block: Mapping, keys: Sequence[str]) -> None:
    key = f"{family}.{name}"
    for k in keys:
        refs = block[k] if isinstance(block[k], list) else [block[k]]
        for ref in refs:
            if ref not in config.get("directions", {}):
                raise ConfigError(f"{key}.{k}: '{ref}' is not a key of directions")
    for axis in ("lambda", "x", "y"):
        grid = block.get(axis)
        if grid and grid["min"] > grid["max"]:
            raise ConfigError(
                f"{key}.{axis}: min ({grid['min']}) is larger than max ({grid['max']})"
            )
    for run in selected_runs(config, family, name):
        if run not in config["runs"]:
            raise ConfigError(f"{key}.runs: '{run}' is not a key of runs")
        if block["epochs"] != "final":
            have = checkpoint_epochs(config["runs"][run]["train"])
            missing = sorted(set(block["epochs"]) - set(have))
            if missing:
                raise ConfigError(
                    f"{key}.epochs: run '{run}' has no checkpoint at epochs {missing} "
                    f"(add them to runs.{run}.train.checkpoints)"
                )


def selected_runs(config: Mapping[str, Any], family: str, name: str) -> list[str]:
    """The runs a curve or surface is evaluated on."""
    runs = config[family][name]["runs"]
    return list(config["runs"]) if runs == "all" else list(runs)


def selected_epochs(config: Mapping[str, Any], family: str, name: str, run: str) -> list[int]:
    """The checkpoint epochs of ``run`` a curve or surface is evaluated at."""
    epochs = config[family][name]["epochs"]
    return [final_epoch(config, run)] if epochs == "final" else sorted(epochs)


def direction_references(
    config: Mapping[str, Any], direction: str, run: str
) -> dict[str, tuple[str, int]]:
    """Other checkpoints a direction of ``run`` is derived from: ``{role: (run, epoch)}``.

    >>> cfg = {"runs": {"a": {"train": {"epochs": 5}}}, "directions": {
    ...     "init": {"kind": "special", "of": "theta_0"},
    ...     "to_end": {"kind": "checkpoint", "target": {"run": None, "epoch": "final"}}}}
    >>> direction_references(cfg, "init", "a"), direction_references(cfg, "to_end", "a")
    ({'theta_0': ('a', 0)}, {'target': ('a', 5)})
    """
    spec = config["directions"][direction]
    if spec.get("kind") == "special" and spec.get("of") == "theta_0":
        return {"theta_0": (run, 0)}
    if spec.get("kind") == "checkpoint":
        target = spec.get("target", {})
        other = target.get("run") or run
        epoch = target.get("epoch", "final")
        return {"target": (other, final_epoch(config, other) if epoch == "final" else epoch)}
    return {}


def run_wildcards(config: Mapping[str, Any], run: str) -> dict[str, str]:
    """``{"dataset", "model", "run"}`` that place a run under ``results/``."""
    spec = config["runs"][run]
    return {"dataset": spec["dataset"], "model": spec["model"], "run": run}


def run_spec(config: Mapping[str, Any], run: str) -> dict[str, Any]:
    """Everything a run's checkpoints depend on: dataset, model and training blocks."""
    spec = config["runs"][run]
    train = {k: v for k, v in spec["train"].items() if k != "checkpoints"}
    return {
        "run": run,
        "dataset_name": spec["dataset"],
        "dataset": config["datasets"][spec["dataset"]],
        "model_name": spec["model"],
        "model": config["models"][spec["model"]],
        "train": train,
    }


def evaluation_spec(config: Mapping[str, Any], family: str, name: str) -> dict[str, Any]:
    """What a curve's or surface's values depend on: its block without run and epoch selection."""
    return {k: v for k, v in config[family][name].items() if k not in ("runs", "epochs")}
