# Config validation (before any job starts), output paths, wildcard constraints, input functions.

import os
import shutil
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from landscape.figures import (
    check_figures,
    figure_instances,
    figure_members,
    figure_panels,
)

from landscape.config import (
    ConfigError,
    block_epochs,
    block_runs,
    canonical,
    check_cost,
    check_sweeps,
    check_duplicate_keys,
    check_federated,
    check_files,
    check_finite,
    check_pairs,
    check_references,
    check_theory,
    checkpoint_epochs,
    direction_references,
    direction_spec,
    drop_unset_options,
    evaluation_spec,
    hdf5_environment,
    hessian_spec,
    init_source,
    normalize_numbers,
    resolve_stand_ins,
    soa_spec,
    run_spec,
    run_wildcards,
    selected_epochs,
    schema_error,
    selected_runs,
    sweep_references,
    sweep_spec,
)

# Every check of the config happens here, before the DAG is built: Snakemake drops an input
# function's error when the file it would make already exists, so none may raise for the config.
check_duplicate_keys(
    workflow.overwrite_configfiles
    if workflow.config_settings.replace_workflow_config
    else workflow.configfiles
)
check_finite(config)
SCHEMA = yaml.safe_load(
    Path(workflow.basedir, "schemas/config.schema.yaml").read_text()
)
try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError:
    # Snakemake's message dumps the schema; name the offending key in one line instead.
    raise ConfigError(
        schema_error(config, SCHEMA) or "config does not match its schema"
    ) from None
normalize_numbers(config, SCHEMA)
drop_unset_options(config)  # off values written out: the same specs as absent ones
STAND_INS = resolve_stand_ins(config)  # before any spec is derived from the datasets
if workflow.is_main_process:  # once, not again in every job
    for warning in STAND_INS:
        print(warning, file=sys.stderr)
check_references(config)
check_figures(config)
check_sweeps(config, SCHEMA)
check_pairs(config)
check_theory(config)
check_federated(config)
check_files(config)
check_cost(config, workflow.resource_settings.overwrite_scatter.get("surface"))
# Jobs inherit the environment (also on a cluster, where each job parses this file again);
# a rule param would make Snakemake rerun every job when the setting changes.
os.environ.update(hdf5_environment(config))

CHECKPOINT = "results/{dataset}/{model}/{run}/checkpoints/epoch{epoch}.pt"
HISTORY = "results/{dataset}/{model}/{run}/history.h5"
DIRECTION = "results/{dataset}/{model}/{run}/directions/epoch{epoch}/{direction}.h5"
CURVE = "results/{dataset}/{model}/{run}/curves/epoch{epoch}/{curve}.h5"
CURVE_FIGURE = "results/figures/curves/{dataset}/{model}/{run}/epoch{epoch}/{curve}.png"
SURFACE = "results/{dataset}/{model}/{run}/surfaces/epoch{epoch}/{surface}.h5"
SURFACE_SHARD = "results/{dataset}/{model}/{run}/surfaces/epoch{epoch}/{surface}.shards/{scatteritem}.h5"
# Local runs: jobs that use a GPU hold one unit of the `gpu` resource (profiles/default limits it).
GPU = int(
    config["device"] == "cuda"
    or (config["device"] == "auto" and shutil.which("nvidia-smi") is not None)
)
SPECTRUM = "results/{dataset}/{model}/{run}/hessian/epoch{epoch}/spectrum.h5"
DENSITY = "results/{dataset}/{model}/{run}/hessian/epoch{epoch}/density.h5"
TRACE = "results/{dataset}/{model}/{run}/hessian/epoch{epoch}/trace.h5"
LOSS_CHANGE = "results/{dataset}/{model}/{run}/hessian/epoch{epoch}/loss_change.h5"
SOA = "results/{dataset}/{model}/{run}/soa/epoch{epoch}/{soa}.h5"
SOA_FIGURE = "results/figures/soa/{dataset}/{model}/{run}/epoch{epoch}/{soa}.png"
ANGLES = "results/{dataset}/{model}/{run}/angles/epoch{epoch}.h5"
ANGLES_FIGURE = "results/figures/angles/{dataset}/{model}/{run}/epoch{epoch}.png"
LOSS_CHANGE_FIGURE = (
    "results/figures/hessian/{dataset}/{model}/{run}/epoch{epoch}/loss_change.png"
)
CURVE_TABLE_FIGURE = "results/figures/tables/curve_taxonomy.png"
COSINES = "results/{dataset}/{model}/{run}/hessian/epoch{epoch}/cosines.h5"
COSINES_FIGURE = (
    "results/figures/hessian/{dataset}/{model}/{run}/epoch{epoch}/cosines.png"
)
DENSITY_FIGURE = (
    "results/figures/hessian/{dataset}/{model}/{run}/epoch{epoch}/density.png"
)
SURFACE_FIGURE = (
    "results/figures/surfaces/{dataset}/{model}/{run}/epoch{epoch}/{surface}.png"
)
FIGURE = "results/figures/{figure_id}/{figure}/{dataset}/{model}/{run}/epoch{epoch}.png"
SWEEP = "results/{dataset}/{model}/{run}/sweeps/epoch{epoch}/{sweep}.h5"
SWEEP_FIGURE = "results/figures/sweeps/{dataset}/{model}/{run}/epoch{epoch}/{sweep}.png"


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    model="|".join(config["models"]),
    run="|".join(config["runs"]),
    direction="|".join(config["directions"]) or "(?!)",
    curve="|".join(config["curves"]) or "(?!)",
    surface="|".join(config["surfaces"]) or "(?!)",
    soa="|".join(config["soa"]) or "(?!)",
    figure="|".join(config["figures"]) or "(?!)",
    figure_id=r"V\d+|VT|A\d+",
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


