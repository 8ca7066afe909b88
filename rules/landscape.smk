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
