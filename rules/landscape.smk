rule compute_curve:
    input:
        checkpoint=rules.train_model.output.checkpoint,
        direction=direction_of("curves"),
    output:
        curve=CURVE,
    log:
        "logs/compute_curve/{dataset}/{model}/{run}/epoch{epoch}/{curve}.log",
    benchmark:
        "logs/benchmark/compute_curve/{dataset}/{model}/{run}/epoch{epoch}/{curve}.tsv"
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=60,
    params:
        spec=lambda w: canonical(evaluation_spec(config, "curves", w.curve)),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_curve.py"


rule compute_surface_shard:
    input:
        checkpoint=rules.train_model.output.checkpoint,
        directions=get_surface_directions,
    output:
        shard=temp(SURFACE_SHARD),
    log:
        "logs/compute_surface_shard/{dataset}/{model}/{run}/epoch{epoch}/{surface}/{scatteritem}.log",
    benchmark:
        "logs/benchmark/compute_surface_shard/{dataset}/{model}/{run}/epoch{epoch}/{surface}/{scatteritem}.tsv"
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=120,
    params:
        spec=lambda w: canonical(evaluation_spec(config, "surfaces", w.surface)),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_surface_shard.py"


rule merge_surface:
    input:
        shards=gather.surface(SURFACE_SHARD, allow_missing=True),
    output:
        surface=SURFACE,
    log:
        "logs/merge_surface/{dataset}/{model}/{run}/epoch{epoch}/{surface}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=2000,
    params:
        spec=lambda w: canonical(evaluation_spec(config, "surfaces", w.surface)),
    script:
        "../scripts/merge_surface.py"
