CURVE = RUN_DIR + "/curves/epoch{epoch}/{curve}.h5"


def get_curve_direction(wildcards):
    """The direction file a curve runs along, at the curve's checkpoint."""
    direction = config["curves"][wildcards.curve]["direction"]
    return DIRECTION.format(**{**wildcards, "direction": direction})


rule compute_curve:
    input:
        checkpoint=rules.train_model.output.checkpoint,
        direction=get_curve_direction,
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
        mem_mb=4000,
        runtime=60,
    params:
        spec=lambda w: canonical(curve_spec(config, w.curve)),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_curve.py"


def curve_instances(pattern):
    """``pattern`` filled for every curve of the config at every selected run and epoch."""
    return [
        pattern.format(**run_wildcards(config, run), epoch=epoch, curve=curve)
        for curve in config["curves"]
        for run in curve_runs(config, curve)
        for epoch in curve_epochs(config, curve, run)
    ]
