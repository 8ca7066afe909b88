rule make_direction:
    input:
        unpack(get_direction_references),
        unpack(get_direction_spectrum),
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
        spec=lambda w: canonical(direction_spec(config, w.direction)),
        dataset=lambda w: canonical(get_direction_dataset(w)),
        device=config["device"],
    script:
        "../scripts/make_direction.py"