def get_resume_checkpoint(wildcards):
    """The checkpoint training to {epoch} continues from (none for epoch 0).

    The nearest earlier kept checkpoint, except for an existing checkpoint still up to date with
    the one it was trained from: that one stays its input, so adding a checkpoint in between
    retrains nothing (training resumes exactly from any earlier checkpoint).
    """
    nearest = get_previous_checkpoint(wildcards)
    out = CHECKPOINT.format(**wildcards)
    if not nearest or not os.path.exists(out):
        return nearest
    from landscape.store import kept_previous  # h5py only where a checkpoint exists

    epoch = int(wildcards.epoch)
    earlier = {
        e: CHECKPOINT.format(**{**dict(wildcards.items()), "epoch": e})
        for e in checkpoint_epochs(config["runs"][wildcards.run]["train"])
        if e < epoch
    }
    kept = kept_previous(out, run_spec(config, wildcards.run), epoch, earlier)
    return {"previous": kept} if kept else nearest


def get_init_checkpoint(wildcards):
    """The checkpoint epoch 0 of a fine-tuning run starts from (``train.init``), else nothing."""
    source = init_source(config, wildcards.run)
    if source is None or int(wildcards.epoch) != 0:
        return {}
    run, epoch = source
    return {"init": CHECKPOINT.format(**run_wildcards(config, run), epoch=epoch)}


def get_final_checkpoint(wildcards):
    """The last checkpoint of a run."""
    final = config["runs"][wildcards.run]["train"]["epochs"]
    return CHECKPOINT.format(**{**dict(wildcards.items()), "epoch": final})


def get_direction_references(wildcards):
    """Other checkpoints a direction is derived from, by role (theta_0, target, phi_init)."""
    refs = direction_references(
        config, wildcards.direction, wildcards.run, int(wildcards.epoch)
    )
    return {
        role: CHECKPOINT.format(**run_wildcards(config, run), epoch=epoch)
        for role, (run, epoch) in refs.items()
    }


def get_direction_closest(wildcards):
    """The direction file that a noise direction's ``closest_to`` names, at the same checkpoint."""
    closest = config["directions"][wildcards.direction].get("closest_to")
    if closest is None:
        return {}
    return {
        "closest_to": DIRECTION.format(
            **{**dict(wildcards.items()), "direction": closest["direction"]}
        )
    }


def get_direction_spectrum(wildcards):
    """The checkpoint's spectrum file for an eigenvector direction, else nothing."""
    if config["directions"][wildcards.direction]["kind"] != "eigenvector":
        return {}
    return {"spectrum": SPECTRUM.format(**wildcards)}


def directions_of_kinds(*kinds, exclude=False):
    """Regex of the direction keys whose kind is (or, with ``exclude``, is not) one of ``kinds``."""
    names = [
        name
        for name, spec in config["directions"].items()
        if (spec["kind"] in kinds) != exclude
    ]
    return "|".join(names) or "(?!)"


