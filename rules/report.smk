rule write_catalog:
    input:
        histories=history_targets(),
        curves=curve_instances(CURVE),
        figures=curve_instances(CURVE_FIGURE),
    output:
        csv="results/catalog.csv",
    log:
        "logs/write_catalog.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/write_catalog.py"
