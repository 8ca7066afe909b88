# Sweeps: many 1D curves of one checkpoint in one job (Asymmetric Valley A1-A4).


wildcard_constraints:
    sweep="|".join(config["sweeps"]) or "(?!)",


rule compute_sweep:
    input:
        unpack(get_sweep_references),
        checkpoint=rules.train_model.output.checkpoint,
    output:
        sweep=SWEEP,
    log:
        "logs/compute_sweep/{dataset}/{model}/{run}/epoch{epoch}/{sweep}.log",
    benchmark:
        "logs/benchmark/compute_sweep/{dataset}/{model}/{run}/epoch{epoch}/{sweep}.tsv"
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=120,
    params:
        spec=lambda w: canonical(sweep_spec(config, w.sweep)),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_sweep.py"


rule plot_sweep:
    input:
        sweep=rules.compute_sweep.output.sweep,
    output:
        figure=report(
            SWEEP_FIGURE,
            caption="../report/sweep.rst",
            category=lambda w: config["sweeps"][w.sweep].get("id", "Sweeps"),
            subcategory="{sweep}",
            labels={"run": "{run}", "epoch": "{epoch}", "sweep": "{sweep}"},
        ),
    log:
        "logs/plot_sweep/{dataset}/{model}/{run}/epoch{epoch}/{sweep}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    params:
        plot=lambda w: canonical(config["sweeps"][w.sweep]["plot"]),
    script:
        "../scripts/plot_sweep.py"
