# A7/A8: statistics of model pairs and model soups (landscape/pairs.py), one file per `pairs` block.
#   results/pairs/{pair}.h5              compute_pair
#   results/figures/pairs/{pair}.png     plot_pair


rule compute_pair:
    input:
        unpack(get_pair_checkpoints),
    output:
        pair=PAIR,
    log:
        "logs/compute_pair/{pair}.log",
    benchmark:
        "logs/benchmark/compute_pair/{pair}.tsv"
    wildcard_constraints:
        pair="|".join(config["pairs"]) or "(?!)",
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=60,
    params:
        spec=lambda w: canonical(pair_spec(config, w.pair)),
        dataset=lambda w: canonical(
            config["datasets"][pair_spec(config, w.pair)["dataset"]]
        ),
        device=config["device"],
    script:
        "../scripts/compute_pair.py"


rule plot_pair:
    input:
        pair=rules.compute_pair.output.pair,
    output:
        figure=report(
            PAIR_FIGURE,
            caption="../report/pairs.rst",
            category=lambda w: config["pairs"][w.pair]["id"],
            subcategory="{pair}",
            labels={"pair": "{pair}"},
        ),
    log:
        "logs/plot_pair/{pair}.log",
    wildcard_constraints:
        pair="|".join(config["pairs"]) or "(?!)",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_pair.py"