def get_direction_dataset(wildcards):
    """The dataset block a direction reads (gradient and mined kinds), else None."""
    if config["directions"][wildcards.direction]["kind"] not in ("gradient", "mined"):
        return None
    return config["datasets"][wildcards.dataset]


def direction_of(family):
    """Input function: the direction file a curve or soa block names, at its checkpoint."""
    key = family[:-1] if family.endswith("s") else family

    def get(wildcards):
        direction = config[family][wildcards[key]]["direction"]
        return DIRECTION.format(**{**dict(wildcards.items()), "direction": direction})

    return get


def get_surface_directions(wildcards):
    """The x and y direction files of a surface, at the surface's checkpoint."""
    names = config["surfaces"][wildcards.surface]["directions"]
    keys = {k: v for k, v in wildcards.items() if k != "scatteritem"}
    return [DIRECTION.format(**{**keys, "direction": name}) for name in names]


def history_targets():
    """The history file of every run."""
    return [HISTORY.format(**run_wildcards(config, run)) for run in config["runs"]]


def instances(family, pattern):
    """``pattern`` filled for every curve or surface at every selected run and epoch."""
    key = family[:-1] if family.endswith("s") else family
    return [
        pattern.format(**run_wildcards(config, run), epoch=epoch, **{key: name})
        for name in config[family]
        for run in selected_runs(config, family, name)
        for epoch in selected_epochs(config, family, name, run)
    ]


def curve_figure_targets():
    """The figure of every curve instance whose block draws one (``plot``)."""
    return [
        CURVE_FIGURE.format(**run_wildcards(config, run), epoch=epoch, curve=name)
        for name, block in config["curves"].items()
        if block["plot"]
        for run in selected_runs(config, "curves", name)
        for epoch in selected_epochs(config, "curves", name, run)
    ]


def hessian_targets():
    """Spectrum, density, trace, loss change and figures at each run and epoch ``hessian`` selects."""
    patterns = (
        SPECTRUM,
        DENSITY,
        TRACE,
        LOSS_CHANGE,
        DENSITY_FIGURE,
        LOSS_CHANGE_FIGURE,
    )
    return [path for p in patterns for path in selection_targets("hessian", p)]


def selection_targets(block, pattern):
    """``pattern`` at every run and epoch that the ``runs``/``epochs`` of ``block`` select."""
    return [
        pattern.format(**run_wildcards(config, run), epoch=epoch)
        for run in block_runs(config, config[block])
        for epoch in block_epochs(config, config[block], run)
    ]


def get_cosine_directions(wildcards):
    """The direction files that the ``cosines`` block names, at the checkpoint, in order."""
    return [
        DIRECTION.format(**dict(wildcards.items()), direction=name)
        for name in config["cosines"]["directions"]
    ]


def get_figure_members(wildcards):
    """The curve and surface files a figure draws at one run and epoch, in panel order."""
    block = config["figures"][wildcards.figure]
    if block["id"] != wildcards.figure_id:
        raise ValueError(
            f"figures.{wildcards.figure} has id {block['id']}, not {wildcards.figure_id}"
        )
    panels = figure_panels(
        config, wildcards.figure, wildcards.run, int(wildcards.epoch)
    )
    patterns = {"curves": (CURVE, "curve"), "surfaces": (SURFACE, "surface")}
    return [
        patterns[family][0].format(
            **run_wildcards(config, run), epoch=epoch, **{patterns[family][1]: name}
        )
        for family, name, run, epoch in figure_members(panels)
    ]


def figure_targets():
    """Every figure of the ``figures`` block at every run and epoch it selects."""
    return [
        FIGURE.format(
            figure_id=block["id"],
            figure=name,
            **run_wildcards(config, run),
            epoch=epoch,
        )
        for name, block in config["figures"].items()
        for run, epoch in figure_instances(config, name)
    ]


def get_sweep_references(wildcards):
    """Other checkpoints a sweep reads, by role: the run's epoch 0 for the special theta_0."""
    refs = sweep_references(config, wildcards.sweep, wildcards.run)
    return {
        role: CHECKPOINT.format(**run_wildcards(config, run), epoch=epoch)
        for role, (run, epoch) in refs.items()
    }


# A7/A8 model pairs and soups (rules/pairs.smk; the `pairs` blocks are checked there).
from landscape.config import pair_checkpoints, pair_spec

