rule write_curve_table:
    input:
        curves=instances("curves", CURVE),
    output:
        csv=report(
            "results/tables/curve_taxonomy.csv",
            caption="../report/curve_taxonomy.rst",
            category="VT",
        ),
    log:
        "logs/write_curve_table.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/write_curve_table.py"


rule plot_curve_table:
    input:
        csv=rules.write_curve_table.output.csv,
    output:
        figure=report(
            CURVE_TABLE_FIGURE,
            caption="../report/curve_taxonomy_figure.rst",
            category="VT",
            labels={"figure": "curve taxonomy"},
        ),
    log:
        "logs/plot_curve_table.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_curve_table.py"


rule write_sweep_table:
    input:
        sweeps=instances("sweeps", SWEEP),
    output:
        csv=report(
            "results/tables/sweeps.csv",
            caption="../report/sweep_table.rst",
            category="A6",
        ),
    log:
        "logs/write_sweep_table.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/write_sweep_table.py"


rule write_claims:
    input:
        curves=instances("curves", CURVE),
        surfaces=instances("surfaces", SURFACE),
        soa=instances("soa", SOA),
        sweeps=instances("sweeps", SWEEP),
        pairs=[PAIR.format(pair=name) for name in config["pairs"]],
    output:
        csv=report(
            "results/tables/claims.csv",
            caption="../report/claims.rst",
            category="Claims",
        ),
    log:
        "logs/write_claims.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/write_claims.py"


rule write_catalog:
    input:
        histories=history_targets(),
        curves=instances("curves", CURVE),
        curve_figures=curve_figure_targets(),
        surfaces=instances("surfaces", SURFACE),
        surface_figures=instances("surfaces", SURFACE_FIGURE),
        hessian=hessian_targets(),
        soa=instances("soa", SOA),
        soa_figures=instances("soa", SOA_FIGURE),
        angles=selection_targets("angles", ANGLES),
        angle_figures=selection_targets("angles", ANGLES_FIGURE),
        cosines=(
            selection_targets("cosines", COSINES)
            + selection_targets("cosines", COSINES_FIGURE)
            if config["cosines"]["directions"]
            else []
        ),
        tables=[
            rules.write_curve_table.output.csv,
            rules.write_claims.output.csv,
            rules.write_sweep_table.output.csv,
        ],
        table_figures=rules.plot_curve_table.output.figure,
        figures=figure_targets(),
        pairs=pair_targets(),
        mode_connect=mode_connect_targets(),
        sweeps=instances("sweeps", SWEEP),
        sweep_figures=instances("sweeps", SWEEP_FIGURE),
        theory=theory_targets(),
        federated=federated_targets(),
        analysis=analysis_targets(),
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
