"""Plots one 2D surface as filled contours of the loss.

Outputs:
    figure: results/figures/surfaces/{dataset}/{model}/{run}/epoch{epoch}/{surface}.png
"""

from landscape import logs
from landscape.plots import plot_surface

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_surface(
        snakemake.input.surface,
        snakemake.output.figure,
        title=f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: {w.surface}",
    )