PAIR = "results/pairs/{pair}.h5"
PAIR_FIGURE = "results/figures/pairs/{pair}.png"


def get_pair_checkpoints(wildcards):
    """Every checkpoint a pair block reads, by input name (landscape.config.pair_checkpoints)."""
    return {
        name: CHECKPOINT.format(**run_wildcards(config, run), epoch=epoch)
        for name, (run, epoch) in pair_checkpoints(config, wildcards.pair).items()
    }


def pair_targets():
    """The file and figure of every pair block."""
    return [
        pattern.format(pair=name)
        for name in config["pairs"]
        for pattern in (PAIR, PAIR_FIGURE)
    ]


# A9 theory demos (rules/theory.smk; the `theory` block's selection is checked there).
THEORY = "results/{dataset}/{model}/{run}/theory/epoch{epoch}.h5"
THEORY_FIGURE = "results/figures/theory/{dataset}/{model}/{run}/epoch{epoch}.png"


def theory_spec():
    """What a theory artifact depends on: the ``theory`` block without its selection."""
    return {k: v for k, v in config["theory"].items() if k not in ("runs", "epochs")}


def theory_targets():
    """The file and figure of the theory demos at every run and epoch ``theory`` selects."""
    return [
        path
        for pattern in (THEORY, THEORY_FIGURE)
        for path in selection_targets("theory", pattern)
    ]


# A10 federated learning (rules/federated.smk; the `federated` block is checked above).
from landscape.config import alpha_label, federated_alpha, federated_spec

FEDERATED = "results/federated/{dataset}/alpha{alpha}/{algorithm}/seed{seed}.h5"
FEDERATED_TABLE = "results/tables/federated.csv"
FEDERATED_TABLE_FIGURE = "results/figures/federated/table.png"
FEDERATED_ACCURACY_FIGURE = "results/figures/federated/accuracy_{dataset}.png"


def federated_runs(dataset=None):
    """The file of every federated run (of one dataset, or of all)."""
    block = config["federated"]
    return [
        FEDERATED.format(
            dataset=name, alpha=alpha_label(alpha), algorithm=algorithm, seed=seed
        )
        for name in block["datasets"]
        if dataset is None or name == dataset
        for alpha in block["alphas"]
        for algorithm in block["algorithms"]
        for seed in block["seeds"]
    ]


def get_federated_runs(wildcards):
    """The federated runs of the figure's dataset."""
    return federated_runs(wildcards.dataset)


def federated_targets():
    """The runs, the table and the figures of the `federated` block (none without datasets)."""
    datasets = config["federated"]["datasets"]
    if not datasets:
        return []
    figures = [FEDERATED_ACCURACY_FIGURE.format(dataset=name) for name in datasets]
    return [
        *federated_runs(),
        FEDERATED_TABLE,
        FEDERATED_TABLE_FIGURE,
        *figures,
    ]


# Plot set, interactive page and ParaView export of every surface (rules/exports.smk).
SURFACE_VIEW = (
    "results/figures/surfaces/{dataset}/{model}/{run}/epoch{epoch}/{surface}/{view}.png"
)
SURFACE_HTML = (
    "results/figures/surfaces/{dataset}/{model}/{run}/epoch{epoch}/{surface}.html"
)
SURFACE_VTP = "results/{dataset}/{model}/{run}/surfaces/epoch{epoch}/{surface}.vtp"


def surface_view(view):
    """The figure of one view of a surface's plot set (landscape.surface_plots.VIEWS)."""
    return SURFACE_VIEW.replace("{view}", view)


def surface_export_targets():
    """The .vtp of every surface instance (its job also draws the plot set) and the interactive
    page of the surfaces `surface_plots.interactive` names."""
    block = config["surface_plots"]
    if not block["enabled"]:
        return []
    pages = instances("surfaces", SURFACE_HTML)
    if block["interactive"] != "all":
        pages = [p for p in pages if Path(p).stem in block["interactive"]]
    return instances("surfaces", SURFACE_VTP) + pages


# Trajectories, eigenvalue maps, group curvature, weight statistics (rules/analysis.smk).
from landscape.analysis_config import (
    check_analysis,
    eigenmap_spec,
    group_curvature_spec,
    pca_surfaces,
    selection,
    trajectory_epochs,
    weight_stats_spec,
)

