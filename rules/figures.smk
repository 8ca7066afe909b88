rule plot_curve:
    input:
        curve=rules.compute_curve.output.curve,
    output:
        figure=report(
            CURVE_FIGURE,
            caption="../report/curve.rst",
            category="Curves",
            subcategory="{run}",
            labels={"run": "{run}", "epoch": "{epoch}", "curve": "{curve}"},
        ),
    log:
        "logs/plot_curve/{dataset}/{model}/{run}/epoch{epoch}/{curve}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_curve.py"
