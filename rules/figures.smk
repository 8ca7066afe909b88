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


rule plot_surface:
    input:
        surface=rules.merge_surface.output.surface,
    output:
        figure=report(
            SURFACE_FIGURE,
            caption="../report/surface.rst",
            category="Surfaces",
            subcategory="{run}",
            labels={"run": "{run}", "epoch": "{epoch}", "surface": "{surface}"},
        ),
    log:
        "logs/plot_surface/{dataset}/{model}/{run}/epoch{epoch}/{surface}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_surface.py"
