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


rule plot_figure:
    input:
        members=get_figure_members,
    output:
        figure=report(
            FIGURE,
            caption="../report/figure.rst",
            category="{figure_id}",
            subcategory="{figure}",
            labels={"run": "{run}", "epoch": "{epoch}", "figure": "{figure}"},
        ),
    log:
        "logs/plot_figure/{figure_id}/{figure}/{dataset}/{model}/{run}/epoch{epoch}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    params:
        block=lambda w: canonical(config["figures"][w.figure]),
        panels=lambda w: canonical(figure_panels(config, w.figure, w.run, int(w.epoch))),
    script:
        "../scripts/plot_figure.py"
