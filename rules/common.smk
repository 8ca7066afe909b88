# Config validation (before any job starts), output paths, wildcard constraints, input functions.

from snakemake.utils import validate

from landscape.config import (
    canonical,
    check_references,
    checkpoint_epochs,
    curve_epochs,
    curve_runs,
    curve_spec,
    run_spec,
    run_wildcards,
)

validate(config, "../schemas/config.schema.yaml")
check_references(config)

CHECKPOINT = "results/{dataset}/{model}/{run}/checkpoints/epoch{epoch}.pt"
HISTORY = "results/{dataset}/{model}/{run}/history.h5"
DIRECTION = "results/{dataset}/{model}/{run}/directions/epoch{epoch}/{direction}.h5"
CURVE = "results/{dataset}/{model}/{run}/curves/epoch{epoch}/{curve}.h5"
CURVE_FIGURE = "results/figures/curves/{dataset}/{model}/{run}/epoch{epoch}/{curve}.png"


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    model="|".join(config["models"]),
    run="|".join(config["runs"]),
    direction="|".join(config["directions"]) or "(?!)",
    curve="|".join(config["curves"]) or "(?!)",
    epoch=r"\d+",


def get_previous_checkpoint(wildcards):
    """The checkpoint that training to {epoch} continues from (none for epoch 0)."""
    epochs = checkpoint_epochs(config["runs"][wildcards.run]["train"])
    epoch = int(wildcards.epoch)
    if epoch not in epochs:
        raise ValueError(
            f"runs.{wildcards.run}.train.checkpoints: no checkpoint at epoch {epoch} (have {epochs})"
        )
    earlier = [e for e in epochs if e < epoch]
    if not earlier:
        return {}
    return {
        "previous": CHECKPOINT.format(
            **{**dict(wildcards.items()), "epoch": max(earlier)}
        )
    }


def get_final_checkpoint(wildcards):
    """The last checkpoint of a run."""
    return CHECKPOINT.format(
        **wildcards, epoch=config["runs"][wildcards.run]["train"]["epochs"]
    )


def get_curve_direction(wildcards):
    """The direction file a curve runs along, at the curve's checkpoint."""
    direction = config["curves"][wildcards.curve]["direction"]
    return DIRECTION.format(**{**dict(wildcards.items()), "direction": direction})


def history_targets():
    """The history file of every run."""
    return [HISTORY.format(**run_wildcards(config, run)) for run in config["runs"]]


def curve_instances(pattern):
    """``pattern`` filled for every curve of the config at every selected run and epoch."""
    return [
        pattern.format(**run_wildcards(config, run), epoch=epoch, curve=curve)
        for curve in config["curves"]
        for run in curve_runs(config, curve)
        for epoch in curve_epochs(config, curve, run)
    ]
