# A10: the federated-learning table (landscape/federated/), one job per dataset, alpha, algorithm
# and seed; paths in rules/common.smk.
#   results/federated/{dataset}/alpha{alpha}/{algorithm}/seed{seed}.h5   run_federated
#   results/tables/federated.csv                                          write_federated_table
#   results/figures/federated/table.png                                   plot_federated_table
#   results/figures/federated/accuracy_{dataset}.png                      plot_federated_accuracy


rule run_federated:
    output:
        federated=FEDERATED,
    log:
        "logs/run_federated/{dataset}/alpha{alpha}/{algorithm}/seed{seed}.log",
    benchmark:
        "logs/benchmark/run_federated/{dataset}/alpha{alpha}/{algorithm}/seed{seed}.tsv"
    wildcard_constraints:
        alpha=r"[0-9][0-9.e+-]*",
        algorithm="|".join(config["federated"]["algorithms"]) or "(?!)",
        seed=r"\d+",
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=2000,
        runtime=60,
    params:
        spec=lambda w: canonical(
            federated_spec(
                config,
                w.dataset,
                federated_alpha(config, w.alpha),
                w.algorithm,
                int(w.seed),
            )
        ),
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        model=canonical(config["models"].get(config["federated"]["model"], {})),
        device=config["device"],
    script:
        "../scripts/run_federated.py"


rule write_federated_table:
    input:
        runs=federated_runs(),
    output:
        csv=report(
            FEDERATED_TABLE,
            caption="../report/federated_table.rst",
            category="A10",
        ),
    log:
        "logs/write_federated_table.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/write_federated_table.py"


rule plot_federated_table:
    input:
        csv=rules.write_federated_table.output.csv,
    output:
        figure=report(
            FEDERATED_TABLE_FIGURE,
            caption="../report/federated_table_figure.rst",
            category="A10",
            labels={"figure": "federated table"},
        ),
    log:
        "logs/plot_federated_table.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_federated_table.py"


rule plot_federated_accuracy:
    input:
        runs=get_federated_runs,
    output:
        figure=report(
            FEDERATED_ACCURACY_FIGURE,
            caption="../report/federated_accuracy.rst",
            category="A10",
            labels={"figure": "accuracy per round", "dataset": "{dataset}"},
        ),
    log:
        "logs/plot_federated_accuracy/{dataset}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_federated_accuracy.py"