check_analysis(config)

TRAJECTORY = "results/{dataset}/{model}/{run}/trajectories/epoch{epoch}/{surface}.h5"
TRAJECTORY_FIGURE = (
    "results/figures/trajectories/{dataset}/{model}/{run}/epoch{epoch}/{surface}.png"
)
EIGENMAP = "results/{dataset}/{model}/{run}/eigenmaps/epoch{epoch}/{eigenmap}.h5"
EIGENMAP_SHARD = "results/{dataset}/{model}/{run}/eigenmaps/epoch{epoch}/{eigenmap}.shards/{scatteritem}.h5"
EIGENMAP_FIGURE = (
    "results/figures/eigenmaps/{dataset}/{model}/{run}/epoch{epoch}/{eigenmap}.png"
)
GROUP_CURVATURE = (
    "results/{dataset}/{model}/{run}/hessian/epoch{epoch}/group_curvature.h5"
)
GROUP_CURVATURE_TABLE = "results/tables/group_curvature.csv"
WEIGHT_STATS = "results/{dataset}/{model}/{run}/weight_stats.h5"
WEIGHT_STATS_FIGURE = "results/figures/weight_stats/{dataset}/{model}/{run}.png"


def get_trajectory_inputs(wildcards):
    """Theta's checkpoint, the surface's two PCA directions and every projected checkpoint."""
    epochs = trajectory_epochs(
        config, wildcards.surface, wildcards.run, int(wildcards.epoch)
    )
    keys = dict(wildcards.items())
    return {
        "checkpoint": CHECKPOINT.format(**keys),
        "directions": get_surface_directions(wildcards),
        "trajectory": [CHECKPOINT.format(**{**keys, "epoch": e}) for e in epochs],
    }


def get_eigenmap_directions(wildcards):
    """The x and y direction files of an eigenvalue map, at its checkpoint."""
    keys = {k: v for k, v in wildcards.items() if k not in ("eigenmap", "scatteritem")}
    return [
        DIRECTION.format(**keys, direction=name)
        for name in config["eigenmaps"][wildcards.eigenmap]["directions"]
    ]


def get_run_checkpoints(wildcards):
    """Every checkpoint of a run, in epoch order."""
    train = config["runs"][wildcards.run]["train"]
    return [
        CHECKPOINT.format(**dict(wildcards.items()), epoch=e)
        for e in checkpoint_epochs(train)
    ]


def analysis_targets():
    """Trajectories, eigenvalue maps, group curvature and weight statistics the config selects."""
    targets = [
        pattern.format(**run_wildcards(config, run), epoch=epoch, surface=name)
        for name in pca_surfaces(config)
        for run, epoch in selection(config, config["surfaces"][name])
        for pattern in (TRAJECTORY, TRAJECTORY_FIGURE)
    ]
    targets += [
        pattern.format(**run_wildcards(config, run), epoch=epoch, eigenmap=name)
        for name, block in config["eigenmaps"].items()
        for run, epoch in selection(config, block)
        for pattern in (EIGENMAP, EIGENMAP_FIGURE)
    ]
    if config["group_curvature"]["runs"]:
        targets.append(GROUP_CURVATURE_TABLE)
    targets += [
        pattern.format(**run_wildcards(config, run))
        for run in config["weight_stats"]["runs"]
        for pattern in (WEIGHT_STATS, WEIGHT_STATS_FIGURE)
    ]
    return targets


# Mode-connecting curves (rules/mode_connect.smk).
from landscape.config import (
    check_mode_connect,
    mode_connect_checkpoints,
    mode_connect_spec,
)

check_mode_connect(config)
MODE_CONNECT = "results/mode_connect/{name}.h5"
MODE_CONNECT_FIGURE = "results/figures/mode_connect/{name}.png"


def get_mode_connect_checkpoints(wildcards):
    """The two endpoint checkpoints of a mode_connect block, as inputs a and b."""
    return {
        key: CHECKPOINT.format(**run_wildcards(config, run), epoch=epoch)
        for key, (run, epoch) in mode_connect_checkpoints(
            config, wildcards.name
        ).items()
    }


def mode_connect_targets():
    """The file and figure of every mode_connect block."""
    return [
        pattern.format(name=name)
        for name in config["mode_connect"]
        for pattern in (MODE_CONNECT, MODE_CONNECT_FIGURE)
    ]
