# Config validation (before any job starts), wildcard constraints and input functions.

from snakemake.utils import validate

from landscape.config import (
    RUN_DIR,
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


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    model="|".join(config["models"]),
    run="|".join(config["runs"]),
    direction="|".join(config["directions"]) or "(?!)",
    curve="|".join(config["curves"]) or "(?!)",
    epoch=r"\d+",


def run_dir(run):
    """results/{dataset}/{model}/{run} of one run."""
    return RUN_DIR.format(**run_wildcards(config, run))
