"""Plots the absolute cosines of directions with the Hessian eigenvectors (V9, Fig. 9).

Outputs:
    figure: results/figures/hessian/{dataset}/{model}/{run}/epoch{epoch}/cosines.png
"""

from landscape import logs
from landscape.plots import plot_cosines

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_cosines(
        snakemake.input.cosines,
        snakemake.output.figure,
        title=f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: |cos| with eigenvectors",
    )
