rule write_catalog:
    input:
        histories=history_targets(),
        curves=instances("curves", CURVE),
        curve_figures=instances("curves", CURVE_FIGURE),
        surfaces=instances("surfaces", SURFACE),
        surface_figures=instances("surfaces", SURFACE_FIGURE),
        hessian=hessian_targets(),
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
