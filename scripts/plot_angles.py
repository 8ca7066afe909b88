"""Plots the angles between Gaussian and descent directions at one checkpoint (V5, Fig. 5).

Outputs:
    figure: results/figures/angles/{dataset}/{model}/{run}/epoch{epoch}.png
"""

from landscape import logs
from landscape.plots import plot_angles

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_angles(
        snakemake.input.angles,
        snakemake.output.figure,
        title=f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: angles with descent directions",
    )
