# A9: the ReLU and softmax demos of the Asymmetric Valley paper (landscape/theory.py).
#   results/{dataset}/{model}/{run}/theory/epoch{epoch}.h5              compute_theory
#   results/figures/theory/{dataset}/{model}/{run}/epoch{epoch}.png     plot_theory


rule compute_theory:
    input:
        checkpoint=rules.train_model.output.checkpoint,
    output:
        theory=THEORY,
    log:
        "logs/compute_theory/{dataset}/{model}/{run}/epoch{epoch}.log",
    benchmark:
        "logs/benchmark/compute_theory/{dataset}/{model}/{run}/epoch{epoch}.tsv"
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=60,
    params:
        spec=canonical(theory_spec()),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    script:
        "../scripts/compute_theory.py"


rule plot_theory:
    input:
        theory=rules.compute_theory.output.theory,
    output:
        figure=report(
            THEORY_FIGURE,
            caption="../report/theory.rst",
            category="A9",
            labels={"run": "{run}", "epoch": "{epoch}"},
        ),
    log:
        "logs/plot_theory/{dataset}/{model}/{run}/epoch{epoch}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_theory.py"
