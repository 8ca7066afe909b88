rule train_model:
    input:
        unpack(get_resume_checkpoint),
        unpack(get_init_checkpoint),
    output:
        checkpoint=CHECKPOINT,
    log:
        "logs/train_model/{dataset}/{model}/{run}/epoch{epoch}.log",
    benchmark:
        "logs/benchmark/train_model/{dataset}/{model}/{run}/epoch{epoch}.tsv"
    conda:
        "../envs/landscape.yaml"
    # One thread per job: the small default models train fastest with jobs in parallel.
    # Profiles raise this with set-threads for paper-scale runs.
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=120,
    params:
        spec=lambda w: canonical(run_spec(config, w.run)),
        device=config["device"],
    script:
        "../scripts/train_model.py"


rule export_history:
    input:
        checkpoint=get_final_checkpoint,
    output:
        history=HISTORY,
    log:
        "logs/export_history/{dataset}/{model}/{run}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/export_history.py"
