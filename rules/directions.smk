rule make_direction:
    input:
        checkpoint=rules.train_model.output.checkpoint,
    output:
        direction=DIRECTION,
    log:
        "logs/make_direction/{dataset}/{model}/{run}/epoch{epoch}/{direction}.log",
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        spec=lambda w: canonical(config["directions"][w.direction]),
        device=config["device"],
    script:
        "../scripts/make_direction.py"
