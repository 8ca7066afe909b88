"""Draws one multi-panel paper figure of the ``figures`` block at one run and epoch.

Outputs:
    figure: results/figures/{figure_id}/{figure}/{dataset}/{model}/{run}/epoch{epoch}.png
"""

import json

from landscape import logs
from landscape.panels import plot_figure

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    block = json.loads(snakemake.params.block)
    where = f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}"
    plot_figure(
        json.loads(snakemake.params.panels),
        snakemake.input.members,
        snakemake.output.figure,
        title=f"{w.figure_id} {block.get('title', w.figure)}: {where}",
        split=block["split"],
        metric=block["metric"],
        marks=block["marks"],
    )
