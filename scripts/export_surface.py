"""The plot set and the ParaView file of one 2D surface.

Outputs:
    contour, contourf, heatmap, surface3d:
        results/figures/surfaces/{dataset}/{model}/{run}/epoch{epoch}/{surface}/{view}.png
    vtp: results/{dataset}/{model}/{run}/surfaces/epoch{epoch}/{surface}.vtp
"""

import json

from landscape import logs
from landscape.exports import write_vtp
from landscape.surface_plots import VIEWS, plot_surface_set

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    block = json.loads(snakemake.params.block)
    title = f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: {w.surface}"
    surface = snakemake.input.surface
    outs = {view: snakemake.output[view] for view in VIEWS}
    plot_surface_set(surface, outs, log=block["log"], title=title)
    write_vtp(surface, snakemake.output.vtp, log=block["log"], encoding=block["vtp_encoding"])
