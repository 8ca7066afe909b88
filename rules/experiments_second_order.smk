# Second-order views of the landscape: s.o.a. of curves (V14), loss change under Gaussian
# perturbations against the trace (V13), angles between Gaussian and descent directions (V5),
# cosines between (mined) directions and Hessian eigenvectors (V9).


rule compute_soa:
    input:
        checkpoint=rules.train_model.output.checkpoint,
        direction=direction_of("soa"),
    output:
        soa=SOA,
    log:
        "logs/compute_soa/{dataset}/{model}/{run}/epoch{epoch}/{soa}.log",
    benchmark:
        "logs/benchmark/compute_soa/{dataset}/{model}/{run}/epoch{epoch}/{soa}.tsv"
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        spec=lambda w: canonical(soa_spec(config, w.soa)),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_soa.py"


rule compute_loss_change:
    input:
        checkpoint=rules.train_model.output.checkpoint,
        trace=rules.compute_trace.output.trace,
    output:
        loss_change=LOSS_CHANGE,
    log:
        "logs/compute_loss_change/{dataset}/{model}/{run}/epoch{epoch}.log",
    benchmark:
        "logs/benchmark/compute_loss_change/{dataset}/{model}/{run}/epoch{epoch}.tsv"
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        spec=canonical(hessian_spec(config, "loss_change")),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_loss_change.py"


rule compute_angles:
    input:
        checkpoint=rules.train_model.output.checkpoint,
        target=get_final_checkpoint,
    output:
        angles=ANGLES,
    log:
        "logs/compute_angles/{dataset}/{model}/{run}/epoch{epoch}.log",
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=canonical(
            {k: v for k, v in config["angles"].items() if k not in ("runs", "epochs")}
        ),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_angles.py"


rule compute_cosines:
    input:
        spectrum=rules.compute_spectrum.output.spectrum,
        directions=get_cosine_directions,
    output:
        cosines=COSINES,
    log:
        "logs/compute_cosines/{dataset}/{model}/{run}/epoch{epoch}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        spec=canonical({"directions": config["cosines"]["directions"]}),
    script:
        "../scripts/compute_cosines.py"


rule plot_soa:
    input:
        soa=rules.compute_soa.output.soa,
    output:
        figure=report(
            SOA_FIGURE,
            caption="../report/soa.rst",
            category="V14",
            subcategory="{run}",
            labels={"run": "{run}", "epoch": "{epoch}", "soa": "{soa}"},
        ),
    log:
        "logs/plot_soa/{dataset}/{model}/{run}/epoch{epoch}/{soa}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_soa.py"


rule plot_cosines:
    input:
        cosines=rules.compute_cosines.output.cosines,
    output:
        figure=report(
            COSINES_FIGURE,
            caption="../report/cosines.rst",
            category="V9",
            subcategory="{run}",
            labels={"run": "{run}", "epoch": "{epoch}", "figure": "cosines"},
        ),
    log:
        "logs/plot_cosines/{dataset}/{model}/{run}/epoch{epoch}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_cosines.py"


rule plot_angles:
    input:
        angles=rules.compute_angles.output.angles,
    output:
        figure=report(
            ANGLES_FIGURE,
            caption="../report/angles.rst",
            category="V5",
            subcategory="{run}",
            labels={"run": "{run}", "epoch": "{epoch}", "figure": "angles"},
        ),
    log:
        "logs/plot_angles/{dataset}/{model}/{run}/epoch{epoch}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_angles.py"


rule plot_loss_change:
    input:
        loss_change=rules.compute_loss_change.output.loss_change,
        trace=rules.compute_trace.output.trace,
    output:
        figure=report(
            LOSS_CHANGE_FIGURE,
            caption="../report/loss_change.rst",
            category="V13",
            subcategory="{run}",
            labels={"run": "{run}", "epoch": "{epoch}", "figure": "loss change"},
        ),
    log:
        "logs/plot_loss_change/{dataset}/{model}/{run}/epoch{epoch}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_loss_change.py"
