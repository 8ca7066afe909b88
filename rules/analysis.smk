# Analyses that the public loss-landscape tools offer beyond the papers (issue 15): training
# trajectories on the PCA plane of a run's checkpoints, Hessian eigenvalue maps over a plane,
# curvature per parameter group and weight statistics across checkpoints.
# Paths, input functions and targets: rules/common.smk.


rule compute_trajectory:
    input:
        unpack(get_trajectory_inputs),
    output:
        trajectory=TRAJECTORY,
    log:
        "logs/compute_trajectory/{dataset}/{model}/{run}/epoch{epoch}/{surface}.log",
    benchmark:
        "logs/benchmark/compute_trajectory/{dataset}/{model}/{run}/epoch{epoch}/{surface}.tsv"
    wildcard_constraints:
        surface="|".join(pca_surfaces(config)) or "(?!)",
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        epochs=lambda w: canonical(
            trajectory_epochs(config, w.surface, w.run, int(w.epoch))
        ),
        spec=lambda w: canonical(
            {
                "directions": config["surfaces"][w.surface]["directions"],
                "epochs": trajectory_epochs(config, w.surface, w.run, int(w.epoch)),
            }
        ),
    script:
        "../scripts/compute_trajectory.py"


rule plot_trajectory:
    input:
        trajectory=rules.compute_trajectory.output.trajectory,
        surface=rules.merge_surface.output.surface,
    output:
        figure=report(
            TRAJECTORY_FIGURE,
            caption="../report/trajectory.rst",
            category="Trajectories",
            subcategory="{run}",
            labels={"run": "{run}", "epoch": "{epoch}", "surface": "{surface}"},
        ),
    log:
        "logs/plot_trajectory/{dataset}/{model}/{run}/epoch{epoch}/{surface}.log",
    wildcard_constraints:
        surface="|".join(pca_surfaces(config)) or "(?!)",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_trajectory.py"


rule compute_eigenmap_shard:
    input:
        checkpoint=rules.train_model.output.checkpoint,
        directions=get_eigenmap_directions,
    output:
        shard=temp(EIGENMAP_SHARD),
    log:
        "logs/compute_eigenmap_shard/{dataset}/{model}/{run}/epoch{epoch}/{eigenmap}/{scatteritem}.log",
    benchmark:
        "logs/benchmark/compute_eigenmap_shard/{dataset}/{model}/{run}/epoch{epoch}/{eigenmap}/{scatteritem}.tsv"
    wildcard_constraints:
        eigenmap="|".join(config["eigenmaps"]) or "(?!)",
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=120,
    params:
        spec=lambda w: canonical(eigenmap_spec(config, w.eigenmap)),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_eigenmap_shard.py"


rule merge_eigenmap:
    input:
        shards=gather.surface(EIGENMAP_SHARD, allow_missing=True),
    output:
        eigenmap=EIGENMAP,
    log:
        "logs/merge_eigenmap/{dataset}/{model}/{run}/epoch{epoch}/{eigenmap}.log",
    wildcard_constraints:
        eigenmap="|".join(config["eigenmaps"]) or "(?!)",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=2000,
    params:
        spec=lambda w: canonical(eigenmap_spec(config, w.eigenmap)),
    script:
        "../scripts/merge_eigenmap.py"


rule plot_eigenmap:
    input:
        eigenmap=rules.merge_eigenmap.output.eigenmap,
    output:
        figure=report(
            EIGENMAP_FIGURE,
            caption="../report/eigenmap.rst",
            category="Eigenvalue maps",
            subcategory="{run}",
            labels={"run": "{run}", "epoch": "{epoch}", "eigenmap": "{eigenmap}"},
        ),
    log:
        "logs/plot_eigenmap/{dataset}/{model}/{run}/epoch{epoch}/{eigenmap}.log",
    wildcard_constraints:
        eigenmap="|".join(config["eigenmaps"]) or "(?!)",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_eigenmap.py"


rule compute_group_curvature:
    input:
        checkpoint=rules.train_model.output.checkpoint,
    output:
        curvature=GROUP_CURVATURE,
    log:
        "logs/compute_group_curvature/{dataset}/{model}/{run}/epoch{epoch}.log",
    benchmark:
        "logs/benchmark/compute_group_curvature/{dataset}/{model}/{run}/epoch{epoch}.tsv"
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=120,
    params:
        spec=canonical(group_curvature_spec(config)),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_group_curvature.py"


rule write_group_curvature_table:
    input:
        curvature=selection_targets("group_curvature", GROUP_CURVATURE),
    output:
        csv=report(
            GROUP_CURVATURE_TABLE,
            caption="../report/group_curvature.rst",
            category="Group curvature",
        ),
    log:
        "logs/write_group_curvature_table.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/write_group_curvature_table.py"


rule compute_weight_stats:
    input:
        checkpoints=get_run_checkpoints,
    output:
        stats=WEIGHT_STATS,
    log:
        "logs/compute_weight_stats/{dataset}/{model}/{run}.log",
    benchmark:
        "logs/benchmark/compute_weight_stats/{dataset}/{model}/{run}.tsv"
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=2000,
    params:
        epochs=lambda w: canonical(checkpoint_epochs(config["runs"][w.run]["train"])),
        spec=canonical(weight_stats_spec(config)),
    script:
        "../scripts/compute_weight_stats.py"


rule plot_weight_stats:
    input:
        stats=rules.compute_weight_stats.output.stats,
    output:
        figure=report(
            WEIGHT_STATS_FIGURE,
            caption="../report/weight_stats.rst",
            category="Weight statistics",
            subcategory="{run}",
            labels={"run": "{run}"},
        ),
    log:
        "logs/plot_weight_stats/{dataset}/{model}/{run}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_weight_stats.py"
