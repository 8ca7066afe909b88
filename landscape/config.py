"""Config helpers used while the workflow is parsed: cross-references, spec slices, targets.

The JSON schema (``schemas/config.schema.yaml``) checks types, ranges and enums of every key;
this module checks what a schema cannot: that names refer to existing blocks and that epochs
exist. It imports neither torch nor h5py, so building the DAG stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
    for name, curve in config.get("curves", {}).items():
        if curve["direction"] not in config.get("directions", {}):
            raise ConfigError(
                f"curves.{name}.direction: '{curve['direction']}' is not a key of directions"
            )
        grid = curve["lambda"]
        if grid["min"] > grid["max"]:
            raise ConfigError(
                f"curves.{name}.lambda: min ({grid['min']}) is larger than max ({grid['max']})"
            )
        for run in curve_runs(config, name):
            if run not in config["runs"]:
                raise ConfigError(f"curves.{name}.runs: '{run}' is not a key of runs")
            epochs = curve["epochs"]
            if epochs != "final":
                missing = sorted(set(epochs) - set(checkpoint_epochs(config["runs"][run]["train"])))
                if missing:
                    raise ConfigError(
                        f"curves.{name}.epochs: run '{run}' has no checkpoint at epochs {missing} "
                        f"(add them to runs.{run}.train.checkpoints)"
                    )


def curve_runs(config: Mapping[str, Any], curve: str) -> list[str]:
    """The runs a curve is evaluated on."""
    runs = config["curves"][curve]["runs"]
    return list(config["runs"]) if runs == "all" else list(runs)


def curve_epochs(config: Mapping[str, Any], curve: str, run: str) -> list[int]:
    """The checkpoint epochs of ``run`` a curve is evaluated at."""
    epochs = config["curves"][curve]["epochs"]
    return [final_epoch(config, run)] if epochs == "final" else sorted(epochs)


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


def curve_spec(config: Mapping[str, Any], curve: str) -> dict[str, Any]:
    """What a curve's values depend on: its block without the run and epoch selection."""
    return {k: v for k, v in config["curves"][curve].items() if k not in ("runs", "epochs")}
