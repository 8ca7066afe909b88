# The plot set and ParaView export of every surface, and the interactive 3D page of the surfaces
# `surface_plots.interactive` names (`surface_plots` block): reading only the HDF5 file (no torch).


rule export_surface:
    input:
        surface=rules.merge_surface.output.surface,
    output:
        contour=report(
            surface_view("contour"),
            caption="../report/surface_set.rst",
            category="Surface views",
            subcategory="{run}",
            labels={
                "run": "{run}",
                "epoch": "{epoch}",
                "surface": "{surface}",
                "view": "contours",
            },
        ),
        contourf=report(
            surface_view("contourf"),
            caption="../report/surface_set.rst",
            category="Surface views",
            subcategory="{run}",
            labels={
                "run": "{run}",
                "epoch": "{epoch}",
                "surface": "{surface}",
                "view": "filled contours",
            },
        ),
        heatmap=report(
            surface_view("heatmap"),
            caption="../report/surface_set.rst",
            category="Surface views",
            subcategory="{run}",
            labels={
                "run": "{run}",
                "epoch": "{epoch}",
                "surface": "{surface}",
                "view": "heatmap",
            },
        ),
        surface3d=report(
            surface_view("surface3d"),
            caption="../report/surface_set.rst",
            category="Surface views",
            subcategory="{run}",
            labels={
                "run": "{run}",
                "epoch": "{epoch}",
                "surface": "{surface}",
                "view": "3D surface",
            },
        ),
        vtp=SURFACE_VTP,
    log:
        "logs/export_surface/{dataset}/{model}/{run}/epoch{epoch}/{surface}.log",
    benchmark:
        "logs/benchmark/export_surface/{dataset}/{model}/{run}/epoch{epoch}/{surface}.tsv"
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    params:
        block=canonical(config["surface_plots"]),
    script:
        "../scripts/export_surface.py"


rule surface_page:
    input:
        surface=rules.merge_surface.output.surface,
    output:
        html=report(
            SURFACE_HTML,
            caption="../report/surface_html.rst",
            category="Surface views",
            subcategory="{run}",
            labels={
                "run": "{run}",
                "epoch": "{epoch}",
                "surface": "{surface}",
                "view": "interactive 3D",
            },
        ),
    log:
        "logs/surface_page/{dataset}/{model}/{run}/epoch{epoch}/{surface}.log",
    benchmark:
        "logs/benchmark/surface_page/{dataset}/{model}/{run}/epoch{epoch}/{surface}.tsv"
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    params:
        block=canonical(config["surface_plots"]),
    script:
        "../scripts/surface_page.py"
