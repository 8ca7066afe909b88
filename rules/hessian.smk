# Curvature of the loss at a checkpoint: eigenpairs, spectral density, trace (V8, V11, V13).


rule compute_spectrum:
    input:
        checkpoint=rules.train_model.output.checkpoint,
    output:
        spectrum=SPECTRUM,
    log:
        "logs/compute_spectrum/{dataset}/{model}/{run}/epoch{epoch}.log",
    benchmark:
        "logs/benchmark/compute_spectrum/{dataset}/{model}/{run}/epoch{epoch}.tsv"
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=120,
    params:
        spec=canonical(hessian_spec(config, "spectrum")),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_spectrum.py"


rule compute_density:
    input:
        checkpoint=rules.train_model.output.checkpoint,
    output:
        density=DENSITY,
    log:
        "logs/compute_density/{dataset}/{model}/{run}/epoch{epoch}.log",
    benchmark:
        "logs/benchmark/compute_density/{dataset}/{model}/{run}/epoch{epoch}.tsv"
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=120,
    params:
        spec=canonical(hessian_spec(config, "density")),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_density.py"


rule compute_trace:
    input:
        checkpoint=rules.train_model.output.checkpoint,
    output:
        trace=TRACE,
    log:
        "logs/compute_trace/{dataset}/{model}/{run}/epoch{epoch}.log",
    benchmark:
        "logs/benchmark/compute_trace/{dataset}/{model}/{run}/epoch{epoch}.tsv"
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=120,
    params:
        spec=canonical(hessian_spec(config, "trace")),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_trace.py"


rule plot_density:
    input:
        density=rules.compute_density.output.density,
        spectrum=rules.compute_spectrum.output.spectrum,
        trace=rules.compute_trace.output.trace,
    output:
        figure=report(
            DENSITY_FIGURE,
            caption="../report/density.rst",
            category="V13",
            subcategory="{run}",
            labels={"run": "{run}", "epoch": "{epoch}"},
        ),
    log:
        "logs/plot_density/{dataset}/{model}/{run}/epoch{epoch}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_density.py"
